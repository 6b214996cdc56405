//! ListMetricDescriptors and ListPodSandboxMetrics: the cAdvisor metric set
//! kubelet serves on `/metrics/cadvisor` when it takes pod and container
//! stats from the runtime (`PodAndContainerStatsFromCRI`).
//!
//! Every metric carries cAdvisor's container labels (`container`, `id`,
//! `image`, `name`, `namespace`, `pod`; the pod's own, network, metrics
//! have `container="POD"`), then its own (`interface`, `device`, …), in
//! the order its descriptor lists them. Only metrics crius fills are
//! described. Values are whole numbers (the CRI's `UInt64Value`), so the
//! `_seconds` counters count whole seconds, as containerd's do.

use crate::manager::container::stats::now_ns;
use crate::manager::{blocking, Ctr, Manager, Pod};
use crate::state::{decode_config, ContainerPhase, PodPhase};
use crius_cri_api::v1::{
    ContainerConfig, ContainerMetrics, Metric, MetricDescriptor, MetricType, PodSandboxMetrics,
    UInt64Value,
};
use std::sync::Arc;

/// cAdvisor's container labels, first on every metric.
pub const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

const C: MetricType = MetricType::Counter;
const G: MetricType = MetricType::Gauge;

/// (name, help, labels after the base ones, type)
pub const METRICS: &[(&str, &str, &[&str], MetricType)] = &[
    (
        "container_cpu_usage_seconds_total",
        "Cumulative CPU time consumed in seconds.",
        &[],
        C,
    ),
    (
        "container_cpu_user_seconds_total",
        "Cumulative user CPU time consumed in seconds.",
        &[],
        C,
    ),
    (
        "container_cpu_system_seconds_total",
        "Cumulative system CPU time consumed in seconds.",
        &[],
        C,
    ),
    (
        "container_cpu_cfs_periods_total",
        "Number of elapsed enforcement period intervals.",
        &[],
        C,
    ),
    (
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
        &[],
        C,
    ),
    (
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
        &[],
        C,
    ),
    (
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        &[],
        G,
    ),
    ("container_memory_rss", "Size of RSS in bytes.", &[], G),
    (
        "container_memory_kernel_usage",
        "Size of kernel memory allocated in bytes.",
        &[],
        G,
    ),
    (
        "container_memory_mapped_file",
        "Size of memory mapped files in bytes.",
        &[],
        G,
    ),
    (
        "container_memory_swap",
        "Container swap usage in bytes.",
        &[],
        G,
    ),
    (
        "container_memory_failcnt",
        "Number of memory usage hits limits.",
        &[],
        C,
    ),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        &[],
        G,
    ),
    (
        "container_memory_max_usage_bytes",
        "Maximum memory usage recorded in bytes.",
        &[],
        G,
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        &[],
        G,
    ),
    (
        "container_memory_failures_total",
        "Cumulative count of memory allocation failures.",
        &["failure_type", "scope"],
        C,
    ),
    (
        "container_oom_events_total",
        "Count of out of memory events observed for the container.",
        &[],
        C,
    ),
    (
        "container_processes",
        "Number of processes running inside the container.",
        &[],
        G,
    ),
    (
        "container_threads",
        "Number of threads running inside the container.",
        &[],
        G,
    ),
    (
        "container_threads_max",
        "Maximum number of threads allowed inside the container, infinity if value is zero.",
        &[],
        G,
    ),
    (
        "container_file_descriptors",
        "Number of open file descriptors for the container.",
        &[],
        G,
    ),
    (
        "container_sockets",
        "Number of open sockets for the container.",
        &[],
        G,
    ),
    (
        "container_spec_cpu_period",
        "CPU period of the container.",
        &[],
        G,
    ),
    (
        "container_spec_cpu_quota",
        "CPU quota of the container.",
        &[],
        G,
    ),
    (
        "container_spec_cpu_shares",
        "CPU share of the container.",
        &[],
        G,
    ),
    (
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        &[],
        G,
    ),
    (
        "container_spec_memory_swap_limit_bytes",
        "Memory swap limit for the container.",
        &[],
        G,
    ),
    (
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        &[],
        G,
    ),
    (
        "container_last_seen",
        "Last time a container was seen by the exporter.",
        &[],
        G,
    ),
    (
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        &["device"],
        G,
    ),
    (
        "container_fs_limit_bytes",
        "Number of bytes that can be consumed by the container on this filesystem.",
        &["device"],
        G,
    ),
    (
        "container_fs_inodes_total",
        "Number of Inodes.",
        &["device"],
        G,
    ),
    (
        "container_fs_inodes_free",
        "Number of available Inodes.",
        &["device"],
        G,
    ),
    (
        "container_fs_reads_bytes_total",
        "Cumulative count of bytes read.",
        &["device"],
        C,
    ),
    (
        "container_fs_writes_bytes_total",
        "Cumulative count of bytes written.",
        &["device"],
        C,
    ),
    (
        "container_fs_reads_total",
        "Cumulative count of reads completed.",
        &["device"],
        C,
    ),
    (
        "container_fs_writes_total",
        "Cumulative count of writes completed.",
        &["device"],
        C,
    ),
    (
        "container_blkio_device_usage_total",
        "Blkio device bytes usage.",
        &["device", "major", "minor", "operation"],
        C,
    ),
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received.",
        &["interface"],
        C,
    ),
    (
        "container_network_receive_packets_total",
        "Cumulative count of packets received.",
        &["interface"],
        C,
    ),
    (
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving.",
        &["interface"],
        C,
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving.",
        &["interface"],
        C,
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted.",
        &["interface"],
        C,
    ),
    (
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted.",
        &["interface"],
        C,
    ),
    (
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting.",
        &["interface"],
        C,
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting.",
        &["interface"],
        C,
    ),
];

