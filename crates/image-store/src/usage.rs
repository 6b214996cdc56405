//! Disk usage of the store (ImageFsInfo), walked with directory fds: a
//! layer may nest entries far past PATH_MAX, where any path-based walk
//! fails. Each directory is opened relative to its parent and left through
//! `..`, so only one directory is open at a time however deep the tree.

use nix::dir::{Dir, Type};
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode};
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// Bytes (allocated blocks) of everything but directories, and inodes of
/// everything (directories included) beneath a root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsUsage {
    pub bytes: u64,
    pub inodes: u64,
}

fn open_dir(at: std::os::fd::BorrowedFd<'_>, name: &std::ffi::CStr) -> nix::Result<OwnedFd> {
    openat(
        at,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The subdirectories and the usage of one directory's other entries.
fn scan(dir: &OwnedFd, u: &mut FsUsage) -> nix::Result<Vec<CString>> {
    let mut d = Dir::openat(
        dir.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut subdirs = Vec::new();
    for e in d.iter() {
        let e = e?;
        let name = e.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        u.inodes += 1;
        let is_dir = match e.file_type() {
            Some(Type::Directory) => true,
            Some(_) => false,
            None => fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                .unwrap_or(false),
        };
        if is_dir {
            subdirs.push(name.to_owned());
        } else if let Ok(st) = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            // Entries removed meanwhile (a GC, an unpack's temp dir) are
            // skipped, not an error.
            u.bytes += st.st_blocks as u64 * 512;
        }
    }
    Ok(subdirs)
}

pub fn usage(root: &Path) -> std::io::Result<FsUsage> {
    let mut u = FsUsage::default();
    let mut cur = nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // One list of directories still to visit per level; depth = its length.
    let mut pending: Vec<Vec<CString>> = vec![scan(&cur, &mut u)?];
    let dotdot = CString::new("..").unwrap_or_default();
    while let Some(level) = pending.last_mut() {
        match level.pop() {
            Some(name) => match open_dir(cur.as_fd(), &name) {
                Ok(fd) => {
                    cur = fd;
                    let subs = scan(&cur, &mut u).unwrap_or_default();
                    pending.push(subs);
                }
                // Gone or replaced meanwhile: skip it.
                Err(_) => continue,
            },
            None => {
                pending.pop();
                if pending.is_empty() {
                    break;
                }
                cur = open_dir(cur.as_fd(), &dotdot)?;
            }
        }
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_and_dirs() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::fs::write(t.path().join("a/b/f"), vec![1u8; 10000]).unwrap();
        std::fs::write(t.path().join("g"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", t.path().join("a/link")).unwrap();
        let u = usage(t.path()).unwrap();
        assert_eq!(u.inodes, 5, "a, a/b, a/b/f, a/link, g");
        assert!(u.bytes >= 12288, "{u:?}");
    }

    #[test]
    fn nesting_past_path_max_is_measured() {
        // 300 levels of 30-byte names: ~9300 bytes of path, past PATH_MAX.
        let t = tempfile::tempdir().unwrap();
        let name = CString::new("d".repeat(30)).unwrap();
        let mut fd = nix::fcntl::open(
            t.path(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        for _ in 0..300 {
            nix::sys::stat::mkdirat(&fd, name.as_c_str(), Mode::from_bits_truncate(0o755)).unwrap();
            fd = open_dir(fd.as_fd(), &name).unwrap();
        }
        let f = openat(
            &fd,
            "deep",
            OFlag::O_WRONLY | OFlag::O_CREAT,
            Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        nix::unistd::write(&f, &[7u8; 100]).unwrap();
        let u = usage(t.path()).unwrap();
        assert_eq!(u.inodes, 301);
        assert!(u.bytes > 0);
        // Clean up bottom-up through fds (remove_dir_all would fail too).
        drop(f);
        nix::unistd::unlinkat(&fd, "deep", nix::unistd::UnlinkatFlags::NoRemoveDir).unwrap();
        for _ in 0..300 {
            let parent = open_dir(fd.as_fd(), &CString::new("..").unwrap()).unwrap();
            nix::unistd::unlinkat(
                &parent,
                name.as_c_str(),
                nix::unistd::UnlinkatFlags::RemoveDir,
            )
            .unwrap();
            fd = parent;
        }
    }
}
