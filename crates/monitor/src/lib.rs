//! The pieces of the monitor that are pure logic, unit-tested: CRI log
//! lines and timestamps, and the exit file format.

pub mod crilog;
pub mod exitfile;
