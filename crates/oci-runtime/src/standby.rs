//! Monitors started ahead of the containers they will keep.
//!
//! Starting `crius-monitor` (exec, dynamic loading, fork, set-up) takes
//! about a millisecond, more on a busy two-core machine; the start of a
//! container would wait for it. A [`StandbyMonitor`] does all of that before its
//! container exists and then waits for its job (the container's arguments)
//! on a pipe; a [`MonitorPool`] keeps a few of them ready, refilled off the
//! hot path. A standby whose job pipe closes with no job (the daemon gave
//! it up, stopped, or was killed) exits having created nothing, so nothing
//! needs sweeping after a crash.

use crate::error::RuntimeError;
use crius_monitor_protocol::report::Report;
use crius_pool::Pool;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub use crius_monitor_protocol::job::TITLE_ROOM;

/// A monitor that has (or is about to have) detached and waits for its job.
#[derive(Debug)]
pub struct StandbyMonitor {
    /// The standby's first process, which exits once the standby has
    /// detached; reaped by [`StandbyMonitor::wait_ready`] or after the job.
    pub(crate) child: Option<Child>,
    /// Write end of the job pipe (the standby's fd 0).
    pub(crate) job: Option<OwnedFd>,
    /// Read end of the report pipe (the standby's fd 1).
    pub(crate) sync: Option<OwnedFd>,
    /// The detached standby's pid, once it said `ready`.
    pub(crate) pid: Option<i32>,
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let what = what.to_string();
    move |source| RuntimeError::Io { what, source }
}

impl StandbyMonitor {
    /// Starts `monitor standby`; does not wait for it.
    pub fn spawn(monitor: &Path) -> Result<StandbyMonitor, RuntimeError> {
        // The report pipe's write end is the standby's stdout and the job
        // pipe's read end its stdin: no pre_exec hook is needed to pass
        // them, so std spawns with posix_spawn (vfork) instead of forking
        // the whole daemon. Every other child of the daemon gets them
        // close-on-exec, so only the standby holds them.
        let pipe = || -> Result<(OwnedFd, OwnedFd), RuntimeError> {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io("pipe")(e.into()))
        };
        let (sync_r, sync_w) = pipe()?;
        let (job_r, job_w) = pipe()?;
        let mut cmd = Command::new(monitor);
        cmd.arg(crius_monitor_protocol::job::STANDBY)
            .arg(" ".repeat(TITLE_ROOM))
            .stdin(Stdio::from(job_r))
            .stdout(Stdio::from(sync_w))
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(io("starting crius-monitor"))?;
        // The Command holds the parent's copies of the pipe ends it passed:
        // drop them, or reports never end and the job pipe never closes.
        drop(cmd);
        Ok(StandbyMonitor {
            child: Some(child),
            job: Some(job_w),
            sync: Some(sync_r),
            pid: None,
        })
    }

    /// Waits until the standby has detached and set itself up (its
    /// `ready <pid>` line). Blocking; for filling a pool.
    pub fn wait_ready(&mut self) -> Result<(), RuntimeError> {
        if let Some(mut c) = self.child.take() {
            let status = c.wait().map_err(io("waiting for crius-monitor"))?;
            if !status.success() {
                return Err(RuntimeError::Io {
                    what: "starting crius-monitor".into(),
                    source: std::io::Error::other(format!("exited with {status}")),
                });
            }
        }
        let sync = self.sync.as_ref().ok_or_else(|| RuntimeError::Io {
            what: "crius-monitor standby".into(),
            source: std::io::Error::other("no report pipe"),
        })?;
        // Byte by byte: nothing past the line may be consumed (the job's
        // report follows on the same pipe).
        let mut line = Vec::new();
        let mut f = std::fs::File::from(sync.try_clone().map_err(io("report pipe"))?);
        let mut b = [0u8; 1];
        while line.len() < 64 {
            match f.read(&mut b) {
                Ok(1) if b[0] == b'\n' => break,
                Ok(1) => line.push(b[0]),
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io("reading the standby's report")(e)),
            }
        }
        let line = String::from_utf8_lossy(&line);
        match Report::parse(&line) {
            Some(Report::Ready(pid)) => {
                self.pid = Some(pid);
                Ok(())
            }
            _ => Err(RuntimeError::Io {
                what: "crius-monitor standby".into(),
                source: std::io::Error::other(format!("reported {line:?}, not ready")),
            }),
        }
    }

    /// Whether a ready standby is still there to take a job: it writes
    /// nothing between `ready` and its job, so a readable or hung-up report
    /// pipe means it died (killed by someone, or the OOM killer).
    fn alive(&self) -> bool {
        let Some(sync) = &self.sync else {
            return false;
        };
        let mut fds = [nix::poll::PollFd::new(
            sync.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        matches!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
            Ok(0)
        )
    }

    /// Gives a standby started by a low-priority filler (SCHED_IDLE, which
    /// it inherited) the daemon's own scheduling policy before it is handed
    /// a job: the runtime and the container inherit it, as they would from
    /// a monitor started at once, and the runtime never waits for an
    /// idle CPU. False if that fails (the standby is then not used).
    fn boost(&self) -> bool {
        let Some(pid) = self.pid else {
            return true;
        };
        // SAFETY: plain syscalls reading the daemon's main thread's policy
        // and setting another process's; `param` is a valid out-pointer.
        unsafe {
            let me = libc::getpid();
            let policy = libc::sched_getscheduler(me);
            let mut param = libc::sched_param { sched_priority: 0 };
            if policy < 0 || libc::sched_getparam(me, &mut param) != 0 {
                return false;
            }
            libc::sched_setscheduler(pid, policy, &param) == 0
        }
    }
}

