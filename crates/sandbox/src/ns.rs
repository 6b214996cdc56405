//! Pinned namespaces. A fresh OS thread unshares the namespaces (network,
//! IPC and UTS are per-thread, so the daemon's other threads are untouched),
//! sets the hostname and brings loopback up inside them, and bind-mounts
//! `/proc/thread-self/ns/<kind>` onto files in the pod's directory. The
//! thread then ends; the bind mounts keep the namespaces alive until
//! [`unpin`]. No process has to stay running for the pod.

use crate::{io, sys, SandboxError};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// nsfs's statfs magic: a path whose filesystem is nsfs is a pinned namespace.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// The namespace kinds a pod can pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsKind {
    Net,
    Ipc,
    Uts,
}

impl NsKind {
    pub const ALL: [NsKind; 3] = [NsKind::Net, NsKind::Ipc, NsKind::Uts];

    /// The file name under /proc/<pid>/ns and under the pod's directory.
    pub fn name(self) -> &'static str {
        match self {
            NsKind::Net => "net",
            NsKind::Ipc => "ipc",
            NsKind::Uts => "uts",
        }
    }

    fn flag(self) -> CloneFlags {
        match self {
            NsKind::Net => CloneFlags::CLONE_NEWNET,
            NsKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NsKind::Uts => CloneFlags::CLONE_NEWUTS,
        }
    }
}

/// Paths of the pinned namespace files (None: not pinned, e.g. the host's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pinned {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

/// The path of a kind's pin file under `dir`.
pub fn pin_path(dir: &Path, kind: NsKind) -> PathBuf {
    dir.join(kind.name())
}

/// Creates new namespaces of `kinds` and pins them under `dir` (created if
/// missing). `hostname` is set in a new UTS namespace; loopback is brought
/// up in a new network namespace. On error nothing stays pinned.
pub fn pin(dir: &Path, kinds: &[NsKind], hostname: Option<&str>) -> Result<Pinned, SandboxError> {
    start_pin(dir, kinds, hostname)?.wait()
}

/// Namespaces being pinned on a thread of their own (see [`start_pin`]).
pub struct PendingPin {
    dir: PathBuf,
    kinds: Vec<NsKind>,
    worker: Option<NsThread>,
}

/// [`pin`] without waiting: the caller can do other work (the pod's files)
/// while the kernel makes the namespaces, then [`PendingPin::wait`]s.
/// Dropping it without waiting also waits, and unpins.
pub fn start_pin(
    dir: &Path,
    kinds: &[NsKind],
    hostname: Option<&str>,
) -> Result<PendingPin, SandboxError> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    if kinds.is_empty() {
        return Ok(PendingPin {
            dir: dir.to_path_buf(),
            kinds: Vec::new(),
            worker: None,
        });
    }
    let dir = dir.to_path_buf();
    let kinds = kinds.to_vec();
    let hostname = hostname.map(str::to_string);
    let worker = {
        let dir = dir.clone();
        let kinds = kinds.clone();
        spawn_ns_thread(move || pin_in_this_thread(&dir, &kinds, hostname.as_deref()))?
    };
    Ok(PendingPin {
        dir,
        kinds,
        worker: Some(worker),
    })
}

impl PendingPin {
    /// The pinned namespaces; on error nothing stays pinned.
    pub fn wait(mut self) -> Result<Pinned, SandboxError> {
        let result = match self.worker.take() {
            Some(w) => join_ns_thread(w),
            None => Ok(()),
        };
        match result {
            Ok(()) => {
                let mut p = Pinned::default();
                for k in &self.kinds {
                    let path = Some(pin_path(&self.dir, *k));
                    match k {
                        NsKind::Net => p.net = path,
                        NsKind::Ipc => p.ipc = path,
                        NsKind::Uts => p.uts = path,
                    }
                }
                Ok(p)
            }
            Err(e) => {
                // Best effort: the error to report is the first one.
                let _ = unpin(&self.dir);
                Err(e)
            }
        }
    }
}

impl Drop for PendingPin {
    fn drop(&mut self) {
        // Abandoned (the caller failed meanwhile): let the thread finish so
        // nothing is pinned behind the caller's back, then undo it.
        if let Some(w) = self.worker.take() {
            let _ = w.join();
            let _ = unpin(&self.dir);
        }
    }
}

type NsThread = std::thread::JoinHandle<Result<(), SandboxError>>;

/// Starts `f` on a thread of its own: namespace changes (unshare, setns)
/// act on the calling thread, so they never touch the caller's.
fn spawn_ns_thread(
    f: impl FnOnce() -> Result<(), SandboxError> + Send + 'static,
) -> Result<NsThread, SandboxError> {
    std::thread::Builder::new()
        .name("crius-pinns".into())
        .spawn(f)
        .map_err(io("starting the namespace thread"))
}

