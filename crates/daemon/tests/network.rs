//! Pod networking through CNI, with the real plugins of Debian's
//! containernetworking-plugins (bridge, host-local, portmap, loopback,
//! firewall, tuning, bandwidth) and scripted plugins where a test needs a
//! plugin to fail or to hold still while the daemon is killed.
//!
//! Each test has a network of its own (name, bridge, 10.231.N.0/24, IPAM
//! directory) and sends traffic only between its pods and the host.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use crius_test_support::cri::*;
use crius_test_support::network::{Holdings, TestNetwork};
use crius_test_support::CriClient;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

async fn network_ready(c: &mut CriClient) -> RuntimeCondition {
    let st = c
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    st.status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap()
}

/// Polls Status until NetworkReady is `want` (the watcher reloads within
/// tens of milliseconds; 10 s is the bound).
async fn wait_network_ready(c: &mut CriClient, want: bool) -> RuntimeCondition {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cond = network_ready(c).await;
        if cond.status == want || Instant::now() > deadline {
            assert_eq!(cond.status, want, "{cond:?}");
            return cond;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A daemon whose plugin path is the test network's scripts, then the
/// host's plugins.
async fn net_env(net: &TestNetwork) -> Env {
    net_env_with(net, "").await
}

async fn net_env_with(net: &TestNetwork, extra: &str) -> Env {
    env(&format!(
        "cni_plugin_dirs = [{:?}, \"/usr/lib/cni\"]\n{extra}",
        net.plugin_dir.display().to_string()
    ))
    .await
}

/// The plugin chain of the network the daemon uses now (verbose Status).
async fn current_plugins(c: &mut CriClient) -> Option<Vec<String>> {
    let st = c
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let v: serde_json::Value = serde_json::from_str(st.info.get("network")?).ok()?;
    serde_json::from_value(v.get("plugins")?.clone()).ok()
}

/// Installs a network and waits until the daemon uses it.
async fn install(e: &Env, net: &TestNetwork, conflist: &str) {
    net.install(&e.daemon.cni_config_dir(), "10-test.conflist", conflist)
        .unwrap();
    let want: Vec<String> = serde_json::from_str::<serde_json::Value>(conflist).unwrap()["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap().to_string())
        .collect();
    let mut c = e.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while current_plugins(&mut c).await.as_ref() != Some(&want) {
        assert!(
            Instant::now() < deadline,
            "the daemon never picked up {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_network_ready(&mut c, true).await;
}

async fn pod_ips(c: &mut CriClient, pod: &str) -> (String, Vec<String>) {
    let st = c
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .network
        .unwrap();
    (st.ip, st.additional_ips.into_iter().map(|p| p.ip).collect())
}

async fn stop_pod(c: &mut CriClient, pod: &str) -> Result<(), tonic::Status> {
    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .map(|_| ())
}

fn portmap() -> serde_json::Value {
    json!({"type": "portmap", "capabilities": {"portMappings": true}})
}

/// A TCP host port mapping, as kubelet sends a pod's hostPort.
fn host_port(pc: &mut PodSandboxConfig, container_port: i32, host_port: i32) {
    pc.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port,
        host_port,
        host_ip: String::new(),
    }];
}

fn cached_attachments(e: &Env) -> usize {
    std::fs::read_dir(e.daemon.root.join("cni/results"))
        .map(|r| r.count())
        .unwrap_or(0)
}

fn assert_clean(net: &TestNetwork) {
    let h = net.holdings().unwrap();
    assert_eq!(h, Holdings::default(), "network {} leaked", net.name);
}

/// After a restart the stale attachments are deleted in the background:
/// waits (10 s at most) until nothing of the network is left.
async fn wait_clean(net: &TestNetwork, e: &Env) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(net.holdings().unwrap().is_empty() && cached_attachments(e) == 0) {
        if Instant::now() > deadline {
            assert_clean(net);
            assert_eq!(cached_attachments(e), 0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_pods_reach_each_other_a_host_port_reaches_a_pod_and_ips_match() {
    let net = TestNetwork::new("reach", 11).unwrap();
    let e = net_env(&net).await;
    install(
        &e,
        &net,
        &net.conflist(&[
            portmap(),
            json!({"type": "firewall"}),
            json!({"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}}),
            json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
        ]),
    )
    .await;
    let mut c = e.client().await;
    let hport = 18011;
    let mut pa = pod_config("net-a", &e.logs);
    host_port(&mut pa, 8080, hport);
    pa.dns_config = Some(DnsConfig {
        servers: vec!["10.231.11.53".into()],
        searches: vec!["svc.test".into()],
        options: vec!["ndots:3".into()],
    });
    pa.annotations
        .insert("kubernetes.io/ingress-bandwidth".into(), "10M".into());
    let a = run_pod(&mut c, pa.clone(), "").await;
    let pb = pod_config("net-b", &e.logs);
    let b = run_pod(&mut c, pb.clone(), "").await;

    let server = created(
        &mut c,
        &a,
        &pa,
        ("web", &e.image),
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo hello-from-a > /www/index.html && exec httpd -f -p 8080 -h /www",
        ],
    )
    .await;
    start(&mut c, &server).await;
    let client = created(&mut c, &b, &pb, ("client", &e.image), &["sleep", "600"]).await;
    start(&mut c, &client).await;

    // The IPs the pods report are the ones their interfaces carry.
    let (ip_a, more_a) = pod_ips(&mut c, &a).await;
    let (ip_b, _) = pod_ips(&mut c, &b).await;
    assert!(ip_a.starts_with("10.231.11."), "{ip_a}");
    assert!(more_a.is_empty(), "{more_a:?}");
    assert_ne!(ip_a, ip_b);
    let addr = exec(&mut c, &server, &["ip", "-4", "-o", "addr", "show", "eth0"]).await;
    let addr = String::from_utf8_lossy(&addr.stdout).to_string();
    assert!(addr.contains(&format!(" {ip_a}/24 ")), "{addr}");
    let hosts = exec(&mut c, &server, &["cat", "/etc/hosts"]).await;
    assert!(
        String::from_utf8_lossy(&hosts.stdout).contains(&format!("{ip_a}\tnet-a")),
        "{}",
        String::from_utf8_lossy(&hosts.stdout)
    );

    // Pod to pod, across the bridge (the server may need a moment).
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip_a} 8080");
    let mut got = String::new();
    let mut why = String::new();
    for _ in 0..50 {
        // nc, not wget: the static busybox's wget looks the "http" service
        // up through NSS, which crashes without the host's libraries.
        let r = exec(&mut c, &client, &["sh", "-c", &script]).await;
        got = String::from_utf8_lossy(&r.stdout).to_string();
        why = format!(
            "exit {}: {}",
            r.exit_code,
            String::from_utf8_lossy(&r.stderr)
        );
        if r.exit_code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        got.contains("hello-from-a"),
        "{got} {why}; server: {:?}",
        status(&mut c, &server).await
    );

    // Host to pod through the host port (portmap's DNAT of local traffic).
    let gw = net.gateway();
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect((gw.as_str(), hport as u16)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(body.contains("hello-from-a"), "{body}");

    // DNS options in resolv.conf; tuning's sysctl in the pod's netns;
    // bandwidth's shaping on the host side.
    let resolv = exec(&mut c, &server, &["cat", "/etc/resolv.conf"]).await;
    let resolv = String::from_utf8_lossy(&resolv.stdout).to_string();
    for want in [
        "nameserver 10.231.11.53",
        "search svc.test",
        "options ndots:3",
    ] {
        assert!(resolv.contains(want), "{want}: {resolv}");
    }
    let somax = exec(&mut c, &server, &["cat", "/proc/sys/net/core/somaxconn"]).await;
    assert_eq!(String::from_utf8_lossy(&somax.stdout).trim(), "512");
    let tc = std::process::Command::new("tc")
        .args(["qdisc", "show"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&tc.stdout).contains("rate 10Mbit"),
        "{}",
        String::from_utf8_lossy(&tc.stdout)
    );
    let before = net.holdings().unwrap();
    assert_eq!(before.links.len(), 2, "{before:?}");
    assert_eq!(before.ipam.len(), 2, "{before:?}");
    assert!(!before.iptables.is_empty(), "{before:?}");

    for p in [&a, &b] {
        stop_pod(&mut c, p).await.unwrap();
        // A second stop is a no-op, not an error.
        stop_pod(&mut c, p).await.unwrap();
        remove_pod(&mut c, p).await;
    }
    assert_clean(&net);
    assert_eq!(cached_attachments(&e), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn network_ready_follows_the_config_directory() {
    let net = TestNetwork::new("ready", 12).unwrap();
    // The default: no network, no pod (kubelet retries).
    let e = net_env_with(&net, "allow_pods_without_network = false\n").await;
    let mut c = e.client().await;
    let dir = e.daemon.cni_config_dir();
    let cond = wait_network_ready(&mut c, false).await;
    assert_eq!(cond.reason, "NetworkPluginNotReady");
    assert!(
        cond.message.contains(&dir.display().to_string()),
        "{cond:?}"
    );
    let err = c
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("lonely", &e.logs)),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains(&dir.display().to_string()), "{err}");
    // A host-network pod needs none.
    let mut hc = pod_config("on-host", &e.logs);
    pod_namespaces(&mut hc).network = NamespaceMode::Node as i32;
    let h = run_pod(&mut c, hc, "").await;
    stop_pod(&mut c, &h).await.unwrap();
    remove_pod(&mut c, &h).await;
    assert_eq!(
        std::fs::read_dir(e.daemon.runroot.join("pods"))
            .unwrap()
            .count(),
        0,
        "a refused pod left its directory"
    );

    // A network whose plugin is not installed: not ready, naming it.
    let mut missing: serde_json::Value = serde_json::from_str(&net.conflist(&[])).unwrap();
    missing["plugins"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "no-such-plugin"}));
    net.install(&dir, "10-test.conflist", &missing.to_string())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let cond = loop {
        let cond = network_ready(&mut c).await;
        if cond.message.contains("no-such-plugin") || Instant::now() > deadline {
            break cond;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !cond.status && cond.message.contains("no-such-plugin"),
        "{cond:?}"
    );
    // RunPodSandbox then fails before touching anything.
    let err = c
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("early", &e.logs)),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("no-such-plugin"), "{err}");

    // The daemonset writes the real one: ready, without a restart.
    net.install(&dir, "10-test.conflist", &net.conflist(&[]))
        .unwrap();
    wait_network_ready(&mut c, true).await;
    // A file that is not a network does not unready it; removing the
    // network does.
    std::fs::write(dir.join("05-junk.conf"), "{not json").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(network_ready(&mut c).await.status);
    std::fs::remove_file(dir.join("10-test.conflist")).unwrap();
    let cond = wait_network_ready(&mut c, false).await;
    assert!(cond.message.contains("05-junk.conf"), "{cond:?}");
    assert!(list_pods(&mut c).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_add_fails_the_pod_with_the_plugins_words_and_leaves_nothing() {
    let net = TestNetwork::new("fail", 13).unwrap();
    net.failing_plugin("crt-fail", "boom from the plugin")
        .unwrap();
    let e = net_env(&net).await;
    install(
        &e,
        &net,
        &net.conflist(&[portmap(), json!({"type": "crt-fail"})]),
    )
    .await;
    let mut c = e.client().await;
    let mut pc = pod_config("doomed", &e.logs);
    host_port(&mut pc, 80, 18013);
    let err = c
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("boom from the plugin"), "{err}");
    assert!(err.message().contains("crt-fail"), "{err}");
    assert!(list_pods(&mut c).await.is_empty());
    assert_clean(&net);
    assert_eq!(cached_attachments(&e), 0);
    let pods = std::fs::read_dir(e.daemon.runroot.join("pods"))
        .unwrap()
        .count();
    assert_eq!(pods, 0, "a pod directory (namespaces) was left");
    // The name is free again: the same pod runs once the network is fixed.
    install(&e, &net, &net.conflist(&[])).await;
    let p = run_pod(&mut c, pc, "").await;
    assert!(pod_ips(&mut c, &p).await.0.starts_with("10.231.13."));
    stop_pod(&mut c, &p).await.unwrap();
    remove_pod(&mut c, &p).await;
    assert_clean(&net);
}

#[tokio::test(flavor = "multi_thread")]
async fn del_after_a_restart_uses_what_add_used_even_if_the_config_changed() {
    let old = TestNetwork::new("old", 14).unwrap();
    let new = TestNetwork::new("new", 15).unwrap();
    let mut e = net_env(&old).await;
    install(&e, &old, &old.conflist(&[])).await;
    let mut c = e.client().await;
    let p = run_pod(&mut c, pod_config("mover", &e.logs), "").await;
    assert!(pod_ips(&mut c, &p).await.0.starts_with("10.231.14."));
    assert_eq!(old.holdings().unwrap().ipam.len(), 1);
    e.daemon.stop().await.unwrap();
    // Another network replaces the first while the daemon is down.
    let dir = e.daemon.cni_config_dir();
    std::fs::remove_file(dir.join("10-test.conflist")).unwrap();
    new.install(&dir, "20-new.conflist", &new.conflist(&[]))
        .unwrap();
    e.daemon.start().await.unwrap();
    let mut c = e.client().await;
    wait_network_ready(&mut c, true).await;
    // The pod kept its address and network.
    assert!(pod_ips(&mut c, &p).await.0.starts_with("10.231.14."));
    stop_pod(&mut c, &p).await.unwrap();
    remove_pod(&mut c, &p).await;
    assert_clean(&old);
    let q = run_pod(&mut c, pod_config("newcomer", &e.logs), "").await;
    assert!(pod_ips(&mut c, &q).await.0.starts_with("10.231.15."));
    stop_pod(&mut c, &q).await.unwrap();
    remove_pod(&mut c, &q).await;
    assert_clean(&new);
}

async fn wait_file(p: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !p.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_inside_add_or_del_leaks_no_veth_ipam_or_iptables_rule() {
    let net = TestNetwork::new("crash", 16).unwrap();
    let holds = tempfile::tempdir().unwrap();
    net.holding_plugin("crt-hold", holds.path()).unwrap();
    let mut e = net_env(&net).await;
    install(
        &e,
        &net,
        &net.conflist(&[portmap(), json!({"type": "crt-hold"})]),
    )
    .await;
    let mut pc = pod_config("crashy", &e.logs);
    host_port(&mut pc, 80, 18016);

    // Inside ADD: bridge and portmap have run, the last plugin holds.
    std::fs::write(holds.path().join("hold-add"), b"").unwrap();
    let mut c = e.client().await;
    let pc2 = pc.clone();
    let add = tokio::spawn(async move {
        c.runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pc2),
                runtime_handler: String::new(),
            })
            .await
    });
    wait_file(&holds.path().join("held-add")).await;
    let mid = net.holdings().unwrap();
    assert!(
        mid.links.len() == 1 && mid.ipam.len() == 1 && !mid.iptables.is_empty(),
        "{mid:?}"
    );
    e.daemon.kill().unwrap();
    assert!(add.await.unwrap().is_err());
    std::fs::remove_file(holds.path().join("hold-add")).unwrap();
    e.daemon.start().await.unwrap();
    let mut c = e.client().await;
    assert!(list_pods(&mut c).await.is_empty());
    wait_clean(&net, &e).await;

    // Inside DEL: the holding plugin is the first DEL'd, so bridge and
    // portmap still hold everything when the daemon dies.
    let p = run_pod(&mut c, pc, "").await;
    std::fs::write(holds.path().join("hold-del"), b"").unwrap();
    let mut c2 = c.clone();
    let p2 = p.clone();
    let del = tokio::spawn(async move { stop_pod(&mut c2, &p2).await });
    wait_file(&holds.path().join("held-del")).await;
    e.daemon.kill().unwrap();
    assert!(del.await.unwrap().is_err());
    std::fs::remove_file(holds.path().join("hold-del")).unwrap();
    assert!(!net.holdings().unwrap().is_empty());
    e.daemon.start().await.unwrap();
    let mut c = e.client().await;
    // kubelet stops the pod again; this time it finishes.
    assert_eq!(list_pods(&mut c).await.len(), 1);
    stop_pod(&mut c, &p).await.unwrap();
    remove_pod(&mut c, &p).await;
    assert_clean(&net);
    assert_eq!(cached_attachments(&e), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_pods_ten_at_a_time_release_every_address() {
    let net = TestNetwork::new("many", 17).unwrap();
    let e = net_env(&net).await;
    install(&e, &net, &net.conflist(&[portmap()])).await;
    let c = e.client().await;
    for batch in 0..10 {
        let runs = (0..10).map(|i| {
            let mut c = c.clone();
            let pc = pod_config(&format!("many-{batch}-{i}"), &e.logs);
            async move { run_pod(&mut c, pc, "").await }
        });
        let pods = futures_util::future::join_all(runs).await;
        let mut ips = Vec::new();
        for p in &pods {
            let ip = pod_ips(&mut c.clone(), p).await.0;
            assert!(ip.starts_with("10.231.17."), "{ip}");
            ips.push(ip);
        }
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 10, "two pods share an address: {ips:?}");
        assert_eq!(net.holdings().unwrap().ipam.len(), 10);
        let downs = pods.iter().map(|p| {
            let mut c = c.clone();
            async move {
                stop_pod(&mut c, p).await.unwrap();
                remove_pod(&mut c, p).await;
            }
        });
        futures_util::future::join_all(downs).await;
    }
    assert_clean(&net);
    assert_eq!(cached_attachments(&e), 0);
}

/// A CNI 1.1 plugin, scripted: STATUS fails while `<dir>/unready` exists;
/// every call is logged to `<dir>/calls` (command, container id, and for
/// GC the valid attachments); ADD returns an address of its own.
fn v11_plugin(net: &TestNetwork, dir: &Path) {
    net.script_plugin(
        "crt-v11",
        &format!(
            r#"#!/usr/bin/env python3
import json, os, sys
d = {dir:?}
conf = json.load(sys.stdin)
cmd = os.environ.get("CNI_COMMAND", "")
extra = conf.get("cni.dev/valid-attachments") if cmd == "GC" else None
with open(os.path.join(d, "calls"), "a") as f:
    f.write(json.dumps([cmd, os.environ.get("CNI_CONTAINERID", ""), extra]) + "\n")
if cmd == "STATUS" and os.path.exists(os.path.join(d, "unready")):
    print(json.dumps({{"cniVersion": "1.1.0", "code": 50, "msg": "the plugin's daemon is starting"}}))
    sys.exit(1)
if cmd == "ADD":
    print(json.dumps({{"cniVersion": "1.1.0", "interfaces": [{{"name": "eth0", "sandbox": os.environ["CNI_NETNS"]}}],
                      "ips": [{{"address": "10.231.18.5/24", "interface": 0}}]}}))
"#,
            dir = dir.display().to_string()
        ),
    )
    .unwrap();
}

fn calls(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("calls"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cni_1_1_status_gc_and_check() {
    let net = TestNetwork::new("v11", 18).unwrap();
    let d = tempfile::tempdir().unwrap();
    v11_plugin(&net, d.path());
    std::fs::write(d.path().join("unready"), b"").unwrap();
    let mut e = net_env(&net).await;
    let conflist =
        json!({"cniVersion": "1.1.0", "name": net.name, "plugins": [{"type": "crt-v11"}]})
            .to_string();
    net.install(&e.daemon.cni_config_dir(), "10-v11.conflist", &conflist)
        .unwrap();
    let mut c = e.client().await;
    // STATUS says not ready, in the plugin's words.
    let deadline = Instant::now() + Duration::from_secs(10);
    let cond = loop {
        let cond = network_ready(&mut c).await;
        if cond.message.contains("starting") || Instant::now() > deadline {
            break cond;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!cond.status, "{cond:?}");
    assert!(
        cond.message.contains("the plugin's daemon is starting"),
        "{cond:?}"
    );
    std::fs::remove_file(d.path().join("unready")).unwrap();
    wait_network_ready(&mut c, true).await;

    let p = run_pod(&mut c, pod_config("modern", &e.logs), "").await;
    assert_eq!(pod_ips(&mut c, &p).await.0, "10.231.18.5");
    // A host-network pod never reaches the plugins.
    let mut hc = pod_config("on-host", &e.logs);
    pod_namespaces(&mut hc).network = NamespaceMode::Node as i32;
    let h = run_pod(&mut c, hc, "").await;
    assert_eq!(pod_ips(&mut c, &h).await.0, "");
    stop_pod(&mut c, &h).await.unwrap();
    remove_pod(&mut c, &h).await;
    assert!(
        !calls(d.path()).iter().any(|c| c[1] == h.as_str()),
        "{:?}",
        calls(d.path())
    );

    // A restart: GC is given the attachments still valid (this pod's), and
    // the live pod's network is CHECKed.
    e.daemon.stop().await.unwrap();
    e.daemon.start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = calls(d.path());
        let gc = all.iter().find(|c| c[0] == "GC");
        let check = all.iter().find(|c| c[0] == "CHECK" && c[1] == p.as_str());
        if let (Some(gc), Some(_)) = (gc, check) {
            assert_eq!(gc[2], json!([{"containerID": p, "ifname": "eth0"}]), "{gc}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no GC or CHECK after restart: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = e.client().await;
    stop_pod(&mut c, &p).await.unwrap();
    remove_pod(&mut c, &p).await;
    assert!(calls(d.path())
        .iter()
        .any(|c| c[0] == "DEL" && c[1] == p.as_str()));
    assert_eq!(cached_attachments(&e), 0);
}
