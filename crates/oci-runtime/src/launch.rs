//! Creating (or creating and starting) a container under its own
//! `crius-monitor`: a standby taken from the pool, or started now, is
//! handed the container's job (`crius_monitor_protocol::job`) and reports
//! the container's pid or the runtime's refusal
//! (`crius_monitor_protocol::report`).

use crate::error::RuntimeError;
use crate::runtime::{ContainerFiles, Created, OciRuntime};
use crate::standby::{MonitorPool, StandbyMonitor};
use crius_monitor_protocol::job::{encode_nul, Job, TITLE_ROOM};
use crius_monitor_protocol::report::Report;
use std::io::Read;
use std::path::PathBuf;

/// A container's stdio as CRI configures it: a terminal, and a stdin the
/// monitor holds (for Attach), closed after the first attach with
/// `stdin_once`. A plain `bool` means a terminal or not, no stdin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stdio {
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
}

impl From<bool> for Stdio {
    fn from(tty: bool) -> Self {
        Stdio {
            tty,
            ..Default::default()
        }
    }
}

impl OciRuntime {
    /// Creates the container under a new, detached monitor; returns the
    /// container's pid once the runtime has created it.
    /// With `tty`, the spec must ask for a terminal (`process.terminal`).
    pub fn create(
        &self,
        id: &str,
        files: &ContainerFiles,
        max_log_line: usize,
        stdio: impl Into<Stdio>,
    ) -> Result<Created, RuntimeError> {
        self.prepare_create(None, id, files, max_log_line, stdio)?
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
        stdio: impl Into<Stdio>,
    ) -> Result<PendingLaunch, RuntimeError> {
        self.prepare(pool, id, files, max_log_line, stdio.into(), false)
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
        stdio: impl Into<Stdio>,
    ) -> Result<PendingLaunch, RuntimeError> {
        self.prepare(pool, id, files, max_log_line, stdio.into(), true)
    }

    fn prepare(
        &self,
        pool: Option<&MonitorPool>,
        id: &str,
        files: &ContainerFiles,
        max_log_line: usize,
        stdio: Stdio,
        start: bool,
    ) -> Result<PendingLaunch, RuntimeError> {
        let op = if start { "run" } else { "create" };
        std::fs::create_dir_all(&self.root).map_err(|source| RuntimeError::Io {
            what: "creating runtime root".into(),
            source,
        })?;
        let job = self.job(id, files, max_log_line, stdio, start);
        // The monitor's command line leads with `--runtime R --id ID`, in
        // the room a standby keeps for it.
        if job.title_len() > TITLE_ROOM {
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
            job: encode_nul(&job.to_args()),
            monitor: self.monitor.clone(),
        })
    }

    /// A monitor's job for one container.
    fn job(
        &self,
        id: &str,
        files: &ContainerFiles,
        max_log_line: usize,
        stdio: Stdio,
        start: bool,
    ) -> Job {
        Job {
            runtime: self.binary.clone(),
            runtime_root: self.root.clone(),
            runtime_args: self.extra_args.clone(),
            id: id.into(),
            bundle: files.bundle.clone(),
            log: files.log.clone(),
            exit_file: files.exit_file.clone(),
            pid_file: files.pid_file.clone(),
            sync_fd: None,
            max_line: max_log_line,
            tty: stdio.tty,
            stdin: stdio.stdin,
            stdin_once: stdio.stdin_once,
            start,
        }
    }
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
        match Report::outcome(&report) {
            Some(Report::Pid { pid, monitor_pid }) => Ok(Created { pid, monitor_pid }),
            Some(Report::Error(m)) => Err(self.failed(m)),
            _ => match status.filter(|s| !s.success()) {
                Some(status) => Err(self.failed(format!("crius-monitor exited with {status}"))),
                None => Err(self.failed(format!("monitor died without a report ({report:?})"))),
            },
        }
    }
}
