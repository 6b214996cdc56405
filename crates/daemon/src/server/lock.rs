//! One crius per root: an exclusive `flock` on `<root>/crius.lock`, held for
//! the daemon's lifetime. The kernel drops it when the process dies, even by
//! SIGKILL, so a crashed daemon never leaves a stale lock behind.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::ServerError;

pub const LOCK_FILE: &str = "crius.lock";

/// Held while the daemon runs; dropping it releases the lock.
#[derive(Debug)]
pub struct RootLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl RootLock {
    pub fn acquire(root: &Path) -> Result<Self, ServerError> {
        let path = root.join(LOCK_FILE);
        let io = |e: std::io::Error| ServerError::Io {
            what: format!("opening lock file {}", path.display()),
            source: e,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(ServerError::RootInUse {
                    root: root.to_path_buf(),
                    holder: holder.trim().parse().ok(),
                });
            }
            Err((_, errno)) => return Err(io(errno.into())),
        };
        // Record our pid so a refused second daemon can name the holder.
        let write_pid = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            writeln!(f, "{}", std::process::id())?;
            f.sync_all()
        };
        write_pid(&mut lock).map_err(io)?;
        Ok(Self { _lock: lock, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
