//! The pieces of the monitor that are pure logic, unit-tested: the walk
//! of an exec'd process tree. What the monitor shares with the daemon
//! (job arguments, reports, the exit file, CRI log records) is the
//! `crius-monitor-protocol` crate, re-exported here for the monitor's
//! tests.

pub mod proctree;

pub use crius_monitor_protocol::{attach, crilog, exitfile, job, report};
