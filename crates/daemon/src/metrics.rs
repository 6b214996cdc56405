//! The operator's Prometheus endpoint (`enable_metrics`): counters kept as
//! the daemon works (RPCs by name and code with their latency, image pulls,
//! OOM kills), and figures read at each scrape (images and their bytes,
//! pods and containers by state, the pools' hits and misses, the process).
//!
//! Counting is always on (an atomic add per event); the endpoint only
//! serves them. Label values come from fixed sets, never from a request
//! as is: an RPC name outside the CRI's is counted as `unknown`, so a
//! client cannot grow the series without bound.

use crate::manager::Manager;
use crius_image_store::ImageStore;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub rpc: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn rpc_histogram() -> Histogram {
    // 100 µs to 26 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

fn pull_histogram() -> Histogram {
    // 100 ms to 6.5 min.
    Histogram::new(exponential_buckets(0.1, 2.5, 10))
}

/// The counters the daemon keeps.
#[derive(Debug)]
pub struct Metrics {
    pub rpcs: Family<RpcLabels, Counter>,
    pub rpc_seconds: HistogramFamily<RpcLabels>,
    pub pulls: Counter,
    pub pull_failures: Family<ReasonLabels, Counter>,
    pub pull_bytes: Counter,
    pub pull_seconds: Histogram,
    pub oom_kills: Counter,
}

/// The daemon's counters (made on first use).
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        rpcs: Family::default(),
        rpc_seconds: Family::new_with_constructor(rpc_histogram),
        pulls: Counter::default(),
        pull_failures: Family::default(),
        pull_bytes: Counter::default(),
        pull_seconds: pull_histogram(),
        oom_kills: Counter::default(),
    })
}

/// The CRI's RPC names, read from the proto crius is built from.
fn known_rpcs() -> &'static HashSet<String> {
    static K: OnceLock<HashSet<String>> = OnceLock::new();
    K.get_or_init(|| {
        include_str!("../../../proto/runtime/v1/api.proto")
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .filter_map(|r| r.split('(').next())
            .map(|n| n.trim().to_string())
            .collect()
    })
}

/// The label an RPC is counted under: its name, if the CRI has it.
pub fn rpc_label(name: &str) -> &str {
    if known_rpcs().contains(name) {
        name
    } else {
        "unknown"
    }
}

/// Counts one finished RPC.
pub fn observe_rpc(name: &str, code: tonic::Code, seconds: f64) {
    let labels = RpcLabels {
        rpc: rpc_label(name).to_string(),
        code: format!("{code:?}"),
    };
    let m = global();
    m.rpcs.get_or_create(&labels).inc();
    m.rpc_seconds.get_or_create(&labels).observe(seconds);
}

/// Counts one PullImage: its bytes when it succeeded, else the reason (the
/// gRPC code it failed with).
pub fn observe_pull(result: Result<u64, tonic::Code>, seconds: f64) {
    let m = global();
    m.pulls.inc();
    m.pull_seconds.observe(seconds);
    match result {
        Ok(bytes) => {
            m.pull_bytes.inc_by(bytes);
        }
        Err(code) => {
            m.pull_failures
                .get_or_create(&ReasonLabels {
                    reason: format!("{code:?}"),
                })
                .inc();
        }
    }
}

/// The process as `/proc/self/stat` shows it.
#[derive(Debug, Default, PartialEq)]
pub struct ProcStat {
    pub cpu_seconds: f64,
    pub threads: u64,
    /// Seconds since boot.
    pub start_seconds: f64,
    pub virtual_bytes: u64,
    pub resident_pages: u64,
}

/// Parses `/proc/<pid>/stat` (the command may hold spaces and parentheses:
/// fields are counted after its last `)`). `ticks` is USER_HZ.
pub fn parse_stat(text: &str, ticks: f64) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3 (index 0 here).
    let n = |i: usize| f.get(i - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        cpu_seconds: (n(14)? + n(15)?) as f64 / ticks,
        threads: n(20)?,
        start_seconds: n(22)? as f64 / ticks,
        virtual_bytes: n(23)?,
        resident_pages: n(24)?,
    })
}

/// The figures read at each scrape.
struct Scraped {
    manager: Arc<Manager>,
    images: Arc<ImageStore>,
}

impl std::fmt::Debug for Scraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scraped")
    }
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

