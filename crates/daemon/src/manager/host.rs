//! The host, as pods and containers touch it: the one seam between the
//! manager's decisions and the kernel (files under /proc and /sys, signals,
//! mounts, the OCI runtime's state), so recovery and pod teardown can be
//! decided in unit tests against a scripted host (`recover.rs`), as
//! youki keeps its syscalls behind a trait. `RealHost` is the host itself;
//! the integration tests exercise it.
//!
//! Also here: the host-side helpers of container creation and status that
//! read untrusted files (a rootfs's /etc/passwd, a termination message, the
//! host side of bind mounts) without following them out of bounds.

use crate::runtimes::Runtimes;
use crate::state::PodRecord;
use crius_cri_api::v1::{ContainerConfig, MountPropagation};
use crius_monitor_protocol::exitfile::{self, ExitRecord};
use crius_monitor_protocol::identity;
use crius_oci_runtime::runtime::{OciRuntime, RuntimeState};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{hostmounts, ManagerError, Result};

/// Termination messages are capped like kubelet's.
pub const MAX_TERMINATION_MESSAGE: u64 = 4096;
/// kubelet's annotation naming the termination message path.
pub const TERMINATION_PATH_ANNOTATION: &str = "io.kubernetes.container.terminationMessagePath";
pub const DEFAULT_TERMINATION_PATH: &str = "/dev/termination-log";

/// What the manager asks of the host when it decides a container's or a
/// pod's fate from what is left of it (recovery, exits).
pub(crate) trait Host: Send + Sync {
    /// The container's exit as its monitor recorded it; None: none yet.
    fn exit_record(&self, exit_file: &Path) -> Option<ExitRecord>;
    /// Whether the container's memory cgroup saw an OOM kill.
    fn oom_killed(&self, cgroups_path: &str) -> bool;
    /// The termination message the container wrote.
    fn termination_message(&self, config: &ContainerConfig) -> String;
    /// When a file was last written, Unix nanoseconds.
    fn modified_ns(&self, path: &Path) -> Option<i64>;
    /// A pid file's pid.
    fn read_pid(&self, path: &Path) -> Option<i32>;
    /// Whether `pid` is still the monitor of container `id`.
    fn monitor_alive(&self, pid: i32, id: &str) -> bool;
    /// Every live container monitor, as (container id, pid).
    fn container_monitors(&self) -> Vec<(String, i32)>;
    /// SIGKILLs a monitor and its process group (the runtime it runs).
    fn kill_monitor(&self, pid: i32);
    /// The OCI runtime's view of container `id` under `handler`; None if
    /// it has none (or the handler is gone).
    fn runtime_state(&self, handler: &str, id: &str) -> Option<RuntimeState>;
    /// Deletes the runtime's state of container `id`, forcibly; quiet.
    fn runtime_delete(&self, handler: &str, id: &str);
    /// Removes a container's directory (image sub path binds, rootfs
    /// mount, files); quiet.
    fn remove_container_dir(&self, dir: &Path);
    /// Removes a file if it is there.
    fn remove_file(&self, path: &Path);
    /// Whether a pinned namespace is still there.
    fn ns_pinned(&self, path: &Path) -> bool;
    /// Whether `pid` is pod `id`'s pause process.
    fn pause_alive(&self, pid: i32, id: &str) -> bool;
    /// Kills the pod's pause process, unpins its namespaces and unmounts
    /// its shm. Idempotent.
    fn teardown_pod(&self, rec: &PodRecord) -> Result<()>;
    /// Removes a pod's directory.
    fn remove_pod_dir(&self, dir: &Path) -> Result<()>;
    fn now_ns(&self) -> i64;
}

/// The host itself.
pub(crate) struct RealHost {
    pub runtimes: Arc<Runtimes>,
    pub monitor: PathBuf,
}

impl RealHost {
    fn runtime(&self, handler: &str) -> Option<OciRuntime> {
        let info = self.runtimes.current();
        let h = info.handlers.get(handler)?;
        OciRuntime::new(h, &self.monitor).ok()
    }
}

impl Host for RealHost {
    fn exit_record(&self, exit_file: &Path) -> Option<ExitRecord> {
        exitfile::read(exit_file).ok().flatten()
    }

