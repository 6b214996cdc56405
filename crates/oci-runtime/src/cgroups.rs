//! Where a container's cgroup is: the path crius gives it (the spec's
//! `cgroupsPath`, cgroupfs driver) and the files of it the daemon reads
//! on every cgroup layout (v1, v2, or hybrid with v2 at
//! `/sys/fs/cgroup/unified`). One place for both, so what the spec names
//! and what the daemon reads cannot drift apart. Stats will read here too.

use std::path::{Path, PathBuf};

/// A container's cgroup under its pod's cgroup parent.
pub fn container_path(cgroup_parent: &str, container_id: &str) -> String {
    format!(
        "{}/crius-{container_id}",
        cgroup_parent.trim_end_matches('/')
    )
}

/// The mount points a memory-controller file of a cgroup can live under:
/// cgroup v1's memory hierarchy, the v2 root, and a hybrid host's v2.
const MEMORY_BASES: [(&str, bool); 3] = [
    ("/sys/fs/cgroup/memory", true),
    ("/sys/fs/cgroup", false),
    ("/sys/fs/cgroup/unified", false),
];

/// Candidate paths of a memory-controller file of `cgroups_path`, for
/// every layout: `v1` is the file's name under cgroup v1 (e.g.
/// `memory.oom_control`), `v2` under cgroup v2 (e.g. `memory.events`).
/// Those that exist on this host are the ones to read.
pub fn memory_files(cgroups_path: &str, v1: &str, v2: &str) -> Vec<PathBuf> {
    memory_files_under(Path::new("/"), cgroups_path, v1, v2)
}

fn memory_files_under(root: &Path, cgroups_path: &str, v1: &str, v2: &str) -> Vec<PathBuf> {
    let rel = cgroups_path.trim_start_matches('/');
    MEMORY_BASES
        .iter()
        .map(|(base, is_v1)| {
            root.join(base.trim_start_matches('/'))
                .join(rel)
                .join(if *is_v1 { v1 } else { v2 })
        })
        .collect()
}

/// The `oom_kill` count of a v1 `memory.oom_control` or v2
/// `memory.events` file's text.
pub fn oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(container_path("/kubepods/", "c1"), "/kubepods/crius-c1");
        assert_eq!(container_path("/a/b", "c1"), "/a/b/crius-c1");
        let got = memory_files_under(
            Path::new("/"),
            "/kubepods/crius-c1",
            "memory.oom_control",
            "memory.events",
        );
        assert_eq!(
            got,
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/kubepods/crius-c1/memory.oom_control"),
                PathBuf::from("/sys/fs/cgroup/kubepods/crius-c1/memory.events"),
                PathBuf::from("/sys/fs/cgroup/unified/kubepods/crius-c1/memory.events"),
            ]
        );
    }

    #[test]
    fn oom_kill_counts() {
        let cases = [
            ("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", 2),
            ("low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n", 1),
            ("oom_kill_disable 0\n", 0),
            ("oom_kill x\n", 0),
            ("", 0),
        ];
        for (text, want) in cases {
            assert_eq!(oom_kills(text), want, "{text:?}");
        }
    }
}
