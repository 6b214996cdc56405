//! A cgroup's figures beyond ContainerStats (`stats`), for the
//! cAdvisor-compatible metric set of ListPodSandboxMetrics: CPU split and
//! CFS throttling, memory detail and failures, OOM kills, block I/O, the
//! thread limit and count, and the processes' open files and sockets.
//! Read by path on cgroup v1, v2 and hybrid hosts, as `stats` is; `None`
//! where the files are absent.

use crate::stats::stat_value;
use std::path::{Path, PathBuf};

/// USER_HZ: `cpuacct.stat` counts in these ticks (100 on every Linux ABI).
const USER_HZ_NS: u64 = 10_000_000;

/// One block device's I/O as the cgroup accounted it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceIo {
    pub major: u64,
    pub minor: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detail {
    pub cpu_user_ns: Option<u64>,
    pub cpu_system_ns: Option<u64>,
    pub cfs_periods: Option<u64>,
    pub cfs_throttled_periods: Option<u64>,
    pub cfs_throttled_ns: Option<u64>,
    pub memory_cache: Option<u64>,
    pub memory_mapped_file: Option<u64>,
    pub memory_max_usage: Option<u64>,
    pub memory_failcnt: Option<u64>,
    pub memory_kernel: Option<u64>,
    pub memory_swap: Option<u64>,
    pub oom_kills: Option<u64>,
    /// `pids.max` (None: no limit, or no pids controller).
    pub threads_max: Option<u64>,
    pub threads: Option<u64>,
    pub io: Vec<DeviceIo>,
    /// The processes in the cgroup.
    pub procs: Vec<i32>,
}

/// The first `n` values of `key` in `memory.events`-style or `cpu.stat`
/// files, whichever of `names` is present.
fn first_of(text: &str, names: &[&str]) -> Option<u64> {
    names.iter().find_map(|n| stat_value(text, n))
}

/// v1 `blkio.throttle.io_service{d,_bytes}_recursive`: `MAJ:MIN Op N` lines.
fn parse_v1_blkio(bytes: &str, ios: &str) -> Vec<DeviceIo> {
    let mut out: Vec<DeviceIo> = Vec::new();
    let mut add = |text: &str, is_bytes: bool| {
        for l in text.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [dev, op, n] = f[..] else { continue };
            let Some((maj, min)) = dev.split_once(':') else {
                continue;
            };
            let (Ok(major), Ok(minor), Ok(n)) = (maj.parse(), min.parse(), n.parse::<u64>()) else {
                continue;
            };
            let i = match out
                .iter()
                .position(|d| d.major == major && d.minor == minor)
            {
                Some(i) => i,
                None => {
                    out.push(DeviceIo {
                        major,
                        minor,
                        ..Default::default()
                    });
                    out.len() - 1
                }
            };
            let d = &mut out[i];
            match (op, is_bytes) {
                ("Read", true) => d.read_bytes = n,
                ("Write", true) => d.write_bytes = n,
                ("Read", false) => d.reads = n,
                ("Write", false) => d.writes = n,
                _ => {}
            }
        }
    };
    add(bytes, true);
    add(ios, false);
    out
}

/// v2 `io.stat`: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N …` lines.
fn parse_io_stat(text: &str) -> Vec<DeviceIo> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (maj, min) = f.next()?.split_once(':')?;
            let mut d = DeviceIo {
                major: maj.parse().ok()?,
                minor: min.parse().ok()?,
                ..Default::default()
            };
            for kv in f {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => d.read_bytes = v,
                    "wbytes" => d.write_bytes = v,
                    "rios" => d.reads = v,
                    "wios" => d.writes = v,
                    _ => {}
                }
            }
            Some(d)
        })
        .collect()
}

fn numbers(text: &str) -> Vec<i32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

pub fn read(cgroups_path: &str) -> Detail {
    read_under(Path::new("/"), cgroups_path)
}

