//! StopContainer: the stop signal, a grace period, then SIGKILL; a
//! container never started ends as one killed would.
use super::{files_of, NEVER_STARTED_EXIT_CODE};
use crate::manager::events::EventKind;
use crate::manager::{blocking, now_ns, Ctr, Manager, ManagerError, Result};
use crate::state::ContainerPhase;
use crius_oci_runtime::runtime::{exit_status, ContainerFiles, OciRuntime};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Manager {
    pub async fn stop_container(self: &Arc<Self>, query: &str, timeout: i64) -> Result<()> {
        // Stop* is idempotent in the CRI: kubelet retries a stop whose
        // container is already gone.
        let c = match self.ctr(query) {
            Ok(c) => c,
            Err(ManagerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _op = c.op.lock().await;
        self.stop_container_inner(&c, timeout).await
    }

    /// Sends the stop signal, waits up to `timeout` seconds for the exit,
    /// then SIGKILL. The caller holds the container's op lock (or owns the
    /// pod's). Idempotent.
    pub(crate) async fn stop_container_inner(&self, c: &Arc<Ctr>, timeout: i64) -> Result<()> {
        let rec = self.refresh(c).await;
        if rec.phase == ContainerPhase::Created {
            // Nothing runs yet (StartContainer runs it): it ends unstarted.
            let mut r = rec;
            r.phase = ContainerPhase::Exited;
            r.finished_at = now_ns();
            r.exit_code = NEVER_STARTED_EXIT_CODE;
            r.reason = "Error".into();
            r.message = "stopped before it was started".into();
            let db = self.db.clone();
            let r2 = r.clone();
            blocking(move || Ok(db.put_container(&r2)?)).await?;
            c.set(r);
            tracing::info!(container = %c.id, "container stopped before it was started");
            self.publish(EventKind::Stopped, &c.id, &c.pod_id);
            return Ok(());
        }
        if rec.phase != ContainerPhase::Running {
            return Ok(());
        }
        let runtime = self.runtime_any(&rec.runtime_handler)?;
        let files = files_of(&rec);
        if timeout > 0 {
            let (rt, id, sig) = (runtime.clone(), c.id.clone(), rec.stop_signal.clone());
            let sent = blocking(move || Ok(rt.kill(&id, &sig)?)).await;
            if let Err(e) = sent {
                tracing::debug!(container = %c.id, error = %e, "stop signal not delivered");
            }
            wait_exit(
                &files,
                Duration::from_secs(crate::manager::validate::timeout_secs(timeout)),
            )
            .await;
        }
        if exit_status(&files).ok().flatten().is_none() {
            let (rt, id) = (runtime.clone(), c.id.clone());
            let killed = blocking(move || Ok(rt.kill(&id, "SIGKILL")?)).await;
            if let Err(e) = killed {
                tracing::debug!(container = %c.id, error = %e, "SIGKILL not delivered");
            }
            if !wait_exit(&files, Duration::from_secs(30)).await {
                return Err(ManagerError::Internal(format!(
                    "container {} did not exit after SIGKILL",
                    c.id
                )));
            }
        }
        self.refresh(c).await;
        tracing::info!(container = %c.id, "container stopped");
        Ok(())
    }

    /// The runtime of a handler even when its probe says not ready (to
    /// stop and delete what it already runs).
    pub(crate) fn runtime_any(&self, handler: &str) -> Result<OciRuntime> {
        let info = self.runtimes.current();
        let h = info.handlers.get(handler).ok_or_else(|| {
            ManagerError::FailedPrecondition(format!(
                "runtime handler {handler:?} is no longer configured"
            ))
        })?;
        Ok(OciRuntime::new(h, &self.monitor)?)
    }
}

/// Polls for the monitor's exit file; true once it exists.
async fn wait_exit(files: &ContainerFiles, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(2);
    loop {
        if files.exit_file.exists() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}