    fn oom_killed(&self, cgroups_path: &str) -> bool {
        oom_killed(cgroups_path)
    }

    fn termination_message(&self, config: &ContainerConfig) -> String {
        termination_message(config)
    }

    fn modified_ns(&self, path: &Path) -> Option<i64> {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i64)
    }

    fn read_pid(&self, path: &Path) -> Option<i32> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    fn monitor_alive(&self, pid: i32, id: &str) -> bool {
        identity::is_container_monitor(pid, id)
    }

    fn container_monitors(&self) -> Vec<(String, i32)> {
        identity::container_monitors()
    }

    fn kill_monitor(&self, pid: i32) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    fn runtime_state(&self, handler: &str, id: &str) -> Option<RuntimeState> {
        self.runtime(handler)?.state(id).ok()
    }

    fn runtime_delete(&self, handler: &str, id: &str) {
        if let Some(rt) = self.runtime(handler) {
            if let Err(e) = rt.delete(id, true) {
                tracing::debug!(container = %id, error = %e, "runtime delete");
            }
        }
    }

    fn remove_container_dir(&self, dir: &Path) {
        cleanup_dir(dir)
    }

    fn remove_file(&self, path: &Path) {
        let _ = std::fs::remove_file(path);
    }

    fn ns_pinned(&self, path: &Path) -> bool {
        crius_sandbox::ns::is_pinned(path)
    }

    fn pause_alive(&self, pid: i32, id: &str) -> bool {
        crius_sandbox::pause::is_ours(pid, id)
    }

    fn teardown_pod(&self, rec: &PodRecord) -> Result<()> {
        // Its CNI attachment is deleted by the GC recovery starts once the
        // records are settled (off the path to serving).
        teardown_pod(rec)
    }

    fn remove_pod_dir(&self, dir: &Path) -> Result<()> {
        remove_dir(dir)
    }

    fn now_ns(&self) -> i64 {
        super::now_ns()
    }
}

/// Detaches a pod from its CNI network (DEL with what ADD used, from the
/// attachment cache); a pod never attached is nothing to do. Called while
/// the pod's network namespace is still pinned.
pub(crate) fn detach_network(net: &crius_network::Cni, pod_id: &str) -> Result<()> {
    net.del(pod_id).map_err(ManagerError::from)
}

/// Tears down what a pod holds on the host: the pause process, pinned
/// namespaces and shm. Idempotent.
pub(crate) fn teardown_pod(rec: &PodRecord) -> Result<()> {
    crius_sandbox::pause::stop(rec.pause_pid, &rec.id)?;
    crius_sandbox::ns::unpin(&rec.dir.join("ns"))?;
    crius_sandbox::shm::unmount_shm(&rec.dir.join("shm"))?;
    Ok(())
}

/// Removes a directory tree; gone already is fine.
pub(crate) fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ManagerError::Internal(format!(
            "removing {}: {e}",
            dir.display()
        ))),
    }
}

/// Reads a file inside an untrusted root: symlinks resolve inside it
/// (openat2 RESOLVE_IN_ROOT), at most `cap` bytes. Missing: "".
pub fn read_in_root(root: &Path, rel: &str, cap: u64) -> String {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use std::io::Read;
    let Ok(dir) = nix::fcntl::open(
        root,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) else {
        return String::new();
    };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    // O_NOFOLLOW applies to the last component only; inner symlinks still
    // resolve within the root. A final symlink (e.g. /etc/passwd -> x) is
    // resolved by trying again without it.
    let fd = openat2(&dir, rel, how).or_else(|_| {
        openat2(
            &dir,
            rel,
            OpenHow::new()
                .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS),
        )
    });
    let Ok(fd) = fd else { return String::new() };
    let f = std::fs::File::from(fd);
    if !f.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return String::new();
    }
    let mut s = String::new();
    let _ = f.take(cap).read_to_string(&mut s);
    s
}

/// Whether the container's memory cgroup saw an OOM kill (v1 or v2).
fn oom_killed(cgroups_path: &str) -> bool {
    crius_oci_runtime::cgroups::memory_files(cgroups_path, "memory.oom_control", "memory.events")
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .any(|text| crius_oci_runtime::cgroups::oom_kills(&text) > 0)
}

