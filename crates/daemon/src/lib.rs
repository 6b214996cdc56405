//! crius, a Kubernetes CRI runtime daemon: configuration, the runtime
//! handlers as probed (`runtimes`), pods and containers (`manager`), their
//! records (`state`), and the gRPC server (`server`) over them.
//! The `crius` binary (`main.rs`) is a thin command line over this library.

pub mod config;
pub mod logging;
pub mod manager;
pub mod runtimes;
pub mod server;
pub mod state;
pub mod streaming;
pub mod sync;
