//! A cgroup's usage as ContainerStats reports it, read from the cgroup's
//! own files by path (no shelling out), on cgroup v1, v2 and hybrid hosts.
//! The v1 controllers' files are preferred where they exist (a hybrid
//! host's runtimes account there); else the v2 ones (`/sys/fs/cgroup`, or
//! `/sys/fs/cgroup/unified` on a hybrid host).
//!
//! Parsing is pure; `read_under` takes the filesystem root so tests can
//! lay out fixtures.

use std::fs::File;
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
    Reader::open_under(root, cgroups_path, true)
        .read()
        .unwrap_or_default()
}

/// The values of `keys` in a flat-keyed file, in one pass.
pub fn stat_values<const N: usize>(text: &str, keys: [&str; N]) -> [Option<u64>; N] {
    let mut out = [None; N];
    let mut seen = [false; N];
    let mut left = N;
    // Bytes, not chars: v1's memory.stat has some 60 lines per read.
    for l in text.as_bytes().split(|b| *b == b'\n') {
        let Some(sp) = l.iter().position(|b| *b == b' ') else {
            continue;
        };
        let (k, v) = (&l[..sp], &l[sp + 1..]);
        if let Some(i) = keys.iter().position(|key| key.as_bytes() == k) {
            if !seen[i] {
                seen[i] = true;
                left -= 1;
            }
            out[i] = std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.trim().parse().ok());
            if left == 0 {
                break;
            }
        }
    }
    out
}

/// Where a cgroup's CPU figure is.
#[derive(Debug)]
enum Cpu {
    /// v1 `cpuacct.usage`: nanoseconds.
    V1(File),
    /// v2 `cpu.stat`: `usage_usec`.
    V2(File),
}

#[derive(Debug)]
enum Mem {
    V1 {
        usage: File,
        stat: File,
        limit: Option<File>,
    },
    V2 {
        current: File,
        stat: Option<File>,
        max: Option<File>,
        swap: Option<File>,
    },
}

/// A cgroup's stats files, opened once and re-read in place (`pread` at
/// 0 makes the kernel produce a file afresh): opening a cgroup file costs
/// a path walk through kernfs and an allocation, more than reading it,
/// and ListContainerStats reads three per container. Held per running
/// container by the daemon's stats cache.
#[derive(Debug)]
pub struct Reader {
    cpu: Option<Cpu>,
    mem: Option<Mem>,
    pids: Option<File>,
}

/// Reads `f` whole from offset 0 into `buf` (kept between reads: no
/// allocation in the steady state) and gives it as text.
fn pread<'b>(f: &File, buf: &'b mut Vec<u8>) -> std::io::Result<&'b str> {
    use std::os::unix::fs::FileExt;
    if buf.len() < 4096 {
        buf.resize(4096, 0);
    }
    let mut n = 0;
    loop {
        if n == buf.len() {
            buf.resize(n * 2, 0);
        }
        let room = buf.len() - n;
        let k = f.read_at(&mut buf[n..], n as u64)?;
        n += k;
        // A short read is the end: asking again at the end would make the
        // kernel produce a seq_file (`memory.stat`) anew just to say so.
        if k < room {
            break;
        }
    }
    // Cgroup files are ASCII; anything else reads as nothing.
    Ok(std::str::from_utf8(&buf[..n]).unwrap_or(""))
}

impl Reader {
    /// Opens what exists of the cgroup's files (`with_pids`: the process
    /// count too, which ContainerStats does not report).
    pub fn open(cgroups_path: &str, with_pids: bool) -> Reader {
        Reader::open_under(Path::new("/"), cgroups_path, with_pids)
    }

    pub fn open_under(root: &Path, cgroups_path: &str, with_pids: bool) -> Reader {
        let rel = cgroups_path.trim_start_matches('/');
        let at = |base: &str, file: &str| -> PathBuf { root.join(base).join(rel).join(file) };
        let open = |p: PathBuf| File::open(p).ok();
        let v2_dirs = ["sys/fs/cgroup/unified", "sys/fs/cgroup"];

        // CPU: v1 cpuacct (alone or co-mounted with cpu), else v2 cpu.stat.
        let cpu = ["sys/fs/cgroup/cpuacct", "sys/fs/cgroup/cpu,cpuacct"]
            .iter()
            .find_map(|b| open(at(b, "cpuacct.usage")).map(Cpu::V1))
            .or_else(|| {
                v2_dirs
                    .iter()
                    .find_map(|b| open(at(b, "cpu.stat")).map(Cpu::V2))
            });

        let m1 = "sys/fs/cgroup/memory";
        let mem = match (
            open(at(m1, "memory.usage_in_bytes")),
            open(at(m1, "memory.stat")),
        ) {
            (Some(usage), Some(stat)) => Some(Mem::V1 {
                usage,
                stat,
                limit: open(at(m1, "memory.limit_in_bytes")),
            }),
            _ => v2_dirs.iter().find_map(|b| {
                Some(Mem::V2 {
                    current: open(at(b, "memory.current"))?,
                    stat: open(at(b, "memory.stat")),
                    max: open(at(b, "memory.max")),
                    swap: open(at(b, "memory.swap.current")),
                })
            }),
        };

        let pids = if with_pids {
            std::iter::once("sys/fs/cgroup/pids")
                .chain(v2_dirs)
                .find_map(|b| open(at(b, "pids.current")))
        } else {
            None
        };
        Reader { cpu, mem, pids }
    }

