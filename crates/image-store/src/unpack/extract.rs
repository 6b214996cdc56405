//! The extractor: one tar entry at a time into the temp dir, every
//! filesystem call relative to a directory fd. Parents are opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, final components are
//! made with `*at` calls that never follow a symlink, and OCI whiteouts
//! become overlayfs whiteouts (or errors, in [`Mode::Plain`]). Directory
//! mtimes are applied last, since creating children changes them.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fstat, fstatat, futimens, mkdirat, mknodat, utimensat, Mode as FileMode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use tracing::{debug, warn};

use super::dirs::{fsetxattr, is_dir_mode, remove_tree_at, resolve_dir, resolve_how, ResolveError};
use super::headers::{self, Kind, Meta, Names, Pending};
use super::paths::{link_target_error, normalize_path, path_error};
use super::stream::{self, ChannelReader};
use super::{Limits, Mode, UnpackError, UnpackStats};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";

fn io_err<'a>(path: &'a str, op: &'static str) -> impl FnOnce(Errno) -> UnpackError + 'a {
    move |e| UnpackError::Io {
        path: path.to_string(),
        op,
        source: e.into(),
    }
}

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

/// Extracts one layer's entries into `root` (the temp dir), counting them
/// in `stats`.
pub(super) struct Extractor {
    pub(super) root: OwnedFd,
    mode: Mode,
    limits: Limits,
    pub(super) stats: UnpackStats,
    /// Directory mtimes, applied after all entries (children change them).
    dir_times: BTreeMap<Vec<u8>, TimeSpec>,
    root_meta_set: bool,
    last_path: Option<String>,
    pending: Pending,
    buf: Vec<u8>,
}

impl Extractor {
    pub(super) fn new(root: OwnedFd, mode: Mode, limits: Limits) -> Self {
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
    pub(super) fn extract<R: Read + Send>(&mut self, reader: R) -> Result<[u8; 32], UnpackError> {
        let limits = self.limits.clone();
        let (result, digest) = stream::pipe(reader, &limits, |pipe| self.extract_from(pipe));
        let digest =
            digest.map_err(|_| self.stream_err("hashing thread", io::Error::other("panicked")))?;
        result.map(|()| digest)
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
        if let Some(path) = self.pending.unfinished() {
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

    /// Counts one entry against the layer's and the image's caps.
    fn count_entry(&mut self) -> Result<(), UnpackError> {
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
        Ok(())
    }

    fn handle_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let header = entry.header().clone();
        let ty = header.entry_type().as_byte();
        let header_path = String::from_utf8_lossy(&header.path_bytes()).into_owned();

        // Extension headers describe the next entry.
        if self.pending.absorb(entry, ty, &header_path)? {
            return Ok(());
        }
        let (pax_data, mut names) = std::mem::take(&mut self.pending).finish(&header);
        let pax = headers::pax_records(pax_data.as_deref(), &header_path)?;
        names.apply_pax(&pax);
        let Names {
            path: path_bytes,
            link: link_bytes,
        } = names;
        let path = String::from_utf8_lossy(&path_bytes).into_owned();
        self.last_path = Some(path.clone());
        self.count_entry()?;
        let meta = headers::meta(&header, entry.size(), &pax, &path)?;
        let kind = headers::kind(ty, &path_bytes, &path)?;

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
        resolve_dir(&self.root, &comps[..comps.len() - 1], true).map_err(|e| e.for_entry(path))
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
        let tparent = resolve_dir(&self.root, tparents, false).map_err(|e| match e {
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
            let dir = resolve_dir(&self.root, parents, true).map_err(|e| e.for_entry(path))?;
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
        let parent = resolve_dir(&self.root, parents, true).map_err(|e| e.for_entry(path))?;
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
    pub(super) fn finish(&mut self) -> Result<(), UnpackError> {
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
