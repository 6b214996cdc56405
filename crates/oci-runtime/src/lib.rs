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
//! - `spec`: OCI spec generation (pure); `runtime`: running the runtime;
//!   `standby`: monitors started ahead of their containers, and their pool.

pub mod handlers;
pub mod imagevol;
pub mod probe;
pub mod rootfs;
pub mod runtime;
pub mod spec;
pub mod standby;

pub use handlers::{HandlerConfig, RuntimeHandlers};
pub use probe::{HandlerStatus, HostFacts, Probe};