pub fn descriptors() -> Vec<MetricDescriptor> {
    METRICS
        .iter()
        .map(|(name, help, extra, _)| MetricDescriptor {
            name: name.to_string(),
            help: help.to_string(),
            label_keys: BASE_LABELS
                .iter()
                .chain(extra.iter())
                .map(|s| s.to_string())
                .collect(),
        })
        .collect()
}

/// Metrics of one subject (a container, or a pod's own), labelled alike.
struct Out {
    base: Vec<String>,
    v: Vec<Metric>,
}

impl Out {
    fn new(base: Vec<String>) -> Self {
        Out {
            base,
            v: Vec::new(),
        }
    }

    /// Adds `name` with its own label values (none if `value` is None).
    /// A name not in [`METRICS`] is a bug caught by the tests.
    fn put(&mut self, name: &str, extra: &[&str], value: Option<u64>) {
        let (Some(value), Some((_, _, keys, kind))) = (value, METRICS.iter().find(|m| m.0 == name))
        else {
            return;
        };
        debug_assert_eq!(keys.len(), extra.len(), "{name}");
        let mut labels = self.base.clone();
        labels.extend(extra.iter().map(|s| s.to_string()));
        self.v.push(Metric {
            name: name.to_string(),
            // Gathered live (the CRI's convention for "not cached").
            timestamp: 0,
            metric_type: *kind as i32,
            label_values: labels,
            value: Some(UInt64Value { value }),
        });
    }
}

const NS: u64 = 1_000_000_000;

