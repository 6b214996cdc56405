//! Integration-test harness for crius, so tests read like the CRI flows they
//! exercise: a real daemon process, a typed CRI client on its socket, a real
//! `docker-registry`, and images and artifacts built from `busybox-static`.
#![allow(clippy::unwrap_used)]

pub mod daemon;
pub mod image;
pub mod network;
pub mod procs;
pub mod registry;
pub mod runtime;
pub mod stream;
pub mod token;

pub use crius_cri_api::{v1 as cri, CriClient};
pub use daemon::{Daemon, DaemonBuilder};
pub use image::{ArtifactBuilder, Blob, ImageBuilder, LayerBuilder, Manifest};
pub use registry::{Credentials, Registry};

/// Integration tests need root (mounts, runc, chown of the socket). Call at
/// the top of such a test: it fails loudly rather than pretending to pass.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (run `make test` as root)"
    );
}