fn join_ns_thread(t: NsThread) -> Result<(), SandboxError> {
    t.join().unwrap_or_else(|_| {
        Err(SandboxError::Io {
            what: "namespace thread".into(),
            source: std::io::Error::other("panicked"),
        })
    })
}

/// Runs on a thread of its own, which ends afterwards: its namespaces are
/// never seen by other work.
fn pin_in_this_thread(
    dir: &Path,
    kinds: &[NsKind],
    hostname: Option<&str>,
) -> Result<(), SandboxError> {
    let flags = kinds.iter().fold(CloneFlags::empty(), |f, k| f | k.flag());
    unshare(flags).map_err(sys("unshare"))?;
    if kinds.contains(&NsKind::Uts) {
        if let Some(h) = hostname.filter(|h| !h.is_empty()) {
            nix::unistd::sethostname(h).map_err(sys(format!("sethostname {h:?}")))?;
        }
    }
    if kinds.contains(&NsKind::Net) {
        loopback_up()?;
    }
    for k in kinds {
        bind_ns(
            &format!("/proc/thread-self/ns/{}", k.name()),
            &pin_path(dir, *k),
        )?;
    }
    Ok(())
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
fn loopback_up() -> Result<(), SandboxError> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain syscalls on a socket this function owns; the ifreq is
    // zero-initialised and its name NUL-terminated.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io("socket for loopback")(std::io::Error::last_os_error()));
        }
        let sock = OwnedFd::from_raw_fd(fd);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io("reading loopback flags")(std::io::Error::last_os_error()));
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io("bringing loopback up")(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Bind-mounts a namespace file (`source`) onto a new empty file.
fn bind_ns(source: &str, target: &Path) -> Result<(), SandboxError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(target)
        .map_err(io(format!("creating {}", target.display())))?;
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys(format!(
        "bind-mounting {source} on {}",
        target.display()
    )))
}

/// Pins the PID namespace of `pid` (the pod's pause process) as `dir/pid`.
pub fn pin_pid(dir: &Path, pid: i32) -> Result<PathBuf, SandboxError> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let target = dir.join("pid");
    bind_ns(&format!("/proc/{pid}/ns/pid"), &target)?;
    Ok(target)
}

/// Whether `path` is a pinned namespace (an nsfs mount).
pub fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == NSFS_MAGIC)
        .unwrap_or(false)
}

/// Unmounts and removes every pin file under `dir`. Idempotent: missing
/// files and files that are not mounted are fine.
pub fn unpin(dir: &Path) -> Result<(), SandboxError> {
    let paths = NsKind::ALL
        .iter()
        .map(|k| pin_path(dir, *k))
        .chain([dir.join("pid")]);
    for p in paths {
        // A pin may have been mounted more than once (never by crius, but
        // be thorough): unmount until it is a plain file.
        for _ in 0..8 {
            if !is_pinned(&p) {
                break;
            }
            match umount2(&p, MntFlags::MNT_DETACH) {
                Ok(()) => {}
                Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
                Err(e) => return Err(sys(format!("unmounting {}", p.display()))(e)),
            }
        }
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("removing {}", p.display()))(e)),
        }
    }
    Ok(())
}

/// Network, IPC and UTS namespaces made ahead of RunPodSandbox: creating a
/// network namespace is most of a pod's set-up time, and none of it
/// depends on the pod. The pool holds each set as three open namespace
/// files, not as mounts: every mount in the host's mount namespace makes
/// every runtime call slower (`runc create` copies and parses the whole
/// mount table: ~50 µs per mount here, so 4 sets of 3 pins would cost each
/// container create ~0.6 ms), and an fd dies with the daemon, so a killed
/// daemon leaves nothing to sweep. A pod claims a set by bind-mounting its
/// three files into its own `ns` directory (from `/proc/self/fd`) while its
/// hostname is set inside.
pub struct NsPool {
    pool: crius_pool::Pool<NsSet>,
}

/// One set of fresh namespaces, held open.
struct NsSet {
    net: OwnedFd,
    ipc: OwnedFd,
    uts: OwnedFd,
}

