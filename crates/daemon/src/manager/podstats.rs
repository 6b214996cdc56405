//! PodSandboxStats and ListPodSandboxStats: the pod cgroup's totals (its
//! cgroup parent, which kubelet makes the pod's own), the network
//! counters of the pod's namespace, its process count, and its
//! containers' stats.

use crate::manager::container::stats::{cpu_memory, now_ns, u64v};
use crate::manager::{blocking, filters, Manager, Pod, Result};
use crate::state::{ContainerPhase, PodPhase};
use crius_cri_api::v1::{
    LinuxPodSandboxStats, NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes,
    PodSandboxStats, PodSandboxStatsFilter, ProcessUsage,
};
use std::sync::Arc;

fn iface(i: &crius_network::stats::Interface) -> NetworkInterfaceUsage {
    NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: u64v(i.rx_bytes),
        rx_errors: u64v(i.rx_errors),
        tx_bytes: u64v(i.tx_bytes),
        tx_errors: u64v(i.tx_errors),
    }
}

impl Manager {
    pub async fn pod_sandbox_stats(&self, query: &str) -> Result<PodSandboxStats> {
        let pod = self.pod(query)?;
        Ok(self.pod_stats(pod).await)
    }

    pub async fn list_pod_sandbox_stats(
        &self,
        filter: Option<&PodSandboxStatsFilter>,
    ) -> Vec<PodSandboxStats> {
        let pods: Vec<Arc<Pod>> = crate::sync::read(&self.pods)
            .values()
            .filter(|p| match filter {
                None => true,
                Some(f) => {
                    filters::id_matches(&f.id, &p.id)
                        && filters::labels_match(&f.label_selector, &p.config.labels)
                }
            })
            .filter(|p| p.record().phase == PodPhase::Ready)
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(pods.len());
        for p in pods {
            out.push(self.pod_stats(p).await);
        }
        out
    }

    async fn pod_stats(&self, pod: Arc<Pod>) -> PodSandboxStats {
        let rec = pod.record();
        let ctrs: Vec<_> = self
            .pod_containers(&pod.id)
            .into_iter()
            .filter(|c| {
                c.with(|r| matches!(r.phase, ContainerPhase::Created | ContainerPhase::Running))
            })
            .collect();
        let containers = self.stats_of(ctrs).await;
        let cache = self.stats_cache.clone();
        let (cgroup, netns, ready, id) = (
            rec.cgroup_parent.clone(),
            rec.netns.clone(),
            rec.phase == PodPhase::Ready,
            pod.id.clone(),
        );
        let (cpu, memory, process, network) = blocking(move || {
            let ts = now_ns();
            let s = if ready && !cgroup.is_empty() {
                crate::manager::container::stats::read_cgroup(
                    &cache,
                    &format!("pod:{id}"),
                    &cgroup,
                    true,
                )
            } else {
                Default::default()
            };
            let (cpu, memory) = cpu_memory(&cache, &format!("pod:{id}"), &s, ts);
            let process = ProcessUsage {
                timestamp: ts,
                process_count: s.pids.and_then(u64v),
            };
            // Only a pod with a namespace of its own has counters of its
            // own (a host-network pod's would be the node's).
            let network = match (&netns, ready) {
                (Some(ns), true) => {
                    crius_network::stats::read(Some(ns))
                        .ok()
                        .map(|ifs| NetworkUsage {
                            timestamp: ts,
                            default_interface: crius_network::stats::default_interface(&ifs)
                                .map(iface),
                            interfaces: ifs.iter().map(iface).collect(),
                        })
                }
                _ => None,
            };
            Ok((cpu, memory, process, network))
        })
        .await
        .unwrap_or_default();
        PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: pod.id.clone(),
                metadata: pod.config.metadata.clone(),
                labels: pod.config.labels.clone(),
                annotations: pod.config.annotations.clone(),
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu: Some(cpu),
                memory: Some(memory),
                network,
                process: Some(process),
                containers,
                io: None,
            }),
            windows: None,
        }
    }
}
