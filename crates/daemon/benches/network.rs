//! `make bench` (networking, issue 16): what CNI costs RunPodSandbox.
//!
//! Two daemons run side by side: one with a network (loopback, bridge with
//! host-local IPAM, portmap — the shape of a real cluster's conflist), one
//! whose config directory is empty (pods get loopback only). Interleaved
//! rounds time RunPodSandbox of:
//! - a pod on the network;
//! - a pod without a network (the same daemon work minus CNI);
//! - a hostNetwork pod;
//! - and the floor: the same plugin chain called directly, ADD through the
//!   chain with prevResult, into a fresh network namespace (`ip netns`).
//!
//! crius's own network cost is (network pod − loopback-only pod) − plugins
//! alone; the target is at most 2 ms. Then 100 network pods are started
//! one at a time and 10 at a time, next to the plugins alone one at a time
//! and 10 at a time: if crius serialised plugin calls, its 10-way speed-up
//! would fall below the plugins' own.
//!
//! Prints a table and one JSON line. Run as root: `cargo bench -p crius --bench network`.
#![allow(clippy::unwrap_used)]

use crius_test_support::cri::*;
use crius_test_support::network::TestNetwork;
use crius_test_support::{CriClient, Daemon};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 10;
const PER_ROUND: usize = 5;
const MANY: usize = 100;

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn pod(name: &str, host_network: bool) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: "bench".into(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: "/crius-bench".into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: if host_network {
                        NamespaceMode::Node as i32
                    } else {
                        NamespaceMode::Pod as i32
                    },
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// RunPodSandbox timed; stop and remove after, untimed.
async fn pod_once(c: &mut CriClient, name: &str, host_network: bool) -> Duration {
    let t = Instant::now();
    let id = c
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod(name, host_network)),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let d = t.elapsed();
    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    c.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
    d
}

/// One plugin call made directly, the way any CNI runtime makes it.
fn call(plugin: &str, command: &str, id: &str, netns: &str, stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new(format!("/usr/lib/cni/{plugin}"))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{plugin} {command}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    out.stdout
}

/// The chain alone: ADD (timed) into a fresh netns, then DEL and the
/// netns's removal (untimed).
fn plugins_once(list: &crius_network::config::NetworkConfigList, tag: &str) -> Duration {
    let ns = format!("crius-bench-{tag}");
    assert!(Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap()
        .success());
    let netns = format!("/run/netns/{ns}");
    let id = format!("bench{tag}");
    let caps = serde_json::Map::new();
    let t = Instant::now();
    let mut prev: Option<Value> = None;
    for p in &list.plugins {
        let stdin = crius_network::runtime::plugin_stdin(list, p, prev.as_ref(), &caps);
        prev = Some(serde_json::from_slice(&call(&p.kind, "ADD", &id, &netns, &stdin)).unwrap());
    }
    let d = t.elapsed();
    for p in list.plugins.iter().rev() {
        let stdin = crius_network::runtime::plugin_stdin(list, p, prev.as_ref(), &caps);
        call(&p.kind, "DEL", &id, &netns, &stdin);
    }
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    d
}

