//! A container's root filesystem: an overlay of the image's unpacked layers
//! (read-only lower dirs from the image store) with a per-container upper
//! and work dir, mounted when the container is created and unmounted when
//! it is removed.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("container rootfs: no image layers to mount")]
    NoLayers,
    #[error(
        "container rootfs: lower dir {0} contains ':' or ',' (not expressible in overlay options)"
    )]
    BadLowerDir(PathBuf),
    #[error(
        "container rootfs: overlay options are {0} bytes, more than the kernel's page-sized limit"
    )]
    TooManyLayers(usize),
    #[error("container rootfs {path}: {op}: {source}")]
    Sys {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The directories of one container's rootfs under `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsPaths {
    pub merged: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl RootfsPaths {
    pub fn under(dir: &Path) -> Self {
        RootfsPaths {
            merged: dir.join("rootfs"),
            upper: dir.join("upper"),
            work: dir.join("work"),
        }
    }
}

/// The overlay mount options (pure): lower dirs top-most first.
///
/// A read-only rootfs still gets an upper dir: overlayfs cannot mount a
/// single lower dir without one, and the runtime must be able to create
/// mount points (`/etc/hosts`, …) before it makes the root read-only
/// (`root.readonly` in the spec).
pub fn overlay_options(lower: &[PathBuf], paths: &RootfsPaths) -> Result<String, RootfsError> {
    if lower.is_empty() {
        return Err(RootfsError::NoLayers);
    }
    for l in lower {
        let s = l.to_string_lossy();
        if s.contains(':') || s.contains(',') {
            return Err(RootfsError::BadLowerDir(l.clone()));
        }
    }
    let lowerdir = lower
        .iter()
        .map(|l| l.to_string_lossy())
        .collect::<Vec<_>>()
        .join(":");
    let opts = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        paths.upper.display(),
        paths.work.display()
    );
    // The kernel copies mount data into one page.
    if opts.len() >= 4096 {
        return Err(RootfsError::TooManyLayers(opts.len()));
    }
    Ok(opts)
}

fn sys<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(nix::errno::Errno) -> RootfsError + 'a {
    move |e| RootfsError::Sys {
        path: path.to_path_buf(),
        op,
        source: e.into(),
    }
}

/// Mounts the rootfs of a container whose state lives in `dir`.
pub fn mount_rootfs(lower: &[PathBuf], dir: &Path) -> Result<RootfsPaths, RootfsError> {
    let paths = RootfsPaths::under(dir);
    let opts = overlay_options(lower, &paths)?;
    for d in [&paths.merged, &paths.upper, &paths.work] {
        std::fs::create_dir_all(d).map_err(|e| RootfsError::Sys {
            path: d.clone(),
            op: "creating directory",
            source: e,
        })?;
    }
    mount(
        Some("overlay"),
        &paths.merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(sys(&paths.merged, "mounting overlay"))?;
    Ok(paths)
}

/// Unmounts the rootfs (if mounted) and removes the container's upper and
/// work dirs. Idempotent.
pub fn remove_rootfs(dir: &Path) -> Result<(), RootfsError> {
    let paths = RootfsPaths::under(dir);
    match umount2(&paths.merged, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(sys(&paths.merged, "unmounting overlay")(e)),
    }
    for d in [&paths.merged, &paths.upper, &paths.work] {
        match std::fs::remove_dir_all(d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(RootfsError::Sys {
                    path: d.clone(),
                    op: "removing",
                    source: e,
                })
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let p = RootfsPaths::under(Path::new("/c/1"));
        let l = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            overlay_options(&l(&["/l/top", "/l/base"]), &p).unwrap(),
            "lowerdir=/l/top:/l/base,upperdir=/c/1/upper,workdir=/c/1/work"
        );
        assert_eq!(
            overlay_options(&l(&["/l/one"]), &p).unwrap(),
            "lowerdir=/l/one,upperdir=/c/1/upper,workdir=/c/1/work"
        );
        assert!(matches!(
            overlay_options(&[], &p),
            Err(RootfsError::NoLayers)
        ));
        assert!(matches!(
            overlay_options(&l(&["/a:b"]), &p),
            Err(RootfsError::BadLowerDir(_))
        ));
        let many: Vec<PathBuf> = (0..100)
            .map(|i| PathBuf::from(format!("/var/lib/crius/images/layers/{i:064}")))
            .collect();
        assert!(matches!(
            overlay_options(&many, &p),
            Err(RootfsError::TooManyLayers(_))
        ));
    }
}
