//! The narrow interface the RuntimeService calls to run containers with one
//! handler: create (through `crius-monitor`), start, kill, delete, state,
//! exec with a timeout and an output cap, and the exit status the monitor
//! recorded. All blocking: call from `spawn_blocking`.

use crate::handlers::ResolvedHandler;
use crate::standby::{MonitorPool, StandbyMonitor, TITLE_ROOM};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("runtime handler {0}: binary not found")]
    NoBinary(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The runtime refused: its own words.
    #[error("{runtime} {op} {id}: {message}")]
    Runtime {
        runtime: String,
        op: &'static str,
        id: String,
        message: String,
    },
}

/// Files of one container the monitor writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFiles {
    pub bundle: PathBuf,
    pub log: PathBuf,
    pub exit_file: PathBuf,
    pub pid_file: PathBuf,
}

impl ContainerFiles {
    /// The conventional layout under a container's state dir.
    pub fn under(dir: &Path, log: PathBuf) -> Self {
        ContainerFiles {
            bundle: dir.join("bundle"),
            log,
            exit_file: dir.join("exit"),
            pid_file: dir.join("pid"),
        }
    }
}

/// What `exec_sync` produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
    /// Output beyond the cap was dropped.
    pub truncated: bool,
}

/// A container the runtime created, and the monitor that keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Created {
    pub pid: i32,
    pub monitor_pid: i32,
}

/// One handler, ready to run containers.
#[derive(Debug, Clone)]
pub struct OciRuntime {
    pub name: String,
    binary: PathBuf,
    root: PathBuf,
    extra_args: Vec<String>,
    monitor: PathBuf,
}

