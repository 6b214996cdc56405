//! Running one plugin binary: config on stdin, the CNI variables in its
//! environment, its result (or error) from stdout, bounded in size and in
//! time. One poll loop over stdin, stdout, stderr and a pidfd, so a plugin
//! that never reads its stdin or never exits cannot hold the caller.
//!
//! A plugin leads a process group of its own: on timeout the whole group
//! is killed (an IPAM plugin it runs too), while the leader is not yet
//! reaped, so the group id cannot have been reused. No pre_exec hook: std
//! then spawns with posix_spawn (vfork), where a fork of the daemon cost
//! RunPodSandbox ~3 ms and halved the speed-up of pods started at once.
//! Plugins a killed daemon left running are found by their environment
//! instead ([`kill_leftovers`]).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Most a plugin's stdout (its result) may be; the rest is discarded.
pub const MAX_STDOUT: usize = 4 << 20;
/// Most of a plugin's stderr kept for an error message.
pub const MAX_STDERR: usize = 64 << 10;

#[derive(Debug)]
pub struct Output {
    /// The exit code; a plugin killed by a signal has none.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("running {plugin}: {source}")]
    Io {
        plugin: String,
        source: std::io::Error,
    },
    #[error("{plugin} did not finish within {seconds} s and was killed")]
    TimedOut { plugin: String, seconds: u64 },
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Kills the plugin's process group. Called only before the leader is
/// reaped: its pid, the group's id, cannot have been reused.
fn kill_group(pid: u32) {
    // SAFETY: kill(2) with a negative pid signals that process group.
    unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
}

fn nonblocking(fd: &impl AsRawFd) -> std::io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on an fd owned by the caller.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads what is there; false at end of file.
fn drain(r: &mut impl Read, into: &mut Vec<u8>, max: usize) -> std::io::Result<bool> {
    let mut buf = [0u8; 16384];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                let room = max.saturating_sub(into.len());
                into.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Kills every process whose environment names `container_id` as its
/// `CNI_CONTAINERID` — plugins (and the IPAM plugins they ran, which
/// inherit it) that a daemon killed mid-ADD or mid-DEL left running — and
/// waits (up to `wait`) for them to go, so the DEL that follows is not
/// overtaken by an ADD still finishing. Returns how many it killed.
pub fn kill_leftovers(container_id: &str, wait: Duration) -> usize {
    let needle = format!("CNI_CONTAINERID={container_id}");
    let find = || -> Vec<i32> {
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
            })
            .collect()
    };
    let pids = find();
    for &pid in &pids {
        // SAFETY: kill(2) of a process found by its CNI environment; one
        // that exited meanwhile yields ESRCH.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let deadline = Instant::now() + wait;
    while !pids.is_empty() && !find().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    pids.len()
}

/// Runs `plugin` with exactly `env` and `stdin`, killing it after
/// `timeout`.
pub fn run(
    plugin: &Path,
    env: &[(OsString, OsString)],
    stdin: &[u8],
    timeout: Duration,
) -> Result<Output, ExecError> {
    use std::os::unix::process::CommandExt;
    let name = plugin.display().to_string();
    let io = |source| ExecError::Io {
        plugin: name.clone(),
        source,
    };
    let mut cmd = Command::new(plugin);
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // A binary being written (a daemonset copying in a new plugin, or a
    // descriptor for writing it that a forked child still holds until it
    // execs) cannot be run yet: ETXTBSY passes within milliseconds.
    let mut tries = 0;
    let mut child = loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(5 * tries));
            }
            other => break other.map_err(io)?,
        }
    };
    let result = pump(&mut child, stdin, timeout);
    match result {
        Ok((stdout, stderr)) => {
            let status = child.wait().map_err(io)?;
            Ok(Output {
                code: status.code(),
                stdout,
                stderr,
            })
        }
        Err(e) => {
            kill_group(child.id());
            let _ = child.wait();
            match e {
                None => Err(ExecError::TimedOut {
                    plugin: name,
                    seconds: timeout.as_secs(),
                }),
                Some(e) => Err(io(e)),
            }
        }
    }
}

