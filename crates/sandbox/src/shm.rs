//! The pod's /dev/shm: a tmpfs of its own, shared by the pod's containers
//! (they share the IPC namespace, so they must share POSIX shared memory).

use crate::{io, sys, SandboxError};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::Path;

/// tmpfs's statfs magic.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Mounts a tmpfs of `size` bytes at `path` (created if missing):
/// nosuid, nodev, noexec, mode 1777.
pub fn mount_shm(path: &Path, size: u64) -> Result<(), SandboxError> {
    std::fs::create_dir_all(path).map_err(io(format!("creating {}", path.display())))?;
    if is_mounted(path) {
        return Ok(());
    }
    let data = format!("mode=1777,size={size}");
    mount(
        Some("shm"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data.as_str()),
    )
    .map_err(sys(format!("mounting shm tmpfs on {}", path.display())))
}

/// Whether a tmpfs is mounted at `path`.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(s) = nix::sys::statfs::statfs(path) else {
        return false;
    };
    let Some(parent) = path.parent() else {
        return false;
    };
    // tmpfs on tmpfs (runroot is usually tmpfs): compare devices too.
    let dev = |p: &Path| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::dev(&m));
    s.filesystem_type().0 == TMPFS_MAGIC
        && matches!((dev(path), dev(parent)), (Ok(a), Ok(b)) if a != b)
}

/// Unmounts the pod's shm (idempotent) and removes the directory.
pub fn unmount_shm(path: &Path) -> Result<(), SandboxError> {
    for _ in 0..8 {
        if !is_mounted(path) {
            break;
        }
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
            Err(e) => return Err(sys(format!("unmounting {}", path.display()))(e)),
        }
    }
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("removing {}", path.display()))(e)),
    }
}
