//! Directory-fd primitives extraction is built on: the private temp dir a
//! layer is extracted into (removed unless it is renamed into place), a
//! non-replacing rename between directory fds, removal of a tree without
//! following symlinks, and the `openat2` resolution every entry's parent is
//! opened (or created) with. std and nix offer none of these as such: each
//! is a few system calls whose flags are the point.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, renameat, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fchmodat, fstat, fstatat, mkdirat, FchmodatFlags, Mode as FileMode};
use nix::unistd::{fchown, unlinkat, Gid, Uid, UnlinkatFlags};
use tracing::warn;

use super::UnpackError;

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
pub(super) struct TempDir<'a> {
    parent: BorrowedFd<'a>,
    pub(super) name: Vec<u8>,
    pub(super) armed: bool,
}

impl<'a> TempDir<'a> {
    pub(super) fn create(parent: BorrowedFd<'a>, target_name: &[u8]) -> nix::Result<Self> {
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
pub(super) fn remove_tree_at(parent: BorrowedFd<'_>, name: &[u8]) -> nix::Result<()> {
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

/// Whether an `st_mode` is a directory's.
pub(super) fn is_dir_mode(mode: libc::mode_t) -> bool {
    mode & libc::S_IFMT == libc::S_IFDIR
}

/// `fsetxattr(2)` on an fd (nix has no binding for it).
pub(super) fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> nix::Result<()> {
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

/// `openat2` resolution that never leaves the directory and never follows
/// a symlink (or magic link) on the way.
pub(super) fn resolve_how(flags: OFlag) -> OpenHow {
    OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    )
}

/// Why resolving a directory inside the layer failed.
pub(super) enum ResolveError {
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

    pub(super) fn for_entry(self, path: &str) -> UnpackError {
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

/// Opens the directory `comps` (relative to `root`) as an O_PATH fd,
/// never through a symlink; with `create`, missing components are created
/// (0755, root-owned), one at a time.
pub(super) fn resolve_dir(
    root: &OwnedFd,
    comps: &[&[u8]],
    create: bool,
) -> Result<OwnedFd, ResolveError> {
    let how = || resolve_how(OFlag::O_PATH | OFlag::O_DIRECTORY);
    let joined: Vec<u8> = if comps.is_empty() {
        b".".to_vec()
    } else {
        comps.join(&b'/')
    };
    match openat2(root, joined.as_slice(), how()) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) if create => {}
        Err(e) => return Err(ResolveError::from_errno("opening parent directory", e)),
    }
    let mut cur =
        openat2(root, ".", how()).map_err(|e| ResolveError::from_errno("opening layer root", e))?;
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
                let fd = openat2(&cur, *c, how()).map_err(|e| ResolveError::from_errno(op, e))?;
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
