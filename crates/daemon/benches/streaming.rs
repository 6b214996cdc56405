//! `make bench` (streaming, issue 17): what Exec and PortForward cost next
//! to what they stand on.
//!
//! - Exec round trip of `true`, and of a command writing 100 MiB to
//!   stdout: the Exec RPC plus a whole SPDY session and a whole WebSocket
//!   session (the project's own clients), next to ExecSync and to a bare
//!   `runc exec` of the same container (the floor: no daemon at all).
//!   ExecSync keeps at most 16 MiB of output (the rest is read and
//!   dropped), so its 100 MiB figure is the time to produce and carry it.
//! - PortForward throughput: a 256 MiB download from busybox httpd in a
//!   host-network pod through SPDY and through SPDY tunnelled in
//!   WebSocket, next to a direct loopback connection to the same server.
//!
//! Medians of interleaved rounds. Prints a table and one JSON line. Run
//! as root: `cargo bench -p crius --bench streaming`.
#![allow(clippy::unwrap_used)]

use crius_test_support::cri::*;
use crius_test_support::stream::{self, Forward, Streams, Transport};
use crius_test_support::{CriClient, Daemon, ImageBuilder, Registry};
use serde_json::json;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_crius");
const ROUNDS: usize = 20;
const BIG_ROUNDS: usize = 5;
const BIG: usize = 100 << 20;
const DOWNLOAD: usize = 256 << 20;

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn out_only() -> Streams {
    Streams {
        stdout: true,
        stderr: true,
        ..Default::default()
    }
}