/// The figures of one running container (blocking: reads the cgroup,
/// /proc and the filesystem).
fn container_metrics(m: &Manager, c: &Ctr, pod: &Pod, ts: i64) -> ContainerMetrics {
    let rec = c.record();
    let meta = pod.config.metadata.clone().unwrap_or_default();
    let name = c
        .config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let mut o = Out::new(vec![
        name,
        c.id.clone(),
        rec.image.clone(),
        c.id.clone(),
        meta.namespace,
        meta.name,
    ]);
    let s = crate::manager::container::stats::read_cgroup(
        &m.stats_cache,
        &c.id,
        &rec.cgroups_path,
        false,
    );
    let d = crius_oci_runtime::cgmetrics::read(&rec.cgroups_path);
    o.put(
        "container_cpu_usage_seconds_total",
        &[],
        s.cpu_usage_ns.map(|v| v / NS),
    );
    o.put(
        "container_cpu_user_seconds_total",
        &[],
        d.cpu_user_ns.map(|v| v / NS),
    );
    o.put(
        "container_cpu_system_seconds_total",
        &[],
        d.cpu_system_ns.map(|v| v / NS),
    );
    o.put("container_cpu_cfs_periods_total", &[], d.cfs_periods);
    o.put(
        "container_cpu_cfs_throttled_periods_total",
        &[],
        d.cfs_throttled_periods,
    );
    o.put(
        "container_cpu_cfs_throttled_seconds_total",
        &[],
        d.cfs_throttled_ns.map(|v| v / NS),
    );
    if let Some(mem) = s.memory {
        o.put("container_memory_usage_bytes", &[], Some(mem.usage_bytes));
        o.put(
            "container_memory_working_set_bytes",
            &[],
            Some(mem.working_set_bytes),
        );
        o.put("container_memory_rss", &[], Some(mem.rss_bytes));
        for scope in ["container", "hierarchy"] {
            o.put(
                "container_memory_failures_total",
                &["pgfault", scope],
                Some(mem.page_faults),
            );
            o.put(
                "container_memory_failures_total",
                &["pgmajfault", scope],
                Some(mem.major_page_faults),
            );
        }
    }
    o.put("container_memory_cache", &[], d.memory_cache);
    o.put("container_memory_kernel_usage", &[], d.memory_kernel);
    o.put("container_memory_mapped_file", &[], d.memory_mapped_file);
    o.put("container_memory_swap", &[], d.memory_swap);
    o.put("container_memory_failcnt", &[], d.memory_failcnt);
    o.put("container_memory_max_usage_bytes", &[], d.memory_max_usage);
    o.put("container_oom_events_total", &[], d.oom_kills);
    o.put(
        "container_processes",
        &[],
        s.pids.or(Some(d.procs.len() as u64)),
    );
    o.put("container_threads", &[], d.threads);
    o.put(
        "container_threads_max",
        &[],
        Some(d.threads_max.unwrap_or(0)),
    );
    let (fds, sockets) = crius_oci_runtime::cgmetrics::open_files(&d.procs);
    o.put("container_file_descriptors", &[], Some(fds));
    o.put("container_sockets", &[], Some(sockets));

    // The resources as last set (UpdateContainerResources included).
    let res = decode_config::<ContainerConfig>(&rec.id, &rec.config)
        .ok()
        .and_then(|c| c.linux)
        .and_then(|l| l.resources)
        .unwrap_or_default();
    let pos = |v: i64| u64::try_from(v).ok();
    o.put(
        "container_spec_cpu_period",
        &[],
        Some(pos(res.cpu_period).filter(|v| *v > 0).unwrap_or(100_000)),
    );
    o.put("container_spec_cpu_quota", &[], pos(res.cpu_quota));
    o.put(
        "container_spec_cpu_shares",
        &[],
        Some(pos(res.cpu_shares).filter(|v| *v > 0).unwrap_or(1024)),
    );
    o.put(
        "container_spec_memory_limit_bytes",
        &[],
        pos(res.memory_limit_in_bytes),
    );
    o.put(
        "container_spec_memory_swap_limit_bytes",
        &[],
        pos(res.memory_swap_limit_in_bytes),
    );
    o.put(
        "container_start_time_seconds",
        &[],
        pos(rec.started_at).map(|v| v / NS),
    );
    o.put("container_last_seen", &[], pos(ts).map(|v| v / NS));

    // The writable layer's filesystem.
    let upper = rec.dir.join("fs/upper");
    if let Ok(vfs) = nix::sys::statvfs::statvfs(&rec.dir) {
        let dev = device_of(&rec.dir);
        let frsize = vfs.fragment_size();
        o.put(
            "container_fs_limit_bytes",
            &[&dev],
            Some(vfs.blocks() * frsize),
        );
        o.put("container_fs_inodes_total", &[&dev], Some(vfs.files()));
        o.put(
            "container_fs_inodes_free",
            &[&dev],
            Some(vfs.files_available()),
        );
        let used = crate::manager::container::stats::layer_usage(&m.stats_cache, &c.id, &upper);
        o.put("container_fs_usage_bytes", &[&dev], used.map(|(b, _)| b));
    }
    for io in &d.io {
        let dev = format!("{}:{}", io.major, io.minor);
        let (maj, min) = (io.major.to_string(), io.minor.to_string());
        o.put(
            "container_fs_reads_bytes_total",
            &[&dev],
            Some(io.read_bytes),
        );
        o.put(
            "container_fs_writes_bytes_total",
            &[&dev],
            Some(io.write_bytes),
        );
        o.put("container_fs_reads_total", &[&dev], Some(io.reads));
        o.put("container_fs_writes_total", &[&dev], Some(io.writes));
        o.put(
            "container_blkio_device_usage_total",
            &[&dev, &maj, &min, "Read"],
            Some(io.read_bytes),
        );
        o.put(
            "container_blkio_device_usage_total",
            &[&dev, &maj, &min, "Write"],
            Some(io.write_bytes),
        );
    }
    ContainerMetrics {
        container_id: c.id.clone(),
        metrics: o.v,
    }
}

