//! `crius-monitor pause`: pid 1 of a pod's shared PID namespace.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, setsid, ForkResult, Pid};
use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::process::ExitCode;

/// `pause`: the init of a pod's shared PID namespace (shareProcessNamespace).
/// A PID namespace dies with its init, so unlike network, IPC and UTS it
/// cannot be kept by a bind mount alone. Detaches like the monitor, then
/// unshares a PID namespace and forks its pid 1, which reaps orphans until
/// it is killed (SIGKILL, by the daemon). Reports `pid N` (N as the host
/// sees it) on the sync fd.
pub fn pause(mut it: impl Iterator<Item = String>) -> ExitCode {
    let mut id = String::new();
    let mut sync_fd = -1;
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--id", Some(v)) => id = v,
            ("--sync-fd", Some(v)) => sync_fd = v.parse().unwrap_or(-1),
            _ => {
                eprintln!("crius-monitor pause: bad arguments\n{}", super::USAGE);
                return ExitCode::from(2);
            }
        }
    }
    if id.is_empty() || sync_fd < 0 {
        eprintln!(
            "crius-monitor pause: --id and --sync-fd are required\n{}",
            super::USAGE
        );
        return ExitCode::from(2);
    }
    // SAFETY: single-threaded; the parent only exits.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => return ExitCode::SUCCESS,
        Ok(ForkResult::Child) => {}
        Err(_) => return ExitCode::FAILURE,
    }
    let _ = setsid();
    // SAFETY: sync_fd was inherited from the daemon for us alone.
    let mut sync = unsafe { File::from_raw_fd(sync_fd) };
    let _ = nix::fcntl::fcntl(
        &sync,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID) {
        let _ = writeln!(sync, "error unshare(CLONE_NEWPID): {e}");
        return ExitCode::FAILURE;
    }
    // SAFETY: single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => {
            let _ = writeln!(sync, "pid {child} {child}");
            ExitCode::SUCCESS
        }
        Ok(ForkResult::Child) => {
            drop(sync);
            pause_init()
        }
        Err(e) => {
            let _ = writeln!(sync, "error fork: {e}");
            ExitCode::FAILURE
        }
    }
}

/// pid 1 of the pod's PID namespace: reap whatever is reparented to us.
fn pause_init() -> ExitCode {
    let mut mask = SigSet::all();
    mask.remove(Signal::SIGKILL);
    mask.remove(Signal::SIGSTOP);
    let _ = mask.thread_block();
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    loop {
        let _ = chld.wait();
        while let Ok(s) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if s == WaitStatus::StillAlive {
                break;
            }
        }
    }
}
