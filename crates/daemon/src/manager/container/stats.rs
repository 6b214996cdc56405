//! ContainerStats and ListContainerStats: each container's cgroup read by
//! path (`crius_oci_runtime::stats`), CPU in nanocores from the previous
//! sample, and the writable layer's usage, walked at most once per
//! [`LAYER_TTL`] per container (kubelet polls every 10 s; a walk per call
//! would cost a tree walk for every list).
//!
//! A container not started yet has no cgroup: it is listed with
//! timestamps and no figures, as kubelet expects of created containers.

use crate::manager::{blocking, Ctr, Manager, Result};
use crate::state::ContainerPhase;
use crius_cri_api::v1::{
    ContainerAttributes, ContainerStats, ContainerStatsFilter, CpuUsage, FilesystemIdentifier,
    FilesystemUsage, MemoryUsage, SwapUsage, UInt64Value,
};
use crius_oci_runtime::stats::Reader;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a writable layer's measured usage is reused.
pub const LAYER_TTL: Duration = Duration::from_secs(10);

/// What stats remember between calls, per container.
#[derive(Default)]
pub struct StatsCache {
    /// The last CPU sample: (time ns, usage ns).
    cpu: HashMap<String, (i64, u64)>,
    /// The writable layer: (measured at, bytes, inodes).
    layer: HashMap<String, (Instant, u64, u64)>,
    /// Each running container's (and ready pod's) cgroup files, held open.
    readers: HashMap<String, Reader>,
}

/// Cgroups whose files are held open (3-4 descriptors each); beyond them
/// files are opened per call.
pub const MAX_READERS: usize = 4096;

/// A cgroup's figures through its cached reader (`key`: a container id, or
/// `pod:<id>`), opening one if there is none or the old one fails.
pub(crate) fn read_cgroup(
    cache: &Mutex<StatsCache>,
    key: &str,
    cgroups_path: &str,
    with_pids: bool,
) -> crius_oci_runtime::stats::CgroupStats {
    // Taken out while it is read: the lock is not held over the reads.
    let cached = crate::sync::lock(cache).readers.remove(key);
    let (reader, stats) = match cached.map(|r| r.read().map(|s| (r, s))) {
        Some(Ok(ok)) => ok,
        _ => {
            let r = Reader::open(cgroups_path, with_pids);
            if r.is_empty() {
                return Default::default();
            }
            match r.read() {
                Ok(s) => (r, s),
                Err(_) => return Default::default(),
            }
        }
    };
    let mut g = crate::sync::lock(cache);
    if g.readers.len() < MAX_READERS {
        g.readers.insert(key.to_string(), reader);
    }
    stats
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub(crate) fn u64v(v: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value: v })
}

impl Manager {
    pub async fn container_stats(&self, query: &str) -> Result<ContainerStats> {
        let c = self.ctr(query)?;
        let id = c.id.clone();
        self.stats_of(vec![c])
            .await
            .into_iter()
            .next()
            .ok_or_else(|| {
                crate::manager::ManagerError::Internal(format!(
                    "reading container {id}'s stats failed"
                ))
            })
    }

    pub async fn list_container_stats(
        &self,
        filter: Option<&ContainerStatsFilter>,
    ) -> Vec<ContainerStats> {
        let ctrs =
            self.containers_matching(filter.map(|f| (&f.id, &f.pod_sandbox_id, &f.label_selector)));
        // Exited containers have no usage left to report.
        let live: Vec<Arc<Ctr>> = ctrs
            .into_iter()
            .filter(|c| {
                c.with(|r| matches!(r.phase, ContainerPhase::Created | ContainerPhase::Running))
            })
            .collect();
        self.stats_of(live).await
    }

    pub(crate) async fn stats_of(&self, ctrs: Vec<Arc<Ctr>>) -> Vec<ContainerStats> {
        let cache = self.stats_cache.clone();
        let items: Vec<(Arc<Ctr>, String, std::path::PathBuf, bool)> = ctrs
            .into_iter()
            .map(|c| {
                let (cg, dir, running) = c.with(|r| {
                    (
                        r.cgroups_path.clone(),
                        r.dir.clone(),
                        r.phase == ContainerPhase::Running,
                    )
                });
                (c, cg, dir, running)
            })
            .collect();
        blocking(move || {
            Ok(par_map(&items, |(c, cg, dir, running)| {
                one(&cache, c, cg, dir, *running)
            }))
        })
        .await
        .unwrap_or_default()
    }
}

