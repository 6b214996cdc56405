//! Looking at processes the way the tests need: by command line, alive or
//! not, scheduling policy. Reads /proc only.

use std::time::{Duration, Instant};

/// A process's command line, arguments separated by NUL (empty if gone).
pub fn cmdline(pid: i32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .into_owned()
}

/// Pids of the processes whose NUL-separated command line satisfies `f`.
pub fn pids_where(f: impl Fn(i32, &str) -> bool) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
                .filter(|pid| f(*pid, &cmdline(*pid)))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid` runs: not gone, and not a zombie (a detached process is
/// init's child, and init may be slow to reap it).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Zombies whose parent is `ppid` and whose command name is one of
/// `names`: what nobody reaped (pid 1 on this kind of machine never does).
pub fn zombies_of(ppid: i32, names: &[&str]) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The name is in parentheses and may hold anything: fields after
        // its last ')' are fixed (state, ppid, ...).
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let mut rest = stat[close + 1..].split_whitespace();
        let ppid_s = ppid.to_string();
        if rest.next() == Some("Z") && rest.next() == Some(ppid_s.as_str()) && names.contains(&name)
        {
            out.push((pid, name.to_string()));
        }
    }
    out
}

/// Whether `pid` leads its own session (a detached process).
pub fn leads_session(pid: i32) -> bool {
    // Fields after the command name: state, ppid, pgrp, session.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(3))
            == Some(pid.to_string().as_str())
    })
}

/// Waits up to `timeout` for `pid` to stop running; false if it still runs.
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The scheduling policy of `pid` (`libc::SCHED_*`; -1 if gone).
pub fn sched_policy(pid: i32) -> i32 {
    // SAFETY: plain syscall reading another process's policy.
    unsafe { libc::sched_getscheduler(pid) }
}
