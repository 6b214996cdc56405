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