impl OciRuntime {
    pub fn new(h: &ResolvedHandler, monitor: impl Into<PathBuf>) -> Result<Self, RuntimeError> {
        Ok(OciRuntime {
            name: h.name.clone(),
            binary: h
                .binary
                .clone()
                .ok_or_else(|| RuntimeError::NoBinary(h.name.clone()))?,
            root: h.config.root.clone(),
            extra_args: h.config.extra_args.clone(),
            monitor: monitor.into(),
        })
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.root).args(&self.extra_args);
        c
    }

    fn run(&self, op: &'static str, id: &str, args: &[&str]) -> Result<String, RuntimeError> {
        let out = self
            .cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| RuntimeError::Io {
                what: format!("running {}", self.binary.display()),
                source: e,
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(RuntimeError::Runtime {
                runtime: self.name.clone(),
                op,
                id: id.to_string(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Creates the container under a new, detached monitor; returns the
    /// container's pid once the runtime has created it.
    /// With `tty`, the spec must ask for a terminal (`process.terminal`).
    pub fn create(
        &self,
        id: &str,
        files: &ContainerFiles,
        max_log_line: usize,
        tty: bool,
    ) -> Result<Created, RuntimeError> {
        self.prepare_create(None, id, files, max_log_line, tty)?
            .launch()
    }

    /// Takes the container's monitor from `pool` (or starts one) ahead of
    /// the create: a fresh monitor starts up and detaches while the caller
    /// writes the bundle; then [`PendingLaunch::launch`] hands it its job.
    /// Dropping the pending launch instead makes the monitor exit having
    /// done nothing.
    pub fn prepare_create(
        &self,
        pool: Option<&MonitorPool>,
        id: &str,
        files: &ContainerFiles,
        max_log_line: usize,
        tty: bool,
    ) -> Result<PendingLaunch, RuntimeError> {
        self.prepare(pool, id, files, max_log_line, tty, false)
    }

    /// Like [`OciRuntime::prepare_create`], but the monitor creates and
    /// starts the container in one runtime call (`run --detach`): one
    /// runtime start-up (~5 ms of Go runtime for runc) instead of two, and
    /// the same hooks run. For a bundle already written.
    pub fn prepare_run(
        &self,
        pool: Option<&MonitorPool>,
        id: &str,
        files: &ContainerFiles,
        max_log_line: usize,
        tty: bool,
    ) -> Result<PendingLaunch, RuntimeError> {
        self.prepare(pool, id, files, max_log_line, tty, true)
    }

    fn prepare(
        &self,
        pool: Option<&MonitorPool>,
        id: &str,
        files: &ContainerFiles,
        max_log_line: usize,
        tty: bool,
        start: bool,
    ) -> Result<PendingLaunch, RuntimeError> {
        let op = if start { "run" } else { "create" };
        std::fs::create_dir_all(&self.root).map_err(|source| RuntimeError::Io {
            what: "creating runtime root".into(),
            source,
        })?;
        let mut job = self.job(id, files, max_log_line, tty);
        if start {
            job.push("--start".into());
        }
        // The monitor's command line leads with `--runtime R --id ID`, in
        // the room a standby keeps for it.
        let title: usize = job.iter().take(4).map(|a| a.len() + 1).sum();
        if title > TITLE_ROOM {
            return Err(RuntimeError::Runtime {
                runtime: self.name.clone(),
                op,
                id: id.to_string(),
                message: "runtime path and id too long for the monitor".into(),
            });
        }
        let standby = match pool.and_then(MonitorPool::take) {
            Some(s) => s,
            None => StandbyMonitor::spawn(&self.monitor)?,
        };
        Ok(PendingLaunch {
            runtime: self.name.clone(),
            op,
            id: id.to_string(),
            standby,
            job: job.iter().flat_map(|a| a.bytes().chain([0])).collect(),
            monitor: self.monitor.clone(),
        })
    }

    /// A monitor's arguments for one container, `--runtime` and `--id`
    /// first (they lead its command line).
    fn job(&self, id: &str, files: &ContainerFiles, max_log_line: usize, tty: bool) -> Vec<String> {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let mut job: Vec<String> = vec![
            "--runtime".into(),
            path(&self.binary),
            "--id".into(),
            id.into(),
            "--runtime-root".into(),
            path(&self.root),
            "--bundle".into(),
            path(&files.bundle),
            "--log".into(),
            path(&files.log),
            "--exit-file".into(),
            path(&files.exit_file),
            "--pid-file".into(),
            path(&files.pid_file),
            "--max-line".into(),
            max_log_line.to_string(),
        ];
        for a in &self.extra_args {
            job.push("--runtime-arg".into());
            job.push(a.clone());
        }
        if tty {
            job.push("--tty".into());
        }
        job
    }

    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("start", id, &["start", id]).map(|_| ())
    }

    pub fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        self.run("kill", id, &["kill", id, signal]).map(|_| ())
    }

    /// Deletes the container's runtime state; `force` kills it first.
    pub fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(id);
        self.run("delete", id, &args).map(|_| ())
    }

    /// Applies new cgroup resources (`<runtime> update --resources -`,
    /// the OCI LinuxResources JSON on stdin).
    pub fn update(&self, id: &str, resources_json: &[u8]) -> Result<(), RuntimeError> {
        use std::io::Write;
        let mut child = self
            .cmd()
            .args(["update", "--resources", "-", id])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| RuntimeError::Io {
                what: format!("running {}", self.binary.display()),
                source: e,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(resources_json)
                .map_err(|e| RuntimeError::Io {
                    what: "writing resources to the runtime".into(),
                    source: e,
                })?;
        }
        let out = child.wait_with_output().map_err(|e| RuntimeError::Io {
            what: format!("waiting for {}", self.binary.display()),
            source: e,
        })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(RuntimeError::Runtime {
                runtime: self.name.clone(),
                op: "update",
                id: id.into(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// The runtime's `state` (OCI state JSON: status, pid, bundle…).
    pub fn state(&self, id: &str) -> Result<serde_json::Value, RuntimeError> {
        let out = self.run("state", id, &["state", id])?;
        serde_json::from_str(&out).map_err(|e| RuntimeError::Runtime {
            runtime: self.name.clone(),
            op: "state",
            id: id.into(),
            message: format!("unparsable state: {e}"),
        })
    }

    /// Runs `argv` in the container, collecting at most `cap` bytes of each
    /// stream; kills it after `timeout` (zero: no timeout). Scratch files
    /// go in the runtime root (tests; the daemon uses `exec_sync_as`).
    pub fn exec_sync(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
        cap: usize,
    ) -> Result<ExecOutput, RuntimeError> {
        let exec = ExecSync {
            argv,
            process: None,
            scratch: &self.root,
            timeout,
            cap,
            cancel: None,
        };
        self.exec_sync_as(id, &exec)
    }

    /// Runs an exec under `crius-monitor exec`, a child subreaper that
    /// owns the exec'd process tree: at the timeout, on `cancel`, or when
    /// the daemon dies (end of file on its stdin), it stops and kills the
    /// whole tree and reaps it before it exits, so nothing is left running
    /// or as a zombie. With `process` (the container's own, from its
    /// config.json) as the template, the exec runs as the container does:
    /// the same user, groups, capabilities, environment, working dir,
    /// AppArmor profile and no_new_privs, with `argv` and no terminal
    /// (runtimes default an exec to root otherwise; crun does).
    pub fn exec_sync_as(&self, id: &str, exec: &ExecSync<'_>) -> Result<ExecOutput, RuntimeError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| RuntimeError::Io { what, source }
        };
        // The exec'd process's host pid: the monitor stops its tree from it.
        let pid_file = exec_scratch_path(exec.scratch, id);
        let process_file = match exec.process {
            Some(p) => {
                let mut p = p.clone();
                p["args"] = serde_json::json!(exec.argv);
                p["terminal"] = serde_json::json!(false);
                if let Some(o) = p.as_object_mut() {
                    o.remove("consoleSize");
                }
                let path = pid_file.with_extension("process.json");
                std::fs::write(&path, serde_json::to_vec(&p).unwrap_or_default())
                    .map_err(io("writing the exec process"))?;
                Some(path)
            }
            None => None,
        };
        let _scratch = ScratchFiles(vec![Some(pid_file.clone()), process_file.clone()]);
        let mut cmd = Command::new(&self.monitor);
        cmd.arg("exec")
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("--")
            .arg(&self.binary)
            .arg("--root")
            .arg(&self.root)
            .args(&self.extra_args)
            .arg("exec")
            .arg("--pid-file")
            .arg(&pid_file);
        match &process_file {
            Some(f) => {
                cmd.arg("--process").arg(f).arg(id);
            }
            None => {
                cmd.arg(id).args(exec.argv);
            }
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io("running exec under crius-monitor"))?;
        // Dropping our end of the monitor's stdin tells it to stop the exec.
        let mut stop = child.stdin.take();
        let cap = exec.cap;
        let reader = |pipe: Option<Box<dyn Read + Send>>| {
            let kept = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), false)));
            let k = kept.clone();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            if let Some(mut pipe) = pipe {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = pipe.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let mut g = k.lock().unwrap_or_else(|p| p.into_inner());
                        let room = cap.saturating_sub(g.0.len());
                        g.0.extend_from_slice(&buf[..n.min(room)]);
                        g.1 |= n > room;
                    }
                    let _ = done_tx.send(());
                });
            }
            (kept, done_rx)
        };
        let out = reader(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let err = reader(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let start = Instant::now();
        let mut timed_out = false;
        let mut cancelled = false;
        let status = loop {
            if let Some(s) = child.try_wait().map_err(io("waiting for exec"))? {
                break s;
            }
            let expired = !exec.timeout.is_zero() && start.elapsed() >= exec.timeout;
            let cancel = exec
                .cancel
                .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed));
            if (expired || cancel) && stop.is_some() {
                timed_out = expired;
                cancelled = cancel;
                // The monitor stops and reaps the whole tree, then exits.
                drop(stop.take());
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        // A process the exec left in the container's background may keep
        // the pipes open: what arrives in a short grace period is kept,
        // then the answer goes without waiting for it.
        let grace = Instant::now() + Duration::from_millis(500);
        for (_, done) in [&out, &err] {
            let left = grace.saturating_duration_since(Instant::now());
            let _ = done.recv_timeout(left);
        }
        let take = |(kept, _): &(Captured, _)| {
            let mut g = kept.lock().unwrap_or_else(|p| p.into_inner());
            (std::mem::take(&mut g.0), g.1)
        };
        let (stdout, t1) = take(&out);
        let (stderr, t2) = take(&err);
        use std::os::unix::process::ExitStatusExt;
        let exit_code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        Ok(ExecOutput {
            exit_code: if timed_out || cancelled {
                -1
            } else {
                exit_code
            },
            stdout,
            stderr,
            timed_out,
            truncated: t1 || t2,
        })
    }
}