pub fn read_under(root: &Path, cgroups_path: &str) -> Detail {
    let rel = cgroups_path.trim_start_matches('/');
    let at = |base: &str, file: &str| -> PathBuf { root.join(base).join(rel).join(file) };
    let text = |p: PathBuf| std::fs::read_to_string(p).ok();
    let num = |p: PathBuf| text(p).and_then(|t| t.trim().parse::<u64>().ok());
    let v2 = ["sys/fs/cgroup/unified", "sys/fs/cgroup"]
        .into_iter()
        .find(|b| at(b, "cgroup.procs").exists() && at(b, "cgroup.controllers").exists());
    let v1_cpu = ["sys/fs/cgroup/cpu", "sys/fs/cgroup/cpu,cpuacct"]
        .into_iter()
        .find(|b| at(b, "cpu.stat").exists());
    let v1_acct = ["sys/fs/cgroup/cpuacct", "sys/fs/cgroup/cpu,cpuacct"]
        .into_iter()
        .find(|b| at(b, "cpuacct.stat").exists());
    let mem1 = "sys/fs/cgroup/memory";
    let has_mem1 = at(mem1, "memory.stat").exists();
    let mut d = Detail::default();

    if let Some(b) = v1_acct {
        let t = text(at(b, "cpuacct.stat")).unwrap_or_default();
        d.cpu_user_ns = stat_value(&t, "user").map(|v| v.saturating_mul(USER_HZ_NS));
        d.cpu_system_ns = stat_value(&t, "system").map(|v| v.saturating_mul(USER_HZ_NS));
    }
    if let Some(b) = v1_cpu {
        let t = text(at(b, "cpu.stat")).unwrap_or_default();
        d.cfs_periods = stat_value(&t, "nr_periods");
        d.cfs_throttled_periods = stat_value(&t, "nr_throttled");
        d.cfs_throttled_ns = stat_value(&t, "throttled_time");
    }
    if let Some(b) = v2 {
        let t = text(at(b, "cpu.stat")).unwrap_or_default();
        let us = |k: &str| stat_value(&t, k).map(|v| v.saturating_mul(1000));
        d.cpu_user_ns = d.cpu_user_ns.or_else(|| us("user_usec"));
        d.cpu_system_ns = d.cpu_system_ns.or_else(|| us("system_usec"));
        d.cfs_periods = d.cfs_periods.or_else(|| stat_value(&t, "nr_periods"));
        d.cfs_throttled_periods = d
            .cfs_throttled_periods
            .or_else(|| stat_value(&t, "nr_throttled"));
        d.cfs_throttled_ns = d.cfs_throttled_ns.or_else(|| us("throttled_usec"));
    }

    if has_mem1 {
        let t = text(at(mem1, "memory.stat")).unwrap_or_default();
        d.memory_cache = stat_value(&t, "total_cache");
        d.memory_mapped_file = stat_value(&t, "total_mapped_file");
        d.memory_swap = stat_value(&t, "total_swap").or(Some(0));
        d.memory_max_usage = num(at(mem1, "memory.max_usage_in_bytes"));
        d.memory_failcnt = num(at(mem1, "memory.failcnt"));
        d.memory_kernel = num(at(mem1, "memory.kmem.usage_in_bytes"));
        d.oom_kills = text(at(mem1, "memory.oom_control")).and_then(|t| stat_value(&t, "oom_kill"));
    } else if let Some(b) = v2 {
        let t = text(at(b, "memory.stat")).unwrap_or_default();
        d.memory_cache = stat_value(&t, "file");
        d.memory_mapped_file = stat_value(&t, "file_mapped");
        d.memory_kernel = first_of(&t, &["kernel"])
            .or_else(|| Some(stat_value(&t, "kernel_stack")? + stat_value(&t, "slab")?));
        d.memory_swap = num(at(b, "memory.swap.current"));
        d.memory_max_usage = num(at(b, "memory.peak"));
        let ev = text(at(b, "memory.events")).unwrap_or_default();
        // v2 counts reaching the limit as `max` events (v1's failcnt).
        d.memory_failcnt = stat_value(&ev, "max");
        d.oom_kills = stat_value(&ev, "oom_kill");
    }

    let pids_dir = if at("sys/fs/cgroup/pids", "pids.current").exists() {
        Some("sys/fs/cgroup/pids")
    } else {
        v2
    };
    if let Some(b) = pids_dir {
        // "max" does not parse: no limit.
        d.threads_max = num(at(b, "pids.max"));
    }

    let blk1 = "sys/fs/cgroup/blkio";
    d.io = match text(at(blk1, "blkio.throttle.io_service_bytes_recursive")) {
        Some(bytes) => {
            let ios = text(at(blk1, "blkio.throttle.io_serviced_recursive")).unwrap_or_default();
            parse_v1_blkio(&bytes, &ios)
        }
        None => v2
            .and_then(|b| text(at(b, "io.stat")))
            .map(|t| parse_io_stat(&t))
            .unwrap_or_default(),
    };

    // Processes and threads: any controller's membership lists will do.
    let member_dirs: Vec<&str> = ["sys/fs/cgroup/pids", mem1, "sys/fs/cgroup/cpuacct"]
        .into_iter()
        .chain(v2)
        .collect();
    if let Some(b) = member_dirs.iter().find(|b| at(b, "cgroup.procs").exists()) {
        d.procs = numbers(&text(at(b, "cgroup.procs")).unwrap_or_default());
        let threads_file = if at(b, "tasks").exists() {
            "tasks"
        } else {
            "cgroup.threads"
        };
        d.threads = text(at(b, threads_file)).map(|t| numbers(&t).len() as u64);
    }
    d
}

/// Open file descriptors and, of them, sockets, of `procs` (processes that
/// went meanwhile are skipped).
pub fn open_files(procs: &[i32]) -> (u64, u64) {
    open_files_under(Path::new("/proc"), procs)
}

