//! The real `crius` binary as a child process, on a temporary socket with
//! temporary root and state directories.

use anyhow::{bail, Context, Result};
use crius_cri_api::v1::VersionRequest;
use crius_cri_api::CriClient;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a daemon may take to answer `Version` after it is spawned.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERM'd daemon may take to exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Options for a daemon under test. Paths default to a fresh temporary
/// directory; set `root` to share one (e.g. to test the root lock).
#[derive(Debug, Clone)]
pub struct DaemonBuilder {
    bin: PathBuf,
    root: Option<PathBuf>,
    listen: Option<PathBuf>,
    config_toml: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl DaemonBuilder {
    pub fn root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }
    /// Serve on this socket instead of one in the temporary directory.
    pub fn listen(mut self, socket: impl Into<PathBuf>) -> Self {
        self.listen = Some(socket.into());
        self
    }
    /// Writes this TOML to a file and passes it with `--config`.
    pub fn config_toml(mut self, toml: impl Into<String>) -> Self {
        self.config_toml = Some(toml.into());
        self
    }
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Lays out the directories without starting anything.
    pub fn prepare(self) -> Result<Daemon> {
        let dir = tempfile::Builder::new().prefix("crius-test-").tempdir()?;
        let root = self.root.clone().unwrap_or_else(|| dir.path().join("root"));
        let mut d = Daemon {
            socket: self
                .listen
                .clone()
                .unwrap_or_else(|| dir.path().join("sock/crius.sock")),
            runroot: dir.path().join("run"),
            log_path: dir.path().join("crius.log"),
            config_path: None,
            root,
            child: None,
            builder: self,
            dir,
        };
        if let Some(toml) = &d.builder.config_toml {
            let p = d.dir.path().join("crius.toml");
            std::fs::write(&p, toml)?;
            d.config_path = Some(p);
        }
        Ok(d)
    }

    /// Starts the daemon and waits until it answers `Version`.
    pub async fn start(self) -> Result<Daemon> {
        let mut d = self.prepare()?;
        d.start().await?;
        Ok(d)
    }
}

/// A crius daemon under test. Dropping it kills the process (SIGKILL) and
/// removes its temporary directory.
#[derive(Debug)]
pub struct Daemon {
    builder: DaemonBuilder,
    dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub runroot: PathBuf,
    pub log_path: PathBuf,
    pub config_path: Option<PathBuf>,
    child: Option<Child>,
}

impl Daemon {
    /// `bin` is the daemon binary; integration tests in the daemon crate pass
    /// `env!("CARGO_BIN_EXE_crius")`.
    pub fn builder(bin: impl Into<PathBuf>) -> DaemonBuilder {
        DaemonBuilder {
            bin: bin.into(),
            root: None,
            listen: None,
            config_toml: None,
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// The temporary directory holding this daemon's socket, state and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CNI config directory a daemon under test watches unless the
    /// test names another.
    pub fn cni_config_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }

    /// The command line this daemon runs with (without spawning it).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.builder.bin);
        if let Some(c) = &self.config_path {
            cmd.arg("--config").arg(c);
        }
        cmd.arg("--listen")
            .arg(&self.socket)
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(&self.builder.args)
            .env_remove("RUST_LOG");
        // A daemon under test reads no network the host has configured: its
        // own directory, empty unless the test writes a network there.
        let names_cni = self.builder.args.iter().any(|a| a == "--cni-config-dir")
            || self
                .builder
                .config_toml
                .as_deref()
                .is_some_and(|t| t.contains("cni_config_dir"));
        if !names_cni {
            cmd.arg("--cni-config-dir").arg(self.cni_config_dir());
        }
        // Tests of everything but networking run pods without one; the
        // network tests say otherwise in their config.
        let names_fallback = self
            .builder
            .config_toml
            .as_deref()
            .is_some_and(|t| t.contains("allow_pods_without_network"));
        if !names_fallback {
            cmd.arg("--allow-pods-without-network");
        }
        if !self.builder.args.iter().any(|a| a == "--log-level") {
            cmd.args(["--log-level", "debug"]);
        }
        for (k, v) in &self.builder.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Spawns the daemon (again, after a stop or kill: same directories) and
    /// waits until it answers `Version`. Fails with the daemon's log if it
    /// exits or does not answer in time.
    pub async fn start(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("daemon already running");
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .context("opening daemon log")?;
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", self.builder.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait()? {
                bail!(
                    "crius exited during start-up with {status}; log:\n{}",
                    self.log()
                );
            }
            if self.socket.exists() {
                if let Ok(mut c) = CriClient::connect(&self.socket).await {
                    if c.runtime.version(VersionRequest::default()).await.is_ok() {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "crius did not answer within {START_TIMEOUT:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs the daemon to completion (for start-up failures): returns its
    /// exit status and everything it printed.
    pub fn run_to_exit(&self, timeout: Duration) -> Result<(ExitStatus, String)> {
        let out_path = self
            .dir
            .path()
            .join(format!("run-{}.log", std::process::id()));
        let out = File::create(&out_path)?;
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        let status = wait_timeout(&mut child, timeout)?;
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("crius still running after {timeout:?}");
        };
        Ok((status, std::fs::read_to_string(&out_path)?))
    }

    pub async fn client(&self) -> Result<CriClient> {
        CriClient::connect(&self.socket)
            .await
            .with_context(|| format!("connecting to {}", self.socket.display()))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None)) && self.child.is_some()
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(c) => Ok(c.try_wait()?),
            None => Ok(None),
        }
    }

    /// Sends `signal` without waiting.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = self.pid().context("daemon not started")?;
        kill(Pid::from_raw(pid as i32), signal)?;
        Ok(())
    }

    /// SIGTERM, then waits for the exit status (graceful shutdown). Async so
    /// that the test's own client connections can answer the daemon's GOAWAY
    /// meanwhile, as kubelet's would.
    pub async fn stop(&mut self) -> Result<ExitStatus> {
        self.signal(Signal::SIGTERM)?;
        let mut child = self.child.take().context("daemon not started")?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        match status {
            Some(status) => Ok(status),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "crius ignored SIGTERM for {STOP_TIMEOUT:?}; log:\n{}",
                    self.log()
                )
            }
        }
    }

    /// SIGKILL: a crash, for recovery tests.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Everything the daemon has logged so far (across restarts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Daemon {
    /// A crash, then whatever the daemon held mounted under its directory
    /// (the namespace pool, anything a failed test left) is detached, so
    /// the temporary directory can go and nothing stays pinned.
    fn drop(&mut self) {
        let _ = self.kill();
        unmount_all_under(self.dir());
    }
}

/// Lazily unmounts every mount at or under `dir`, deepest first.
pub fn unmount_all_under(dir: &Path) {
    let d = dir.display().to_string();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&d))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Waits for `child` up to `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
