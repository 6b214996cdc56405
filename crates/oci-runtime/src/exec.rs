//! ExecSync: one command run in a container under `crius-monitor exec`,
//! with a timeout, a cancel and an output cap.

use crate::error::RuntimeError;
use crate::runtime::OciRuntime;
use crius_monitor_protocol::job::ExecJob;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

impl OciRuntime {
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
        let mut argv = self.argv();
        argv.extend(["exec".into(), "--pid-file".into(), pid_file.clone().into()]);
        match &process_file {
            Some(f) => argv.extend(["--process".into(), f.clone().into(), id.into()]),
            None => {
                argv.push(id.into());
                argv.extend(exec.argv.iter().map(Into::into));
            }
        }
        let job = ExecJob {
            pid_file: pid_file.clone(),
            argv,
            stop_fd: None,
        };
        let mut child = Command::new(&self.monitor)
            .args(job.to_args())
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
#[derive(Debug)]
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

/// A streaming exec, ready to spawn: `crius-monitor exec` (the exec's
/// subreaper, as for ExecSync) and its arguments. The monitor takes its
/// stop pipe on a descriptor of its own (`--stop-fd`) so that its stdin,
/// stdout and stderr are the process's. End of file on that pipe (the
/// session ended, the client went away, the daemon died) stops and reaps
/// the exec'd process tree. Dropping it removes the scratch files.
#[derive(Debug)]
pub struct StreamExec {
    pub monitor: PathBuf,
    pub args: Vec<std::ffi::OsString>,
    _scratch: ScratchFiles,
}

impl OciRuntime {
    /// Prepares `argv` to run in container `id` as the container's own
    /// process does (`process`, from its config.json), with a terminal
    /// when `console_socket` is given: the runtime sends the pty's master
    /// there.
    pub fn prepare_stream_exec(
        &self,
        id: &str,
        argv: &[String],
        process: &serde_json::Value,
        scratch: &Path,
        console_socket: Option<&Path>,
        stop_fd: i32,
    ) -> Result<StreamExec, RuntimeError> {
        let pid_file = exec_scratch_path(scratch, id);
        let mut p = process.clone();
        p["args"] = serde_json::json!(argv);
        p["terminal"] = serde_json::json!(console_socket.is_some());
        if let Some(o) = p.as_object_mut() {
            o.remove("consoleSize");
        }
        let process_file = pid_file.with_extension("process.json");
        std::fs::write(&process_file, serde_json::to_vec(&p).unwrap_or_default()).map_err(
            |source| RuntimeError::Io {
                what: "writing the exec process".into(),
                source,
            },
        )?;
        let scratch_files = ScratchFiles(vec![Some(pid_file.clone()), Some(process_file.clone())]);
        let mut rt = self.argv();
        rt.extend(["exec".into(), "--pid-file".into(), pid_file.clone().into()]);
        if let Some(sock) = console_socket {
            // A runtime hands over a pty only when it detaches: the process
            // is then re-parented to the monitor (a subreaper), which
            // reports its status as the exec's.
            rt.extend([
                "--detach".into(),
                "--tty".into(),
                "--console-socket".into(),
                sock.into(),
            ]);
        }
        rt.extend(["--process".into(), process_file.into(), id.into()]);
        let job = ExecJob {
            pid_file,
            argv: rt,
            stop_fd: Some(stop_fd),
        };
        Ok(StreamExec {
            monitor: self.monitor.clone(),
            args: job.to_args(),
            _scratch: scratch_files,
        })
    }
}
