//! Which process a pid is, from its `/proc/<pid>/cmdline`: the daemon
//! tells a live monitor (or pause process) from a recycled pid, and finds
//! the monitors of orphaned containers at recovery, by the command line
//! [`crate::job`] gives them — as operators do with `ps`. One rule for all
//! of it: `argv[0]` names `crius-monitor`, `argv[1]` names the mode, and
//! the `--id` pair names the container (or pod, for `pause`).

use crate::job::{EXEC, PAUSE, STANDBY};
use crate::MONITOR_BINARY;

/// What a crius-monitor process is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Keeping container `id` (a standby that took its job, or a monitor
    /// started with the job on its command line).
    Container(String),
    /// Pid 1 of pod `id`'s PID namespace.
    Pause(String),
    /// A standby still waiting for its job.
    Standby,
    /// The parent of one exec.
    Exec,
}

/// The role of a process by its raw `/proc/<pid>/cmdline` (arguments each
/// ending with a NUL); None if it is not a crius-monitor.
pub fn role(cmdline: &[u8]) -> Option<Role> {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    if !args.first()?.ends_with(MONITOR_BINARY.as_bytes()) {
        return None;
    }
    let id = || {
        args.windows(2)
            .find(|w| w[0] == b"--id")
            .map(|w| String::from_utf8_lossy(w[1]).into_owned())
            .filter(|id| !id.is_empty())
    };
    match args.get(1).copied() {
        Some(m) if m == PAUSE.as_bytes() => id().map(Role::Pause),
        Some(m) if m == EXEC.as_bytes() => Some(Role::Exec),
        Some(m) if m == STANDBY.as_bytes() => Some(Role::Standby),
        _ => id().map(Role::Container),
    }
}

/// The role of a running process; None if it is gone or not a monitor.
pub fn role_of(pid: i32) -> Option<Role> {
    if pid <= 0 {
        return None;
    }
    role(&std::fs::read(format!("/proc/{pid}/cmdline")).ok()?)
}

/// Whether `pid` is the monitor of container `id`.
pub fn is_container_monitor(pid: i32, id: &str) -> bool {
    matches!(role_of(pid), Some(Role::Container(c)) if c == id)
}

/// Whether `pid` is pod `id`'s pause process.
pub fn is_pause(pid: i32, id: &str) -> bool {
    matches!(role_of(pid), Some(Role::Pause(p)) if p == id)
}

/// Every crius-monitor keeping a container, as (container id, pid), from
/// one pass over /proc.
pub fn container_monitors() -> Vec<(String, i32)> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| match role_of(pid)? {
            Role::Container(id) => Some((id, pid)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_table() {
        let c = |s: &str| s.replace(' ', "\0").into_bytes();
        let cases: &[(&str, Option<Role>)] = &[
            (
                "/usr/bin/crius-monitor --runtime /r --id c1 --bundle /b ",
                Some(Role::Container("c1".into())),
            ),
            // A standby's title, padded with NULs after the job's lead.
            (
                "crius-monitor --runtime /r --id c2   ",
                Some(Role::Container("c2".into())),
            ),
            (
                "/x/crius-monitor pause --id pod1 --sync-fd 1 ",
                Some(Role::Pause("pod1".into())),
            ),
            ("/x/crius-monitor standby       ", Some(Role::Standby)),
            (
                "/x/crius-monitor exec --pid-file /p -- runc exec c1 ",
                Some(Role::Exec),
            ),
            ("/x/crius-monitor --runtime /r ", None),
            ("/x/crius-monitor --id ", None),
            ("/bin/sh -c crius-monitor --id c1 ", None),
            ("/x/not-crius-monitor-at-all --id c1 ", None),
            ("", None),
        ];
        for (line, want) in cases {
            assert_eq!(&role(&c(line)), want, "{line:?}");
        }
    }

    #[test]
    fn own_process_is_not_a_monitor() {
        let me = std::process::id() as i32;
        assert_eq!(role_of(me), None);
        assert!(!is_container_monitor(me, "x"));
        assert!(!is_pause(0, "x"));
    }
}
