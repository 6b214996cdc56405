//! Image volumes (KEP-4639), the host side: an image's layers or an
//! artifact's content as one read-only, noexec, nosuid, nodev view, and a
//! sub path of it resolved without ever leaving it.
//!
//! The runtime later bind-mounts a path crius owns (the view, or a staging
//! bind of the resolved sub path) into the container, so nothing the image
//! contains — `..`, absolute or escaping symlinks — is ever resolved on the
//! host by the runtime.

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("image volume: no layers to mount")]
    NoLayers,
    #[error(
        "image volume: lower dir {0} contains ':' or ',' (not expressible in overlay options)"
    )]
    BadLowerDir(PathBuf),
    #[error("image_sub_path {path:?}: {reason}")]
    SubPath { path: String, reason: String },
    #[error("image volume {path}: {op}: {source}")]
    Sys {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn sys<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(nix::Error) -> VolumeError + 'a {
    move |e| VolumeError::Sys {
        path: path.to_path_buf(),
        op,
        source: e.into(),
    }
}

/// The flags every image volume mount carries. KEP-4639 dropped `noexec`
/// in 2025 (a binary inside an image volume must run; critest checks it);
/// an operator may add it back (`image_volume_noexec`).
pub fn view_flags(noexec: bool) -> MsFlags {
    let base = MsFlags::MS_RDONLY
        .union(MsFlags::MS_NOSUID)
        .union(MsFlags::MS_NODEV);
    if noexec {
        base.union(MsFlags::MS_NOEXEC)
    } else {
        base
    }
}

/// Mounts `lower` (top-most first) read-only at `target` (created if
/// missing): an overlay with no upper dir for several layers, a bind for
/// one (an artifact's content dir, or a one-layer image).
pub fn mount_view(lower: &[PathBuf], target: &Path, noexec: bool) -> Result<(), VolumeError> {
    std::fs::create_dir_all(target).map_err(|e| VolumeError::Sys {
        path: target.to_path_buf(),
        op: "creating mount point",
        source: e,
    })?;
    match lower {
        [] => Err(VolumeError::NoLayers),
        [one] => bind_read_only(one, target, noexec),
        many => {
            let mut dirs = Vec::with_capacity(many.len());
            for d in many {
                let s = d.to_str().unwrap_or(",");
                if s.contains(':') || s.contains(',') {
                    return Err(VolumeError::BadLowerDir(d.clone()));
                }
                dirs.push(s);
            }
            // Only lower dirs: overlayfs mounts it read-only by nature;
            // whiteouts in upper layers hide what lies below, as in a
            // container's rootfs.
            let opts = format!("lowerdir={}", dirs.join(":"));
            mount(
                Some("overlay"),
                target,
                Some("overlay"),
                view_flags(noexec),
                Some(opts.as_str()),
            )
            .map_err(sys(target, "mounting overlay"))
        }
    }
}

/// Binds `source` at `target`, then makes the bind read-only, nosuid,
/// nodev (and noexec if asked; a bind takes those flags only on a remount).
fn bind_read_only(source: &Path, target: &Path, noexec: bool) -> Result<(), VolumeError> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys(target, "bind mount"))?;
    if let Err(e) = mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | view_flags(noexec),
        None::<&str>,
    ) {
        let _ = umount2(target, MntFlags::MNT_DETACH);
        return Err(sys(target, "remounting read-only")(e));
    }
    Ok(())
}

/// What an image sub path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubPathKind {
    Dir,
    File,
}

/// Opens `sub` inside `root` as an O_PATH fd. Every component, `..` and
/// symlink (absolute ones included) resolves within `root`
/// (RESOLVE_IN_ROOT); magic links are refused. A path that does not exist
/// is an error naming it; only directories and regular files qualify.
pub fn resolve_sub_path(root: &Path, sub: &str) -> Result<(OwnedFd, SubPathKind), VolumeError> {
    let err = |reason: String| VolumeError::SubPath {
        path: sub.to_string(),
        reason,
    };
    if sub.contains('\0') {
        return Err(err("contains a NUL byte".into()));
    }
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(sys(root, "opening the volume root"))?;
    let rel = sub.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(&root_fd, rel, how).map_err(|e| match e {
        nix::errno::Errno::ENOENT => err("does not exist in the image".into()),
        other => err(format!("cannot be resolved inside the image: {other}")),
    })?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| err(format!("stat: {e}")))?;
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => SubPathKind::Dir,
        libc::S_IFREG => SubPathKind::File,
        _ => return Err(err("is neither a directory nor a regular file".into())),
    };
    Ok((fd, kind))
}

/// Binds what `fd` (from `resolve_sub_path`) names at `target` (created as
/// an empty file or directory), read-only, nosuid, nodev (noexec if asked).
/// The runtime then binds `target`, a path crius owns, into the container.
pub fn bind_sub_path(
    fd: &OwnedFd,
    kind: SubPathKind,
    target: &Path,
    noexec: bool,
) -> Result<(), VolumeError> {
    let io = |op: &'static str| {
        move |e: std::io::Error| VolumeError::Sys {
            path: target.to_path_buf(),
            op,
            source: e,
        }
    };
    match kind {
        SubPathKind::Dir => std::fs::create_dir_all(target).map_err(io("creating mount point"))?,
        SubPathKind::File => {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io("creating parent"))?;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(target)
                .map_err(io("creating mount point"))?;
        }
    }
    let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    bind_read_only(&source, target, noexec)
}

/// Whether `p` is a mount point. A bind mount from the same file system
/// has its parent's device number, so comparing devices is not enough:
/// statx's STATX_ATTR_MOUNT_ROOT says it (Linux 5.8+), and
/// /proc/self/mountinfo where the kernel does not report that attribute.
pub fn is_mount_point(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statx is plain data, for which all zeroes is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statx buffer the kernel fills.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS,
            &mut stx,
        )
    };
    if rc != 0 {
        return false;
    }
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if stx.stx_attributes_mask & bit != 0 {
        return stx.stx_attributes & bit != 0;
    }
    let want = p.display().to_string();
    crate::mountinfo::read()
        .iter()
        .any(|m| m.mount_point == want)
}

/// Unmounts a view or a sub path bind (idempotent) and removes the mount
/// point.
pub fn unmount(target: &Path) -> Result<(), VolumeError> {
    match umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(sys(target, "unmounting")(e)),
    }
    let removed = if target.is_dir() {
        std::fs::remove_dir(target)
    } else {
        std::fs::remove_file(target)
    };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(VolumeError::Sys {
            path: target.to_path_buf(),
            op: "removing mount point",
            source: e,
        }),
    }
}