pub fn open_files_under(proc_root: &Path, procs: &[i32]) -> (u64, u64) {
    let (mut fds, mut sockets) = (0, 0);
    for pid in procs {
        let Ok(dir) = std::fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
            continue;
        };
        for e in dir.flatten() {
            fds += 1;
            if std::fs::read_link(e.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
            {
                sockets += 1;
            }
        }
    }
    (fds, sockets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::write;

    #[test]
    fn v1_files() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(
            r,
            "sys/fs/cgroup/cpuacct/kp/c/cpuacct.stat",
            "user 150\nsystem 25\n",
        );
        write(
            r,
            "sys/fs/cgroup/cpu/kp/c/cpu.stat",
            "nr_periods 10\nnr_throttled 4\nthrottled_time 5000\n",
        );
        write(
            r,
            "sys/fs/cgroup/memory/kp/c/memory.stat",
            "total_cache 100\ntotal_mapped_file 7\ntotal_swap 3\n",
        );
        write(
            r,
            "sys/fs/cgroup/memory/kp/c/memory.max_usage_in_bytes",
            "999\n",
        );
        write(r, "sys/fs/cgroup/memory/kp/c/memory.failcnt", "2\n");
        write(
            r,
            "sys/fs/cgroup/memory/kp/c/memory.kmem.usage_in_bytes",
            "55\n",
        );
        write(
            r,
            "sys/fs/cgroup/memory/kp/c/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        write(r, "sys/fs/cgroup/pids/kp/c/pids.current", "2\n");
        write(r, "sys/fs/cgroup/pids/kp/c/pids.max", "max\n");
        write(r, "sys/fs/cgroup/pids/kp/c/cgroup.procs", "10\n12\n");
        write(r, "sys/fs/cgroup/pids/kp/c/tasks", "10\n11\n12\n");
        write(
            r,
            "sys/fs/cgroup/blkio/kp/c/blkio.throttle.io_service_bytes_recursive",
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\nTotal 12288\n",
        );
        write(
            r,
            "sys/fs/cgroup/blkio/kp/c/blkio.throttle.io_serviced_recursive",
            "8:0 Read 1\n8:0 Write 2\ngarbage\n",
        );
        let d = read_under(r, "/kp/c");
        assert_eq!(
            d,
            Detail {
                cpu_user_ns: Some(1_500_000_000),
                cpu_system_ns: Some(250_000_000),
                cfs_periods: Some(10),
                cfs_throttled_periods: Some(4),
                cfs_throttled_ns: Some(5000),
                memory_cache: Some(100),
                memory_mapped_file: Some(7),
                memory_max_usage: Some(999),
                memory_failcnt: Some(2),
                memory_kernel: Some(55),
                memory_swap: Some(3),
                oom_kills: Some(1),
                threads_max: None,
                threads: Some(3),
                io: vec![DeviceIo {
                    major: 8,
                    minor: 0,
                    read_bytes: 4096,
                    write_bytes: 8192,
                    reads: 1,
                    writes: 2,
                }],
                procs: vec![10, 12],
            }
        );
    }

    #[test]
    fn v2_files() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let b = "sys/fs/cgroup/kp/c";
        write(
            r,
            &format!("{b}/cgroup.controllers"),
            "cpu memory pids io\n",
        );
        write(r, &format!("{b}/cgroup.procs"), "7\n");
        write(r, &format!("{b}/cgroup.threads"), "7\n8\n");
        write(
            r,
            &format!("{b}/cpu.stat"),
            "usage_usec 30\nuser_usec 20\nsystem_usec 10\nnr_periods 5\nnr_throttled 1\nthrottled_usec 3\n",
        );
        write(
            r,
            &format!("{b}/memory.stat"),
            "anon 1\nfile 2\nkernel 3\nfile_mapped 4\n",
        );
        write(r, &format!("{b}/memory.swap.current"), "5\n");
        write(r, &format!("{b}/memory.peak"), "6\n");
        write(
            r,
            &format!("{b}/memory.events"),
            "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n",
        );
        write(r, &format!("{b}/pids.max"), "100\n");
        write(
            r,
            &format!("{b}/io.stat"),
            "259:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        let d = read_under(r, "kp/c");
        assert_eq!(
            (d.cpu_user_ns, d.cpu_system_ns, d.cfs_throttled_ns),
            (Some(20_000), Some(10_000), Some(3000))
        );
        assert_eq!(
            (
                d.memory_cache,
                d.memory_kernel,
                d.memory_mapped_file,
                d.memory_swap,
                d.memory_max_usage,
                d.memory_failcnt,
                d.oom_kills
            ),
            (
                Some(2),
                Some(3),
                Some(4),
                Some(5),
                Some(6),
                Some(7),
                Some(1)
            )
        );
        assert_eq!((d.threads_max, d.threads), (Some(100), Some(2)));
        assert_eq!(d.procs, vec![7]);
        assert_eq!(d.io[0].write_bytes, 20);
        // Nothing there: nothing reported.
        assert_eq!(read_under(r, "kp/none"), Detail::default());
    }

    #[test]
    fn counts_own_files_and_sockets() {
        let me = std::process::id() as i32;
        let _sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let (files, sockets) = open_files(&[me]);
        assert!(sockets >= 1 && files > sockets, "{files} {sockets}");
        assert_eq!(open_files(&[-5]), (0, 0));
    }
}
