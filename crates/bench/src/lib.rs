//! The statistics and report of crius-bench (pure, unit-tested).
#![allow(clippy::unwrap_used)]

use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Percentiles of one RPC's latencies, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Nearest-rank percentile of sorted samples.
fn rank(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

pub fn summarize(samples: &[Duration]) -> Summary {
    let mut s = samples.to_vec();
    s.sort();
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    Summary {
        count: s.len(),
        p50_ms: ms(rank(&s, 50.0)),
        p90_ms: ms(rank(&s, 90.0)),
        p99_ms: ms(rank(&s, 99.0)),
        max_ms: ms(s.last().copied().unwrap_or_default()),
    }
}

/// Latencies by RPC name, in insertion order of first use.
#[derive(Debug, Default)]
pub struct Samples {
    by_rpc: BTreeMap<String, Vec<Duration>>,
}

impl Samples {
    pub fn add(&mut self, rpc: &str, d: Duration) {
        self.by_rpc.entry(rpc.to_string()).or_default().push(d);
    }

    pub fn merge(&mut self, other: Samples) {
        for (k, v) in other.by_rpc {
            self.by_rpc.entry(k).or_default().extend(v);
        }
    }

    pub fn summaries(&self) -> BTreeMap<String, Summary> {
        self.by_rpc
            .iter()
            .map(|(k, v)| (k.clone(), summarize(v)))
            .collect()
    }
}

/// The report as a fixed-width table.
pub fn table(s: &BTreeMap<String, Summary>) -> String {
    let mut out = format!(
        "{:<34} {:>7} {:>10} {:>10} {:>10} {:>10}\n",
        "rpc", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (k, v) in s {
        out.push_str(&format!(
            "{:<34} {:>7} {:>10.3} {:>10.3} {:>10.3} {:>10.3}\n",
            k, v.count, v.p50_ms, v.p90_ms, v.p99_ms, v.max_ms
        ));
    }
    out
}

/// VmRSS of a process in KiB (0 if unknown).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = summarize(&v);
        assert_eq!(
            (s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        let s = summarize(&[Duration::from_micros(1500)]);
        assert_eq!((s.count, s.p50_ms, s.p99_ms), (1, 1.5, 1.5));
        assert_eq!(summarize(&[]).count, 0);
    }

    #[test]
    fn samples_merge_and_table() {
        let mut a = Samples::default();
        a.add("Run", Duration::from_millis(2));
        let mut b = Samples::default();
        b.add("Run", Duration::from_millis(4));
        b.add("List", Duration::from_millis(1));
        a.merge(b);
        let s = a.summaries();
        assert_eq!(s["Run"].count, 2);
        let t = table(&s);
        assert!(t.lines().count() == 3 && t.contains("List"), "{t}");
    }
}
