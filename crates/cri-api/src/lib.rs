//! The Kubernetes Container Runtime Interface, `runtime.v1`, as tonic/prost types.
//!
//! Everything in crius that speaks CRI — the daemon's services, the test
//! client, the benchmark tool — uses these types, so there is exactly one
//! definition of the wire contract in the workspace (`proto/runtime/v1/api.proto`).

/// Generated messages, enums, `runtime_service_*` and `image_service_*` modules.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

mod client;
pub use client::{connect_unix, CriClient, MAX_MESSAGE};

/// Fully-qualified gRPC service names, for logs and health checks.
pub const RUNTIME_SERVICE: &str = "runtime.v1.RuntimeService";
pub const IMAGE_SERVICE: &str = "runtime.v1.ImageService";