/// `major:minor` of the filesystem holding `path`.
fn device_of(path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => {
            let dev = m.dev();
            format!("{}:{}", libc::major(dev), libc::minor(dev))
        }
        Err(_) => String::new(),
    }
}

/// The pod's own metrics: its namespace's interfaces.
fn pod_own_metrics(pod: &Pod) -> Vec<Metric> {
    let rec = pod.record();
    let meta = pod.config.metadata.clone().unwrap_or_default();
    let mut o = Out::new(vec![
        "POD".into(),
        pod.id.clone(),
        String::new(),
        pod.id.clone(),
        meta.namespace,
        meta.name,
    ]);
    // A host-network pod's counters would be the node's.
    if let Some(ns) = rec.netns.as_deref() {
        for i in crius_network::stats::read(Some(ns)).unwrap_or_default() {
            let n: &[&str] = &[&i.name];
            o.put("container_network_receive_bytes_total", n, Some(i.rx_bytes));
            o.put(
                "container_network_receive_packets_total",
                n,
                Some(i.rx_packets),
            );
            o.put(
                "container_network_receive_packets_dropped_total",
                n,
                Some(i.rx_dropped),
            );
            o.put(
                "container_network_receive_errors_total",
                n,
                Some(i.rx_errors),
            );
            o.put(
                "container_network_transmit_bytes_total",
                n,
                Some(i.tx_bytes),
            );
            o.put(
                "container_network_transmit_packets_total",
                n,
                Some(i.tx_packets),
            );
            o.put(
                "container_network_transmit_packets_dropped_total",
                n,
                Some(i.tx_dropped),
            );
            o.put(
                "container_network_transmit_errors_total",
                n,
                Some(i.tx_errors),
            );
        }
    }
    o.v
}

impl Manager {
    /// Every ready pod's metrics and its running containers'.
    pub async fn list_pod_sandbox_metrics(self: &Arc<Self>) -> Vec<PodSandboxMetrics> {
        let pods: Vec<Arc<Pod>> = crate::sync::read(&self.pods)
            .values()
            .filter(|p| p.record().phase == PodPhase::Ready)
            .cloned()
            .collect();
        let me = self.clone();
        blocking(move || {
            let ts = now_ns();
            Ok(pods
                .iter()
                .map(|pod| {
                    let mut ctrs: Vec<Arc<Ctr>> = me
                        .pod_containers(&pod.id)
                        .into_iter()
                        .filter(|c| c.with(|r| r.phase == ContainerPhase::Running))
                        .collect();
                    ctrs.sort_by(|a, b| a.id.cmp(&b.id));
                    PodSandboxMetrics {
                        pod_sandbox_id: pod.id.clone(),
                        metrics: pod_own_metrics(pod),
                        container_metrics: ctrs
                            .iter()
                            .map(|c| container_metrics(&me, c, pod, ts))
                            .collect(),
                    }
                })
                .collect())
        })
        .await
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_unique_and_labelled() {
        let d = descriptors();
        let mut names: Vec<_> = d.iter().map(|d| d.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), d.len());
        for d in &d {
            assert!(!d.help.is_empty() && d.label_keys.len() >= BASE_LABELS.len());
            assert!(d.name.starts_with("container_"), "{}", d.name);
        }
    }

    #[test]
    fn put_labels_in_descriptor_order_and_skips_absent_values() {
        let mut o = Out::new(vec!["b".into(); 6]);
        o.put("container_network_receive_bytes_total", &["eth0"], Some(5));
        o.put("container_memory_rss", &[], None);
        o.put("not_a_metric", &[], Some(1));
        assert_eq!(o.v.len(), 1);
        let m = &o.v[0];
        assert_eq!(m.label_values.len(), 7);
        assert_eq!(m.label_values[6], "eth0");
        assert_eq!(m.metric_type, MetricType::Counter as i32);
        assert_eq!((m.timestamp, m.value.as_ref().unwrap().value), (0, 5));
    }
}
