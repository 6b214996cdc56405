//! `crius-monitor exec --pid-file FILE -- RUNTIME ARGS...`: the parent of
//! one exec, as conmon is for CRI-O's. It makes itself a child subreaper,
//! then runs the runtime's `exec` with its own stdout and stderr (the
//! daemon's pipes) and /dev/null as stdin. Whatever the exec leaves behind
//! is re-parented to it, not to the host's init, and reaped here.
//!
//! Its stdin is a pipe from the daemon. End of file on it (the daemon gave
//! up at the timeout, its client cancelled, or the daemon died) means
//! stop: the exec'd process tree (the pid the runtime wrote, and every
//! descendant) is stopped, collected and killed, the runtime's process
//! group too, and everything is reaped before it exits with 137. Otherwise
//! it exits with the runtime's status once the runtime has exited.

use crius_monitor::proctree;
use crius_monitor_protocol::job::ExecJob;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// The exit code after a stop (killed, as 128 + SIGKILL).
const STOPPED: u8 = 137;

fn usage() -> ExitCode {
    eprintln!("usage: crius-monitor exec --pid-file FILE -- RUNTIME ARGS...");
    ExitCode::from(2)
}

pub fn exec(mut args: impl Iterator<Item = String>) -> ExitCode {
    let Some(ExecJob {
        pid_file,
        argv,
        stop_fd,
    }) = ExecJob::parse(&mut args)
    else {
        return usage();
    };
    let program = &argv[0];
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        eprintln!(
            "crius-monitor exec: PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::from(125);
    }
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    if let Err(e) = mask.thread_block() {
        eprintln!("crius-monitor exec: blocking SIGCHLD: {e}");
        return ExitCode::from(125);
    }
    let sfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("crius-monitor exec: signalfd: {e}");
            return ExitCode::from(125);
        }
    };
    // The stop pipe: fd 0 for ExecSync (the process gets /dev/null), or
    // its own descriptor for a streaming exec, whose stdin is the
    // process's own. It must not reach the runtime or the process.
    let stop: std::fs::File = match stop_fd {
        // SAFETY: the daemon passed this descriptor for this purpose
        // alone; nothing else in this process owns it.
        Some(fd) => unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) },
        None => match std::io::stdin().as_fd().try_clone_to_owned() {
            Ok(fd) => std::fs::File::from(fd),
            Err(e) => {
                eprintln!("crius-monitor exec: stdin: {e}");
                return ExitCode::from(125);
            }
        },
    };
    let _ = nix::fcntl::fcntl(
        &stop,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    // std empties the signal mask in the child: the runtime (and the
    // process it execs) inherits nothing blocked.
    let child = Command::new(program)
        .args(&argv[1..])
        .stdin(if stop_fd.is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .process_group(0)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "crius-monitor exec: running {}: {e}",
                program.to_string_lossy()
            );
            return ExitCode::from(125);
        }
    };
    let runtime = Pid::from_raw(child.id() as i32);
    // The daemon's end of the stop pipe: readable (EOF) when it wants a stop.
    let stdin = stop;
    let mut daemon_gone = false;
    let mut status: Option<WaitStatus> = None;
    // Orphans reaped so far: a detached exec's process (`exec --detach`,
    // used with a terminal) is re-parented to us when the runtime exits,
    // and may have exited by the time we look for it.
    let mut reaped: std::collections::HashMap<i32, WaitStatus> = std::collections::HashMap::new();
    let mut detached: Option<i32> = None;
    loop {
        if let Some(target) = detached {
            if let Some(s) = reaped.get(&target) {
                reap_now();
                return ExitCode::from(code_of(*s));
            }
        } else if let Some(s) = status {
            // The runtime ended. A runtime killed by a signal leaves its
            // process running with nobody reading its output: stop it.
            if matches!(s, WaitStatus::Signaled(..)) {
                stop_tree(&pid_file, runtime);
                reap_all(Duration::from_secs(5));
                return ExitCode::from(STOPPED);
            }
            // A runtime that returned at once (detached) leaves the
            // process to us: its status is the exec's.
            let own = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .filter(|p| {
                    reaped.contains_key(p)
                        || proctree::parent_of(*p) == Some(std::process::id() as i32)
                });
            if matches!(s, WaitStatus::Exited(_, 0)) {
                if let Some(p) = own {
                    detached = Some(p);
                    continue;
                }
            }
            reap_now();
            return ExitCode::from(code_of(s));
        }
        if daemon_gone {
            stop_tree(&pid_file, runtime);
            reap_all(Duration::from_secs(5));
            return ExitCode::from(STOPPED);
        }
        let mut fds = [
            PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("crius-monitor exec: poll: {e}");
                daemon_gone = true;
                continue;
            }
        }
        let ready = |f: &PollFd| {
            f.revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
        };
        if ready(&fds[0]) {
            let mut buf = [0u8; 64];
            // Anything but data is a stop; data is ignored.
            match (&stdin).read(&mut buf) {
                Ok(n) if n > 0 => {}
                _ => daemon_gone = true,
            }
        }
        if ready(&fds[1]) {
            while let Ok(Some(_)) = sfd.read_signal() {}
            // Reap the runtime and whatever orphans were handed to us.
            loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(s) => {
                        if s.pid() == Some(runtime) {
                            status = Some(s);
                        } else if let Some(p) = s.pid() {
                            if reaped.len() < 4096 {
                                reaped.insert(p.as_raw(), s);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// An exit status as a shell reports it: the code, or 128 + the signal.
fn code_of(s: WaitStatus) -> u8 {
    match s {
        WaitStatus::Exited(_, code) => code as u8,
        WaitStatus::Signaled(_, sig, _) => 128u8.saturating_add(sig as u8),
        _ => STOPPED,
    }
}

/// Stops, collects and kills the exec'd process and all its descendants,
/// then the runtime's process group.
fn stop_tree(pid_file: &std::path::Path, runtime: Pid) {
    let me = std::process::id() as i32;
    let root = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        // Only our own exec'd process: the runtime's child, or ours since
        // the runtime died. A recycled pid is someone else's.
        .filter(
            |p| matches!(proctree::parent_of(*p), Some(pp) if pp == runtime.as_raw() || pp == me),
        );
    if let Some(root) = root {
        let all = proctree::collect(
            root,
            |p| {
                let _ = kill(Pid::from_raw(p), Signal::SIGSTOP);
            },
            proctree::proc_children,
        );
        for p in &all {
            let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
        }
    }
    let _ = killpg(runtime, Signal::SIGKILL);
    // Whatever else descends from us (we are a subreaper that runs this
    // exec alone): the exec's tree when its pid file is gone or was never
    // written, and anything re-parented to us meanwhile.
    let rest = proctree::collect(
        me,
        |p| {
            if p != me {
                let _ = kill(Pid::from_raw(p), Signal::SIGSTOP);
            }
        },
        proctree::proc_children,
    );
    for p in rest.iter().filter(|p| **p != me) {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
}

/// Reaps the zombies there are now, without waiting.
fn reap_now() {
    while let Ok(s) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Reaps every child until none is left (or `limit` passes).
fn reap_all(limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Err(_) => return, // ECHILD: nothing left
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() >= deadline {
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(_) => {}
        }
    }
}
