//! ContainerStatus and ListContainers, and `refresh`: how every look at a
//! live container observes the exit its monitor recorded.
use super::{cri_state, exited_record};
use crate::manager::events::EventKind;
use crate::manager::{blocking, filters, Ctr, Manager, ManagerError, Result};
use crate::state::{ContainerPhase, ContainerRecord};
use crius_cri_api::v1::ContainerFilter;
use std::collections::HashMap;
use std::sync::Arc;

impl Manager {
    /// Observes an exit the monitor recorded and persists it.
    pub(crate) async fn refresh(&self, c: &Ctr) -> ContainerRecord {
        let rec = c.record();
        // Only a running container exits: a created one that has an exit
        // file is being started right now (its monitor ran it, the start
        // has not recorded it yet), and the start records it first.
        if rec.phase != ContainerPhase::Running {
            return rec;
        }
        let Some(new) = exited_record(&self.host, &rec, &c.config) else {
            return rec;
        };
        {
            // The exit is recorded and published in one step: the losing
            // observer (which then lets its RPC go on, to a removal say)
            // returns only after the stopped event is out.
            let _order = crate::sync::lock(&self.event_order);
            if !c.replace_if(|cur| cur.phase == ContainerPhase::Running, new.clone()) {
                return c.record();
            }
            self.publish(EventKind::Stopped, &c.id, &c.pod_id);
        }
        if new.reason == "OOMKilled" {
            crate::metrics::global().oom_kills.inc();
        }
        let db = self.db.clone();
        let r2 = new.clone();
        if let Err(e) = blocking(move || Ok(db.put_container_lazily(&r2)?)).await {
            tracing::error!(container = %c.id, error = %e, "persisting the container's exit");
        }
        tracing::info!(container = %c.id, exit_code = new.exit_code, reason = %new.reason, "container exited");
        new
    }

    /// The current record, or FAILED_PRECONDITION if the container is not
    /// in `phase`.
    pub(super) async fn refresh_expecting(
        &self,
        c: &Ctr,
        phase: ContainerPhase,
    ) -> Result<ContainerRecord> {
        let rec = self.refresh(c).await;
        if rec.phase != phase {
            return Err(ManagerError::FailedPrecondition(format!(
                "container {} is {}, not {}",
                c.id,
                phase_name(rec.phase),
                phase_name(phase)
            )));
        }
        Ok(rec)
    }

    pub async fn container_status(&self, query: &str) -> Result<(Arc<Ctr>, ContainerRecord)> {
        let c = self.ctr(query)?;
        let rec = self.refresh(&c).await;
        Ok((c, rec))
    }

    /// The containers matching `filter`, oldest first, their exits observed.
    /// Callers read each record in place (`Ctr::with`): with a thousand
    /// containers, copying every record would dominate the call.
    pub async fn list_containers(&self, filter: Option<&ContainerFilter>) -> Vec<Arc<Ctr>> {
        let all =
            self.containers_matching(filter.map(|f| (&f.id, &f.pod_sandbox_id, &f.label_selector)));
        let mut out = Vec::with_capacity(all.len());
        for c in all {
            let live =
                c.with(|r| matches!(r.phase, ContainerPhase::Created | ContainerPhase::Running));
            if live {
                self.refresh(&c).await;
            }
            let (phase, created_at) = c.with(|r| (r.phase, r.created_at));
            if let Some(s) = filter.and_then(|f| f.state.as_ref()) {
                if s.state != cri_state(phase) as i32 {
                    continue;
                }
            }
            out.push((created_at, c));
        }
        out.sort_by_key(|(t, _)| *t);
        out.into_iter().map(|(_, c)| c).collect()
    }
}

impl Manager {
    /// The containers the id, pod and label parts of a list filter match
    /// (ListContainers' and ListContainerStats'; None: all), unordered.
    pub(super) fn containers_matching(
        &self,
        filter: Option<(&String, &String, &HashMap<String, String>)>,
    ) -> Vec<Arc<Ctr>> {
        crate::sync::read(&self.containers)
            .values()
            .filter(|c| match filter {
                None => true,
                Some((id, pod, labels)) => filters::container_matches(
                    (&c.id, &c.pod_id, &c.config.labels),
                    (id, pod, labels),
                ),
            })
            .cloned()
            .collect()
    }
}

pub(super) fn phase_name(p: ContainerPhase) -> &'static str {
    match p {
        ContainerPhase::Creating => "being created",
        ContainerPhase::Created => "created",
        ContainerPhase::Running => "running",
        ContainerPhase::Exited => "exited",
    }
}