/// One stream's output as it is read: the bytes kept, and whether any
/// were dropped past the cap.
type Captured = std::sync::Arc<std::sync::Mutex<(Vec<u8>, bool)>>;

/// One ExecSync: what to run and how long it may take.
pub struct ExecSync<'a> {
    pub argv: &'a [String],
    /// The container's `process` from its config.json, as the template.
    pub process: Option<&'a serde_json::Value>,
    /// A directory for the exec's pid and process files: the container's
    /// own, so removing the container removes whatever a crash left.
    pub scratch: &'a Path,
    /// Zero: no timeout.
    pub timeout: Duration,
    /// Output kept per stream.
    pub cap: usize,
    /// Set when the caller gives up (its client cancelled): the exec is
    /// stopped as at a timeout.
    pub cancel: Option<&'a std::sync::atomic::AtomicBool>,
}

/// Removes an exec's scratch files when the exec is over.
struct ScratchFiles(Vec<Option<PathBuf>>);

impl Drop for ScratchFiles {
    fn drop(&mut self) {
        for p in self.0.iter().flatten() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A unique scratch path in `dir` for one exec's pid file (the process
/// file is its sibling, `.process.json`).
fn exec_scratch_path(dir: &Path, id: &str) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!(".exec-{id}-{}-{n}.pid", std::process::id()))
}

