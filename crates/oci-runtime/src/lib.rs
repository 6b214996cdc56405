//! The OCI runtime layer: which OCI runtimes (runc, crun) crius can use, what
//! each of them and this host support, and whether a handler can run
//! containers here at all.
//!
//! - `handlers`: handler configuration and its defaults (pure).
//! - `probe`: running `<runtime> features`, reading the kernel version and
//!   the cgroup layout, and deriving what a handler can honour (the
//!   derivations are pure functions over the probed facts).
//! - `rootfs`, `imagevol`: a container's overlay rootfs; read-only image
//!   volume views and safely resolved sub paths.
//! - `mountinfo`: /proc/self/mountinfo, parsed in one place.
//! - `cgroups`: a container's cgroup path and the files of it the daemon
//!   reads, on every cgroup layout.
//! - `spec`: OCI spec generation (pure).
//! - `runtime`: `OciRuntime`, one handler's runtime calls (start, kill,
//!   delete, state, update) and the exit file; `launch`: creating a
//!   container under its monitor; `exec`: ExecSync under `crius-monitor
//!   exec`; `standby`: monitors started ahead of their containers, and
//!   their pool; `error`: what all of them return.

pub mod cgmetrics;
pub mod cgroups;
pub mod error;
pub mod exec;
pub mod handlers;
pub mod imagevol;
pub mod launch;
pub mod mountinfo;
pub mod probe;
pub mod rootfs;
pub mod runtime;
pub mod spec;
pub mod standby;
pub mod stats;

pub use error::RuntimeError;
pub use handlers::{HandlerConfig, RuntimeHandlers};
pub use probe::{HandlerStatus, HostFacts, Probe};
