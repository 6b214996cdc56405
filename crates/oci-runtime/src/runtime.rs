//! The narrow interface the RuntimeService calls to run containers with one
//! handler: start, kill, delete, state, update, and the exit status the
//! monitor recorded. Creating a container under its monitor is
//! `crate::launch`; ExecSync is `crate::exec`. All blocking: call from
//! `spawn_blocking`.

use crate::handlers::ResolvedHandler;
use crius_monitor_protocol::exitfile::{self, ExitRecord};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use crate::error::RuntimeError;

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

/// What an OCI runtime's `state` says of a container (the fields crius
/// reads of the OCI state JSON).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
pub struct RuntimeState {
    /// `creating`, `created`, `running` or `stopped`.
    pub status: String,
    /// The container's init, as the host sees it; 0 once it is gone.
    #[serde(default)]
    pub pid: i32,
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
    pub(crate) binary: PathBuf,
    pub(crate) root: PathBuf,
    pub(crate) extra_args: Vec<String>,
    /// The `crius-monitor` binary every container and exec runs under.
    pub(crate) monitor: PathBuf,
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

    /// The runtime's command line up to its subcommand: `<binary> --root
    /// <root> <extra args>`. Every runtime call starts with it, also the
    /// ones a monitor makes for us.
    pub(crate) fn argv(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![self.binary.clone().into(), "--root".into()];
        a.push(self.root.clone().into());
        a.extend(self.extra_args.iter().map(OsString::from));
        a
    }

    fn cmd(&self) -> Command {
        let argv = self.argv();
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
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

    /// The runtime's `state` of a container (the OCI state JSON's status
    /// and pid).
    pub fn state(&self, id: &str) -> Result<RuntimeState, RuntimeError> {
        let out = self.run("state", id, &["state", id])?;
        serde_json::from_str(&out).map_err(|e| RuntimeError::Runtime {
            runtime: self.name.clone(),
            op: "state",
            id: id.into(),
            message: format!("unparsable state: {e}"),
        })
    }
}

/// The exit status the monitor recorded, if the container has exited.
/// Readable by any process, e.g. a daemon restarted after the container
/// exited.
pub fn exit_status(files: &ContainerFiles) -> std::io::Result<Option<ExitRecord>> {
    exitfile::read(&files.exit_file)
}
