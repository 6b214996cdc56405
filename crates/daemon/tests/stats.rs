//! ContainerStats and ListContainerStats through the socket, against the
//! cgroup's own files (issue 18's first slice).
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use crius_test_support::cri::*;
use crius_test_support::CriClient;
use std::collections::HashMap;
use std::time::Duration;

async fn stats(c: &mut CriClient, id: &str) -> ContainerStats {
    c.runtime
        .container_stats(ContainerStatsRequest {
            container_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap()
}

async fn list(c: &mut CriClient, f: Option<ContainerStatsFilter>) -> Vec<String> {
    let mut ids: Vec<String> = c
        .runtime
        .list_container_stats(ListContainerStatsRequest { filter: f })
        .await
        .unwrap()
        .into_inner()
        .stats
        .into_iter()
        .map(|s| s.attributes.unwrap().id)
        .collect();
    ids.sort();
    ids
}

/// The v1 memory cgroup's own working set: usage − total_inactive_file.
fn cgroup_working_set(cgroups_path: &str) -> Option<u64> {
    let dir = format!("/sys/fs/cgroup/memory{cgroups_path}");
    let usage: u64 = std::fs::read_to_string(format!("{dir}/memory.usage_in_bytes"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("{dir}/memory.stat")).ok()?;
    let inactive = crius_oci_runtime_stat(&stat, "total_inactive_file");
    Some(usage - inactive)
}

fn crius_oci_runtime_stat(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn container_stats_follow_the_cgroup() {
    let env = env("").await;
    let mut c = env.client().await;
    let pc = pod_config("stats", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "").await;

    // CPU: a busy loop.
    let burn = created(
        &mut c,
        &pod,
        &pc,
        ("burn", &env.image),
        &["sh", "-c", "while :; do :; done"],
    )
    .await;
    start(&mut c, &burn).await;
    let s1 = stats(&mut c, &burn).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s2 = stats(&mut c, &burn).await;
    let (c1, c2) = (s1.cpu.unwrap(), s2.cpu.unwrap());
    let (u1, u2) = (
        c1.usage_core_nano_seconds.unwrap().value,
        c2.usage_core_nano_seconds.unwrap().value,
    );
    assert!(u2 > u1 + 500_000_000, "{u1} -> {u2}");
    let cores = c2.usage_nano_cores.unwrap().value;
    assert!(
        (300_000_000..1_300_000_000).contains(&cores),
        "{cores} nanocores for one busy loop"
    );
    assert_eq!(
        s2.attributes
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap()
            .name,
        "burn"
    );

    // Memory: 64 MiB in the pod's /dev/shm, charged to the container.
    let fill = created(
        &mut c,
        &pod,
        &pc,
        ("fill", &env.image),
        &["sh", "-c", "head -c 67108864 /dev/zero > /dev/shm/fill && echo big > /big-file && head -c 10485760 /dev/zero > /layer && sleep 100000"],
    )
    .await;
    start(&mut c, &fill).await;
    let cg = verbose_info(&mut c, &fill).await["cgroupsPath"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = stats(&mut c, &fill).await.memory.unwrap();
        let ours = m.working_set_bytes.map(|v| v.value).unwrap_or(0);
        if ours >= 64 << 20 {
            if let Some(theirs) = cgroup_working_set(&cg) {
                let diff = ours.abs_diff(theirs) as f64 / theirs as f64;
                assert!(diff < 0.05, "working set {ours} vs the cgroup's {theirs}");
            }
            assert!(m.usage_bytes.unwrap().value >= ours);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "working set stayed at {ours}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The writable layer has the 10 MiB file (measured once it is there).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let layer = stats(&mut c, &fill).await.writable_layer;
    // A first look may have come before the file: the cache lives 10 s.
    let used = layer.map(|l| l.used_bytes.unwrap().value).unwrap_or(0);
    if used < 10 << 20 {
        tokio::time::sleep(Duration::from_secs(11)).await;
    }
    let layer = stats(&mut c, &fill).await.writable_layer.unwrap();
    assert!(layer.used_bytes.unwrap().value >= 10 << 20, "{layer:?}");
    assert!(layer.inodes_used.unwrap().value >= 2);

    // A created container is listed; filters by id, pod and label.
    let idle = created(&mut c, &pod, &pc, ("idle", &env.image), &["sleep", "1"]).await;
    let mut all = vec![burn.clone(), fill.clone(), idle.clone()];
    all.sort();
    assert_eq!(list(&mut c, None).await, all);
    let s = stats(&mut c, &idle).await;
    assert!(s.cpu.unwrap().timestamp > 0 && s.memory.unwrap().timestamp > 0);
    assert_eq!(
        list(
            &mut c,
            Some(ContainerStatsFilter {
                id: burn[..12].into(),
                ..Default::default()
            })
        )
        .await,
        vec![burn.clone()]
    );
    assert_eq!(
        list(
            &mut c,
            Some(ContainerStatsFilter {
                pod_sandbox_id: "nope".into(),
                ..Default::default()
            })
        )
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        list(
            &mut c,
            Some(ContainerStatsFilter {
                label_selector: HashMap::from([("container".into(), "fill".into())]),
                ..Default::default()
            })
        )
        .await,
        vec![fill.clone()]
    );
    // The pod: its cgroup's totals, its containers, its loopback traffic.
    let pod_stats = |c: &mut CriClient| {
        let mut c = c.clone();
        let pod = pod.clone();
        async move {
            c.runtime
                .pod_sandbox_stats(PodSandboxStatsRequest {
                    pod_sandbox_id: pod,
                })
                .await
                .unwrap()
                .into_inner()
                .stats
                .unwrap()
                .linux
                .unwrap()
        }
    };
    let lo_rx = |l: &LinuxPodSandboxStats| {
        l.network
            .as_ref()
            .unwrap()
            .interfaces
            .iter()
            .find(|i| i.name == "lo")
            .unwrap()
            .rx_bytes
            .unwrap()
            .value
    };
    let before = pod_stats(&mut c).await;
    let mut ids: Vec<String> = before
        .containers
        .iter()
        .map(|s| s.attributes.as_ref().unwrap().id.clone())
        .collect();
    ids.sort();
    assert_eq!(ids, all);
    let out = exec(
        &mut c,
        &fill,
        &["sh", "-c", "mkdir -p /w && head -c 200000 /dev/zero > /w/f && httpd -p 127.0.0.1:9999 -h /w && printf 'GET /f HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 9999 | wc -c"],
    )
    .await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    let after = pod_stats(&mut c).await;
    assert!(
        lo_rx(&after) >= lo_rx(&before) + 200_000,
        "{} -> {}",
        lo_rx(&before),
        lo_rx(&after)
    );
    assert!(after
        .process
        .unwrap()
        .process_count
        .is_some_and(|n| n.value >= 2));
    let listed: Vec<String> = c
        .runtime
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .stats
        .into_iter()
        .map(|s| s.attributes.unwrap().id)
        .collect();
    assert_eq!(listed, vec![pod.clone()]);

    // An unknown id: NOT_FOUND.
    let e = c
        .runtime
        .container_stats(ContainerStatsRequest {
            container_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

/// The critest's list of the metrics a runtime must fill, less those it
/// lets runtimes leave out (hugetlb, pressure, ulimits, the memory
/// reservation) and those it lets hosts leave empty (block I/O).
const REQUIRED_METRICS: &[&str] = &[
    "container_cpu_cfs_periods_total",
    "container_cpu_cfs_throttled_periods_total",
    "container_cpu_cfs_throttled_seconds_total",
    "container_cpu_system_seconds_total",
    "container_cpu_usage_seconds_total",
    "container_cpu_user_seconds_total",
    "container_file_descriptors",
    "container_fs_inodes_free",
    "container_fs_inodes_total",
    "container_fs_limit_bytes",
    "container_fs_usage_bytes",
    "container_last_seen",
    "container_memory_cache",
    "container_memory_failcnt",
    "container_memory_failures_total",
    "container_memory_kernel_usage",
    "container_memory_mapped_file",
    "container_memory_max_usage_bytes",
    "container_memory_rss",
    "container_memory_swap",
    "container_memory_usage_bytes",
    "container_memory_working_set_bytes",
    "container_network_receive_bytes_total",
    "container_network_receive_errors_total",
    "container_network_receive_packets_dropped_total",
    "container_network_receive_packets_total",
    "container_network_transmit_bytes_total",
    "container_network_transmit_errors_total",
    "container_network_transmit_packets_dropped_total",
    "container_network_transmit_packets_total",
    "container_oom_events_total",
    "container_processes",
    "container_sockets",
    "container_spec_cpu_period",
    "container_spec_cpu_shares",
    "container_spec_memory_limit_bytes",
    "container_spec_memory_swap_limit_bytes",
    "container_start_time_seconds",
    "container_threads",
    "container_threads_max",
];

fn metric<'a>(ms: &'a [Metric], name: &str, extra: &[&str]) -> Option<&'a Metric> {
    ms.iter().find(|m| {
        m.name == name
            && m.label_values
                .ends_with(&extra.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    })
}

#[tokio::test]
async fn pod_sandbox_metrics_are_cadvisors_set_and_follow_the_cgroup() {
    let env = env("").await;
    let mut c = env.client().await;
    let descs = c
        .runtime
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors;
    let keys: HashMap<String, usize> = descs
        .iter()
        .map(|d| (d.name.clone(), d.label_keys.len()))
        .collect();
    for name in REQUIRED_METRICS {
        assert!(keys.contains_key(*name), "no descriptor for {name}");
    }

    let pc = pod_config("metrics", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "").await;
    let mut cc = container_config(
        "work",
        &env.image,
        &[
            "sh",
            "-c",
            "head -c 10485760 /dev/zero > /big; while :; do :; done",
        ],
    );
    cc.linux.as_mut().unwrap().resources = Some(LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 128 << 20,
        memory_swap_limit_in_bytes: 128 << 20,
        ..Default::default()
    });
    let id = create(&mut c, &pod, &pc, cc).await.unwrap();
    start(&mut c, &id).await;
    // Traffic on the pod's loopback.
    exec(
        &mut c,
        &id,
        &[
            "sh",
            "-c",
            "head -c 100000 /dev/zero | nc 127.0.0.1 1 || true",
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let all = c
        .runtime
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    let pm = all.iter().find(|p| p.pod_sandbox_id == pod).unwrap();
    assert_eq!(pm.container_metrics.len(), 1);
    let cm = &pm.container_metrics[0];
    assert_eq!(cm.container_id, id);
    // Every metric is described, with as many label values as keys.
    for m in pm.metrics.iter().chain(cm.metrics.iter()) {
        assert_eq!(keys.get(&m.name), Some(&m.label_values.len()), "{m:?}");
    }
    let names: std::collections::HashSet<&str> = pm
        .metrics
        .iter()
        .chain(cm.metrics.iter())
        .map(|m| m.name.as_str())
        .collect();
    for name in REQUIRED_METRICS {
        assert!(names.contains(name), "{name} missing");
    }
    // cAdvisor's labels: container, id, image, name, namespace, pod.
    let m = metric(&cm.metrics, "container_spec_cpu_shares", &[]).unwrap();
    let meta = pc.metadata.as_ref().unwrap();
    assert_eq!(
        m.label_values,
        [
            "work",
            id.as_str(),
            env.image.as_str(),
            id.as_str(),
            meta.namespace.as_str(),
            meta.name.as_str()
        ]
    );
    let v = |name: &str, extra: &[&str]| {
        metric(&cm.metrics, name, extra)
            .unwrap_or_else(|| panic!("{name}"))
            .value
            .as_ref()
            .unwrap()
            .value
    };
    assert_eq!(v("container_spec_cpu_shares", &[]), 512);
    assert_eq!(v("container_spec_cpu_quota", &[]), 50_000);
    assert_eq!(v("container_spec_memory_limit_bytes", &[]), 128 << 20);
    // Half a core for 2.5 s: at least a second, and throttled.
    assert!(v("container_cpu_usage_seconds_total", &[]) >= 1);
    assert!(v("container_cpu_cfs_throttled_periods_total", &[]) > 0);
    assert!(v("container_cpu_cfs_periods_total", &[]) >= 20);
    assert!(v("container_processes", &[]) >= 1);
    assert!(v("container_file_descriptors", &[]) >= 3);
    let fs = metric(&cm.metrics, "container_fs_usage_bytes", &[]).unwrap();
    assert!(fs.value.as_ref().unwrap().value >= 10 << 20, "{fs:?}");
    let ws = v("container_memory_working_set_bytes", &[]);
    assert!(ws > 0 && ws <= 128 << 20, "{ws}");
    // The pod's own: its loopback carried the traffic.
    let lo = metric(
        &pm.metrics,
        "container_network_transmit_bytes_total",
        &["lo"],
    )
    .unwrap();
    assert_eq!(lo.label_values[0], "POD");
    assert_eq!(lo.label_values[1], pod);
    assert!(lo.value.as_ref().unwrap().value > 0, "{lo:?}");

    // A stopped pod has no metrics.
    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    let all = c
        .runtime
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    assert!(all.iter().all(|p| p.pod_sandbox_id != pod));
    remove_pod(&mut c, &pod).await;
}
