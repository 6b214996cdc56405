//! crius, a Kubernetes CRI runtime daemon: configuration, the runtime
//! handlers as probed (`runtimes`), pods and containers (`manager`), their
//! records (`state`), the gRPC server (`server`) over them, and the
//! Prometheus endpoint (`metrics`).
//! The `crius` binary (`main.rs`) is a thin command line over this library.

pub mod config;
pub mod logging;
pub mod manager;
pub mod metrics;
pub mod notify;
pub mod runtimes;
pub mod server;
pub mod state;
pub mod streaming;
pub mod sync;
