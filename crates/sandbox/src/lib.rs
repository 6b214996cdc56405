//! Pod sandboxes without a pause process, as CRI-O's pinns does it: the
//! pod's network, IPC and UTS namespaces are created once and kept alive by
//! bind mounts of their nsfs files, which containers join by path; the pod's
//! /dev/shm is a tmpfs of its own; /etc/hosts, /etc/resolv.conf and
//! /etc/hostname are files the containers bind-mount.
//!
//! - `ns`: pinning and unpinning namespaces (real kernel calls).
//! - `shm`: the pod's /dev/shm tmpfs.
//! - `pause`: the init of a shared PID namespace (the one pod namespace that
//!   needs a process).
//! - `files`: the contents of hosts, resolv.conf and hostname (pure) and
//!   writing them atomically.

pub mod files;
pub mod ns;
pub mod pause;
pub mod shm;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("dns_config: {0}")]
    Dns(String),
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Io { what, source }
}

pub(crate) fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Sys { what, source }
}
