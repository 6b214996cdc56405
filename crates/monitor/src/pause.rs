//! `crius-monitor pause`: pid 1 of a pod's shared PID namespace.

use crius_monitor_protocol::report::Report;
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
    // The pod id only names the process (`--id` in its command line, how
    // the daemon recognises it): nothing here needs it.
    let (_id, sync_fd) = match crius_monitor_protocol::job::parse_pause(&mut it) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("crius-monitor pause: {e}\n{}", super::USAGE);
            return ExitCode::from(2);
        }
    };
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
        let _ = writeln!(
            sync,
            "{}",
            Report::Error(format!("unshare(CLONE_NEWPID): {e}"))
        );
        return ExitCode::FAILURE;
    }
    // SAFETY: single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => {
            let child = child.as_raw();
            let report = Report::Pid {
                pid: child,
                monitor_pid: child,
            };
            let _ = writeln!(sync, "{report}");
            ExitCode::SUCCESS
        }
        Ok(ForkResult::Child) => {
            drop(sync);
            pause_init()
        }
        Err(e) => {
            let _ = writeln!(sync, "{}", Report::Error(format!("fork: {e}")));
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
