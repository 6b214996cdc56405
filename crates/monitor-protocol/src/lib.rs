//! The contract between the crius daemon and `crius-monitor`, in one place
//! both sides link, so neither can drift from the other.
//!
//! - [`job`]: the monitor's modes and their arguments — a container job
//!   (what a standby reads on its job pipe, NUL-separated, or a command
//!   line), `pause` and `exec` — encoded by the daemon, parsed by the
//!   monitor.
//! - [`report`]: the lines a monitor writes on its sync fd (`ready`,
//!   `pid`, `error`) and how the daemon reads a whole report.
//! - [`exitfile`]: the exit file a monitor leaves when its container ends.
//! - [`identity`]: telling a live monitor (or pause process) from a
//!   recycled pid, by its `/proc/<pid>/cmdline`.
//! - [`crilog`], [`time`]: the CRI log records a monitor writes, and the
//!   RFC 3339 timestamps both sides write and read.
//!
//! - [`attach`]: the per-container socket the monitor keeps for clients
//!   joining the container's stdio (CRI Attach): its path beside the
//!   container's files and its framing.
//!
//! No dependencies beyond std: the monitor lives as long as its container.

pub mod attach;
pub mod crilog;
pub mod exitfile;
pub mod identity;
pub mod job;
pub mod report;
pub mod time;

/// The monitor binary's file name, as it leads its command line.
pub const MONITOR_BINARY: &str = "crius-monitor";
