//! Materialising an OCI artifact's content as a directory, once, for image
//! volumes: a layer titled with `org.opencontainers.image.title` becomes a
//! file of that name, a tar layer is unpacked (safely, by `unpack`), an
//! untitled non-tar layer becomes a file named after its digest.

use crate::db::LayerRecord;
use crate::unpack::{self, Mode, UnpackError};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// ORAS marks a titled tar layer that holds a directory with this annotation;
/// we only see the media type, so titled tars unpack into a directory of
/// that title, untitled ones into the root.
fn is_tar(media_type: &str) -> bool {
    let m = media_type.to_ascii_lowercase();
    m.ends_with(".tar")
        || m.ends_with(".tar+gzip")
        || m.ends_with(".tar+zstd")
        || m.ends_with(".tar.gzip")
        || m.ends_with(".tar.gz")
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

fn invalid(what: String) -> UnpackError {
    UnpackError::from(std::io::Error::new(std::io::ErrorKind::InvalidData, what))
}

/// Builds the content directory in a sibling temp dir, then renames it to
/// `target`; on error nothing is left behind.
pub fn materialize(layers: &[(PathBuf, LayerRecord)], target: &Path) -> Result<(), UnpackError> {
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
    let result = fill(layers, &tmp).and_then(|()| {
        nix::unistd::syncfs(std::fs::File::open(&tmp)?).map_err(std::io::Error::from)?;
        std::fs::rename(&tmp, target)?;
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn fill(layers: &[(PathBuf, LayerRecord)], root: &Path) -> Result<(), UnpackError> {
    for (i, (blob, layer)) in layers.iter().enumerate() {
        let title = layer
            .title
            .as_deref()
            .map(|t| {
                safe_title(t)
                    .map_err(|e| invalid(format!("layer {}: title {t:?} {e}", layer.digest)))
            })
            .transpose()?;
        let f = std::fs::File::open(blob)?;
        if is_tar(&layer.media_type) {
            // Unpack into a fresh dir, then move its entries into place so
            // layers never write through each other.
            let staging = root.join(format!(".layer-{i}"));
            unpack::unpack_tar_into(std::io::BufReader::new(f), None, &staging, Mode::Plain)?;
            let dest = match &title {
                Some(t) => root.join(t),
                None => root.to_path_buf(),
            };
            std::fs::create_dir_all(&dest)?;
            for e in std::fs::read_dir(&staging)? {
                let e = e?;
                let to = dest.join(e.file_name());
                if std::fs::symlink_metadata(&to).is_ok() {
                    return Err(invalid(format!(
                        "layer {}: {} already provided by an earlier layer",
                        layer.digest,
                        e.file_name().to_string_lossy()
                    )));
                }
                std::fs::rename(e.path(), to)?;
            }
            std::fs::remove_dir(&staging)?;
        } else {
            let rel =
                title.unwrap_or_else(|| PathBuf::from(layer.digest.trim_start_matches("sha256:")));
            let path = root.join(&rel);
            if let Some(dir) = path.parent() {
                // Only directories this function created exist under root, and
                // tar layers are unpacked without following symlinks, but a tar
                // may have left a symlink where a title wants a directory:
                // refuse to write through it.
                let mut cur = root.to_path_buf();
                for c in dir.strip_prefix(root).unwrap_or(Path::new("")).components() {
                    cur.push(c);
                    match std::fs::symlink_metadata(&cur) {
                        Ok(m) if m.file_type().is_symlink() => {
                            return Err(invalid(format!(
                                "layer {}: title passes through a symlink",
                                layer.digest
                            )))
                        }
                        Ok(_) => {}
                        Err(_) => std::fs::create_dir(&cur)?,
                    }
                }
            }
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o644)
                .open(&path)
                .map_err(|e| {
                    invalid(format!(
                        "layer {}: writing {}: {e}",
                        layer.digest,
                        rel.display()
                    ))
                })?;
            std::io::copy(&mut std::io::BufReader::new(f), &mut out)?;
            out.flush()?;
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

    #[test]
    fn media_types() {
        assert!(is_tar("application/vnd.oci.image.layer.v1.tar+gzip"));
        assert!(is_tar("application/vnd.oci.image.layer.v1.tar"));
        assert!(!is_tar("application/octet-stream"));
        assert!(!is_tar("application/yaml"));
    }
}
