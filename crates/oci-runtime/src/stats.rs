//! A cgroup's usage as ContainerStats reports it, read from the cgroup's
//! own files by path (no shelling out), on cgroup v1, v2 and hybrid hosts.
//! The v1 controllers' files are preferred where they exist (a hybrid
//! host's runtimes account there); else the v2 ones (`/sys/fs/cgroup`, or
//! `/sys/fs/cgroup/unified` on a hybrid host).
//!
//! Parsing is pure; `read_under` takes the filesystem root so tests can
//! lay out fixtures.

use std::path::{Path, PathBuf};

/// Memory as kubelet reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub usage_bytes: u64,
    /// usage − inactive file pages (what kubelet's eviction uses).
    pub working_set_bytes: u64,
    pub rss_bytes: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// The limit, when one is set.
    pub limit_bytes: Option<u64>,
    /// Swap in use (None: not accounted).
    pub swap_bytes: Option<u64>,
}

/// What one read of a cgroup found; None where the files are absent (the
/// cgroup does not exist yet, or the controller is not there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Cumulative CPU time, nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    pub memory: Option<Memory>,
    pub pids: Option<u64>,
}

/// The value of `key` in a flat-keyed file (`memory.stat`, `cpu.stat`).
pub fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// A single-value file: a number, or `max` (no limit).
fn single(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// v1 reports "no limit" as a huge number (a page-rounded i64::MAX).
const V1_NO_LIMIT: u64 = 1 << 62;

pub fn read(cgroups_path: &str) -> CgroupStats {
    read_under(Path::new("/"), cgroups_path)
}

pub fn read_under(root: &Path, cgroups_path: &str) -> CgroupStats {
    let rel = cgroups_path.trim_start_matches('/');
    let at = |base: &str, file: &str| -> PathBuf { root.join(base).join(rel).join(file) };
    let text = |p: PathBuf| std::fs::read_to_string(p).ok();
    let v2_dirs = ["sys/fs/cgroup/unified", "sys/fs/cgroup"];

    // CPU: v1 cpuacct (alone or co-mounted with cpu), else v2 cpu.stat.
    let cpu_usage_ns = ["sys/fs/cgroup/cpuacct", "sys/fs/cgroup/cpu,cpuacct"]
        .iter()
        .find_map(|b| text(at(b, "cpuacct.usage")).and_then(|t| single(&t)))
        .or_else(|| {
            v2_dirs.iter().find_map(|b| {
                text(at(b, "cpu.stat"))
                    .and_then(|t| stat_value(&t, "usage_usec"))
                    .map(|us| us.saturating_mul(1000))
            })
        });

    let memory = match text(at("sys/fs/cgroup/memory", "memory.usage_in_bytes")) {
        Some(usage) => {
            let usage = single(&usage).unwrap_or(0);
            let stat = text(at("sys/fs/cgroup/memory", "memory.stat")).unwrap_or_default();
            let inactive = stat_value(&stat, "total_inactive_file").unwrap_or(0);
            let limit = text(at("sys/fs/cgroup/memory", "memory.limit_in_bytes"))
                .and_then(|t| single(&t))
                .filter(|l| *l < V1_NO_LIMIT);
            Some(Memory {
                usage_bytes: usage,
                working_set_bytes: usage.saturating_sub(inactive),
                rss_bytes: stat_value(&stat, "total_rss").unwrap_or(0),
                page_faults: stat_value(&stat, "total_pgfault").unwrap_or(0),
                major_page_faults: stat_value(&stat, "total_pgmajfault").unwrap_or(0),
                limit_bytes: limit,
                swap_bytes: stat_value(&stat, "total_swap"),
            })
        }
        None => v2_dirs.iter().find_map(|b| {
            let usage = single(&text(at(b, "memory.current"))?)?;
            let stat = text(at(b, "memory.stat")).unwrap_or_default();
            let inactive = stat_value(&stat, "inactive_file").unwrap_or(0);
            Some(Memory {
                usage_bytes: usage,
                working_set_bytes: usage.saturating_sub(inactive),
                rss_bytes: stat_value(&stat, "anon").unwrap_or(0),
                page_faults: stat_value(&stat, "pgfault").unwrap_or(0),
                major_page_faults: stat_value(&stat, "pgmajfault").unwrap_or(0),
                // "max" does not parse: no limit.
                limit_bytes: text(at(b, "memory.max")).and_then(|t| single(&t)),
                swap_bytes: text(at(b, "memory.swap.current")).and_then(|t| single(&t)),
            })
        }),
    };

    let pids = std::iter::once("sys/fs/cgroup/pids")
        .chain(v2_dirs)
        .find_map(|b| text(at(b, "pids.current")).and_then(|t| single(&t)));

    CgroupStats {
        cpu_usage_ns,
        memory,
        pids,
    }
}

/// CPU use in nanocores between two samples `(time ns, usage ns)`; None
/// without an earlier sample or when the counter went back (a new cgroup).
pub fn nano_cores(prev: Option<(i64, u64)>, now: (i64, u64)) -> Option<u64> {
    let (t0, u0) = prev?;
    let dt = now.0.checked_sub(t0).filter(|d| *d > 0)? as u128;
    let du = now.1.checked_sub(u0)? as u128;
    u64::try_from(du * 1_000_000_000 / dt).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn v1_files() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(
            r,
            "sys/fs/cgroup/cpuacct/kp/c1/cpuacct.usage",
            "123456789\n",
        );
        write(
            r,
            "sys/fs/cgroup/memory/kp/c1/memory.usage_in_bytes",
            "10000\n",
        );
        write(
            r,
            "sys/fs/cgroup/memory/kp/c1/memory.stat",
            "cache 5\nrss 1\ntotal_rss 3000\ntotal_inactive_file 2500\ntotal_pgfault 70\ntotal_pgmajfault 2\ntotal_swap 8\n",
        );
        write(
            r,
            "sys/fs/cgroup/memory/kp/c1/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(r, "sys/fs/cgroup/pids/kp/c1/pids.current", "4\n");
        let s = read_under(r, "/kp/c1");
        assert_eq!(s.cpu_usage_ns, Some(123456789));
        assert_eq!(
            s.memory,
            Some(Memory {
                usage_bytes: 10000,
                working_set_bytes: 7500,
                rss_bytes: 3000,
                page_faults: 70,
                major_page_faults: 2,
                limit_bytes: None,
                swap_bytes: Some(8),
            })
        );
        assert_eq!(s.pids, Some(4));
        write(
            r,
            "sys/fs/cgroup/memory/kp/c1/memory.limit_in_bytes",
            "67108864\n",
        );
        assert_eq!(
            read_under(r, "/kp/c1").memory.unwrap().limit_bytes,
            Some(64 << 20)
        );
    }

    #[test]
    fn v2_files() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(
            r,
            "sys/fs/cgroup/kp/c1/cpu.stat",
            "usage_usec 2500\nuser_usec 2000\n",
        );
        write(r, "sys/fs/cgroup/kp/c1/memory.current", "4096\n");
        write(
            r,
            "sys/fs/cgroup/kp/c1/memory.stat",
            "anon 1024\nfile 2048\ninactive_file 5000\npgfault 9\npgmajfault 1\n",
        );
        write(r, "sys/fs/cgroup/kp/c1/memory.max", "max\n");
        let s = read_under(r, "kp/c1");
        assert_eq!(s.cpu_usage_ns, Some(2_500_000));
        let m = s.memory.unwrap();
        // More inactive file than usage: a working set of 0, not a wrap.
        assert_eq!(
            (m.usage_bytes, m.working_set_bytes, m.rss_bytes),
            (4096, 0, 1024)
        );
        assert_eq!(
            (m.page_faults, m.major_page_faults, m.limit_bytes),
            (9, 1, None)
        );
        assert_eq!(s.pids, None);
        // Nothing there: nothing reported.
        assert_eq!(read_under(r, "kp/none"), CgroupStats::default());
    }

    #[test]
    fn nanocores() {
        assert_eq!(nano_cores(None, (10, 10)), None);
        // One core for a second.
        assert_eq!(
            nano_cores(Some((0, 0)), (1_000_000_000, 1_000_000_000)),
            Some(1_000_000_000)
        );
        assert_eq!(
            nano_cores(Some((0, 0)), (2_000_000_000, 500_000_000)),
            Some(250_000_000)
        );
        assert_eq!(nano_cores(Some((5, 100)), (5, 200)), None);
        assert_eq!(nano_cores(Some((0, 100)), (10, 50)), None);
    }

    #[test]
    fn stat_values() {
        assert_eq!(stat_value("a 1\nab 2\n", "ab"), Some(2));
        assert_eq!(stat_value("a 1\n", "b"), None);
        assert_eq!(stat_value("a x\n", "a"), None);
    }
}
