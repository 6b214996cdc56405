//! The Prometheus endpoint, scraped over HTTP and parsed by the Python
//! prometheus-client library's OpenMetrics parser (a strict one: a
//! malformed scrape fails the test): its counters move by exactly the RPCs,
//! pulls and OOM kills made between two scrapes.
//!
//! Needs `make test`'s Python environment (target/pyenv with
//! prometheus-client); CI always has it.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use crius_test_support::cri::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

fn python() -> Option<PathBuf> {
    let p = std::env::var_os("CRIUS_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../target/pyenv/bin/python"
            ))
        });
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI without {}: run through `make test`",
        p.display()
    );
    eprintln!("skipping: {} missing (run `make test`)", p.display());
    None
}

/// GET `path`: (status line, headers, body).
fn get(port: u16, path: &str) -> (String, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_lowercase(), body.to_string())
}

/// The scrape's samples, as the reference parser read them.
fn scrape(python: &PathBuf, port: u16) -> Vec<Value> {
    let (status, headers, body) = get(port, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(
        headers.contains("content-type: application/openmetrics-text"),
        "{headers}"
    );
    let mut child = std::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../test/metrics/parse.py"
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the scrape: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The value of the sample `name` whose labels include `labels` (0 if
/// there is none: a counter not yet created).
fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name)
        .filter(|s| labels.iter().all(|(k, v)| s["labels"][k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}

#[tokio::test]
async fn metrics_count_what_the_daemon_did() {
    let Some(python) = python() else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = env(&format!("enable_metrics = true\nmetrics_port = {port}")).await;
    let mut c = env.client().await;
    let before = scrape(&python, port);

    for _ in 0..5 {
        c.runtime.version(VersionRequest::default()).await.unwrap();
    }
    for _ in 0..2 {
        let e = c
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: "nosuchcontainer".into(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
    }
    // A method the CRI does not have (any client can send one).
    let channel = crius_cri_api::connect_unix(&env.daemon.socket)
        .await
        .unwrap();
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    let e = raw
        .unary(
            tonic::Request::new(VersionRequest::default()),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/runtime.v1.RuntimeService/NoSuchRpc",
            ),
            tonic_prost::ProstCodec::<VersionRequest, VersionResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    // A pull that succeeds (again) and one that fails.
    pull(&mut c, &env.image).await;
    let missing = env.registry.reference("busybox:nosuchtag");
    assert!(try_pull(&mut c, &missing).await.is_err());
    // A container killed by the OOM killer.
    let pc = pod_config("metrics", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "").await;
    let hog = create(&mut c, &pod, &pc, memory_hog("hog", &env.image))
        .await
        .unwrap();
    start(&mut c, &hog).await;
    let s = wait_exited(&mut c, &hog, Duration::from_secs(60)).await;
    assert_eq!(s.reason, "OOMKilled");

    let after = scrape(&python, port);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let version = [("rpc", "Version"), ("code", "Ok")];
    assert_eq!(delta("crius_rpc_requests_total", &version), 5.0);
    assert_eq!(delta("crius_rpc_duration_seconds_count", &version), 5.0);
    assert_eq!(
        delta(
            "crius_rpc_requests_total",
            &[("rpc", "ContainerStatus"), ("code", "NotFound")]
        ),
        2.0
    );
    // Latency buckets are cumulative: the +Inf one holds every call.
    assert_eq!(
        delta(
            "crius_rpc_duration_seconds_bucket",
            &[("rpc", "Version"), ("code", "Ok"), ("le", "+Inf")]
        ),
        5.0
    );
    assert_eq!(delta("crius_image_pulls_total", &[]), 2.0);
    assert_eq!(delta("crius_image_pull_failures_total", &[]), 1.0);
    assert!(delta("crius_image_pull_bytes_total", &[]) > 0.0);
    assert_eq!(delta("crius_image_pull_duration_seconds_count", &[]), 2.0);
    assert_eq!(delta("crius_container_oom_kills_total", &[]), 1.0);
    // Figures read at the scrape.
    assert_eq!(value(&after, "crius_images", &[]), 1.0);
    assert!(value(&after, "crius_image_store_bytes", &[]) > 0.0);
    assert_eq!(value(&after, "crius_pods", &[("state", "ready")]), 1.0);
    assert_eq!(
        value(&after, "crius_containers", &[("state", "exited")]),
        1.0
    );
    assert_eq!(
        value(&after, "crius_containers", &[("state", "running")]),
        0.0
    );
    assert!(value(&after, "crius_pool_takes_total", &[("pool", "monitor")]) >= 1.0);
    assert!(value(&after, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(value(&after, "process_open_fds", &[]) > 3.0);
    assert!(value(&after, "process_cpu_seconds_total", &[]) > 0.0);
    let start = value(&after, "process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start > now - 600.0 && start <= now + 1.0,
        "{start} vs {now}"
    );
    // An RPC name the CRI does not have is not a series of its own.
    assert_eq!(
        delta(
            "crius_rpc_requests_total",
            &[("rpc", "unknown"), ("code", "Unimplemented")]
        ),
        1.0
    );
    assert!(after
        .iter()
        .filter(|s| s["name"] == "crius_rpc_requests_total")
        .all(|s| s["labels"]["rpc"] != "NoSuchRpc"));

    let (status, _, _) = get(port, "/other");
    assert!(status.contains("404"), "{status}");
    remove_pod(&mut c, &pod).await;
}
