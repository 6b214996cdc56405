//! Materialising an OCI artifact's content as a directory, once, for image
//! volumes, following the conventions artifact producers follow (ORAS,
//! Helm, ModelPack):
//!
//! - a layer titled with `org.opencontainers.image.title` is a file of that
//!   name holding the blob's bytes, whatever its media type (`oras push`
//!   gives files `application/vnd.oci.image.layer.v1.tar` by default; a Helm
//!   chart's `.tgz` stays a file) — unless it carries ORAS's
//!   `io.deis.oras.content.unpack: "true"`: then it is a (gzipped) tar of
//!   the directory its title names, as `oras push dir/` makes it;
//! - an untitled raw layer with ModelPack's `org.cncf.model.filepath` is a
//!   file at that path;
//! - an untitled filesystem tar layer (an OCI or Docker image layer type,
//!   ModelPack's `.tar` types, whose entries carry their paths) unpacks at
//!   the root;
//! - any other untitled layer (a Helm chart's `.tgz`) is a file named after
//!   its digest.
//!
//! Every path is created relative to directory fds that never follow a
//! symlink (openat2 `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, `mkdirat`,
//! `renameat2`): a symlink planted by one layer is never written through by
//! another, and nothing lands outside the content directory.

use crate::db::LayerRecord;
use crate::unpack::{self, Mode, UnpackError};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode as FileMode};
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// ORAS's annotation for a titled layer holding a directory as a tar.
pub const ORAS_UNPACK: &str = "io.deis.oras.content.unpack";
/// ModelPack's annotation naming a layer's file path.
pub const MODEL_FILEPATH: &str = "org.cncf.model.filepath";

/// Whether an untitled layer of this media type is a filesystem tar to
/// unpack: OCI and Docker image layers, and ModelPack's `.tar` layers.
/// Other archives (a Helm chart's `.tgz`) stay files, as their tools
/// expect to find them.
fn unpacks_untitled(media_type: &str) -> bool {
    let m = media_type.to_ascii_lowercase();
    let tar = m.ends_with(".tar") || m.ends_with(".tar+gzip") || m.ends_with(".tar+zstd");
    (tar && (m.starts_with("application/vnd.oci.image.layer.")
        || (m.starts_with("application/vnd.cncf.model.") && m.contains(".v1.tar"))))
        || m == "application/vnd.docker.image.rootfs.diff.tar"
        || m == "application/vnd.docker.image.rootfs.diff.tar.gzip"
        || m == "application/x-tar"
}

/// A title is a relative path inside the artifact: no `..`, not absolute,
/// no NUL, not empty.
pub fn safe_title(title: &str) -> Result<PathBuf, String> {
    if title.is_empty() || title.contains('\0') {
        return Err("empty or contains NUL".into());
    }
    let p = Path::new(title);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains \"..\"".into()),
            Component::RootDir | Component::Prefix(_) => return Err("is absolute".into()),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("names no file".into());
    }
    Ok(out)
}

/// How one layer becomes content (pure: from the layer's record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The blob's bytes as a file at this relative path.
    File(PathBuf),
    /// A tar whose entries all lie under this relative directory (ORAS
    /// `oras push dir/`: entries are named `dir/...`), unpacked at the root.
    TarOfDir(PathBuf),
    /// A tar unpacked at the root.
    TarAtRoot,
}

/// Decides where a layer's content goes; an unsafe path is an error
/// naming the layer and the annotation.
pub fn placement(layer: &LayerRecord) -> Result<Placement, String> {
    let checked = |what: &str, v: &str| {
        safe_title(v).map_err(|e| format!("layer {}: {what} {v:?} {e}", layer.digest))
    };
    if let Some(t) = layer.title.as_deref() {
        let t = checked("title", t)?;
        return Ok(if layer.unpack {
            Placement::TarOfDir(t)
        } else {
            Placement::File(t)
        });
    }
    if unpacks_untitled(&layer.media_type) {
        return Ok(Placement::TarAtRoot);
    }
    if let Some(f) = layer.filepath.as_deref() {
        return Ok(Placement::File(checked(MODEL_FILEPATH, f)?));
    }
    Ok(Placement::File(PathBuf::from(
        layer.digest.trim_start_matches("sha256:"),
    )))
}

fn invalid(what: String) -> UnpackError {
    UnpackError::from(std::io::Error::new(std::io::ErrorKind::InvalidData, what))
}

fn sys(what: String) -> impl FnOnce(Errno) -> UnpackError {
    move |e| invalid(format!("{what}: {e}"))
}

