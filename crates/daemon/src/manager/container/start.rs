//! StartContainer: the container's monitor (a pooled standby, or a fresh
//! one) makes the runtime create and start it in one call.
use super::{files_of, MAX_LOG_LINE, START_ERROR_EXIT_CODE, START_ERROR_REASON};
use crate::manager::events::EventKind;
use crate::manager::{blocking, now_ns, Manager, ManagerError, Result};
use crate::state::ContainerPhase;
use std::sync::Arc;
use std::time::Instant;

impl Manager {
    /// Runs the container: its monitor (a pooled standby, or a fresh one)
    /// makes the runtime create and start it in one call (`run --detach`).
    /// A runtime that refuses leaves the container exited with reason
    /// `StartError` and exit code 128 (as containerd and CRI-O report it),
    /// and nothing of the runtime's behind.
    pub async fn start_container(self: &Arc<Self>, query: &str) -> Result<()> {
        // Carried through even if the client goes away (its deadline, a
        // cancelled call): a container must not run while its record, in
        // memory, says created, nor the op lock be let go mid-start.
        use tracing::Instrument;
        let me = self.clone();
        let query = query.to_string();
        tokio::spawn(
            async move { me.start_container_inner(&query).await }
                .instrument(tracing::Span::current()),
        )
        .await
        .map_err(|e| ManagerError::Internal(format!("StartContainer task failed: {e}")))?
    }

    async fn start_container_inner(self: &Arc<Self>, query: &str) -> Result<()> {
        let _starting = self.starting();
        let c = self.ctr(query)?;
        let _op = c.op.lock().await;
        let rec = self.refresh_expecting(&c, ContainerPhase::Created).await?;
        // The pod's namespaces and mounts, which the spec names, must still
        // be there, and stay: a pod being stopped takes no new starts.
        let pod_ready = self
            .pod(&c.pod_id)
            .map(|p| p.accepts_containers())
            .unwrap_or(false);
        if !pod_ready {
            return Err(ManagerError::FailedPrecondition(format!(
                "container {}: its pod sandbox {} is not ready (stopped, or being stopped)",
                c.id, c.pod_id
            )));
        }
        let runtime = self.runtime(&rec.runtime_handler)?;
        let pool = self.monitor_pool.clone();
        let stdio = crius_oci_runtime::launch::Stdio {
            tty: c.config.tty,
            stdin: c.config.stdin,
            stdin_once: c.config.stdin_once,
        };
        let files = files_of(&rec);
        let db = self.db.clone();
        let c2 = c.clone();
        let mut r = rec.clone();
        let result = blocking(move || {
            let id = &c2.id;
            // Taken before the run: a container can exit before the
            // runtime returns, and must not finish before it started.
            let started = now_ns();
            let t = Instant::now();
            let launched = runtime
                .prepare_run(pool.as_deref(), id, &files, MAX_LOG_LINE, stdio)
                .and_then(|p| p.launch())
                .map(|l| (l.pid, l.monitor_pid));
            match launched {
                Ok((pid, monitor_pid)) => {
                    tracing::debug!(
                        runtime_run_us = t.elapsed().as_micros() as u64,
                        "runtime run returned"
                    );
                    r.phase = ContainerPhase::Running;
                    r.started_at = started;
                    r.pid = pid;
                    r.monitor_pid = monitor_pid;
                    c2.set(r.clone());
                    // No fsync: recovery finds a container started after
                    // the last flushed record through the runtime, which is
                    // also why a failed write does not fail the start (the
                    // container runs).
                    if let Err(e) = db.put_container_lazily(&r) {
                        tracing::error!(error = %e, "recording the start");
                    }
                    Ok(Ok(()))
                }
                Err(e) => {
                    // Whatever the runtime made of it before failing.
                    if let Err(d) = runtime.delete(id, true) {
                        tracing::debug!(error = %d, "runtime delete after a failed run");
                    }
                    let _ = std::fs::remove_file(&files.pid_file);
                    r.phase = ContainerPhase::Exited;
                    r.finished_at = now_ns();
                    r.exit_code = START_ERROR_EXIT_CODE;
                    r.reason = START_ERROR_REASON.into();
                    r.message = e.to_string();
                    c2.set(r.clone());
                    // Unrecorded, a restarted daemon finds it created again
                    // (nothing of the runtime's is left): still true.
                    if let Err(e) = db.put_container(&r) {
                        tracing::error!(error = %e, "recording the failed start");
                    }
                    Ok(Err(e))
                }
            }
        })
        .await?;
        self.refill_pools();
        match result {
            Ok(()) => {
                tracing::info!(container = %c.id, "container started");
                self.publish(EventKind::Started, &c.id, &c.pod_id);
                // An exit before the start was recorded found the container
                // still created, and left it to the start: observed now.
                self.refresh(&c).await;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(container = %c.id, error = %e, "container failed to start");
                self.publish(EventKind::Stopped, &c.id, &c.pod_id);
                Err(ManagerError::FailedPrecondition(e.to_string()))
            }
        }
    }
}