async fn stream_exec(c: &mut CriClient, id: &str, cmd: &[&str], t: Transport) -> (Duration, usize) {
    let start = Instant::now();
    let url = c
        .runtime
        .exec(ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let f = stream::run(&url, t, out_only(), None).await.unwrap();
    assert_eq!(
        f.exit_code(),
        Some(0),
        "{:?} {}",
        cmd,
        String::from_utf8_lossy(&f.stderr)
    );
    (start.elapsed(), f.stdout.len())
}

async fn exec_sync(c: &mut CriClient, id: &str, cmd: &[&str]) -> Duration {
    let start = Instant::now();
    let r = c
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.exit_code,
        0,
        "{cmd:?}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    start.elapsed()
}

/// `runc exec` straight from here, its stdout read to the end.
fn bare_runc(root: &std::path::Path, id: &str, cmd: &[&str]) -> (Duration, usize) {
    let start = Instant::now();
    let mut child = Command::new("runc")
        .arg("--root")
        .arg(root)
        .arg("exec")
        .arg(id)
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0;
    loop {
        match out.read(&mut buf).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    assert!(child.wait().unwrap().success());
    (start.elapsed(), n)
}

/// A port of this run's own: a server a crashed earlier run left behind
/// must not answer for this one.
fn port() -> u16 {
    20000 + (std::process::id() % 20000) as u16
}

fn get_request() -> Vec<u8> {
    b"GET /big HTTP/1.0\r\nHost: x\r\n\r\n".to_vec()
}

async fn forward(c: &mut CriClient, pod: &str, t: Transport) -> (Duration, usize) {
    let start = Instant::now();
    let url = c
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.into(),
            port: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut f = Forward::open(&url, t).await.unwrap();
    let (got, err) = f
        .connect(port())
        .await
        .unwrap()
        .request(&get_request())
        .await
        .unwrap();
    assert!(err.is_empty(), "{err}");
    (start.elapsed(), got.len())
}

fn direct() -> (Duration, usize) {
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port())).unwrap();
    s.write_all(&get_request()).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0;
    loop {
        match s.read(&mut buf).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    (start.elapsed(), n)
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
        "registries_conf = \"{0}/registries.conf\"\nauth_file = \"{0}/none.json\"\n",
        tmp.path().display()
    );
    let daemon = Daemon::builder(BIN)
        .config_toml(toml)
        .arg("--log-level")
        .arg("warn")
        .start()
        .await
        .expect("start crius (as root)");
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
    // A host-network pod: the direct connection and the forwarded one
    // reach the same server on the same loopback.
    let pc = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "bench".into(),
            uid: "bench".into(),
            namespace: "bench".into(),
            attempt: 0,
        }),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
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
    let script = format!(
        "mkdir -p /w && head -c {DOWNLOAD} /dev/zero > /w/big && httpd -p 127.0.0.1:{} -h /w && echo ready && exec sleep 100000",
        port()
    );
    let id = c
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "bench".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                command: vec!["sh".into(), "-c".into(), script],
                ..Default::default()
            }),
            sandbox_config: Some(pc.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    c.runtime
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port())).is_err() {
        assert!(Instant::now() < deadline, "httpd never listened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let runc_root = daemon.runroot.join("runtimes/runc");
    let big_cmd = format!("head -c {BIG} /dev/zero");
    let big: [&str; 3] = ["sh", "-c", &big_cmd];

    // Warm-up.
    for _ in 0..3 {
        stream_exec(&mut c, &id, &["true"], Transport::Spdy).await;
        stream_exec(&mut c, &id, &["true"], Transport::WebSocket).await;
        exec_sync(&mut c, &id, &["true"]).await;
        bare_runc(&runc_root, &id, &["true"]);
    }
    let (mut spdy, mut ws, mut sync, mut bare) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        spdy.push(stream_exec(&mut c, &id, &["true"], Transport::Spdy).await.0);
        ws.push(
            stream_exec(&mut c, &id, &["true"], Transport::WebSocket)
                .await
                .0,
        );
        sync.push(exec_sync(&mut c, &id, &["true"]).await);
        let r = runc_root.clone();
        let i = id.clone();
        bare.push(
            tokio::task::spawn_blocking(move || bare_runc(&r, &i, &["true"]).0)
                .await
                .unwrap(),
        );
    }
    let (t_spdy, t_ws, t_sync, t_bare) = (median(spdy), median(ws), median(sync), median(bare));

    let (mut bspdy, mut bws, mut bsync, mut bbare) = (vec![], vec![], vec![], vec![]);
    for _ in 0..BIG_ROUNDS {
        let (d, n) = stream_exec(&mut c, &id, &big, Transport::Spdy).await;
        assert_eq!(n, BIG);
        bspdy.push(d);
        let (d, n) = stream_exec(&mut c, &id, &big, Transport::WebSocket).await;
        assert_eq!(n, BIG);
        bws.push(d);
        bsync.push(exec_sync(&mut c, &id, &big).await);
        let r = runc_root.clone();
        let i = id.clone();
        let cmd = big_cmd.clone();
        let (d, n) = tokio::task::spawn_blocking(move || bare_runc(&r, &i, &["sh", "-c", &cmd]))
            .await
            .unwrap();
        assert_eq!(n, BIG);
        bbare.push(d);
    }
    let (b_spdy, b_ws, b_sync, b_bare) = (median(bspdy), median(bws), median(bsync), median(bbare));

    let (mut fspdy, mut fws, mut fdirect) = (vec![], vec![], vec![]);
    for _ in 0..BIG_ROUNDS {
        let (d, n) = forward(&mut c, &pod, Transport::Spdy).await;
        assert!(n > DOWNLOAD);
        fspdy.push(d);
        let (d, n) = forward(&mut c, &pod, Transport::WebSocket).await;
        assert!(n > DOWNLOAD);
        fws.push(d);
        let (d, n) = tokio::task::spawn_blocking(direct).await.unwrap();
        assert!(n > DOWNLOAD);
        fdirect.push(d);
    }
    let mibs = |ms: f64| (DOWNLOAD as f64 / (1 << 20) as f64) / (ms / 1e3);
    let (f_spdy, f_ws, f_direct) = (median(fspdy), median(fws), median(fdirect));

    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    c.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    println!("streaming (medians; exec of `true` n={ROUNDS}, 100 MiB and 256 MiB n={BIG_ROUNDS})");
    println!("  exec `true`            SPDY {t_spdy:7.2} ms   WebSocket {t_ws:7.2} ms   ExecSync {t_sync:7.2} ms   bare runc exec {t_bare:7.2} ms");
    println!(
        "  exec 100 MiB stdout    SPDY {b_spdy:7.1} ms   WebSocket {b_ws:7.1} ms   ExecSync {b_sync:7.1} ms   bare runc exec {b_bare:7.1} ms"
    );
    println!(
        "  port-forward 256 MiB   SPDY {:7.0} MiB/s  WebSocket {:7.0} MiB/s  direct loopback {:7.0} MiB/s",
        mibs(f_spdy),
        mibs(f_ws),
        mibs(f_direct)
    );
    println!(
        "  ratios                 exec `true` SPDY/bare {:.2}x, SPDY/ExecSync {:.2}x; 100 MiB SPDY/bare {:.2}x; port-forward SPDY/direct {:.2}",
        t_spdy / t_bare,
        t_spdy / t_sync,
        b_spdy / b_bare,
        mibs(f_spdy) / mibs(f_direct)
    );
    println!(
        "{}",
        json!({
            "bench": "streaming",
            "exec_true_ms": {"spdy": t_spdy, "websocket": t_ws, "exec_sync": t_sync, "bare_runc": t_bare},
            "exec_100mib_ms": {"spdy": b_spdy, "websocket": b_ws, "exec_sync": b_sync, "bare_runc": b_bare},
            "port_forward_mib_s": {"spdy": mibs(f_spdy), "websocket": mibs(f_ws), "direct": mibs(f_direct)},
        })
    );
}
