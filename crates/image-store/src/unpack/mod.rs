//! Safe extraction of OCI layer tarballs into directories usable as overlayfs
//! lower layers.
//!
//! Security model: a layer is hostile input. Extraction can never write outside
//! the private temp dir it extracts into:
//!
//! - entries are read in raw mode and GNU long names / long links / PAX headers
//!   are handled here, each capped at [`MAX_EXTENSION_HEADER`];
//! - every entry path is validated (no absolute paths, no `..`, no NUL);
//! - every filesystem operation goes through directory file descriptors: the
//!   parent of each entry is opened with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, so a symlink planted by an
//!   earlier entry anywhere in the parent path makes the entry fail instead of
//!   redirecting it; the final component is created with `*at` calls that
//!   never follow symlinks;
//! - device nodes are skipped; whiteouts are converted to overlayfs' format
//!   (or rejected for artifact layers, which have no lower layers).
//!
//! The result only appears at `target` (by an atomic, non-replacing rename)
//! once the whole stream was extracted, its diff_id verified and the
//! filesystem synced. On any error the temp dir is removed.
//!
//! Everything here is blocking: call it from `spawn_blocking`.
//!
//! This file is the public API and the overall sequence (temp dir, extract,
//! verify, sync, rename). The parts: `stream` (decompression and the hashing
//! thread), `headers` (extension headers, PAX records, entry metadata),
//! `paths` (which entry paths and link targets are acceptable), `dirs`
//! (directory-fd primitives) and `extract` (the entries themselves).

mod dirs;
mod extract;
mod headers;
mod paths;
mod stream;
#[cfg(test)]
mod tests;

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode as FileMode};
use nix::unistd::{fsync, syncfs};
use tracing::warn;

pub(crate) use dirs::rename_noreplace;
use dirs::TempDir;
use extract::Extractor;

/// Largest accepted GNU long name / long link or PAX (local or global) header.
pub const MAX_EXTENSION_HEADER: u64 = 1 << 20;

/// What one extraction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries processed (extension headers not counted; whiteouts and
    /// skipped devices counted).
    pub entries: u64,
    /// Sum of the sizes of regular files written (hardlinks not counted).
    pub bytes: u64,
    /// Whiteouts converted (`.wh.<name>` and opaque markers).
    pub whiteouts: u64,
    /// Block/character device entries skipped.
    pub skipped_devices: u64,
}

/// Caps on what one layer, and one image's layers together, may unpack to:
/// a gzip or zstd bomb (a few KiB that decompress to terabytes) or a layer
/// of millions of empty files fails the pull instead of filling the disk.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes of the uncompressed tar stream of one layer.
    pub layer_bytes: u64,
    /// Tar entries of one layer.
    pub layer_entries: u64,
    /// Shared by the layers of one pull (they unpack in parallel).
    pub image: Option<std::sync::Arc<ImageBudget>>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            layer_bytes: DEFAULT_MAX_LAYER_BYTES,
            layer_entries: DEFAULT_MAX_LAYER_ENTRIES,
            image: None,
        }
    }
}

pub const DEFAULT_MAX_LAYER_BYTES: u64 = 100 << 30;
pub const DEFAULT_MAX_LAYER_ENTRIES: u64 = 5_000_000;
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 200 << 30;
pub const DEFAULT_MAX_IMAGE_ENTRIES: u64 = 10_000_000;

/// What the layers of one pull have unpacked so far, against its caps.
#[derive(Debug, Default)]
pub struct ImageBudget {
    pub max_bytes: u64,
    pub max_entries: u64,
    bytes: AtomicU64,
    entries: AtomicU64,
}

impl ImageBudget {
    pub fn new(max_bytes: u64, max_entries: u64) -> Self {
        ImageBudget {
            max_bytes,
            max_entries,
            ..Default::default()
        }
    }
}

/// How entries are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An image layer: OCI whiteouts become overlayfs whiteouts / opaque dirs.
    OverlayLayer,
    /// An artifact's tar layer: no lower layers exist, whiteouts are errors.
    Plain,
}