/// A monitor taken or started ahead of its container's create or run (see
/// [`OciRuntime::prepare_create`], [`OciRuntime::prepare_run`]).
#[derive(Debug)]
pub struct PendingLaunch {
    runtime: String,
    /// `create` or `run`: the runtime call the job asks for.
    op: &'static str,
    id: String,
    standby: StandbyMonitor,
    /// The job: the monitor's arguments, each ending with a NUL.
    job: Vec<u8>,
    monitor: PathBuf,
}

impl PendingLaunch {
    fn failed(&self, message: String) -> RuntimeError {
        RuntimeError::Runtime {
            runtime: self.runtime.clone(),
            op: self.op,
            id: self.id.clone(),
            message,
        }
    }

    /// Hands the monitor its job and lets it run the runtime's create (or
    /// run); returns the container's pid once it exists (or runs).
    pub fn launch(mut self) -> Result<Created, RuntimeError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| RuntimeError::Io { what, source }
        };
        let give = |s: &mut StandbyMonitor, job: &[u8]| match s.job.take() {
            // The job fits the pipe's buffer: this never waits for the
            // monitor.
            Some(fd) => std::io::Write::write_all(&mut std::fs::File::from(fd), job),
            None => Ok(()),
        };
        if let Err(e) = give(&mut self.standby, &self.job) {
            // A pooled standby that died since it was checked (killed by
            // someone, or the OOM killer) never read the job, so nothing was
            // created: a fresh one takes it. Any other failure shows in the
            // missing report below.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                self.standby = StandbyMonitor::spawn(&self.monitor)?;
                let _ = give(&mut self.standby, &self.job);
            }
        }
        let mut report = String::new();
        if let Some(r) = self.standby.sync.take() {
            std::fs::File::from(r)
                .read_to_string(&mut report)
                .map_err(io("reading the monitor's report"))?;
        }
        let status = self
            .standby
            .child
            .take()
            .map(|mut c| c.wait())
            .transpose()
            .map_err(io("waiting for crius-monitor"))?;
        // A fresh monitor says `ready` first, like a pooled one did.
        let last = report
            .lines()
            .rfind(|l| !l.starts_with("ready "))
            .unwrap_or("");
        match last.split_once(' ') {
            Some(("pid", p)) => {
                let mut it = p.split_whitespace().map(str::parse::<i32>);
                match (it.next(), it.next()) {
                    (Some(Ok(pid)), Some(Ok(monitor_pid))) => Ok(Created { pid, monitor_pid }),
                    _ => Err(self.failed(format!("monitor reported {report:?}"))),
                }
            }
            Some(("error", m)) => Err(self.failed(m.to_string())),
            _ => match status.filter(|s| !s.success()) {
                Some(status) => Err(self.failed(format!("crius-monitor exited with {status}"))),
                None => Err(self.failed(format!("monitor died without a report ({report:?})"))),
            },
        }
    }
}

/// The exit status the monitor recorded, if the container has exited:
/// `(code, RFC3339Nano time)`. Readable by any process, e.g. a daemon
/// restarted after the container exited.
pub fn exit_status(files: &ContainerFiles) -> std::io::Result<Option<(i32, String)>> {
    match std::fs::read_to_string(&files.exit_file) {
        Ok(t) => {
            let mut it = t.split_whitespace();
            Ok(it
                .next()
                .and_then(|c| c.parse().ok())
                .map(|c| (c, it.next().unwrap_or("").to_string())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
