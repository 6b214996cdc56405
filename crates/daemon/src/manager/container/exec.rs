//! ExecSync (under `crius-monitor exec`, which reaps what the exec leaves)
//! and ReopenContainerLog (SIGUSR1 to the container's monitor).
use crate::manager::{blocking, Manager, ManagerError, Result};
use crate::state::ContainerPhase;
use crius_monitor_protocol::identity;
use crius_oci_runtime::exec::{ExecOutput, ExecSync};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// ExecSync output kept, both streams together: the response must fit a
/// 16 MiB gRPC message (kubelet's limit, and the server's), with room for
/// the rest of it.
pub const EXEC_OUTPUT_CAP: usize = 16 * 1024 * 1024 - 64 * 1024;

/// Trims stdout and stderr to `cap` bytes together: stderr keeps at least
/// half the room when it needs it (it says what went wrong), stdout the
/// rest.
pub fn fit_output(stdout: &mut Vec<u8>, stderr: &mut Vec<u8>, cap: usize) {
    if stdout.len() + stderr.len() <= cap {
        return;
    }
    let err_room = stderr.len().min(cap / 2);
    stdout.truncate(cap - err_room);
    stderr.truncate(cap - stdout.len());
}
/// Where a container's exec scratch files (pid, process spec) live, in its
/// directory.
pub const EXEC_SCRATCH_DIR: &str = "exec";

impl Manager {
    pub async fn exec_sync(
        &self,
        query: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<ExecOutput> {
        let c = self.ctr(query)?;
        crate::manager::validate::exec_cmd(&cmd)?;
        let rec = self.refresh_expecting(&c, ContainerPhase::Running).await?;
        let runtime = self.runtime_any(&rec.runtime_handler)?;
        let id = c.id.clone();
        let t = Duration::from_secs(crate::manager::validate::timeout_secs(timeout));
        let cmd2 = cmd.clone();
        let bundle = rec.dir.join("bundle/config.json");
        // Exec scratch files live in the container's directory: removing
        // the container removes whatever a daemon killed mid-exec left.
        let scratch = rec.dir.join(EXEC_SCRATCH_DIR);
        // A client that gives up drops this future: the guard tells the
        // blocking exec to stop (and reap) the process tree at once.
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _guard = CancelOnDrop(cancel.clone());
        let out = blocking(move || {
            let spec: serde_json::Value = std::fs::read(&bundle)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| ManagerError::Internal(format!("reading {}", bundle.display())))?;
            std::fs::create_dir_all(&scratch).map_err(|e| {
                ManagerError::Internal(format!("creating {}: {e}", scratch.display()))
            })?;
            let exec = ExecSync {
                argv: &cmd2,
                process: Some(&spec["process"]),
                scratch: &scratch,
                timeout: t,
                cap: EXEC_OUTPUT_CAP,
                cancel: Some(&cancel),
            };
            runtime
                .exec_sync_as(&id, &exec)
                .map_err(|e| ManagerError::Internal(e.to_string()))
        })
        .await?;
        let mut out = out;
        fit_output(&mut out.stdout, &mut out.stderr, EXEC_OUTPUT_CAP);
        if out.timed_out {
            return Err(ManagerError::DeadlineExceeded(format!(
                "command {cmd:?} in container {} timed out after {timeout}s",
                c.id
            )));
        }
        Ok(out)
    }

    pub async fn reopen_log(&self, query: &str) -> Result<()> {
        let c = self.ctr(query)?;
        let rec = self.refresh_expecting(&c, ContainerPhase::Running).await?;
        // Only signal the pid if it is still this container's monitor.
        if !identity::is_container_monitor(rec.monitor_pid, &rec.id) {
            return Err(ManagerError::FailedPrecondition(format!(
                "container {}'s monitor is gone",
                c.id
            )));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(rec.monitor_pid),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .map_err(|e| ManagerError::Internal(format!("signalling the monitor: {e}")))?;
        // kubelet renames the log, then asks for a reopen and expects the
        // new file: wait (briefly) until the monitor has created it.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !rec.log_path.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !rec.log_path.exists() {
            return Err(ManagerError::Internal(format!(
                "the monitor did not reopen {}",
                rec.log_path.display()
            )));
        }
        Ok(())
    }
}

/// Sets its flag when dropped (an RPC future dropped by a cancelling
/// client).
struct CancelOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::fit_output;

    #[test]
    fn output_fits_one_message() {
        for (o, e, want) in [
            (10, 10, (10, 10)),
            (100, 0, (64, 0)),
            (0, 100, (0, 64)),
            (100, 100, (32, 32)),
            (100, 10, (54, 10)),
            (10, 100, (10, 54)),
        ] {
            let (mut so, mut se) = (vec![1u8; o], vec![2u8; e]);
            fit_output(&mut so, &mut se, 64);
            assert_eq!((so.len(), se.len()), want, "{o} {e}");
        }
    }
}