fn gauge_f(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Scraped {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        // Images: the store's records (no walk of the disk).
        let (count, bytes) = self
            .images
            .list()
            .map(|l| (l.len() as i64, l.iter().map(|r| r.size).sum::<u64>() as i64))
            .unwrap_or((0, 0));
        gauge(
            &mut enc,
            "crius_images",
            "Images and artifacts in the store.",
            count,
        )?;
        gauge(
            &mut enc,
            "crius_image_store_bytes",
            "Bytes of the images and artifacts in the store (their manifests' sizes).",
            bytes,
        )?;

        let (pods, ctrs) = self.manager.counts_by_state();
        let g = ConstGauge::new(0i64);
        let mut f = enc.encode_descriptor(
            "crius_pods",
            "Pod sandboxes by state.",
            None,
            g.metric_type(),
        )?;
        for (state, n) in [("ready", pods.0), ("notready", pods.1)] {
            ConstGauge::new(n as i64).encode(f.encode_family(&vec![("state", state)])?)?;
        }
        let mut f = enc.encode_descriptor(
            "crius_containers",
            "Containers by state.",
            None,
            g.metric_type(),
        )?;
        for (state, n) in [("created", ctrs.0), ("running", ctrs.1), ("exited", ctrs.2)] {
            ConstGauge::new(n as i64).encode(f.encode_family(&vec![("state", state)])?)?;
        }

        let c = ConstCounter::new(0u64);
        let mut f = enc.encode_descriptor(
            "crius_pool_takes",
            "Takes from the monitor and namespace pools: hits found one ready, misses made their own.",
            None,
            c.metric_type(),
        )?;
        for (pool, (hits, misses)) in self.manager.pool_hits_misses() {
            ConstCounter::new(hits)
                .encode(f.encode_family(&vec![("pool", pool), ("result", "hit")])?)?;
            ConstCounter::new(misses)
                .encode(f.encode_family(&vec![("pool", pool), ("result", "miss")])?)?;
        }

        // The process, as Prometheus' client libraries name it.
        // SAFETY: sysconf only reads a constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        if let Some(s) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| parse_stat(&t, ticks))
        {
            let cpu = ConstCounter::new(s.cpu_seconds);
            cpu.encode(enc.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                cpu.metric_type(),
            )?)?;
            gauge(
                &mut enc,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                (s.resident_pages * page) as i64,
            )?;
            gauge(
                &mut enc,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                s.virtual_bytes as i64,
            )?;
            gauge(
                &mut enc,
                "process_threads",
                "Number of OS threads in the process.",
                s.threads as i64,
            )?;
            let btime = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
                })
                .unwrap_or(0.0);
            gauge_f(
                &mut enc,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                btime + s.start_seconds,
            )?;
        }
        let fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count())
            .unwrap_or(0);
        gauge(
            &mut enc,
            "process_open_fds",
            "Number of open file descriptors.",
            fds as i64,
        )?;
        Ok(())
    }
}

/// The registry a scrape encodes: the counters and the scrape-time figures.
pub fn registry(manager: Arc<Manager>, images: Arc<ImageStore>) -> Registry {
    let m = global();
    let mut r = Registry::default();
    r.register(
        "crius_rpc_requests",
        "CRI RPCs served, by RPC and gRPC code.",
        m.rpcs.clone(),
    );
    r.register(
        "crius_rpc_duration_seconds",
        "CRI RPC latency, by RPC and gRPC code.",
        m.rpc_seconds.clone(),
    );
    r.register("crius_image_pulls", "PullImage calls.", m.pulls.clone());
    r.register(
        "crius_image_pull_failures",
        "Failed PullImage calls, by reason (the gRPC code).",
        m.pull_failures.clone(),
    );
    r.register(
        "crius_image_pull_bytes",
        "Bytes of the images pulled (their manifests' sizes).",
        m.pull_bytes.clone(),
    );
    r.register(
        "crius_image_pull_duration_seconds",
        "PullImage latency.",
        m.pull_seconds.clone(),
    );
    r.register(
        "crius_container_oom_kills",
        "Containers found OOM-killed when their exit was observed.",
        m.oom_kills.clone(),
    );
    r.register_collector(Box::new(Scraped { manager, images }));
    r
}

/// The endpoint's text: OpenMetrics, which Prometheus reads.
pub fn render(r: &Registry) -> String {
    let mut s = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut s, r) {
        tracing::warn!(error = %e, "encoding metrics");
    }
    s
}

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `listener` until the task is dropped: HTTP/1.1,
/// request heads within 10 s, at most 16 connections at once.
pub async fn serve(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    use http_body_util::Full;
    use hyper::{body::Bytes, Method, Response, StatusCode};
    let slots = Arc::new(tokio::sync::Semaphore::new(16));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let registry = registry.clone();
                    async move {
                        let resp = if req.uri().path() != "/metrics" {
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"not found: try /metrics\n")))
                        } else if req.method() != Method::GET && req.method() != Method::HEAD {
                            Response::builder()
                                .status(StatusCode::METHOD_NOT_ALLOWED)
                                .body(Full::new(Bytes::new()))
                        } else {
                            // Reads the cgroup-free state only: quick enough
                            // to do on a blocking thread per scrape.
                            let text = tokio::task::spawn_blocking(move || render(&registry))
                                .await
                                .unwrap_or_default();
                            Response::builder()
                                .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
                                .body(Full::new(Bytes::from(text)))
                        };
                        resp.map_err(std::io::Error::other)
                    }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_names_are_the_cris_own() {
        assert_eq!(rpc_label("Version"), "Version");
        assert_eq!(rpc_label("PullImage"), "PullImage");
        assert_eq!(rpc_label("GetContainerEvents"), "GetContainerEvents");
        assert_eq!(rpc_label("NoSuchRpc"), "unknown");
        assert_eq!(rpc_label(""), "unknown");
        assert!(known_rpcs().len() > 40, "{}", known_rpcs().len());
    }

    #[test]
    fn parses_proc_stat() {
        let t = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 123456789 2048 18446744073709551615";
        assert_eq!(
            parse_stat(t, 100.0),
            Some(ProcStat {
                cpu_seconds: 3.0,
                threads: 7,
                start_seconds: 10.0,
                virtual_bytes: 123456789,
                resident_pages: 2048,
            })
        );
        assert_eq!(parse_stat("garbage", 100.0), None);
        assert_eq!(parse_stat("1 (x) S 1", 100.0), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat(&own, 100.0).unwrap().threads >= 1);
    }
}