/// Feeds stdin and collects stdout and stderr until the plugin exits and
/// its pipes are drained. Err(None): timed out (the plugin was killed).
fn pump(
    child: &mut std::process::Child,
    input: &[u8],
    timeout: Duration,
) -> Result<(Vec<u8>, Vec<u8>), Option<std::io::Error>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let pidfd = pidfd_open(child.id()).map_err(Some)?;
    let mut sin = child.stdin.take();
    let mut sout = child.stdout.take();
    let mut serr = child.stderr.take();
    for fd in [
        sin.as_ref().map(|f| f.as_raw_fd()),
        sout.as_ref().map(|f| f.as_raw_fd()),
        serr.as_ref().map(|f| f.as_raw_fd()),
    ]
    .into_iter()
    .flatten()
    {
        // SAFETY: the fd is one of the child's pipes, open and ours.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        nonblocking(&b).map_err(Some)?;
    }
    let deadline = Instant::now() + timeout;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut written = 0;
    if input.is_empty() {
        sin = None;
    }
    let mut exited = false;
    while !exited || sout.is_some() || serr.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(None);
        }
        let mut fds = Vec::with_capacity(4);
        let mut kinds = Vec::with_capacity(4);
        if let Some(f) = &sin {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLOUT));
            kinds.push(0);
        }
        if let Some(f) = &sout {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            kinds.push(1);
        }
        if let Some(f) = &serr {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            kinds.push(2);
        }
        if !exited {
            fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
            kinds.push(3);
        }
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Some(e.into())),
        }
        let ready: Vec<(i32, bool)> = fds
            .iter()
            .zip(&kinds)
            .map(|(f, k)| (*k, f.revents().is_some_and(|r| !r.is_empty())))
            .collect();
        drop(fds);
        for (kind, is_ready) in ready {
            if !is_ready && kind != 3 {
                continue;
            }
            match kind {
                0 => {
                    let Some(f) = sin.as_mut() else { continue };
                    match f.write(&input[written..]) {
                        Ok(n) => written += n,
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                            ) => {}
                        // The plugin closed its stdin: it read what it wanted.
                        Err(_) => written = input.len(),
                    }
                    if written >= input.len() {
                        sin = None;
                    }
                }
                1 => {
                    if let Some(f) = sout.as_mut() {
                        if !drain(f, &mut out, MAX_STDOUT).map_err(Some)? {
                            sout = None;
                        }
                    }
                }
                2 => {
                    if let Some(f) = serr.as_mut() {
                        if !drain(f, &mut err, MAX_STDERR).map_err(Some)? {
                            serr = None;
                        }
                    }
                }
                _ if is_ready => {
                    // Exited: what it wrote is in the pipes. A child of
                    // its own may still hold them, so take what is there
                    // and stop waiting for end of file.
                    exited = true;
                    sin = None;
                    if let Some(f) = sout.as_mut() {
                        drain(f, &mut out, MAX_STDOUT).map_err(Some)?;
                    }
                    if let Some(f) = serr.as_mut() {
                        drain(f, &mut err, MAX_STDERR).map_err(Some)?;
                    }
                    sout = None;
                    serr = None;
                }
                _ => {}
            }
        }
    }
    Ok((out, err))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, body: &str) -> std::path::PathBuf {
        let p = dir.join("plugin");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn stdin_env_stdout_stderr_and_code() {
        let d = tempfile::tempdir().unwrap();
        let p = script(
            d.path(),
            "cat; echo \"$CNI_COMMAND\"; echo oops >&2; exit 3",
        );
        let env = [(OsString::from("CNI_COMMAND"), OsString::from("ADD"))];
        let out = run(&p, &env, b"{\"x\":1}\n", Duration::from_secs(10)).unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, b"{\"x\":1}\nADD\n");
        assert_eq!(out.stderr, b"oops\n");
    }

    #[test]
    fn large_stdin_to_a_plugin_that_never_reads_it_does_not_hang() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "echo done");
        let big = vec![b'x'; 1 << 20];
        let out = run(&p, &[], &big, Duration::from_secs(10)).unwrap();
        assert_eq!(out.stdout, b"done\n");
    }

    #[test]
    fn a_hung_plugin_is_killed_at_the_deadline() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "exec sleep 30");
        let t = Instant::now();
        let e = run(&p, &[], b"", Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, ExecError::TimedOut { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_timeout_kills_the_plugins_children_too() {
        let d = tempfile::tempdir().unwrap();
        let marker = d.path().join("child.pid");
        let p = script(
            d.path(),
            &format!("sleep 30 & echo $! > {}; wait", marker.display()),
        );
        let e = run(&p, &[], b"", Duration::from_millis(500)).unwrap_err();
        assert!(matches!(e, ExecError::TimedOut { .. }), "{e}");
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // Gone, or a zombie awaiting its (killed) parent's reaper.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = state
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            .is_some_and(|st| st != "Z");
        assert!(!alive, "the plugin's child survived: {state}");
    }

    #[test]
    fn leftovers_are_found_by_their_container_id() {
        let mut child = Command::new("sleep")
            .arg("30")
            .env("CNI_CONTAINERID", "leftover-test-1")
            .spawn()
            .unwrap();
        let other = Command::new("sleep")
            .arg("30")
            .env("CNI_CONTAINERID", "leftover-test-10")
            .spawn();
        let mut other = other.unwrap();
        assert_eq!(kill_leftovers("leftover-test-1", Duration::from_secs(5)), 1);
        assert!(child.wait().unwrap().code().is_none(), "killed by a signal");
        assert!(
            other.try_wait().unwrap().is_none(),
            "a prefix match killed another"
        );
        let _ = other.kill();
        let _ = other.wait();
    }

    #[test]
    fn a_grandchild_holding_stdout_does_not_hold_the_caller() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "echo result; (sleep 30 &) ; exit 0");
        let t = Instant::now();
        let out = run(&p, &[], b"", Duration::from_secs(20)).unwrap();
        assert_eq!(out.stdout, b"result\n");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn output_is_bounded() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "head -c 6000000 /dev/zero");
        let out = run(&p, &[], b"", Duration::from_secs(20)).unwrap();
        assert_eq!(out.stdout.len(), MAX_STDOUT);
    }

    #[test]
    fn a_missing_plugin_is_an_error_naming_it() {
        let e = run(
            Path::new("/nonexistent/bridge"),
            &[],
            b"",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/bridge"), "{e}");
    }
}
