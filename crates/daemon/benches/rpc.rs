//! `make bench` (foundation): round-trip latency of cheap CRI RPCs through
//! the real daemon on its unix socket, next to the floor of any unix-socket
//! RPC (a 64-byte echo over a socketpair in this process), and the idle
//! daemon's resident memory.
//!
//! Prints a table and one JSON line. Run as root: `cargo bench -p crius --bench rpc`.
#![allow(clippy::unwrap_used)]

use crius_test_support::cri::{StatusRequest, VersionRequest};
use crius_test_support::runtime::rss_kib;
use crius_test_support::Daemon;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const ITERATIONS: usize = 3000;
const WARMUP: usize = 200;

fn percentiles(mut v: Vec<Duration>) -> [f64; 3] {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6;
    [at(0.50), at(0.90), at(0.99)]
}

fn echo_floor() -> Vec<Duration> {
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while b.read_exact(&mut buf).is_ok() {
            if b.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut buf = [7u8; 64];
    let mut out = Vec::with_capacity(ITERATIONS);
    for i in 0..WARMUP + ITERATIONS {
        let t = Instant::now();
        a.write_all(&buf).unwrap();
        a.read_exact(&mut buf).unwrap();
        if i >= WARMUP {
            out.push(t.elapsed());
        }
    }
    drop(a);
    echo.join().unwrap();
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let d = Daemon::builder(env!("CARGO_BIN_EXE_crius"))
        .arg("--log-level")
        .arg("warn")
        .start()
        .await
        .expect("start crius (as root)");
    let pid = d.pid().unwrap();
    let idle_rss = rss_kib(pid);
    let mut c = d.client().await.unwrap();

    let mut version = Vec::with_capacity(ITERATIONS);
    let mut status = Vec::with_capacity(ITERATIONS);
    for i in 0..WARMUP + ITERATIONS {
        let t = Instant::now();
        c.runtime.version(VersionRequest::default()).await.unwrap();
        let v = t.elapsed();
        let t = Instant::now();
        c.runtime
            .status(StatusRequest { verbose: false })
            .await
            .unwrap();
        let s = t.elapsed();
        if i >= WARMUP {
            version.push(v);
            status.push(s);
        }
    }
    let busy_rss = rss_kib(pid);
    let floor = percentiles(echo_floor());
    let version = percentiles(version);
    let status = percentiles(status);

    println!("crius foundation benchmark ({ITERATIONS} iterations after {WARMUP} warm-up, µs)");
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>12}",
        "", "p50", "p90", "p99", "p50 / floor"
    );
    for (name, p) in [
        ("unix echo floor (64 B)", floor),
        ("Version RPC", version),
        ("Status RPC", status),
    ] {
        println!(
            "{name:<28} {:>9.1} {:>9.1} {:>9.1} {:>11.1}x",
            p[0],
            p[1],
            p[2],
            p[0] / floor[0]
        );
    }
    println!(
        "daemon RSS: idle {idle_rss} KiB, after {} RPCs {busy_rss} KiB",
        2 * (WARMUP + ITERATIONS)
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "foundation-rpc",
            "iterations": ITERATIONS,
            "floor_us": floor, "version_us": version, "status_us": status,
            "rss_idle_kib": idle_rss, "rss_after_kib": busy_rss,
        })
    );
}