/// The termination message the container wrote, read from the host side
/// of the mount kubelet provides for it.
fn termination_message(c: &ContainerConfig) -> String {
    let path = c
        .annotations
        .get(TERMINATION_PATH_ANNOTATION)
        .map(String::as_str)
        .unwrap_or(DEFAULT_TERMINATION_PATH);
    let Some(m) = c.mounts.iter().find(|m| m.container_path == path) else {
        return String::new();
    };
    use std::io::Read;
    let mut s = String::new();
    // The host path may be a symlink the container replaced: never follow.
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&m.host_path)
    {
        let _ = f.take(MAX_TERMINATION_MESSAGE).read_to_string(&mut s);
    }
    s
}

/// Checks and canonicalises the host side of CRI bind mounts: the path
/// exists (symlinks followed, so the runtime mounts what the operator
/// meant), and the propagation the mount asks for is possible.
pub(crate) fn check_host_mounts(c: &mut ContainerConfig) -> Result<()> {
    let mut mountinfo: Option<Vec<hostmounts::MountEntry>> = None;
    for (i, m) in c.mounts.iter_mut().enumerate() {
        if m.image.is_some() {
            // Image volumes: resolved by `acquire_image_volumes`.
            continue;
        }
        if m.host_path.is_empty() {
            return Err(ManagerError::InvalidArgument(format!(
                "mounts[{i}].host_path is required"
            )));
        }
        let real = std::fs::canonicalize(&m.host_path).map_err(|e| {
            ManagerError::InvalidArgument(format!(
                "mounts[{i}].host_path {:?}: {}",
                m.host_path,
                if e.kind() == std::io::ErrorKind::NotFound {
                    "does not exist".to_string()
                } else {
                    e.to_string()
                }
            ))
        })?;
        let real_s = real.to_string_lossy().into_owned();
        let prop = MountPropagation::try_from(m.propagation)
            .unwrap_or(MountPropagation::PropagationPrivate);
        if prop != MountPropagation::PropagationPrivate {
            let infos = mountinfo.get_or_insert_with(crius_oci_runtime::mountinfo::read);
            let entry = hostmounts::mount_of(infos, &real_s);
            let (ok, want) = match prop {
                MountPropagation::PropagationBidirectional => {
                    (entry.is_some_and(|e| e.shared), "shared")
                }
                _ => (
                    entry.is_some_and(|e| e.shared || e.slave),
                    "shared or slave",
                ),
            };
            if !ok {
                return Err(ManagerError::FailedPrecondition(format!(
                    "mounts[{i}].host_path {:?} is on mount {:?}, which is not {want} \
                     (needed for propagation {}); make it so with `mount --make-rshared {}`",
                    m.host_path,
                    entry.map(|e| e.mount_point.as_str()).unwrap_or("?"),
                    prop.as_str_name(),
                    entry.map(|e| e.mount_point.as_str()).unwrap_or("/"),
                )));
            }
        }
        m.host_path = real_s;
    }
    Ok(())
}

pub(crate) fn cleanup_dir(dir: &Path) {
    // Image sub path binds first: never recurse into a mounted view.
    if let Ok(entries) = std::fs::read_dir(dir.join("volumes")) {
        for e in entries.flatten() {
            let _ = crius_oci_runtime::imagevol::unmount(&e.path());
        }
    }
    if let Err(e) = crius_oci_runtime::rootfs::remove_rootfs(&dir.join("fs")) {
        tracing::warn!(dir = %dir.display(), error = %e, "removing rootfs");
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "removing container dir");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_in_root_never_leaves_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let outside = tmp.path().join("secret");
        std::fs::write(&outside, "host secret").unwrap();
        std::fs::write(root.join("etc/group"), "g:x:1:\n").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../secret", root.join("etc/shadow")).unwrap();
        assert_eq!(read_in_root(&root, "etc/group", 100), "g:x:1:\n");
        // Absolute and relative escapes resolve inside the root: nothing.
        assert_eq!(read_in_root(&root, "etc/passwd", 100), "");
        assert_eq!(read_in_root(&root, "etc/shadow", 100), "");
        assert_eq!(read_in_root(&root, "etc/group", 3), "g:x");
    }
}
