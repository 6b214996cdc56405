//! `make bench` (stats, issue 18): with 100 running containers in 10 pods,
//! - ListContainerStats p50, target under 5 ms, next to ListContainers of
//!   the same containers in the same daemon (the baseline);
//! - ListPodSandboxStats and ListPodSandboxMetrics p50 (reported);
//! - the daemon's RSS and CPU over a minute left alone, then over a minute
//!   in which kubelet's stats calls come every 10 s (ListContainerStats
//!   and ListPodSandboxStats, as kubelet's summary API makes them).
//!
//! Needs the release binaries (`make bench` builds them). Run as root.
#![allow(clippy::unwrap_used)]

use crius_test_support::cri::*;
use crius_test_support::{CriClient, Daemon, ImageBuilder, Registry};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_crius");
const PODS: usize = 10;
const PER_POD: usize = 10;
/// Calls per timed half (`CRIUS_BENCH_CALLS` overrides: a profile wants longer).
fn calls() -> usize {
    std::env::var("CRIUS_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}
const WINDOW: Duration = Duration::from_secs(60);

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// (RSS bytes, CPU seconds) of `pid`.
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    (rss_kb * 1024, ticks as f64 / hz)
}

async fn timed<F, Fut>(mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut v = Vec::with_capacity(calls());
    for _ in 0..calls() {
        let t = Instant::now();
        f().await;
        v.push(t.elapsed());
    }
    median(v)
}

/// RSS at the end and CPU % over `WINDOW`, calling `poll` every 10 s.
async fn window(pid: u32, c: &mut CriClient, poll: bool) -> (u64, f64) {
    let (_, cpu0) = usage(pid);
    let start = Instant::now();
    while start.elapsed() < WINDOW {
        if poll {
            c.runtime
                .list_container_stats(ListContainerStatsRequest::default())
                .await
                .unwrap();
            c.runtime
                .list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
                .await
                .unwrap();
        }
        let next = Duration::from_secs(10).min(WINDOW.saturating_sub(start.elapsed()));
        tokio::time::sleep(next).await;
    }
    let (rss, cpu1) = usage(pid);
    (rss, (cpu1 - cpu0) / start.elapsed().as_secs_f64() * 100.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let registry = Registry::start().await.unwrap();
    let image = registry.reference("busybox:bench");
    ImageBuilder::busybox()
        .unwrap()
        .build()
        .unwrap()
        .push(&registry, "busybox:bench")
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("registries.conf"), "").unwrap();
    let toml = format!(
        "registries_conf = \"{0}/registries.conf\"\nauth_file = \"{0}/none.json\"\nallow_pods_without_network = true\ncgroup_parent = \"/crius-bench\"\nstop_pod_grace_seconds = 1\n",
        tmp.path().display()
    );
    let daemon = Daemon::builder(BIN)
        .config_toml(toml)
        .arg("--log-level")
        .arg("warn")
        .start()
        .await
        .expect("start crius (as root)");
    let pid = daemon.pid().unwrap();
    let mut c = daemon.client().await.unwrap();
    c.image
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut pods = Vec::new();
    for p in 0..PODS {
        let pc = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: format!("bench-{p}"),
                uid: format!("bench-{p}"),
                namespace: "bench".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        let pod = c
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pc.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        for i in 0..PER_POD {
            let id = c
                .runtime
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: pod.clone(),
                    config: Some(ContainerConfig {
                        metadata: Some(ContainerMetadata {
                            name: format!("c{i}"),
                            attempt: 0,
                        }),
                        image: Some(ImageSpec {
                            image: image.clone(),
                            ..Default::default()
                        }),
                        command: vec!["sleep".into(), "3600".into()],
                        log_path: format!("c{i}.log"),
                        ..Default::default()
                    }),
                    sandbox_config: Some(pc.clone()),
                })
                .await
                .unwrap()
                .into_inner()
                .container_id;
            c.runtime
                .start_container(StartContainerRequest { container_id: id })
                .await
                .unwrap();
        }
        pods.push(pod);
    }
    let n = c
        .runtime
        .list_container_stats(ListContainerStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .stats
        .len();
    assert_eq!(n, PODS * PER_POD);

    // Interleaved halves, so a slow stretch of the machine hits both.
    let mut stats = Vec::new();
    let mut list = Vec::new();
    for _ in 0..2 {
        let cc = c.clone();
        list.push(
            timed(|| {
                let mut c = cc.clone();
                async move {
                    c.runtime
                        .list_containers(ListContainersRequest::default())
                        .await
                        .unwrap();
                }
            })
            .await,
        );
        let cc = c.clone();
        stats.push(
            timed(|| {
                let mut c = cc.clone();
                async move {
                    c.runtime
                        .list_container_stats(ListContainerStatsRequest::default())
                        .await
                        .unwrap();
                }
            })
            .await,
        );
    }
    let cc = c.clone();
    let pod_stats = timed(|| {
        let mut c = cc.clone();
        async move {
            c.runtime
                .list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
                .await
                .unwrap();
        }
    })
    .await;
    let cc = c.clone();
    let pod_metrics = timed(|| {
        let mut c = cc.clone();
        async move {
            c.runtime
                .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest::default())
                .await
                .unwrap();
        }
    })
    .await;
    let stats_p50 = stats.iter().max().copied().unwrap();
    let list_p50 = list.iter().max().copied().unwrap();
    println!(
        "stats bench: {} running containers in {PODS} pods, {} calls per half",
        PODS * PER_POD,
        calls()
    );
    println!(
        "ListContainerStats p50 {:.2} ms (halves {:.2}, {:.2}; target < 5 ms: {})",
        ms(stats_p50),
        ms(stats[0]),
        ms(stats[1]),
        if stats_p50 < Duration::from_millis(5) {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "ListContainers (baseline) p50 {:.2} ms; ListContainerStats / ListContainers {:.2}x",
        ms(list_p50),
        stats_p50.as_secs_f64() / list_p50.as_secs_f64()
    );
    println!("ListPodSandboxStats p50 {:.2} ms", ms(pod_stats));
    println!("ListPodSandboxMetrics p50 {:.2} ms", ms(pod_metrics));

    let (rss_idle, cpu_idle) = window(pid, &mut c, false).await;
    let (rss_polled, cpu_polled) = window(pid, &mut c, true).await;
    println!(
        "daemon idle {}s: RSS {:.1} MiB, CPU {:.3} %",
        WINDOW.as_secs(),
        rss_idle as f64 / 1048576.0,
        cpu_idle
    );
    println!(
        "daemon with stats every 10 s, {}s: RSS {:.1} MiB, CPU {:.3} % ({:+.3} points over idle)",
        WINDOW.as_secs(),
        rss_polled as f64 / 1048576.0,
        cpu_polled,
        cpu_polled - cpu_idle
    );

    for pod in pods {
        c.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap();
        c.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod,
            })
            .await
            .unwrap();
    }
}
