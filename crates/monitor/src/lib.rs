//! The pieces of the monitor that are pure logic, unit-tested: CRI log
//! lines and timestamps, the exit file format, and the walk of an exec'd
//! process tree.

pub mod crilog;
pub mod exitfile;
pub mod proctree;