/// Builds the content directory in a sibling temp dir, then renames it to
/// `target`; on error nothing is left behind.
pub fn materialize(
    layers: &[(PathBuf, LayerRecord)],
    target: &Path,
    limits: &unpack::Limits,
) -> Result<(), UnpackError> {
    let parent = target
        .parent()
        .ok_or_else(|| invalid(format!("{} has no parent", target.display())))?;
    std::fs::create_dir_all(parent)?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".materialize-{name}-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir(&tmp)?;
    let result = fill(layers, &tmp, limits).and_then(|()| {
        nix::unistd::syncfs(std::fs::File::open(&tmp)?).map_err(std::io::Error::from)?;
        std::fs::rename(&tmp, target)?;
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Opens a directory beneath `dir` without following any symlink.
fn open_dir_beneath(dir: BorrowedFd<'_>, rel: &Path) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    openat2(dir, rel, how)
}

/// The directory `rel` beneath `root`, each component made if missing and
/// opened without following symlinks: a symlink (or file) where a
/// directory is wanted is an error, never a way out.
fn ensure_dir(root: BorrowedFd<'_>, rel: &Path) -> nix::Result<OwnedFd> {
    let mut cur = open_dir_beneath(root, Path::new("."))?;
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return Err(Errno::EINVAL);
        };
        match mkdirat(&cur, name, FileMode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        cur = open_dir_beneath(cur.as_fd(), Path::new(name))?;
    }
    Ok(cur)
}

fn is_real_dir(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<bool> {
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// The names in a directory, without `.` and `..`.
fn entries(dir: BorrowedFd<'_>) -> nix::Result<Vec<std::ffi::OsString>> {
    let mut d = nix::dir::Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        FileMode::empty(),
    )?;
    Ok(d.iter()
        .filter_map(|e| e.ok())
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect())
}

/// Moves every entry of `from` into `to`, merging real directories (two
/// ModelPack tars may both hold `weights/`); anything else already there
/// is an error: one layer never replaces or writes through another's file.
fn merge(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    at: &Path,
    digest: &str,
) -> Result<(), UnpackError> {
    let names = entries(from).map_err(sys(format!("layer {digest}: reading staged content")))?;
    for name in names {
        let here = at.join(&name);
        match unpack::rename_noreplace(from, name.as_bytes(), to, name.as_bytes()) {
            Ok(()) => {}
            Err(Errno::EEXIST) | Err(Errno::ENOTEMPTY) => {
                let both_dirs = is_real_dir(from, &name).unwrap_or(false)
                    && is_real_dir(to, &name).unwrap_or(false);
                if !both_dirs {
                    return Err(invalid(format!(
                        "layer {digest}: {} already provided by an earlier layer",
                        here.display()
                    )));
                }
                let sub_from = open_dir_beneath(from, Path::new(&name))
                    .map_err(sys(format!("layer {digest}: opening {}", here.display())))?;
                let sub_to = open_dir_beneath(to, Path::new(&name))
                    .map_err(sys(format!("layer {digest}: opening {}", here.display())))?;
                merge(sub_from.as_fd(), sub_to.as_fd(), &here, digest)?;
            }
            Err(e) => {
                return Err(invalid(format!(
                    "layer {digest}: moving {} into place: {e}",
                    here.display()
                )))
            }
        }
    }
    Ok(())
}

fn fill(
    layers: &[(PathBuf, LayerRecord)],
    root: &Path,
    limits: &unpack::Limits,
) -> Result<(), UnpackError> {
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        FileMode::empty(),
    )
    .map_err(sys(format!("opening {}", root.display())))?;
    for (i, (blob, layer)) in layers.iter().enumerate() {
        let digest = layer.digest.as_str();
        let place = placement(layer).map_err(invalid)?;
        let f = std::fs::File::open(blob)?;
        match place {
            Placement::TarAtRoot | Placement::TarOfDir(_) => {
                // Unpacked (confined, by `unpack`) into a fresh directory,
                // then merged into place through fds.
                let staging_name = format!(".layer-{i}");
                let staging = root.join(&staging_name);
                unpack::unpack_tar_into(
                    std::io::BufReader::new(f),
                    None,
                    &staging,
                    Mode::Plain,
                    limits,
                )?;
                let staging_fd = open_dir_beneath(root_fd.as_fd(), Path::new(&staging_name))
                    .map_err(sys(format!("layer {digest}: opening staged content")))?;
                if let Placement::TarOfDir(dir) = &place {
                    // `oras push dir/` names every entry `dir/...`: nothing
                    // else may come out of such a layer.
                    let top = dir
                        .components()
                        .next()
                        .map(|c| c.as_os_str().to_os_string());
                    let names = entries(staging_fd.as_fd())
                        .map_err(sys(format!("layer {digest}: reading staged content")))?;
                    if let Some(n) = names.iter().find(|n| Some(*n) != top.as_ref()) {
                        return Err(invalid(format!(
                            "layer {digest}: entry {n:?} lies outside the directory {dir:?} its title names"
                        )));
                    }
                }
                merge(staging_fd.as_fd(), root_fd.as_fd(), Path::new(""), digest)?;
                drop(staging_fd);
                std::fs::remove_dir_all(&staging)?;
            }
            Placement::File(rel) => {
                let name = rel.file_name().ok_or_else(|| {
                    invalid(format!("layer {digest}: {} names no file", rel.display()))
                })?;
                let parent = rel.parent().unwrap_or(Path::new(""));
                let dir = ensure_dir(root_fd.as_fd(), parent).map_err(|e| {
                    invalid(format!(
                        "layer {digest}: the directory of {} cannot be made (a file or symlink from an earlier layer is in the way?): {e}",
                        rel.display()
                    ))
                })?;
                let fd = nix::fcntl::openat(
                    &dir,
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    FileMode::from_bits_truncate(0o644),
                )
                .map_err(|e| invalid(format!("layer {digest}: writing {}: {e}", rel.display())))?;
                let mut out = std::fs::File::from(fd);
                std::io::copy(&mut std::io::BufReader::new(f), &mut out)?;
                out.flush()?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles() {
        for (t, ok) in [
            ("file", true),
            ("dir/file", true),
            ("./a", true),
            ("", false),
            ("..", false),
            ("a/../../b", false),
            ("/etc/passwd", false),
            (".", false),
            ("a\0b", false),
        ] {
            assert_eq!(safe_title(t).is_ok(), ok, "{t:?}");
        }
    }

    fn layer(
        media_type: &str,
        title: Option<&str>,
        unpack: bool,
        filepath: Option<&str>,
    ) -> LayerRecord {
        LayerRecord {
            digest: format!("sha256:{}", "ab".repeat(32)),
            media_type: media_type.into(),
            size: 1,
            diff_id: None,
            title: title.map(str::to_string),
            unpack,
            filepath: filepath.map(str::to_string),
        }
    }

    #[test]
    fn placements() {
        use Placement::*;
        let f = |p: &str| File(PathBuf::from(p));
        const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
        let cases: Vec<(LayerRecord, Result<Placement, ()>)> = vec![
            // `oras push file`: a titled "tar" layer is the file itself.
            (layer(TAR, Some("dir/file"), false, None), Ok(f("dir/file"))),
            (
                layer(
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                    Some("x.tgz"),
                    false,
                    None,
                ),
                Ok(f("x.tgz")),
            ),
            // Helm: the chart stays a .tgz file.
            (
                layer(
                    "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                    Some("chart-0.1.0.tgz"),
                    false,
                    None,
                ),
                Ok(f("chart-0.1.0.tgz")),
            ),
            // `oras push dir/`.
            (
                layer(
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                    Some("dir"),
                    true,
                    None,
                ),
                Ok(TarOfDir(PathBuf::from("dir"))),
            ),
            // ModelPack.
            (
                layer(
                    "application/vnd.cncf.model.weight.v1.raw",
                    None,
                    false,
                    Some("w/model.safetensors"),
                ),
                Ok(f("w/model.safetensors")),
            ),
            (
                layer(
                    "application/vnd.cncf.model.weight.v1.tar",
                    None,
                    false,
                    Some("w/model.safetensors"),
                ),
                Ok(TarAtRoot),
            ),
            (layer(TAR, None, false, None), Ok(TarAtRoot)),
            (
                layer(
                    "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                    None,
                    false,
                    None,
                ),
                Ok(f(&"ab".repeat(32))),
            ),
            (
                layer("application/yaml", None, false, None),
                Ok(f(&"ab".repeat(32))),
            ),
            // Hostile paths.
            (layer(TAR, Some("../x"), false, None), Err(())),
            (layer(TAR, Some("/etc/passwd"), true, None), Err(())),
            (
                layer(
                    "application/vnd.cncf.model.weight.v1.raw",
                    None,
                    false,
                    Some("../../x"),
                ),
                Err(()),
            ),
            (layer(TAR, Some("a\0b"), false, None), Err(())),
        ];
        for (l, want) in cases {
            let got = placement(&l);
            assert_eq!(got.clone().map_err(drop), want, "{l:?}: {got:?}");
        }
    }

    #[test]
    fn media_types() {
        assert!(unpacks_untitled(
            "application/vnd.oci.image.layer.v1.tar+gzip"
        ));
        assert!(unpacks_untitled("application/vnd.oci.image.layer.v1.tar"));
        assert!(unpacks_untitled(
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        ));
        assert!(unpacks_untitled(
            "application/vnd.cncf.model.weight.v1.tar+zstd"
        ));
        assert!(!unpacks_untitled(
            "application/vnd.cncf.model.weight.v1.raw"
        ));
        assert!(!unpacks_untitled(
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
        ));
        assert!(!unpacks_untitled("application/octet-stream"));
        assert!(!unpacks_untitled("application/yaml"));
    }
}