impl NsPool {
    /// An empty pool of `size` sets; fill it with [`NsPool::fill`].
    /// `legacy_dir` is where crius before 0.1 kept its pool as mounts:
    /// whatever such a daemon left there is unpinned and removed.
    pub fn open(legacy_dir: &Path, size: usize) -> Result<NsPool, SandboxError> {
        match std::fs::read_dir(legacy_dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let p = e.path();
                    unpin(&p)?;
                    std::fs::remove_dir_all(&p).map_err(io(format!("removing {}", p.display())))?;
                }
                let _ = std::fs::remove_dir(legacy_dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("reading {}", legacy_dir.display()))(e)),
        }
        Ok(NsPool {
            pool: crius_pool::Pool::new(size),
        })
    }

    /// Takes so far that found a ready one, and that found none.
    pub fn hits_misses(&self) -> (u64, u64) {
        self.pool.hits_misses()
    }

    /// Namespace sets ready to be claimed.
    pub fn available(&self) -> usize {
        self.pool.available()
    }

    /// Whether the pool holds fewer sets than it should.
    pub fn needs_fill(&self) -> bool {
        self.pool.needs_fill()
    }

    /// Makes namespace sets until the pool is full (blocking). One filler
    /// at a time; a second call returns at once.
    pub fn fill(&self) -> Result<(), SandboxError> {
        self.fill_with(|| {})
    }

    /// [`NsPool::fill`], calling `before_each` before making each set (the
    /// daemon waits there for a moment without pod or container start-up).
    pub fn fill_with(&self, before_each: impl Fn()) -> Result<(), SandboxError> {
        self.pool.fill_with(before_each, make_set)
    }

    /// Pins a ready set under `target` (created if missing) and sets
    /// `hostname` in its UTS namespace. None when the pool is empty (or
    /// busy: see [`crius_pool::Pool::try_take`]); on error nothing stays
    /// pinned at `target`.
    pub fn claim(&self, target: &Path, hostname: &str) -> Option<Result<Pinned, SandboxError>> {
        let set = self.pool.try_take()?;
        Some(claim_set(set, target, hostname))
    }

    /// Releases every ready set (daemon shutdown); a fill in progress stops
    /// and keeps nothing.
    pub fn drain(&self) {
        self.pool.drain();
    }
}

/// New network (loopback up), IPC and UTS namespaces, held open: made on a
/// thread of their own, which ends afterwards.
fn make_set() -> Result<NsSet, SandboxError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = spawn_ns_thread(move || {
        let flags = NsKind::ALL
            .iter()
            .fold(CloneFlags::empty(), |f, k| f | k.flag());
        unshare(flags).map_err(sys("unshare"))?;
        loopback_up()?;
        let open = |k: NsKind| -> Result<OwnedFd, SandboxError> {
            let path = format!("/proc/thread-self/ns/{}", k.name());
            std::fs::File::open(&path)
                .map(OwnedFd::from)
                .map_err(io(format!("opening {path}")))
        };
        let set = NsSet {
            net: open(NsKind::Net)?,
            ipc: open(NsKind::Ipc)?,
            uts: open(NsKind::Uts)?,
        };
        let _ = tx.send(set);
        Ok(())
    })?;
    join_ns_thread(worker)?;
    rx.recv().map_err(|_| SandboxError::Io {
        what: "namespace thread".into(),
        source: std::io::Error::other("made no namespaces"),
    })
}

fn claim_set(set: NsSet, target: &Path, hostname: &str) -> Result<Pinned, SandboxError> {
    std::fs::create_dir_all(target).map_err(io(format!("creating {}", target.display())))?;
    // The hostname is set (setns into the set's UTS namespace, on a thread
    // of its own: sethostname acts on the caller's namespace) while the
    // three files are bind-mounted here.
    let naming = if hostname.is_empty() {
        None
    } else {
        let uts = set
            .uts
            .try_clone()
            .map_err(io("duplicating the UTS namespace fd"))?;
        let name = hostname.to_string();
        Some(spawn_ns_thread(move || {
            nix::sched::setns(&uts, CloneFlags::CLONE_NEWUTS)
                .map_err(sys("entering the pod's UTS namespace"))?;
            nix::unistd::sethostname(&name).map_err(sys(format!("sethostname {name:?}")))
        })?)
    };
    let pinned = [
        (NsKind::Net, &set.net),
        (NsKind::Ipc, &set.ipc),
        (NsKind::Uts, &set.uts),
    ]
    .iter()
    .try_for_each(|(k, fd)| {
        bind_ns(
            &format!("/proc/self/fd/{}", fd.as_raw_fd()),
            &pin_path(target, *k),
        )
    });
    let named = naming.map_or(Ok(()), join_ns_thread);
    if let Err(e) = pinned.and(named) {
        let _ = unpin(target);
        return Err(e);
    }
    Ok(Pinned {
        net: Some(pin_path(target, NsKind::Net)),
        ipc: Some(pin_path(target, NsKind::Ipc)),
        uts: Some(pin_path(target, NsKind::Uts)),
    })
}