impl Drop for StandbyMonitor {
    fn drop(&mut self) {
        // No job: closing the job pipe sends the standby away; its first
        // process is reaped so it leaves no zombie.
        self.job.take();
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

/// Standby monitors ready to be taken, for every runtime handler (the job
/// names the runtime).
#[derive(Debug)]
pub struct MonitorPool {
    monitor: PathBuf,
    pool: Pool<StandbyMonitor>,
}

impl MonitorPool {
    pub fn new(monitor: impl Into<PathBuf>, size: usize) -> MonitorPool {
        MonitorPool {
            monitor: monitor.into(),
            pool: Pool::new(size),
        }
    }

    /// Takes so far that found a ready one, and that found none.
    pub fn hits_misses(&self) -> (u64, u64) {
        self.pool.hits_misses()
    }

    /// Standbys ready to be taken.
    pub fn available(&self) -> usize {
        self.pool.available()
    }

    /// Whether the pool holds fewer standbys than it should.
    pub fn needs_fill(&self) -> bool {
        self.pool.needs_fill()
    }

    /// The pids of the ready standbys (tests, diagnostics).
    pub fn pids(&self) -> Vec<i32> {
        self.pool
            .inspect(|ready| ready.iter().filter_map(|s| s.pid).collect())
    }

    /// Starts standbys until the pool is full (blocking: each is waited
    /// for until ready). One filler at a time; a second call returns at
    /// once.
    pub fn fill(&self) -> Result<(), RuntimeError> {
        self.fill_with(|| {})
    }

    /// [`MonitorPool::fill`], calling `before_each` before starting each
    /// standby (the daemon waits there for a moment without container
    /// start-up).
    pub fn fill_with(&self, before_each: impl Fn()) -> Result<(), RuntimeError> {
        self.pool.fill_with(before_each, || {
            let mut s = StandbyMonitor::spawn(&self.monitor)?;
            s.wait_ready()?;
            Ok(s)
        })
    }

    /// A ready standby, given normal scheduling; None when the pool is
    /// empty (or busy: see [`Pool::try_take`]). Standbys found dead on the
    /// way are dropped.
    pub fn take(&self) -> Option<StandbyMonitor> {
        loop {
            let s = self.pool.try_take()?;
            if s.alive() && s.boost() {
                return Some(s);
            }
        }
    }

    /// Sends every ready standby away (daemon shutdown); a fill in
    /// progress stops and keeps nothing.
    pub fn drain(&self) {
        self.pool.drain();
    }
}