/// CPU and memory of one cgroup read at `ts`; the CPU sample is kept
/// under `key` for the next call's nanocores.
pub(crate) fn cpu_memory(
    cache: &Mutex<StatsCache>,
    key: &str,
    s: &crius_oci_runtime::stats::CgroupStats,
    ts: i64,
) -> (CpuUsage, MemoryUsage) {
    let mut cpu = CpuUsage {
        timestamp: ts,
        ..Default::default()
    };
    if let Some(usage) = s.cpu_usage_ns {
        cpu.usage_core_nano_seconds = u64v(usage);
        let mut g = crate::sync::lock(cache);
        cpu.usage_nano_cores =
            crius_oci_runtime::stats::nano_cores(g.cpu.get(key).copied(), (ts, usage))
                .and_then(u64v);
        g.cpu.insert(key.to_string(), (ts, usage));
    }
    let mut memory = MemoryUsage {
        timestamp: ts,
        ..Default::default()
    };
    if let Some(m) = s.memory {
        memory.working_set_bytes = u64v(m.working_set_bytes);
        memory.usage_bytes = u64v(m.usage_bytes);
        memory.rss_bytes = u64v(m.rss_bytes);
        memory.page_faults = u64v(m.page_faults);
        memory.major_page_faults = u64v(m.major_page_faults);
        memory.available_bytes = m
            .limit_bytes
            .map(|l| l.saturating_sub(m.working_set_bytes))
            .and_then(u64v);
    }
    (cpu, memory)
}

fn one(
    cache: &Mutex<StatsCache>,
    c: &Ctr,
    cgroups_path: &str,
    dir: &std::path::Path,
    running: bool,
) -> ContainerStats {
    let ts = now_ns();
    let s = if running {
        read_cgroup(cache, &c.id, cgroups_path, false)
    } else {
        Default::default()
    };
    let (cpu, memory) = cpu_memory(cache, &c.id, &s, ts);
    let upper = dir.join("fs/upper");
    let layer = layer_usage(cache, &c.id, &upper);
    ContainerStats {
        attributes: Some(ContainerAttributes {
            id: c.id.clone(),
            metadata: c.config.metadata.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
        }),
        cpu: Some(cpu),
        memory: Some(memory),
        writable_layer: layer.map(|(b, i)| FilesystemUsage {
            timestamp: ts,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: upper.display().to_string(),
            }),
            used_bytes: u64v(b),
            inodes_used: u64v(i),
        }),
        swap: s.memory.and_then(|m| m.swap_bytes).map(|used| SwapUsage {
            timestamp: ts,
            swap_usage_bytes: u64v(used),
            swap_available_bytes: None,
        }),
        io: None,
    }
}

/// Below this many items one thread does them all (a thread's start costs
/// more than a few cgroup reads).
const PAR_MIN: usize = 32;

/// `f` over `items`, in order, split across the machine's cores (at most
/// 4) when there are many: reading cgroup files is kernel work that
/// scales with cores, and ListContainerStats of 100 containers is mostly
/// that.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    // Asked once: the answer reads the cgroup's CPU quota files, which
    // cost as much as a container's stats.
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let threads = *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4)
    });
    if threads < 2 || items.len() < PAR_MIN {
        return items.iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let mut chunks = items.chunks(per);
        let first = chunks.next().unwrap_or(&[]);
        let others: Vec<_> = chunks
            .map(|c| s.spawn(move || c.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out: Vec<R> = first.iter().map(f).collect();
        for h in others {
            match h.join() {
                Ok(v) => out.extend(v),
                // A panic in a reader (a bug) fails the blocking task as
                // it would have on one thread.
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        out
    })
}

/// The writable layer's bytes and inodes, walked at most every
/// [`LAYER_TTL`] per container.
pub(crate) fn layer_usage(
    cache: &Mutex<StatsCache>,
    id: &str,
    upper: &std::path::Path,
) -> Option<(u64, u64)> {
    let cached = crate::sync::lock(cache).layer.get(id).copied();
    match cached {
        Some((at, b, i)) if at.elapsed() < LAYER_TTL => Some((b, i)),
        _ => crius_image_store::usage::usage(upper).ok().map(|u| {
            crate::sync::lock(cache)
                .layer
                .insert(id.to_string(), (Instant::now(), u.bytes, u.inodes));
            (u.bytes, u.inodes)
        }),
    }
}

impl Manager {
    /// Forgets what stats kept of a removed container.
    pub fn forget_stats(&self, id: &str) {
        let mut g = crate::sync::lock(&self.stats_cache);
        g.cpu.remove(id);
        g.layer.remove(id);
        g.readers.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_map_keeps_order() {
        for n in [0, 1, PAR_MIN - 1, PAR_MIN, 101] {
            let items: Vec<usize> = (0..n).collect();
            let out = par_map(&items, |i| i * 2);
            assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
    }
}