/// MANY chains alone, `parallel` at a time (one thread each); seconds.
fn plugins_many(
    list: &crius_network::config::NetworkConfigList,
    parallel: usize,
    tag: &str,
) -> f64 {
    let t = Instant::now();
    let mut next = 0;
    while next < MANY {
        let hs: Vec<_> = (next..(next + parallel).min(MANY))
            .map(|i| {
                let l = list.clone();
                let tag = format!("{tag}{i}");
                std::thread::spawn(move || plugins_once(&l, &tag))
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        next += parallel;
    }
    t.elapsed().as_secs_f64()
}

async fn wait_ready(c: &mut CriClient, want: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = c
            .runtime
            .status(StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
        let ready = st
            .status
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.r#type == "NetworkReady" && c.status);
        if ready == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "NetworkReady never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let net = TestNetwork::new("bench", 30).unwrap();
    let conflist =
        net.conflist(&[json!({"type": "portmap", "capabilities": {"portMappings": true}})]);
    let list = crius_network::config::parse(
        std::path::Path::new("bench.conflist"),
        conflist.as_bytes(),
        true,
    )
    .unwrap();
    let start = |tag: &str| {
        Daemon::builder(env!("CARGO_BIN_EXE_crius"))
            .arg("--log-level")
            .arg("warn")
            .env("CRIUS_BENCH", tag)
            .start()
    };
    let with = start("net").await.expect("start crius (as root)");
    net.install(&with.cni_config_dir(), "10-bench.conflist", &conflist)
        .unwrap();
    let without = start("lo").await.expect("start crius");
    let mut cw = with.client().await.unwrap();
    let mut co = without.client().await.unwrap();
    wait_ready(&mut cw, true).await;
    wait_ready(&mut co, false).await;

    // Warm-up: caches, the namespace pools, the plugins' pages.
    for i in 0..3 {
        pod_once(&mut cw, &format!("warm-{i}"), false).await;
        pod_once(&mut co, &format!("warm-lo-{i}"), false).await;
        plugins_once(&list, &format!("w{i}"));
    }
    let (mut netp, mut lo, mut host, mut floor) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..ROUNDS {
        for i in 0..PER_ROUND {
            let n = r * PER_ROUND + i;
            netp.push(pod_once(&mut cw, &format!("net-{n}"), false).await);
            lo.push(pod_once(&mut co, &format!("lo-{n}"), false).await);
            host.push(pod_once(&mut cw, &format!("host-{n}"), true).await);
            let l = list.clone();
            floor.push(
                tokio::task::spawn_blocking(move || plugins_once(&l, &format!("f{n}")))
                    .await
                    .unwrap(),
            );
        }
    }
    let (netp, lo, host, floor) = (median(netp), median(lo), median(host), median(floor));
    let overhead = netp - lo - floor;

    // 100 pods, serial and 10-way; the plugins alone, the same.
    let many = |parallel: usize, tag: &'static str| {
        let c = cw.clone();
        async move {
            let t = Instant::now();
            let mut next = 0;
            while next < MANY {
                let batch = (next..(next + parallel).min(MANY)).map(|i| {
                    let mut c = c.clone();
                    async move { pod_once(&mut c, &format!("{tag}-{i}"), false).await }
                });
                futures_util::future::join_all(batch).await;
                next += parallel;
            }
            t.elapsed().as_secs_f64()
        }
    };
    let crius_serial = many(1, "s").await;
    let crius_par = many(10, "p").await;
    let l = list.clone();
    let plugins_serial = tokio::task::spawn_blocking(move || plugins_many(&l, 1, "ps"))
        .await
        .unwrap();
    let l = list.clone();
    let plugins_par = tokio::task::spawn_blocking(move || plugins_many(&l, 10, "pp"))
        .await
        .unwrap();
    let leaks = net.holdings().unwrap();

    println!(
        "network bench (RunPodSandbox p50 over {} pods each, interleaved)",
        ROUNDS * PER_ROUND
    );
    println!("  pod on the CNI network (loopback, bridge, portmap)  {netp:8.2} ms");
    println!("  pod without a network (loopback only)                {lo:8.2} ms");
    println!("  hostNetwork pod                                      {host:8.2} ms");
    println!("  the plugins alone (same chain, called directly)      {floor:8.2} ms");
    println!("  crius's network cost (net - loopback-only - plugins) {overhead:8.2} ms   (target <= 2 ms)");
    println!("{MANY} network pods, run+stop+remove:");
    println!(
        "  crius   1 at a time {crius_serial:6.2} s, 10 at a time {crius_par:6.2} s, speed-up {:.2}x",
        crius_serial / crius_par
    );
    println!(
        "  plugins 1 at a time {plugins_serial:6.2} s, 10 at a time {plugins_par:6.2} s, speed-up {:.2}x",
        plugins_serial / plugins_par
    );
    println!("  leaks after: {leaks:?}");
    println!(
        "{}",
        json!({
            "bench": "network",
            "pod_network_p50_ms": netp,
            "pod_loopback_p50_ms": lo,
            "pod_host_network_p50_ms": host,
            "plugins_alone_p50_ms": floor,
            "crius_network_overhead_ms": overhead,
            "many_crius_serial_s": crius_serial,
            "many_crius_parallel10_s": crius_par,
            "many_plugins_serial_s": plugins_serial,
            "many_plugins_parallel10_s": plugins_par,
            "leaks": leaks.is_empty(),
        })
    );
    assert!(leaks.is_empty(), "the bench leaked: {leaks:?}");
}