    /// Whether anything was found (a cgroup that does not exist yet, or
    /// any more, has no files).
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.mem.is_none() && self.pids.is_none()
    }

    /// The figures now; Err when a file can no longer be read (the cgroup
    /// went: the caller opens it afresh).
    pub fn read(&self) -> std::io::Result<CgroupStats> {
        let mut buf = Vec::new();
        let num = |f: &File, buf: &mut Vec<u8>| -> std::io::Result<Option<u64>> {
            Ok(single(pread(f, buf)?))
        };
        let cpu_usage_ns = match &self.cpu {
            Some(Cpu::V1(f)) => num(f, &mut buf)?,
            Some(Cpu::V2(f)) => {
                stat_value(pread(f, &mut buf)?, "usage_usec").map(|us| us.saturating_mul(1000))
            }
            None => None,
        };
        let memory = match &self.mem {
            Some(Mem::V1 { usage, stat, limit }) => {
                let usage = num(usage, &mut buf)?.unwrap_or(0);
                let [inactive, rss, pgfault, pgmajfault, swap] = stat_values(
                    pread(stat, &mut buf)?,
                    [
                        "total_inactive_file",
                        "total_rss",
                        "total_pgfault",
                        "total_pgmajfault",
                        "total_swap",
                    ],
                );
                let limit = match limit {
                    Some(f) => num(f, &mut buf)?.filter(|l| *l < V1_NO_LIMIT),
                    None => None,
                };
                Some(Memory {
                    usage_bytes: usage,
                    working_set_bytes: usage.saturating_sub(inactive.unwrap_or(0)),
                    rss_bytes: rss.unwrap_or(0),
                    page_faults: pgfault.unwrap_or(0),
                    major_page_faults: pgmajfault.unwrap_or(0),
                    limit_bytes: limit,
                    swap_bytes: swap,
                })
            }
            Some(Mem::V2 {
                current,
                stat,
                max,
                swap,
            }) => {
                let usage = num(current, &mut buf)?.unwrap_or(0);
                let [inactive, anon, pgfault, pgmajfault] = match stat {
                    Some(f) => stat_values(
                        pread(f, &mut buf)?,
                        ["inactive_file", "anon", "pgfault", "pgmajfault"],
                    ),
                    None => [None; 4],
                };
                Some(Memory {
                    usage_bytes: usage,
                    working_set_bytes: usage.saturating_sub(inactive.unwrap_or(0)),
                    rss_bytes: anon.unwrap_or(0),
                    page_faults: pgfault.unwrap_or(0),
                    major_page_faults: pgmajfault.unwrap_or(0),
                    // "max" does not parse: no limit.
                    limit_bytes: match max {
                        Some(f) => num(f, &mut buf)?,
                        None => None,
                    },
                    swap_bytes: match swap {
                        Some(f) => num(f, &mut buf)?,
                        None => None,
                    },
                })
            }
            None => None,
        };
        let pids = match &self.pids {
            Some(f) => num(f, &mut buf)?,
            None => None,
        };
        Ok(CgroupStats {
            cpu_usage_ns,
            memory,
            pids,
        })
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
pub(crate) mod tests {
    use super::*;

    /// Writes a fixture file under `root` (its directories made).
    pub(crate) fn write(root: &Path, rel: &str, text: &str) {
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
    fn a_reader_rereads_its_files_in_place() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(r, "sys/fs/cgroup/cpuacct/kp/c2/cpuacct.usage", "100\n");
        write(
            r,
            "sys/fs/cgroup/memory/kp/c2/memory.usage_in_bytes",
            "50\n",
        );
        write(
            r,
            "sys/fs/cgroup/memory/kp/c2/memory.stat",
            "total_inactive_file 10\ntotal_rss 20\n",
        );
        write(r, "sys/fs/cgroup/pids/kp/c2/pids.current", "3\n");
        let reader = Reader::open_under(r, "kp/c2", false);
        assert!(!reader.is_empty());
        let s = reader.read().unwrap();
        assert_eq!((s.cpu_usage_ns, s.pids), (Some(100), None));
        assert_eq!(s.memory.unwrap().working_set_bytes, 40);
        // Rewritten in place (as the kernel regenerates them): read anew,
        // longer than before too.
        write(
            r,
            "sys/fs/cgroup/cpuacct/kp/c2/cpuacct.usage",
            "123456789012\n",
        );
        let big = format!("{}total_inactive_file 5\n", "pad 1\n".repeat(3000));
        write(r, "sys/fs/cgroup/memory/kp/c2/memory.stat", &big);
        let s = reader.read().unwrap();
        assert_eq!(s.cpu_usage_ns, Some(123456789012));
        assert_eq!(s.memory.unwrap().working_set_bytes, 45);
        assert_eq!(
            Reader::open_under(r, "kp/c2", true).read().unwrap().pids,
            Some(3)
        );
        assert!(Reader::open_under(r, "kp/none", true).is_empty());
    }

    #[test]
    fn stat_values_in_one_pass() {
        assert_eq!(
            super::stat_values("a 1\nb x\nc 3\n", ["c", "a", "b", "d"]),
            [Some(3), Some(1), None, None]
        );
        // A key repeated (an unparsable value first): its later value.
        assert_eq!(
            super::stat_values("a x\na 2\nb 1\n", ["a", "b"]),
            [Some(2), Some(1)]
        );
    }

    #[test]
    fn stat_values() {
        assert_eq!(stat_value("a 1\nab 2\n", "ab"), Some(2));
        assert_eq!(stat_value("a 1\n", "b"), None);
        assert_eq!(stat_value("a x\n", "a"), None);
    }
}
