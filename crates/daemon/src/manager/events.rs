//! Container events (GetContainerEvents, kubelet's Evented PLEG): every
//! change of a pod's or container's state is published to every
//! subscriber with a snapshot of the pod's status and its containers'
//! statuses taken as the change happened (a deleted container's pod is
//! described without it; a deleted pod, as it last was).
//!
//! Fan-out is a `tokio::sync::broadcast` channel: publishing never waits
//! for a subscriber, and one that falls more than `container_events_buffer`
//! events behind loses the oldest (its stream logs how many). Nothing is
//! built while nobody subscribes.
//!
//! Exits are published as they happen, not only when an RPC looks: the
//! exit watcher (`exits`) sees the monitor's exit file appear.

use super::{Manager, Pod};
use crate::state::{ContainerRecord, PodRecord};
use crius_cri_api::v1::PodSandboxConfig;
use std::sync::Arc;
use tokio::sync::broadcast;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

/// One change, with the pod as it was right after it.
#[derive(Debug)]
pub struct Event {
    pub kind: EventKind,
    /// The container's id, or the pod's for the sandbox's own changes (as
    /// kubelet's Evented PLEG expects: it drops a pod from its cache when
    /// a deleted event names the sandbox).
    pub id: String,
    /// Unix nanoseconds.
    pub at: i64,
    /// The pod's config and record (None: the pod was already gone).
    pub pod: Option<(PodSandboxConfig, PodRecord)>,
    /// The pod's containers, oldest first.
    pub containers: Vec<ContainerRecord>,
}

/// The channel, keeping `capacity` events for a subscriber that is behind
/// (`container_events_buffer`, 1024 by default: kubelet reads them as they
/// come, and a burst of a thousand containers' changes fits).
pub(crate) fn channel(capacity: usize) -> broadcast::Sender<Arc<Event>> {
    broadcast::channel(capacity.max(1)).0
}

impl Manager {
    /// A new subscriber: it sees the changes published from now on.
    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Publishes a change of the container `id` (or of the pod itself when
    /// `id` is the pod's) of the pod `pod_id`.
    pub(crate) fn publish(&self, kind: EventKind, id: &str, pod_id: &str) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let pod = crate::sync::read(&self.pods).get(pod_id).cloned();
        self.publish_for(kind, id, pod_id, pod.as_deref());
    }

    /// As [`publish`](Self::publish), with the pod at hand (a pod removed
    /// from the index is still described).
    pub(crate) fn publish_for(&self, kind: EventKind, id: &str, pod_id: &str, pod: Option<&Pod>) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let mut containers: Vec<ContainerRecord> = self
            .pod_containers(pod_id)
            .iter()
            .map(|c| c.record())
            .collect();
        containers.sort_by_key(|r| r.created_at);
        let event = Event {
            kind,
            id: id.to_string(),
            at: super::now_ns(),
            pod: pod.map(|p| (p.config.clone(), p.record())),
            containers,
        };
        tracing::debug!(id, ?kind, "container event");
        // An error only means the last subscriber left meanwhile.
        let _ = self.events.send(Arc::new(event));
    }
}
