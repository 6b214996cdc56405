//! The pause process of a pod with a shared PID namespace: `crius-monitor
//! pause`, pid 1 of the namespace (which dies with its init, so a bind
//! mount alone cannot keep it). Everything else about a pod needs no
//! process.

use crate::{io, SandboxError};
use crius_monitor_protocol::report::Report;
use crius_monitor_protocol::{identity, job};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

/// Starts the pause process for pod `id`; its host pid.
pub fn start(monitor: &Path, id: &str) -> Result<i32, SandboxError> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io("sync pipe")(e.into()))?;
    // The report comes on the pause process's stdout: no pre_exec hook,
    // so std spawns it without forking the daemon.
    let mut cmd = Command::new(monitor);
    cmd.args(job::pause_args(id, 1))
        .stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .stderr(Stdio::null());
    let status = cmd
        .status()
        .map_err(io(format!("starting {}", monitor.display())))?;
    // The Command holds the write end: drop it before reading to EOF.
    drop(cmd);
    let mut report = String::new();
    std::fs::File::from(r)
        .read_to_string(&mut report)
        .map_err(io("reading the pause process's report"))?;
    match Report::outcome(&report) {
        Some(Report::Pid { pid, .. }) if status.success() => Ok(pid),
        Some(Report::Error(m)) => Err(bad(&m)),
        _ => Err(bad(&format!("{status}: {report:?}"))),
    }
}

fn bad(m: &str) -> SandboxError {
    SandboxError::Io {
        what: "pause process".into(),
        source: std::io::Error::other(m.to_string()),
    }
}

/// Whether `pid` is pod `id`'s pause process (not a recycled pid).
pub fn is_ours(pid: i32, id: &str) -> bool {
    identity::is_pause(pid, id)
}

/// Kills the pause process (and so every process in the namespace) and
/// waits until it is gone. Idempotent.
pub fn stop(pid: i32, id: &str) -> Result<(), SandboxError> {
    if !is_ours(pid, id) {
        return Ok(());
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    // Not our child (it detached): wait for /proc to drop it. A zombie
    // waits for its reaper (init), which is not a live pause either.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'));
        if state.is_empty() || zombie || !is_ours(pid, id) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Err(bad(&format!("pid {pid} did not exit after SIGKILL")))
}
