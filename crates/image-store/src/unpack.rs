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

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, renameat, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstat, fstatat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags,
    Mode as FileMode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{
    fchown, fchownat, fsync, linkat, symlinkat, syncfs, unlinkat, Gid, Uid, UnlinkatFlags,
};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

/// Largest accepted GNU long name / long link or PAX (local or global) header.
pub const MAX_EXTENSION_HEADER: u64 = 1 << 20;

/// Longest accepted entry path (bytes, before normalization); PATH_MAX - 1.
const MAX_PATH_LEN: usize = 4095;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";

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

/// `renameat2(RENAME_NOREPLACE)` between two directory fds, falling back to
/// a check + `renameat` on filesystems that don't support the flag.
pub(crate) fn rename_noreplace(
    from_dir: BorrowedFd<'_>,
    from: &[u8],
    to_dir: BorrowedFd<'_>,
    to: &[u8],
) -> nix::Result<()> {
    let from_c = std::ffi::CString::new(from).map_err(|_| Errno::EINVAL)?;
    let to_c = std::ffi::CString::new(to).map_err(|_| Errno::EINVAL)?;
    // SAFETY: valid fds and NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            from_dir.as_raw_fd(),
            from_c.as_ptr(),
            to_dir.as_raw_fd(),
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    match Errno::result(rc) {
        Ok(_) => Ok(()),
        Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {
            match fstatat(to_dir, to, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Err(Errno::ENOENT) => renameat(from_dir, from, to_dir, to),
                Ok(_) => Err(Errno::EEXIST),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The sibling temp dir extraction goes into; removed on drop while armed.
struct TempDir<'a> {
    parent: BorrowedFd<'a>,
    name: Vec<u8>,
    armed: bool,
}

impl<'a> TempDir<'a> {
    fn create(parent: BorrowedFd<'a>, target_name: &[u8]) -> nix::Result<Self> {
        let pid = std::process::id();
        let shown = &target_name[..target_name.len().min(200)];
        let mut last = Errno::EEXIST;
        for _ in 0..100 {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut name = b".unpack-".to_vec();
            name.extend_from_slice(shown);
            name.extend_from_slice(format!("-{pid}-{n}").as_bytes());
            match mkdirat(parent, name.as_slice(), FileMode::from_bits_truncate(0o700)) {
                Ok(()) => {
                    return Ok(TempDir {
                        parent,
                        name,
                        armed: true,
                    })
                }
                Err(Errno::EEXIST) => last = Errno::EEXIST,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}

impl Drop for TempDir<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = remove_tree_at(self.parent, &self.name) {
                warn!(
                    dir = %String::from_utf8_lossy(&self.name),
                    error = %e,
                    "failed to remove partial layer temp dir"
                );
            }
        }
    }
}

/// Opens a directory for removal, making it u+rwx if needed.
fn open_dir_for_removal(parent: BorrowedFd<'_>, name: &[u8]) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match openat(parent, name, flags, FileMode::empty()) {
        Ok(fd) => fd,
        Err(Errno::EACCES) => {
            // Only reachable without CAP_DAC_OVERRIDE. fchmodat follows
            // symlinks, so first make sure this is a real directory (nothing
            // but this process writes into the temp dir).
            let st = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
            if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                return Err(Errno::ENOTDIR);
            }
            fchmodat(
                parent,
                name,
                FileMode::from_bits_truncate((st.st_mode & 0o7777) | 0o700),
                FchmodatFlags::FollowSymlink,
            )?;
            openat(parent, name, flags, FileMode::empty())?
        }
        Err(e) => return Err(e),
    };
    let st = fstat(&fd)?;
    if st.st_mode & 0o700 != 0o700 {
        fchmod(
            &fd,
            FileMode::from_bits_truncate((st.st_mode & 0o7777) | 0o700),
        )?;
    }
    Ok(fd)
}

/// Removes `name` (anything; a directory recursively) relative to `parent`,
/// through file descriptors only, never following symlinks. Iterative, so a
/// deep tree can't overflow the stack.
fn remove_tree_at(parent: BorrowedFd<'_>, name: &[u8]) -> nix::Result<()> {
    match unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(e),
    }
    struct Level {
        fd: OwnedFd,
        name: Vec<u8>,
    }
    let mut stack = vec![Level {
        fd: open_dir_for_removal(parent, name)?,
        name: name.to_vec(),
    }];
    while let Some(top) = stack.last() {
        let mut names = Vec::new();
        {
            // A fresh open file description each time: the directory changed.
            let mut dir = Dir::openat(
                &top.fd,
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                FileMode::empty(),
            )?;
            for ent in dir.iter() {
                let n = ent?.file_name().to_bytes().to_vec();
                if n != b"." && n != b".." {
                    names.push(n);
                }
            }
        }
        let mut subdir = None;
        for n in names {
            match unlinkat(&top.fd, n.as_slice(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(Errno::EISDIR) => {
                    subdir = Some(n);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        match subdir {
            Some(n) => {
                let fd = open_dir_for_removal(top.fd.as_fd(), &n)?;
                stack.push(Level { fd, name: n });
            }
            None => {
                // The loop only runs while the stack has a top.
                let Some(done) = stack.pop() else { break };
                drop(done.fd);
                let p = stack.last().map_or(parent, |l| l.fd.as_fd());
                match unlinkat(p, done.name.as_slice(), UnlinkatFlags::RemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// Parses `"sha256:<64 hex>"`.
/// Whether `id` is a diff ID crius accepts: `sha256:` and 64 lowercase hex
/// digits, nothing else. A diff ID names a directory, so anything looser
/// (an absolute path, `sha256:../..`) could name a host directory.
pub fn valid_diff_id(id: &str) -> bool {
    id.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The diff ID (sha256 of the uncompressed tar) a layer blob produces,
/// without extracting it: for reusing a layer unpacked from another blob.
pub fn diff_id_of(reader: impl Read) -> io::Result<String> {
    use sha2::Digest;
    let mut r = decompress(reader)?;
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

fn parse_diff_id(id: &str) -> Option<[u8; 32]> {
    if !valid_diff_id(id) {
        return None;
    }
    let hex_part = id.strip_prefix("sha256:")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn detect_compression(magic: &[u8]) -> Compression {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (magic.len() >= 4 && magic[0] & 0xf0 == 0x50 && magic[1..4] == [0x2a, 0x4d, 0x18])
    {
        // A zstd frame, or a skippable frame (zstd:chunked puts metadata in those).
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Wraps `reader` in the decompressor its first bytes call for.
fn decompress<'a, R: Read + 'a>(mut reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match reader.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let prefixed = io::Cursor::new(magic[..n].to_vec()).chain(reader);
    Ok(match detect_compression(&magic[..n]) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(prefixed)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(prefixed)?),
        Compression::None => Box::new(prefixed),
    })
}

/// Size of the chunks the decompress-and-hash thread hands to the extractor.
const PIPE_CHUNK: usize = 1 << 20;

/// Reads the chunks the decompress-and-hash thread produces. Decompressing
/// and hashing run on their own thread so they overlap with writing files:
/// on two cores that is most of the difference to GNU tar.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // The producer finished (end of stream).
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Decompresses `reader`, hashes the uncompressed bytes and sends them on in
/// chunks; returns the sha256 of everything sent.
fn produce<R: Read>(
    reader: R,
    tx: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
    limits: &Limits,
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    let mut stream = match decompress(reader) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Err(e));
            return hasher.finalize().into();
        }
    };
    loop {
        let mut chunk = vec![0u8; PIPE_CHUNK];
        let mut filled = 0;
        let result = loop {
            match stream.read(&mut chunk[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    filled += n;
                    if filled == chunk.len() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        chunk.truncate(filled);
        // Counted as it is decompressed, before anything is written: a bomb
        // stops within one chunk of its cap.
        total += filled as u64;
        let image_over = limits.image.as_ref().filter(|b| {
            b.bytes.fetch_add(filled as u64, Ordering::Relaxed) + filled as u64 > b.max_bytes
        });
        let over = if total > limits.layer_bytes {
            Some(("uncompressed size", limits.layer_bytes, "max_layer_bytes"))
        } else {
            image_over.map(|b| ("image's uncompressed size", b.max_bytes, "max_image_bytes"))
        };
        if let Some((what, limit, key)) = over {
            let _ = tx.send(Err(io::Error::other(UnpackError::TooLarge {
                what,
                limit,
                key,
            })));
            break;
        }
        hasher.update(&chunk);
        let last = filled == 0;
        if filled > 0 && tx.send(Ok(chunk)).is_err() {
            break; // the extractor stopped (an error): stop reading
        }
        if let Err(e) = result {
            let _ = tx.send(Err(e));
            break;
        }
        if last || filled < PIPE_CHUNK {
            break;
        }
    }
    hasher.finalize().into()
}

/// One PAX record: (key, value).
type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// Parses PAX extended header records (`"<len> <key>=<value>\n"`).
fn parse_pax(data: &[u8]) -> Result<Vec<PaxRecord<'_>>, &'static str> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break; // tolerate NUL padding
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("PAX record without a length")?;
        let len_digits = &rest[..sp];
        if len_digits.is_empty()
            || len_digits.len() > 10
            || !len_digits.iter().all(u8::is_ascii_digit)
        {
            return Err("PAX record with a malformed length");
        }
        let len: usize = std::str::from_utf8(len_digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("PAX record with a malformed length")?;
        if len <= sp + 1 || len > rest.len() {
            return Err("PAX record length out of range");
        }
        let record = &rest[sp + 1..len];
        let kv = record
            .strip_suffix(b"\n")
            .ok_or("PAX record not terminated by a newline")?;
        let eq = kv
            .iter()
            .position(|&b| b == b'=')
            .ok_or("PAX record without '='")?;
        if eq == 0 {
            return Err("PAX record with an empty key");
        }
        out.push((&kv[..eq], &kv[eq + 1..]));
        rest = &rest[len..];
    }
    Ok(out)
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parses a PAX time (`"[-]<secs>[.<fraction>]"`) into (seconds, nanoseconds),
/// nanoseconds always in 0..1e9.
fn parse_pax_time(v: &[u8]) -> Option<(i64, i64)> {
    let (neg, v) = match v.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &b""[..]),
    };
    let secs = i64::try_from(parse_decimal(int)?).ok()?;
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nsec: i64 = 0;
    for i in 0..9 {
        nsec = nsec * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
    }
    Some(match (neg, nsec) {
        (false, _) => (secs, nsec),
        (true, 0) => (-secs, 0),
        (true, _) => (-secs - 1, 1_000_000_000 - nsec),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathError {
    Empty,
    Absolute,
    DotDot,
    Nul,
    TooLong,
}

/// Validates and normalizes a tar entry path into its components: leading
/// `./`, `.` and empty components and a trailing `/` are dropped. An empty
/// result is the layer root (from `.` or `./`).
fn normalize_path(raw: &[u8]) -> Result<Vec<&[u8]>, PathError> {
    if raw.is_empty() {
        return Err(PathError::Empty);
    }
    if raw.contains(&0) {
        return Err(PathError::Nul);
    }
    if raw[0] == b'/' {
        return Err(PathError::Absolute);
    }
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(PathError::DotDot),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn path_error(e: PathError, path: &str) -> UnpackError {
    let path = path.to_string();
    match e {
        PathError::Absolute => UnpackError::PathEscape {
            path,
            reason: "absolute path",
        },
        PathError::DotDot => UnpackError::PathEscape {
            path,
            reason: "\"..\"",
        },
        PathError::Empty => UnpackError::InvalidPath {
            path,
            reason: "empty path",
        },
        PathError::Nul => UnpackError::InvalidPath {
            path,
            reason: "NUL byte in path",
        },
        PathError::TooLong => UnpackError::InvalidPath {
            path,
            reason: "path longer than PATH_MAX",
        },
    }
}

fn link_target_error(e: PathError, path: &str, target: &str) -> UnpackError {
    let (path, target) = (path.to_string(), target.to_string());
    match e {
        PathError::Absolute => UnpackError::LinkTargetEscape {
            path,
            target,
            reason: "absolute path",
        },
        PathError::DotDot => UnpackError::LinkTargetEscape {
            path,
            target,
            reason: "\"..\"",
        },
        PathError::Empty => UnpackError::InvalidLinkTarget {
            path,
            target,
            reason: "empty path",
        },
        PathError::Nul => UnpackError::InvalidLinkTarget {
            path,
            target,
            reason: "NUL byte in path",
        },
        PathError::TooLong => UnpackError::InvalidLinkTarget {
            path,
            target,
            reason: "path longer than PATH_MAX",
        },
    }
}

/// Why resolving a directory inside the layer failed.
enum ResolveError {
    Symlink,
    NotDir,
    Missing,
    Io(&'static str, Errno),
}

impl ResolveError {
    fn from_errno(op: &'static str, e: Errno) -> Self {
        match e {
            Errno::ELOOP | Errno::EXDEV => ResolveError::Symlink,
            Errno::ENOTDIR => ResolveError::NotDir,
            Errno::ENOENT => ResolveError::Missing,
            e => ResolveError::Io(op, e),
        }
    }

    fn for_entry(self, path: &str) -> UnpackError {
        let path = path.to_string();
        match self {
            ResolveError::Symlink => UnpackError::PassesThroughSymlink { path },
            ResolveError::NotDir => UnpackError::ParentNotDirectory { path },
            ResolveError::Missing => UnpackError::Io {
                path,
                op: "opening parent directory",
                source: Errno::ENOENT.into(),
            },
            ResolveError::Io(op, e) => UnpackError::Io {
                path,
                op,
                source: e.into(),
            },
        }
    }
}

fn io_err<'a>(path: &'a str, op: &'static str) -> impl FnOnce(Errno) -> UnpackError + 'a {
    move |e| UnpackError::Io {
        path: path.to_string(),
        op,
        source: e.into(),
    }
}

fn is_dir_mode(mode: libc::mode_t) -> bool {
    mode & libc::S_IFMT == libc::S_IFDIR
}

fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> nix::Result<()> {
    // SAFETY: valid fd, NUL-terminated name, pointer/length of a live slice.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

fn resolve_how(flags: OFlag) -> OpenHow {
    OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    )
}

/// Metadata applied to a created entry.
/// Sets the numeric owner and times of `parent/name` without following a
/// symlink (for entries that cannot be opened: symlinks, whiteout devices).
fn set_owner_and_times(
    parent: &impl std::os::fd::AsFd,
    name: &[u8],
    meta: &Meta,
    path: &str,
    owner_op: &'static str,
    times_op: &'static str,
) -> Result<(), UnpackError> {
    fchownat(
        parent,
        name,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io_err(path, owner_op))?;
    utimensat(
        parent,
        name,
        &meta.mtime,
        &meta.mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io_err(path, times_op))
}

struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: TimeSpec,
    xattrs: Vec<(std::ffi::CString, Vec<u8>)>,
}

#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
    /// Name of the last extension header seen, for error messages.
    header_path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Fifo,
    Device,
}

struct Extractor {
    root: OwnedFd,
    mode: Mode,
    limits: Limits,
    stats: UnpackStats,
    /// Directory mtimes, applied after all entries (children change them).
    dir_times: BTreeMap<Vec<u8>, TimeSpec>,
    root_meta_set: bool,
    last_path: Option<String>,
    pending: Pending,
    buf: Vec<u8>,
}

impl Extractor {
    fn new(root: OwnedFd, mode: Mode, limits: Limits) -> Self {
        Extractor {
            root,
            mode,
            limits,
            stats: UnpackStats::default(),
            dir_times: BTreeMap::new(),
            root_meta_set: false,
            last_path: None,
            pending: Pending::default(),
            buf: vec![0; 128 * 1024],
        }
    }

    fn stream_err(&self, op: &'static str, source: io::Error) -> UnpackError {
        let context = match &self.last_path {
            Some(p) => format!("after entry {p:?}"),
            None => "at start of archive".to_string(),
        };
        UnpackError::Stream {
            context,
            op,
            source,
        }
    }

    /// Extracts every entry and returns the sha256 of the whole uncompressed stream.
    fn extract<R: Read + Send>(&mut self, reader: R) -> Result<[u8; 32], UnpackError> {
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel(4);
            let limits = self.limits.clone();
            let producer = scope.spawn(move || produce(reader, tx, &limits));
            let result = self.extract_from(ChannelReader {
                rx,
                cur: Vec::new(),
                pos: 0,
                done: false,
            });
            // On error the reader (and its channel) is gone: the producer's
            // next send fails and it stops.
            let digest = producer
                .join()
                .map_err(|_| self.stream_err("hashing thread", io::Error::other("panicked")))?;
            result.map(|()| digest)
        })
    }

    /// Extracts every entry, then reads the stream to its end.
    fn extract_from(&mut self, pipe: ChannelReader) -> Result<(), UnpackError> {
        let mut archive = tar::Archive::new(pipe);
        let entries = archive
            .entries()
            .map_err(|e| self.stream_err("reading archive", e))?
            .raw(true);
        for entry in entries {
            let mut entry = entry.map_err(|e| self.stream_err("reading tar header", e))?;
            self.handle_entry(&mut entry)?;
        }
        if let Some(path) = self.pending.header_path.take() {
            return Err(UnpackError::InvalidHeader {
                path,
                reason: "extension header not followed by an entry".to_string(),
            });
        }
        // The diff_id covers the whole stream, including the end-of-archive
        // blocks and any padding; reading to the end also makes the gzip
        // decoder check its trailer.
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink())
            .map_err(|e| self.stream_err("reading past the end of the archive", e))?;
        Ok(())
    }

    fn read_extension<R: Read>(
        entry: &mut tar::Entry<'_, R>,
        path: &str,
        kind: &'static str,
    ) -> Result<Vec<u8>, UnpackError> {
        let size = entry.size();
        if size > MAX_EXTENSION_HEADER {
            return Err(UnpackError::OversizedHeader {
                path: path.to_string(),
                kind,
                size,
            });
        }
        let mut data = Vec::with_capacity(size as usize);
        entry
            .take(size)
            .read_to_end(&mut data)
            .map_err(|source| UnpackError::Io {
                path: path.to_string(),
                op: "reading extension header",
                source,
            })?;
        if data.len() as u64 != size {
            return Err(UnpackError::Truncated {
                path: path.to_string(),
                expected: size,
                actual: data.len() as u64,
            });
        }
        Ok(data)
    }

    fn handle_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let header = entry.header().clone();
        let ty = header.entry_type().as_byte();
        let header_path = String::from_utf8_lossy(&header.path_bytes()).into_owned();

        // Extension headers describe the next entry.
        let duplicate = |what: &str| UnpackError::InvalidHeader {
            path: header_path.clone(),
            reason: format!("two {what} headers for one entry"),
        };
        match ty {
            b'L' => {
                let mut data = Self::read_extension(entry, &header_path, "GNU long name header")?;
                while data.last() == Some(&0) {
                    data.pop();
                }
                if self.pending.long_name.replace(data).is_some() {
                    return Err(duplicate("GNU long name"));
                }
                self.pending.header_path = Some(header_path);
                return Ok(());
            }
            b'K' => {
                let mut data = Self::read_extension(entry, &header_path, "GNU long link header")?;
                while data.last() == Some(&0) {
                    data.pop();
                }
                if self.pending.long_link.replace(data).is_some() {
                    return Err(duplicate("GNU long link"));
                }
                self.pending.header_path = Some(header_path);
                return Ok(());
            }
            b'x' => {
                let data = Self::read_extension(entry, &header_path, "PAX header")?;
                if self.pending.pax.replace(data).is_some() {
                    return Err(duplicate("PAX"));
                }
                self.pending.header_path = Some(header_path);
                return Ok(());
            }
            b'g' => {
                // Global PAX headers are read (bounded) and ignored.
                Self::read_extension(entry, &header_path, "PAX global header")?;
                return Ok(());
            }
            _ => {}
        }

        let pending = std::mem::take(&mut self.pending);
        let pax = match &pending.pax {
            Some(data) => parse_pax(data).map_err(|reason| UnpackError::InvalidHeader {
                path: header_path.clone(),
                reason: reason.to_string(),
            })?,
            None => Vec::new(),
        };
        let mut path_bytes = pending
            .long_name
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let mut link_bytes = pending
            .long_link
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        for (k, v) in &pax {
            match *k {
                b"path" => path_bytes = v.to_vec(),
                b"linkpath" => link_bytes = Some(v.to_vec()),
                _ => {}
            }
        }
        let path = String::from_utf8_lossy(&path_bytes).into_owned();
        self.last_path = Some(path.clone());
        self.stats.entries += 1;
        if self.stats.entries > self.limits.layer_entries {
            return Err(UnpackError::TooLarge {
                what: "entry count",
                limit: self.limits.layer_entries,
                key: "max_layer_entries",
            });
        }
        if let Some(b) = &self.limits.image {
            if b.entries.fetch_add(1, Ordering::Relaxed) + 1 > b.max_entries {
                return Err(UnpackError::TooLarge {
                    what: "image's entry count",
                    limit: b.max_entries,
                    key: "max_image_entries",
                });
            }
        }
        let bad = |reason: String| UnpackError::InvalidHeader {
            path: path.clone(),
            reason,
        };

        let mut uid = header.uid().map_err(|e| bad(format!("uid: {e}")))?;
        let mut gid = header.gid().map_err(|e| bad(format!("gid: {e}")))?;
        let mode = header.mode().map_err(|e| bad(format!("mode: {e}")))? & 0o7777;
        let header_mtime = header.mtime().map_err(|e| bad(format!("mtime: {e}")))?;
        let mut mtime = (
            i64::try_from(header_mtime).map_err(|_| bad("mtime out of range".to_string()))?,
            0,
        );
        let mut xattrs = Vec::new();
        for (k, v) in &pax {
            match *k {
                b"size" => {
                    let s =
                        parse_decimal(v).ok_or_else(|| bad("malformed PAX size".to_string()))?;
                    if s != entry.size() {
                        return Err(UnpackError::Unsupported {
                            path,
                            reason: format!(
                                "PAX size {s} differs from header size {}",
                                entry.size()
                            ),
                        });
                    }
                }
                b"uid" => {
                    uid = parse_decimal(v).ok_or_else(|| bad("malformed PAX uid".to_string()))?
                }
                b"gid" => {
                    gid = parse_decimal(v).ok_or_else(|| bad("malformed PAX gid".to_string()))?
                }
                b"mtime" => {
                    mtime =
                        parse_pax_time(v).ok_or_else(|| bad("malformed PAX mtime".to_string()))?
                }
                k if k.starts_with(b"GNU.sparse.") => {
                    return Err(UnpackError::Unsupported {
                        path,
                        reason: "GNU sparse file (PAX)".to_string(),
                    })
                }
                k if k.starts_with(b"SCHILY.xattr.") => {
                    let name = &k[b"SCHILY.xattr.".len()..];
                    if !xattr_allowed(name) {
                        // Only this module decides what overlayfs sees, and
                        // an image never sets trusted.* or security.* labels
                        // (SELinux, IMA, SMACK) on the host.
                        warn!(path = %path, xattr = %String::from_utf8_lossy(name), "ignoring an xattr outside the allowlist in layer");
                        continue;
                    }
                    let name = std::ffi::CString::new(name)
                        .ok()
                        .filter(|n| !n.as_bytes().is_empty())
                        .ok_or_else(|| bad("malformed xattr name".to_string()))?;
                    xattrs.push((name, v.to_vec()));
                }
                _ => {}
            }
        }
        let id = |v: u64, what: &str| {
            u32::try_from(v)
                .ok()
                .filter(|&v| v != u32::MAX)
                .ok_or_else(|| bad(format!("{what} {v} out of range")))
        };
        let meta = Meta {
            uid: id(uid, "uid")?,
            gid: id(gid, "gid")?,
            mode,
            mtime: TimeSpec::new(mtime.0, mtime.1),
            xattrs,
        };

        let kind = match ty {
            b'0' | b'7' => Kind::File,
            b'\0' if path_bytes.ends_with(b"/") => Kind::Dir,
            b'\0' => Kind::File,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' | b'4' => Kind::Device,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            b'S' => {
                return Err(UnpackError::Unsupported {
                    path,
                    reason: "GNU sparse file".to_string(),
                })
            }
            other => {
                return Err(UnpackError::Unsupported {
                    path,
                    reason: format!("entry type {:?}", other as char),
                })
            }
        };

        let comps = normalize_path(&path_bytes).map_err(|e| path_error(e, &path))?;

        if let Some((last, parents)) = comps.split_last() {
            if parents.iter().any(|c| c.starts_with(WHITEOUT_PREFIX)) {
                return Err(match self.mode {
                    Mode::Plain => UnpackError::WhiteoutNotAllowed { path },
                    Mode::OverlayLayer => UnpackError::InvalidWhiteout {
                        path,
                        reason: "whiteout name used as a parent directory",
                    },
                });
            }
            if last.starts_with(WHITEOUT_PREFIX) {
                return match self.mode {
                    Mode::Plain => Err(UnpackError::WhiteoutNotAllowed { path }),
                    Mode::OverlayLayer => self.whiteout(parents, last, &meta, &path),
                };
            }
        }

        match kind {
            Kind::Device => {
                self.stats.skipped_devices += 1;
                warn!(path = %path, "skipping device node in layer");
                Ok(())
            }
            Kind::Dir => self.make_dir(&comps, &meta, &path),
            _ if comps.is_empty() => Err(UnpackError::InvalidPath {
                path,
                reason: "the layer root can only be a directory",
            }),
            Kind::File => {
                let size = entry.size();
                self.make_file(&comps, &meta, entry, size, &path)?;
                self.stats.bytes += size;
                Ok(())
            }
            Kind::Symlink => self.make_symlink(&comps, &meta, link_bytes, &path),
            Kind::Hardlink => self.make_hardlink(&comps, link_bytes, &path),
            Kind::Fifo => self.make_fifo(&comps, &meta, &path),
        }
    }

    /// Opens the directory `comps` (relative to the root) as an O_PATH fd,
    /// never through a symlink; with `create`, missing components are created
    /// (0755, root-owned), one at a time.
    fn resolve_dir(&self, comps: &[&[u8]], create: bool) -> Result<OwnedFd, ResolveError> {
        let how = || resolve_how(OFlag::O_PATH | OFlag::O_DIRECTORY);
        let joined: Vec<u8> = if comps.is_empty() {
            b".".to_vec()
        } else {
            comps.join(&b'/')
        };
        match openat2(&self.root, joined.as_slice(), how()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) if create => {}
            Err(e) => return Err(ResolveError::from_errno("opening parent directory", e)),
        }
        let mut cur = openat2(&self.root, ".", how())
            .map_err(|e| ResolveError::from_errno("opening layer root", e))?;
        for c in comps {
            let next = match openat2(&cur, *c, how()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    let op = "creating parent directory";
                    let created = match mkdirat(&cur, *c, FileMode::from_bits_truncate(0o755)) {
                        Ok(()) => true,
                        Err(Errno::EEXIST) => false,
                        Err(e) => return Err(ResolveError::Io(op, e)),
                    };
                    let fd =
                        openat2(&cur, *c, how()).map_err(|e| ResolveError::from_errno(op, e))?;
                    if created {
                        // Deterministic regardless of umask or a setgid parent.
                        let real = openat(
                            &fd,
                            ".",
                            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                            FileMode::empty(),
                        )
                        .map_err(|e| ResolveError::Io(op, e))?;
                        fchown(&real, Some(Uid::from_raw(0)), Some(Gid::from_raw(0)))
                            .map_err(|e| ResolveError::Io(op, e))?;
                        fchmod(&real, FileMode::from_bits_truncate(0o755))
                            .map_err(|e| ResolveError::Io(op, e))?;
                    }
                    fd
                }
                Err(e) => return Err(ResolveError::from_errno("opening parent directory", e)),
            };
            cur = next;
        }
        Ok(cur)
    }

    /// Clears the way for a new entry at `parent/name`: nothing there is fine;
    /// an existing directory is kept if `keep_dir` (merge, returns true);
    /// anything else is removed (a directory recursively).
    fn clear_slot(
        &self,
        parent: &OwnedFd,
        name: &[u8],
        keep_dir: bool,
        path: &str,
    ) -> Result<bool, UnpackError> {
        match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(io_err(path, "inspecting existing path")(e)),
            Ok(st) => {
                let is_dir = is_dir_mode(st.st_mode);
                if is_dir && keep_dir {
                    return Ok(true);
                }
                if is_dir {
                    remove_tree_at(parent.as_fd(), name)
                        .map_err(io_err(path, "removing existing directory"))?;
                } else {
                    unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
                        .map_err(io_err(path, "removing existing path"))?;
                }
                Ok(false)
            }
        }
    }

    fn apply_meta(
        &self,
        fd: BorrowedFd<'_>,
        meta: &Meta,
        set_times: bool,
        path: &str,
    ) -> Result<(), UnpackError> {
        // Ownership first: chown clears setuid/setgid and file capabilities.
        fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(io_err(path, "setting ownership"))?;
        fchmod(fd, FileMode::from_bits_truncate(meta.mode))
            .map_err(io_err(path, "setting mode"))?;
        for (name, value) in &meta.xattrs {
            match fsetxattr(fd, name, value) {
                Ok(()) => {}
                Err(Errno::EOPNOTSUPP) => {
                    warn!(path = %path, xattr = %name.to_string_lossy(), "xattr not supported by the filesystem; skipped");
                }
                Err(e) => return Err(io_err(path, "setting xattr")(e)),
            }
        }
        if set_times {
            futimens(fd, &meta.mtime, &meta.mtime).map_err(io_err(path, "setting mtime"))?;
        }
        Ok(())
    }

    fn parent_of(&self, comps: &[&[u8]], path: &str) -> Result<OwnedFd, UnpackError> {
        self.resolve_dir(&comps[..comps.len() - 1], true)
            .map_err(|e| e.for_entry(path))
    }

    fn make_dir(&mut self, comps: &[&[u8]], meta: &Meta, path: &str) -> Result<(), UnpackError> {
        let Some(name) = comps.last() else {
            self.apply_meta(self.root.as_fd(), meta, false, path)?;
            self.root_meta_set = true;
            self.dir_times.insert(Vec::new(), meta.mtime);
            return Ok(());
        };
        let parent = self.parent_of(comps, path)?;
        if !self.clear_slot(&parent, name, true, path)? {
            mkdirat(&parent, *name, FileMode::from_bits_truncate(0o700))
                .map_err(io_err(path, "creating directory"))?;
        }
        let fd = openat(
            &parent,
            *name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            FileMode::empty(),
        )
        .map_err(io_err(path, "opening directory"))?;
        self.apply_meta(fd.as_fd(), meta, false, path)?;
        self.dir_times.insert(comps.join(&b'/'), meta.mtime);
        Ok(())
    }

    fn make_file<R: Read>(
        &mut self,
        comps: &[&[u8]],
        meta: &Meta,
        data: &mut R,
        size: u64,
        path: &str,
    ) -> Result<(), UnpackError> {
        let name = comps[comps.len() - 1];
        let parent = self.parent_of(comps, path)?;
        self.clear_slot(&parent, name, false, path)?;
        let fd = openat(
            &parent,
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            FileMode::from_bits_truncate(0o600),
        )
        .map_err(io_err(path, "creating file"))?;
        let mut file = File::from(fd);
        let mut copied = 0u64;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(UnpackError::Io {
                        path: path.to_string(),
                        op: "reading entry data",
                        source,
                    })
                }
            };
            file.write_all(&self.buf[..n])
                .map_err(|source| UnpackError::Io {
                    path: path.to_string(),
                    op: "writing file",
                    source,
                })?;
            copied += n as u64;
        }
        if copied != size {
            return Err(UnpackError::Truncated {
                path: path.to_string(),
                expected: size,
                actual: copied,
            });
        }
        self.apply_meta(file.as_fd(), meta, true, path)
    }

    fn make_symlink(
        &mut self,
        comps: &[&[u8]],
        meta: &Meta,
        link: Option<Vec<u8>>,
        path: &str,
    ) -> Result<(), UnpackError> {
        let target = link
            .filter(|l| !l.is_empty())
            .ok_or_else(|| UnpackError::InvalidHeader {
                path: path.to_string(),
                reason: "symlink without a target".to_string(),
            })?;
        let name = comps[comps.len() - 1];
        let parent = self.parent_of(comps, path)?;
        self.clear_slot(&parent, name, false, path)?;
        // The target is data: stored verbatim, never resolved here.
        symlinkat(target.as_slice(), &parent, name).map_err(io_err(path, "creating symlink"))?;
        set_owner_and_times(
            &parent,
            name,
            meta,
            path,
            "setting symlink ownership",
            "setting symlink mtime",
        )?;
        if !meta.xattrs.is_empty() {
            debug!(path = %path, "skipping xattrs on symlink");
        }
        Ok(())
    }

    fn make_hardlink(
        &mut self,
        comps: &[&[u8]],
        link: Option<Vec<u8>>,
        path: &str,
    ) -> Result<(), UnpackError> {
        let raw = link.unwrap_or_default();
        let target = String::from_utf8_lossy(&raw).into_owned();
        let tcomps = normalize_path(&raw).map_err(|e| link_target_error(e, path, &target))?;
        let missing = || UnpackError::HardlinkTargetMissing {
            path: path.to_string(),
            target: target.clone(),
        };
        let Some((tname, tparents)) = tcomps.split_last() else {
            return Err(UnpackError::HardlinkToDirectory {
                path: path.to_string(),
                target,
            });
        };
        if tcomps == comps {
            return Err(UnpackError::InvalidLinkTarget {
                path: path.to_string(),
                target,
                reason: "hardlink to itself",
            });
        }
        let tparent = self.resolve_dir(tparents, false).map_err(|e| match e {
            ResolveError::Symlink => UnpackError::LinkTargetThroughSymlink {
                path: path.to_string(),
                target: target.clone(),
            },
            ResolveError::NotDir | ResolveError::Missing => missing(),
            ResolveError::Io(op, e) => io_err(path, op)(e),
        })?;
        match fstatat(&tparent, *tname, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if is_dir_mode(st.st_mode) => {
                return Err(UnpackError::HardlinkToDirectory {
                    path: path.to_string(),
                    target,
                })
            }
            Ok(_) => {}
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Err(missing()),
            Err(e) => return Err(io_err(path, "inspecting hardlink target")(e)),
        }
        let name = comps[comps.len() - 1];
        let parent = self.parent_of(comps, path)?;
        self.clear_slot(&parent, name, false, path)?;
        // Flags 0: a symlink target is linked itself, never followed.
        match linkat(&tparent, *tname, &parent, name, AtFlags::empty()) {
            Ok(()) => Ok(()),
            Err(Errno::ENOENT) => Err(missing()),
            Err(e) => Err(io_err(path, "creating hardlink")(e)),
        }
    }

    fn make_fifo(&mut self, comps: &[&[u8]], meta: &Meta, path: &str) -> Result<(), UnpackError> {
        let name = comps[comps.len() - 1];
        let parent = self.parent_of(comps, path)?;
        self.clear_slot(&parent, name, false, path)?;
        mknodat(
            &parent,
            name,
            SFlag::S_IFIFO,
            FileMode::from_bits_truncate(0o600),
            0,
        )
        .map_err(io_err(path, "creating fifo"))?;
        // O_NONBLOCK: opening a FIFO for reading doesn't wait for a writer.
        let fd = openat(
            &parent,
            name,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            FileMode::empty(),
        )
        .map_err(io_err(path, "opening fifo"))?;
        let st = fstat(&fd).map_err(io_err(path, "inspecting fifo"))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
            return Err(io_err(path, "opening fifo")(Errno::EINVAL));
        }
        self.apply_meta(fd.as_fd(), meta, true, path)
    }

    /// OCI whiteouts to overlayfs: `.wh..wh..opq` marks its directory opaque,
    /// `.wh.<name>` becomes a 0/0 character device `<name>`.
    fn whiteout(
        &mut self,
        parents: &[&[u8]],
        last: &[u8],
        meta: &Meta,
        path: &str,
    ) -> Result<(), UnpackError> {
        let invalid = |reason| UnpackError::InvalidWhiteout {
            path: path.to_string(),
            reason,
        };
        if last == WHITEOUT_OPAQUE {
            let dir = self
                .resolve_dir(parents, true)
                .map_err(|e| e.for_entry(path))?;
            let real = openat(
                &dir,
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                FileMode::empty(),
            )
            .map_err(io_err(path, "opening directory to mark opaque"))?;
            fsetxattr(real.as_fd(), OPAQUE_XATTR, b"y")
                .map_err(io_err(path, "setting trusted.overlay.opaque"))?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        if last.starts_with(WHITEOUT_META_PREFIX) {
            return Err(invalid("unknown \".wh..wh.\" marker"));
        }
        let name = &last[WHITEOUT_PREFIX.len()..];
        if name.is_empty() {
            return Err(invalid("empty name after \".wh.\""));
        }
        if name == b"." || name == b".." {
            return Err(invalid("whiteout of \".\" or \"..\""));
        }
        let parent = self
            .resolve_dir(parents, true)
            .map_err(|e| e.for_entry(path))?;
        self.clear_slot(&parent, name, false, path)?;
        mknodat(&parent, name, SFlag::S_IFCHR, FileMode::empty(), 0)
            .map_err(io_err(path, "creating whiteout device"))?;
        set_owner_and_times(
            &parent,
            name,
            meta,
            path,
            "setting whiteout ownership",
            "setting whiteout mtime",
        )?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    /// Applies deferred directory mtimes and the root's default mode.
    fn finish(&mut self) -> Result<(), UnpackError> {
        for (p, t) in &self.dir_times {
            let path = if p.is_empty() {
                ".".to_string()
            } else {
                String::from_utf8_lossy(p).into_owned()
            };
            let fd = if p.is_empty() {
                openat(
                    &self.root,
                    ".",
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    FileMode::empty(),
                )
            } else {
                openat2(
                    &self.root,
                    p.as_slice(),
                    resolve_how(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW),
                )
            };
            let fd = match fd {
                Ok(fd) => fd,
                // Replaced by a later entry: its mtime no longer applies.
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::EXDEV) => continue,
                Err(e) => return Err(io_err(&path, "opening directory to set mtime")(e)),
            };
            futimens(&fd, t, t).map_err(io_err(&path, "setting directory mtime"))?;
        }
        if !self.root_meta_set {
            fchmod(&self.root, FileMode::from_bits_truncate(0o755))
                .map_err(io_err(".", "setting root mode"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap as Map;
    use std::ffi::CString;
    use std::fs;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use tar::{EntryType, Header};

    const MTIME: u64 = 1_600_000_000;

    /// Builds layers entry by entry with raw headers, so hostile names are possible.
    struct Layer {
        b: tar::Builder<Vec<u8>>,
    }

    fn header(name: &[u8], ty: EntryType, size: u64, mode: u32, owner: u64) -> Header {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(ty);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(owner);
        h.set_gid(owner);
        h.set_mtime(MTIME);
        h
    }

    impl Layer {
        fn new() -> Self {
            Layer {
                b: tar::Builder::new(Vec::new()),
            }
        }
        fn raw(&mut self, mut h: Header, data: impl Read) -> &mut Self {
            h.set_cksum();
            self.b.append(&h, data).unwrap();
            self
        }
        fn entry(
            &mut self,
            name: &str,
            ty: EntryType,
            mode: u32,
            owner: u64,
            data: &[u8],
        ) -> &mut Self {
            let h = header(name.as_bytes(), ty, data.len() as u64, mode, owner);
            self.raw(h, data)
        }
        fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.entry(name, EntryType::Regular, 0o644, 0, data)
        }
        fn dir(&mut self, name: &str) -> &mut Self {
            self.entry(name, EntryType::Directory, 0o755, 0, b"")
        }
        fn link(&mut self, name: &str, ty: EntryType, target: &[u8]) -> &mut Self {
            let mut h = header(name.as_bytes(), ty, 0, 0o777, 0);
            h.as_old_mut().linkname[..target.len()].copy_from_slice(target);
            self.raw(h, &b""[..])
        }
        fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
            self.b
                .append_pax_extensions(records.iter().copied())
                .unwrap();
            self
        }
        fn bytes(&mut self) -> Vec<u8> {
            let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
            b.into_inner().unwrap()
        }
    }

    fn diff_id(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    struct Fx {
        _tmp: tempfile::TempDir,
        parent: PathBuf,
        outside: PathBuf,
    }

    fn fx() -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path().join("layers");
        let outside = tmp.path().join("outside");
        fs::create_dir(&parent).unwrap();
        fs::create_dir(&outside).unwrap();
        Fx {
            _tmp: tmp,
            parent,
            outside,
        }
    }

    impl Fx {
        fn target(&self) -> PathBuf {
            self.parent.join("layer")
        }
        fn unpack(&self, data: &[u8]) -> Result<UnpackStats, UnpackError> {
            unpack_layer(data, &diff_id(data), &self.target())
        }
        /// Asserts the error case left nothing: no target, no temp dir.
        fn assert_clean(&self) {
            assert!(
                fs::symlink_metadata(self.target()).is_err(),
                "target exists"
            );
            let left: Vec<_> = fs::read_dir(&self.parent)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(left.is_empty(), "left behind in parent: {left:?}");
        }
        fn assert_outside_empty(&self) {
            let left: Vec<_> = fs::read_dir(&self.outside).unwrap().collect();
            assert!(left.is_empty(), "written outside: {left:?}");
        }
    }

    fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
        let p = CString::new(path.as_os_str().as_bytes()).unwrap();
        let n = CString::new(name).unwrap();
        let mut buf = vec![0u8; 256];
        // SAFETY: valid C strings and buffer.
        let rc =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if rc < 0 {
            return None;
        }
        buf.truncate(rc as usize);
        Some(buf)
    }

    /// Everything observable about a tree, for comparing extractions.
    /// `implicit`: directories created implicitly, whose mtime is "now".
    fn snapshot(root: &Path, implicit: &[&str]) -> Map<String, String> {
        fn walk(root: &Path, dir: &Path, implicit: &[&str], out: &mut Map<String, String>) {
            let mut entries: Vec<_> = fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for p in entries {
                let m = fs::symlink_metadata(&p).unwrap();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                let content = if m.file_type().is_file() {
                    hex::encode(Sha256::digest(fs::read(&p).unwrap()))
                } else if m.file_type().is_symlink() {
                    fs::read_link(&p).unwrap().display().to_string()
                } else {
                    String::new()
                };
                let xattr = if m.file_type().is_symlink() {
                    None
                } else {
                    lgetxattr(&p, "user.crius")
                };
                let masked = implicit.contains(&rel.as_str());
                out.insert(
                    rel,
                    format!(
                        "mode={:o} uid={} gid={} mtime={}.{} nlink={} rdev={} {content} {xattr:?}",
                        m.mode(),
                        m.uid(),
                        m.gid(),
                        if masked { 0 } else { m.mtime() },
                        if masked { 0 } else { m.mtime_nsec() },
                        m.nlink(),
                        m.rdev()
                    ),
                );
                if m.is_dir() {
                    walk(root, &p, implicit, out);
                }
            }
        }
        let mut out = Map::new();
        walk(root, root, implicit, &mut out);
        out
    }

    fn normal_layer() -> Vec<u8> {
        let mut l = Layer::new();
        l.entry("./", EntryType::Directory, 0o755, 0, b"")
            .entry("d/", EntryType::Directory, 0o700, 1000, b"")
            .entry(
                "d/exec",
                EntryType::Regular,
                0o755,
                1000,
                b"#!/bin/sh\necho hi\n",
            )
            .entry("d/plain", EntryType::Regular, 0o644, 1000, b"plain data")
            .entry("suid", EntryType::Regular, 0o4755, 0, b"suid binary")
            .link("abs", EntryType::Symlink, b"/etc/passwd")
            .link("dangling", EntryType::Symlink, b"no/such/target")
            .link("d/hard", EntryType::Link, b"d/plain")
            .entry("fifo", EntryType::Fifo, 0o640, 1000, b"")
            .pax(&[
                ("SCHILY.xattr.user.crius", b"v"),
                ("mtime", b"1700000000.123456789"),
            ])
            .file("x", b"with xattr")
            .entry("deep/", EntryType::Directory, 0o750, 0, b"")
            .file("deep/er/file", &vec![7u8; 300_000]);
        l.bytes()
    }

    #[test]
    fn normal_layer_all_compressions_identical() {
        let tar = normal_layer();
        let id = diff_id(&tar);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        let f = fx();
        let mut snaps = Vec::new();
        for (i, data) in [&tar, &gz, &zst].into_iter().enumerate() {
            let target = f.parent.join(format!("l{i}"));
            let stats = unpack_layer(&data[..], &id, &target).unwrap();
            assert_eq!(
                stats,
                UnpackStats {
                    entries: 12,
                    bytes: 18 + 10 + 11 + 10 + 300_000,
                    whiteouts: 0,
                    skipped_devices: 0
                }
            );
            snaps.push(snapshot(&target, &["deep/er"]));
        }
        assert_eq!(snaps[0], snaps[1]);
        assert_eq!(snaps[0], snaps[2]);
        // Only the three targets, no temp dirs.
        assert_eq!(fs::read_dir(&f.parent).unwrap().count(), 3);

        let t = f.parent.join("l0");
        let meta = |p: &str| fs::symlink_metadata(t.join(p)).unwrap();
        assert_eq!(meta("").mode() & 0o7777, 0o755);
        assert_eq!(meta("d").mode() & 0o7777, 0o700);
        assert_eq!((meta("d").uid(), meta("d").gid()), (1000, 1000));
        assert_eq!(
            meta("d").mtime(),
            MTIME as i64,
            "dir mtime set after children"
        );
        assert_eq!(meta("d/exec").mode() & 0o7777, 0o755);
        assert_eq!(meta("d/plain").mode() & 0o7777, 0o644);
        assert_eq!((meta("d/plain").uid(), meta("d/plain").gid()), (1000, 1000));
        assert_eq!(meta("suid").mode() & 0o7777, 0o4755);
        assert_eq!(fs::read(t.join("d/exec")).unwrap(), b"#!/bin/sh\necho hi\n");
        assert_eq!(
            fs::read_link(t.join("abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            fs::read_link(t.join("dangling")).unwrap(),
            Path::new("no/such/target")
        );
        assert_eq!(meta("d/hard").ino(), meta("d/plain").ino());
        assert_eq!(meta("d/plain").nlink(), 2);
        assert!(meta("fifo").file_type().is_fifo());
        assert_eq!(meta("fifo").mode() & 0o7777, 0o640);
        assert_eq!(
            lgetxattr(&t.join("x"), "user.crius").as_deref(),
            Some(&b"v"[..])
        );
        assert_eq!(
            (meta("x").mtime(), meta("x").mtime_nsec()),
            (1_700_000_000, 123_456_789)
        );
        assert_eq!(meta("d/plain").mtime(), MTIME as i64);
        assert_eq!(meta("abs").mtime(), MTIME as i64);
        assert_eq!(
            meta("deep/er").mode() & 0o7777,
            0o755,
            "implicit parents are 0755"
        );
    }

    #[test]
    fn whiteouts_become_overlay_format() {
        let f = fx();
        let mut l = Layer::new();
        l.dir("a/")
            .file("a/.wh.b", b"")
            .file("c/.wh..wh..opq", b"")
            .file("a/kept", b"k");
        let stats = f.unpack(&l.bytes()).unwrap();
        assert_eq!(stats.whiteouts, 2);
        let t = f.target();
        let wh = fs::symlink_metadata(t.join("a/b")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        assert!(fs::symlink_metadata(t.join("a/.wh.b")).is_err());
        assert!(fs::symlink_metadata(t.join("c/.wh..wh..opq")).is_err());
        assert!(
            fs::symlink_metadata(t.join("c")).unwrap().is_dir(),
            "opaque creates the dir"
        );
        assert_eq!(
            lgetxattr(&t.join("c"), "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(lgetxattr(&t.join("a"), "trusted.overlay.opaque"), None);
    }

    #[test]
    fn invalid_whiteouts_rejected() {
        for (name, want) in [
            ("a/.wh.", "empty name"),
            ("a/.wh..wh.plnk", "unknown"),
            ("a/.wh...", "whiteout of"),
            (".wh.x/y", "parent directory"),
        ] {
            let f = fx();
            let mut l = Layer::new();
            l.file(name, b"");
            let err = f.unpack(&l.bytes()).unwrap_err();
            assert!(
                matches!(err, UnpackError::InvalidWhiteout { .. }),
                "{name}: {err}"
            );
            assert!(err.to_string().contains(want), "{name}: {err}");
            f.assert_clean();
        }
    }

    #[test]
    fn whiteout_in_plain_mode_is_an_error() {
        let f = fx();
        let mut l = Layer::new();
        l.file("ok", b"x").file("a/.wh.b", b"");
        let err = unpack_tar_into(
            &l.bytes()[..],
            None,
            &f.target(),
            Mode::Plain,
            &Limits::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, UnpackError::WhiteoutNotAllowed { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("\"a/.wh.b\""), "{err}");
        f.assert_clean();
        // Without whiteouts, Plain works with no diff_id.
        let mut l = Layer::new();
        l.file("ok", b"x");
        unpack_tar_into(
            &l.bytes()[..],
            None,
            &f.target(),
            Mode::Plain,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(fs::read(f.target().join("ok")).unwrap(), b"x");
    }

    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }

    #[test]
    fn overlay_mount_honours_whiteouts() {
        let f = fx();
        let mut l1 = Layer::new();
        l1.dir("a/")
            .file("a/b", b"b")
            .file("a/c", b"c")
            .dir("o/")
            .file("o/old", b"old");
        let mut l2 = Layer::new();
        l2.file("a/.wh.b", b"")
            .dir("o/")
            .file("o/.wh..wh..opq", b"")
            .file("o/new", b"new");
        let (p1, p2) = (f.parent.join("l1"), f.parent.join("l2"));
        let d1 = l1.bytes();
        let d2 = l2.bytes();
        unpack_layer(&d1[..], &diff_id(&d1), &p1).unwrap();
        unpack_layer(&d2[..], &diff_id(&d2), &p2).unwrap();
        let mnt = f.outside.join("mnt");
        fs::create_dir(&mnt).unwrap();
        let opts = format!("lowerdir={}:{}", p2.display(), p1.display());
        nix::mount::mount(
            Some("overlay"),
            &mnt,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(opts.as_str()),
        )
        .expect("mount overlay");
        let guard = Umount(mnt.clone());
        assert!(
            fs::symlink_metadata(mnt.join("a/b")).is_err(),
            "whiteout hides a/b"
        );
        assert_eq!(fs::read(mnt.join("a/c")).unwrap(), b"c");
        assert!(
            fs::symlink_metadata(mnt.join("o/old")).is_err(),
            "opaque dir hides o/old"
        );
        assert_eq!(fs::read(mnt.join("o/new")).unwrap(), b"new");
        drop(guard);
    }

    #[test]
    fn hostile_paths_rejected() {
        for (name, want) in [
            ("../escape", "path escapes the layer root (\"..\")"),
            ("/abs/file", "path escapes the layer root (absolute path)"),
            ("a/../../x", "path escapes the layer root (\"..\")"),
        ] {
            let f = fx();
            let mut l = Layer::new();
            l.file("fine", b"x").file(name, b"pwned");
            let err = f.unpack(&l.bytes()).unwrap_err();
            assert!(
                matches!(err, UnpackError::PathEscape { .. }),
                "{name}: {err}"
            );
            assert_eq!(err.to_string(), format!("layer entry {name:?}: {want}"));
            f.assert_clean();
            assert!(fs::symlink_metadata(f.parent.parent().unwrap().join("escape")).is_err());
            assert!(fs::symlink_metadata(f.parent.join("escape")).is_err());
            assert!(fs::symlink_metadata("/abs").is_err());
            assert!(fs::symlink_metadata(f.parent.parent().unwrap().join("x")).is_err());
        }
    }

    #[test]
    fn symlinked_parent_cannot_escape() {
        let f = fx();
        let outside = f.outside.as_os_str().as_bytes().to_vec();
        for (link_target, victim) in [(&outside[..], "link/pwned"), (&b".."[..], "link/x")] {
            let mut l = Layer::new();
            l.link("link", EntryType::Symlink, link_target)
                .file(victim, b"pwned");
            let err = f.unpack(&l.bytes()).unwrap_err();
            assert!(
                matches!(err, UnpackError::PassesThroughSymlink { .. }),
                "{err}"
            );
            assert_eq!(
                err.to_string(),
                format!("layer entry {victim:?}: path passes through a symlink")
            );
            f.assert_clean();
            f.assert_outside_empty();
            assert!(fs::symlink_metadata(f.parent.join("x")).is_err());
        }
        // Same through a deeper path and for a directory entry.
        let mut l = Layer::new();
        l.dir("d/")
            .link("d/l", EntryType::Symlink, &outside)
            .dir("d/l/sub/");
        let err = f.unpack(&l.bytes()).unwrap_err();
        assert!(
            matches!(err, UnpackError::PassesThroughSymlink { .. }),
            "{err}"
        );
        f.assert_clean();
        f.assert_outside_empty();
    }

    #[test]
    fn hostile_hardlinks_rejected() {
        let f = fx();
        let passwd_links = fs::metadata("/etc/passwd").unwrap().nlink();
        let mut l = Layer::new();
        l.link("h", EntryType::Link, b"../../etc/passwd");
        let err = f.unpack(&l.bytes()).unwrap_err();
        assert!(matches!(err, UnpackError::LinkTargetEscape { .. }), "{err}");
        assert!(err.to_string().contains("\"../../etc/passwd\""), "{err}");
        f.assert_clean();

        let mut l = Layer::new();
        l.link("h", EntryType::Link, b"/etc/passwd");
        let err = f.unpack(&l.bytes()).unwrap_err();
        assert!(matches!(err, UnpackError::LinkTargetEscape { .. }), "{err}");
        f.assert_clean();
        assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), passwd_links);

        // Through a symlinked parent to a file outside.
        fs::write(f.outside.join("secret"), b"s").unwrap();
        let mut l = Layer::new();
        l.link("s", EntryType::Symlink, f.outside.as_os_str().as_bytes())
            .link("h", EntryType::Link, b"s/secret");
        let err = f.unpack(&l.bytes()).unwrap_err();
        assert!(
            matches!(err, UnpackError::LinkTargetThroughSymlink { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("path passes through a symlink"),
            "{err}"
        );
        f.assert_clean();
        assert_eq!(fs::metadata(f.outside.join("secret")).unwrap().nlink(), 1);

        // Target not in this layer; target a directory.
        let mut l = Layer::new();
        l.link("h", EntryType::Link, b"usr/bin/sh");
        let err = f.unpack(&l.bytes()).unwrap_err();
        assert!(
            matches!(err, UnpackError::HardlinkTargetMissing { .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("hardlink target \"usr/bin/sh\" not in layer"),
            "{err}"
        );
        f.assert_clean();
        let mut l = Layer::new();
        l.dir("d/").link("h", EntryType::Link, b"d");
        let err = f.unpack(&l.bytes()).unwrap_err();
        assert!(
            matches!(err, UnpackError::HardlinkToDirectory { .. }),
            "{err}"
        );
        f.assert_clean();
    }

    #[test]
    fn hardlink_to_symlink_links_the_symlink() {
        let f = fx();
        let mut l = Layer::new();
        l.link("s", EntryType::Symlink, f.outside.as_os_str().as_bytes())
            .link("h", EntryType::Link, b"s");
        f.unpack(&l.bytes()).unwrap();
        let t = f.target();
        let (s, h) = (
            fs::symlink_metadata(t.join("s")).unwrap(),
            fs::symlink_metadata(t.join("h")).unwrap(),
        );
        assert!(h.file_type().is_symlink());
        assert_eq!(s.ino(), h.ino());
        f.assert_outside_empty();
    }

    #[test]
    fn oversized_extension_headers_rejected() {
        let big = 2u64 << 20;
        for (ty, kind) in [
            (EntryType::GNULongName, "GNU long name"),
            (EntryType::XHeader, "PAX header"),
        ] {
            let f = fx();
            let mut l = Layer::new();
            l.raw(
                header(b"././@LongLink", ty, big, 0o644, 0),
                io::repeat(b'a').take(big),
            )
            .file("victim", b"x");
            let err = f.unpack(&l.bytes()).unwrap_err();
            assert!(matches!(err, UnpackError::OversizedHeader { .. }), "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains("oversized header") && msg.contains(kind),
                "{msg}"
            );
            f.assert_clean();
        }
    }

    #[test]
    fn long_names_and_pax_paths_work() {
        let f = fx();
        let long = format!("{}/{}", "d".repeat(150), "f".repeat(120));
        let mut l = Layer::new();
        l.raw(
            header(
                b"././@LongLink",
                EntryType::GNULongName,
                long.len() as u64 + 1,
                0o644,
                0,
            ),
            format!("{long}\0").as_bytes(),
        )
        .file("short-name-ignored", b"via gnu");
        l.pax(&[("path", b"p/pax-name"), ("uid", b"4242"), ("gid", b"4343")])
            .file("ignored-too", b"via pax");
        l.raw(
            header(b"././@LongLink", EntryType::GNULongLink, 11, 0o644, 0),
            &b"p/pax-name\0"[..],
        )
        .link("hl", EntryType::Link, b"wrong");
        f.unpack(&l.bytes()).unwrap();
        let t = f.target();
        assert_eq!(fs::read(t.join(&long)).unwrap(), b"via gnu");
        let m = fs::metadata(t.join("p/pax-name")).unwrap();
        assert_eq!((m.uid(), m.gid()), (4242, 4343));
        assert_eq!(fs::metadata(t.join("hl")).unwrap().ino(), m.ino());
        assert!(fs::symlink_metadata(t.join("short-name-ignored")).is_err());
    }

    #[test]
    fn wrong_diff_id_cleans_up() {
        let f = fx();
        let mut l = Layer::new();
        l.dir("ro/").file("ro/f", b"x");
        let mut data = l.bytes();
        // A read-only directory inside must not prevent cleanup.
        let mut ro = Layer::new();
        ro.entry("ro/", EntryType::Directory, 0o500, 0, b"");
        data.truncate(data.len() - 1024);
        data.extend_from_slice(&ro.bytes());
        let wrong = diff_id(b"something else");
        let err = unpack_layer(&data[..], &wrong, &f.target()).unwrap_err();
        assert!(matches!(err, UnpackError::DiffIdMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&diff_id(&data)), "{err}");
        f.assert_clean();
        let err = unpack_layer(&data[..], "sha256:abc", &f.target()).unwrap_err();
        assert!(matches!(err, UnpackError::InvalidDiffId { .. }), "{err}");
        f.assert_clean();
        unpack_layer(&data[..], &diff_id(&data), &f.target()).unwrap();
        assert_eq!(
            fs::metadata(f.target().join("ro")).unwrap().mode() & 0o7777,
            0o500
        );
    }

    #[test]
    fn truncated_archive_cleans_up() {
        let f = fx();
        let mut l = Layer::new();
        l.dir("d/")
            .file("d/ok", b"fine")
            .file("d/big", &vec![1u8; 10_000]);
        let data = l.bytes();
        let cut = &data[..512 * 4 + 3000];
        let err = f.unpack(cut).unwrap_err();
        assert!(matches!(err, UnpackError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("\"d/big\""), "{err}");
        f.assert_clean();
        // Cut inside a header block.
        let err = f.unpack(&data[..512 * 3 + 100]).unwrap_err();
        assert!(matches!(err, UnpackError::Stream { .. }), "{err}");
        assert!(err.to_string().contains("after entry \"d/ok\""), "{err}");
        f.assert_clean();
        // Truncated gzip stream.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&data).unwrap();
        let gz = e.finish().unwrap();
        let err = unpack_layer(&gz[..gz.len() / 2], &diff_id(&data), &f.target()).unwrap_err();
        assert!(err.to_string().contains("layer "), "{err}");
        f.assert_clean();
    }

    #[test]
    fn devices_skipped() {
        let f = fx();
        let mut h = header(b"dev/null", EntryType::Char, 0, 0o666, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        let mut b = header(b"dev/sda", EntryType::Block, 0, 0o660, 0);
        b.set_device_major(8).unwrap();
        let mut l = Layer::new();
        l.raw(h, &b""[..]).raw(b, &b""[..]).file("f", b"x");
        let stats = f.unpack(&l.bytes()).unwrap();
        assert_eq!(stats.skipped_devices, 2);
        assert_eq!(stats.entries, 3);
        assert!(fs::symlink_metadata(f.target().join("dev/null")).is_err());
        assert!(fs::symlink_metadata(f.target().join("dev/sda")).is_err());
    }

    #[test]
    fn target_exists_untouched() {
        let f = fx();
        fs::create_dir(f.target()).unwrap();
        fs::write(f.target().join("keep"), b"old").unwrap();
        let mut l = Layer::new();
        l.file("keep", b"new");
        let err = f.unpack(&l.bytes()).unwrap_err();
        assert!(matches!(err, UnpackError::TargetExists { .. }), "{err}");
        assert_eq!(fs::read(f.target().join("keep")).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(&f.parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("layer")]);
        // A dangling symlink counts as existing too.
        let t2 = f.parent.join("l2");
        std::os::unix::fs::symlink("nowhere", &t2).unwrap();
        let d = l.bytes();
        let err = unpack_layer(&d[..], &diff_id(&d), &t2).unwrap_err();
        assert!(matches!(err, UnpackError::TargetExists { .. }), "{err}");
    }

    #[test]
    fn replacement_semantics() {
        let f = fx();
        let mut l = Layer::new();
        l.file("a", b"file")
            .dir("a/") // file replaced by dir
            .file("a/x", b"x")
            .dir("b/")
            .file("b/y", b"y")
            .file("b", b"now a file") // dir replaced recursively by file
            .dir("c/")
            .file("c/z", b"z")
            .entry("c/", EntryType::Directory, 0o711, 7, b"") // merge, metadata updated
            .file("s", b"1")
            .link("s", EntryType::Symlink, b"target") // file replaced by symlink
            .file("s", b"2"); // symlink replaced by file (not written through)
        f.unpack(&l.bytes()).unwrap();
        let t = f.target();
        assert_eq!(fs::read(t.join("a/x")).unwrap(), b"x");
        assert_eq!(fs::read(t.join("b")).unwrap(), b"now a file");
        let c = fs::metadata(t.join("c")).unwrap();
        assert_eq!((c.mode() & 0o7777, c.uid()), (0o711, 7));
        assert_eq!(fs::read(t.join("c/z")).unwrap(), b"z");
        assert!(fs::symlink_metadata(t.join("s")).unwrap().is_file());
        assert_eq!(fs::read(t.join("s")).unwrap(), b"2");
        assert!(fs::symlink_metadata(t.join("target")).is_err());
    }

    #[test]
    fn file_in_place_of_parent_is_an_error() {
        let f = fx();
        let mut l = Layer::new();
        l.file("a", b"x").file("a/b", b"y");
        let err = f.unpack(&l.bytes()).unwrap_err();
        assert!(
            matches!(err, UnpackError::ParentNotDirectory { .. }),
            "{err}"
        );
        f.assert_clean();
    }

    #[test]
    fn xattr_allowlist() {
        for (name, ok) in [
            (&b"security.capability"[..], true),
            (b"user.mime_type", true),
            (b"system.posix_acl_access", true),
            (b"system.posix_acl_default", true),
            (b"user.overlay.opaque", false),
            (b"trusted.overlay.opaque", false),
            (b"trusted.anything", false),
            (b"security.selinux", false),
            (b"security.ima", false),
            (b"system.nfs4_acl", false),
            (b"", false),
        ] {
            assert_eq!(xattr_allowed(name), ok, "{}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn overlay_private_xattrs_ignored() {
        let f = fx();
        let mut l = Layer::new();
        l.pax(&[
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            ("SCHILY.xattr.user.crius", b"ok"),
        ])
        .dir("d/");
        f.unpack(&l.bytes()).unwrap();
        let d = f.target().join("d");
        assert_eq!(lgetxattr(&d, "trusted.overlay.redirect"), None);
        assert_eq!(lgetxattr(&d, "user.crius").as_deref(), Some(&b"ok"[..]));
    }

    #[test]
    fn path_normalization_table() {
        let ok: &[(&str, &[&str])] = &[
            ("a", &["a"]),
            ("./a", &["a"]),
            ("././a/b/", &["a", "b"]),
            ("a//b/./c", &["a", "b", "c"]),
            (".", &[]),
            ("./", &[]),
            ("./.", &[]),
            ("..a/b..", &["..a", "b.."]),
            (".wh.x", &[".wh.x"]),
        ];
        for (raw, want) in ok {
            let got = normalize_path(raw.as_bytes()).unwrap();
            let want: Vec<&[u8]> = want.iter().map(|s| s.as_bytes()).collect();
            assert_eq!(got, want, "{raw}");
        }
        let long = "a/".repeat(2100);
        let bad: &[(&[u8], PathError)] = &[
            (b"", PathError::Empty),
            (b"/", PathError::Absolute),
            (b"/etc/passwd", PathError::Absolute),
            (b"//x", PathError::Absolute),
            (b"..", PathError::DotDot),
            (b"../x", PathError::DotDot),
            (b"a/../b", PathError::DotDot),
            (b"a/..", PathError::DotDot),
            (b"./../x", PathError::DotDot),
            (b"a\0b", PathError::Nul),
            (long.as_bytes(), PathError::TooLong),
        ];
        for (raw, want) in bad {
            assert_eq!(
                normalize_path(raw),
                Err(*want),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn pax_and_time_parsing() {
        let recs = parse_pax(b"12 path=a/b\n20 SCHILY.xattr.k=v\n").unwrap();
        assert_eq!(
            recs,
            vec![
                (&b"path"[..], &b"a/b"[..]),
                (&b"SCHILY.xattr.k"[..], &b"v"[..])
            ]
        );
        assert_eq!(
            parse_pax(b"13 k=with=eq\n").unwrap(),
            vec![(&b"k"[..], &b"with=eq"[..])]
        );
        for bad in [
            &b"5 path=a/b\n"[..],
            b"x path=a\n",
            b"13 path=a/bX",
            b"99 k=v\n",
            b"6 =v\n\n",
        ] {
            assert!(parse_pax(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_pax_time(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_pax_time(b"1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(parse_pax_time(b"1.1234567891"), Some((1, 123_456_789)));
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"-3"), Some((-3, 0)));
        assert_eq!(parse_pax_time(b"1.x"), None);
        assert_eq!(parse_pax_time(b""), None);
        assert_eq!(detect_compression(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            detect_compression(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(
            detect_compression(&[0x50, 0x2a, 0x4d, 0x18]),
            Compression::Zstd
        );
        assert_eq!(detect_compression(b"etc/"), Compression::None);
        assert_eq!(detect_compression(b""), Compression::None);
    }

    #[test]
    fn pax_size_mismatch_and_sparse_rejected() {
        let f = fx();
        let mut l = Layer::new();
        l.pax(&[("size", b"99999")]).file("f", b"abc");
        let err = f.unpack(&l.bytes()).unwrap_err();
        assert!(matches!(err, UnpackError::Unsupported { .. }), "{err}");
        f.assert_clean();
        let mut l = Layer::new();
        l.entry("sp", EntryType::GNUSparse, 0o644, 0, b"");
        let err = f.unpack(&l.bytes()).unwrap_err();
        assert!(err.to_string().contains("sparse"), "{err}");
        f.assert_clean();
    }

    #[test]
    fn root_entry_and_empty_layer() {
        let f = fx();
        let mut l = Layer::new();
        l.entry(".", EntryType::Directory, 0o750, 0, b"");
        f.unpack(&l.bytes()).unwrap();
        assert_eq!(fs::metadata(f.target()).unwrap().mode() & 0o7777, 0o750);
        let t2 = f.parent.join("empty");
        let stats = unpack_layer(&b""[..], &diff_id(b""), &t2).unwrap();
        assert_eq!(stats, UnpackStats::default());
        assert_eq!(fs::metadata(&t2).unwrap().mode() & 0o7777, 0o755);
        // The root can't become a file.
        let f = fx();
        let mut l = Layer::new();
        l.file("./", b"");
        assert!(f.unpack(&l.bytes()).is_err());
        f.assert_clean();
    }
}
