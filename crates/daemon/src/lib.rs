//! crius, a Kubernetes CRI runtime daemon: configuration and the gRPC server.
//! The `crius` binary (`main.rs`) is a thin command line over this library.

pub mod config;
pub mod logging;
pub mod manager;
pub mod server;
pub mod state;