/// Why a layer could not be unpacked. Entry-level variants name the
/// offending tar entry path (lossy UTF-8).
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer {what} exceeds the limit of {limit} ({key})")]
    TooLarge {
        what: &'static str,
        limit: u64,
        key: &'static str,
    },
    #[error("layer target {}: invalid expected diff_id {diff_id:?}: must be \"sha256:\" followed by 64 hex digits", target.display())]
    InvalidDiffId { target: PathBuf, diff_id: String },
    #[error("layer target {}: {reason}", target.display())]
    InvalidTarget {
        target: PathBuf,
        reason: &'static str,
    },
    #[error("layer target {}: already exists", target.display())]
    TargetExists { target: PathBuf },
    #[error("layer target {}: {op}: {source}", target.display())]
    Target {
        target: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("layer target {}: diff_id mismatch: expected {expected}, uncompressed stream is {actual}", target.display())]
    DiffIdMismatch {
        target: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("layer stream {context}: {op}: {source}")]
    Stream {
        context: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {path:?}: path escapes the layer root ({reason})")]
    PathEscape { path: String, reason: &'static str },
    #[error("layer entry {path:?}: invalid path ({reason})")]
    InvalidPath { path: String, reason: &'static str },
    #[error("layer entry {path:?}: path passes through a symlink")]
    PassesThroughSymlink { path: String },
    #[error("layer entry {path:?}: a parent path component is not a directory")]
    ParentNotDirectory { path: String },
    #[error("layer entry {path:?}: hardlink target {target:?} escapes the layer root ({reason})")]
    LinkTargetEscape {
        path: String,
        target: String,
        reason: &'static str,
    },
    #[error("layer entry {path:?}: invalid hardlink target {target:?} ({reason})")]
    InvalidLinkTarget {
        path: String,
        target: String,
        reason: &'static str,
    },
    #[error("layer entry {path:?}: hardlink target {target:?}: path passes through a symlink")]
    LinkTargetThroughSymlink { path: String, target: String },
    #[error("layer entry {path:?}: hardlink target {target:?} not in layer")]
    HardlinkTargetMissing { path: String, target: String },
    #[error("layer entry {path:?}: hardlink target {target:?} is a directory")]
    HardlinkToDirectory { path: String, target: String },
    #[error("layer entry {path:?}: oversized header: {kind} of {size} bytes exceeds the {MAX_EXTENSION_HEADER}-byte limit")]
    OversizedHeader {
        path: String,
        kind: &'static str,
        size: u64,
    },
    #[error("layer entry {path:?}: invalid whiteout ({reason})")]
    InvalidWhiteout { path: String, reason: &'static str },
    #[error(
        "layer entry {path:?}: whiteout in a plain (artifact) layer, which has no lower layer"
    )]
    WhiteoutNotAllowed { path: String },
    #[error("layer entry {path:?}: unsupported entry: {reason}")]
    Unsupported { path: String, reason: String },
    #[error("layer entry {path:?}: invalid header: {reason}")]
    InvalidHeader { path: String, reason: String },
    #[error("layer entry {path:?}: truncated archive: entry data ends after {actual} of {expected} bytes")]
    Truncated {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("layer entry {path:?}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// Never produced by this module: lets callers (artifact materialization,
    /// the store) wrap their own I/O around layers with `?`.
    #[error("layer I/O outside any tar entry: {0}")]
    External(#[from] io::Error),
}

/// Unpacks one OCI layer (plain tar, gzip or zstd — detected by magic bytes)
/// into `target`, which must not exist yet (its parent must). The
/// uncompressed stream's sha256 must equal `expected_diff_id`
/// (`"sha256:<hex>"`). See the module docs for the guarantees.
pub fn unpack_layer(
    reader: impl Read + Send,
    expected_diff_id: &str,
    target: &Path,
) -> Result<UnpackStats, UnpackError> {
    unpack_layer_with(reader, expected_diff_id, target, &Limits::default())
}

/// [`unpack_layer`] under explicit [`Limits`].
pub fn unpack_layer_with(
    reader: impl Read + Send,
    expected_diff_id: &str,
    target: &Path,
    limits: &Limits,
) -> Result<UnpackStats, UnpackError> {
    unpack_tar_into(
        reader,
        Some(expected_diff_id),
        target,
        Mode::OverlayLayer,
        limits,
    )
}

/// Like [`unpack_layer`], with an optional diff_id check and a choice of
/// [`Mode`] (artifacts' tar layers use [`Mode::Plain`], where whiteouts are
/// rejected).
pub fn unpack_tar_into(
    reader: impl Read + Send,
    expected_diff_id: Option<&str>,
    target: &Path,
    mode: Mode,
    limits: &Limits,
) -> Result<UnpackStats, UnpackError> {
    let expected = match expected_diff_id {
        Some(id) => Some(parse_diff_id(id).ok_or_else(|| UnpackError::InvalidDiffId {
            target: target.to_path_buf(),
            diff_id: id.to_string(),
        })?),
        None => None,
    };
    let target_err = |op: &'static str| {
        move |e: Errno| UnpackError::Target {
            target: target.to_path_buf(),
            op,
            source: e.into(),
        }
    };
    let name = match target.file_name() {
        Some(n) => n.as_bytes(),
        None => {
            return Err(UnpackError::InvalidTarget {
                target: target.to_path_buf(),
                reason: "path has no final component",
            })
        }
    };
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent_fd = nix::fcntl::open(
        parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        FileMode::empty(),
    )
    .map_err(target_err("opening parent directory"))?;
    match fstatat(&parent_fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => {}
        Ok(_) => {
            return Err(UnpackError::TargetExists {
                target: target.to_path_buf(),
            })
        }
        Err(e) => return Err(target_err("checking target")(e)),
    }

    let mut tmp =
        TempDir::create(parent_fd.as_fd(), name).map_err(target_err("creating temp dir"))?;
    let root = openat(
        &parent_fd,
        tmp.name.as_slice(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        FileMode::empty(),
    )
    .map_err(target_err("opening temp dir"))?;

    let mut ex = Extractor::new(root, mode, limits.clone());
    let digest = ex.extract(reader)?;
    if let Some(expected) = expected {
        if digest != expected {
            return Err(UnpackError::DiffIdMismatch {
                target: target.to_path_buf(),
                expected: expected_diff_id.unwrap_or_default().to_string(),
                actual: format!("sha256:{}", hex::encode(digest)),
            });
        }
    }
    ex.finish()?;
    syncfs(&ex.root).map_err(target_err("syncing filesystem"))?;
    let stats = std::mem::take(&mut ex.stats);
    drop(ex);

    match rename_noreplace(parent_fd.as_fd(), &tmp.name, parent_fd.as_fd(), name) {
        Ok(()) => {}
        Err(Errno::EEXIST) | Err(Errno::ENOTEMPTY) => {
            return Err(UnpackError::TargetExists {
                target: target.to_path_buf(),
            })
        }
        Err(e) => return Err(target_err("renaming temp dir into place")(e)),
    }
    tmp.armed = false;
    if let Err(e) = fsync(&parent_fd) {
        warn!(target = %target.display(), error = %e, "fsync of layer parent directory failed");
    }
    Ok(stats)
}

/// Whether `id` is a diff ID crius accepts: `sha256:` and 64 lowercase hex
/// digits, nothing else. A diff ID names a directory, so anything looser
/// (an absolute path, `sha256:../..`) could name a host directory.
pub fn valid_diff_id(id: &str) -> bool {
    crate::layout::sha256_hex_part(id).is_some()
}

/// The diff ID (sha256 of the uncompressed tar) a layer blob produces,
/// without extracting it: for reusing a layer unpacked from another blob.
pub fn diff_id_of(reader: impl Read) -> io::Result<String> {
    use sha2::Digest;
    let mut r = stream::decompress(reader)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// The extended attributes a layer may set: file capabilities, user
/// attributes (but not overlayfs's own `user.overlay.*`) and POSIX ACLs.
/// Everything else (`trusted.*`, other `security.*` labels) is dropped.
pub fn xattr_allowed(name: &[u8]) -> bool {
    name == b"security.capability"
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
        || (name.starts_with(b"user.") && !name.starts_with(b"user.overlay."))
}

/// Parses `"sha256:<64 hex>"`.
fn parse_diff_id(id: &str) -> Option<[u8; 32]> {
    let hex_part = crate::layout::sha256_hex_part(id)?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}
