//! `crius-monitor`: one per container, the role conmon plays for CRI-O.
//!
//! Started by the daemon, it detaches (fork, setsid) so the container and
//! its logs outlive a daemon restart or crash, becomes a child subreaper,
//! runs `<runtime> create` (or, with `--start`, `<runtime> run --detach`:
//! created and started in one runtime call) with the container's
//! stdout/stderr as pipes it holds, reports the container's pid (or the
//! runtime's error) on the sync fd, then copies the container's output into the CRI log until the
//! container exits, and writes its exit code atomically to the exit file.
//! SIGUSR1 reopens the log (ReopenContainerLog). No async runtime: a poll
//! loop over two pipes and a signalfd keeps it small.
//!
//! Every container also gets an attach socket beside its pid file (see
//! `attach`): clients receive its output as it is logged and, with
//! `--stdin`, feed its stdin (a pipe the monitor holds the write end of,
//! or the pty).
//!
//! `crius-monitor standby` is started ahead of any container: it detaches,
//! sets itself up, says `ready <pid>` on fd 1, then reads its job from fd 0
//! to end of file: the same arguments as the command line, NUL-separated.
//! So its own start-up (exec, fork, set-up: about a millisecond) is out of
//! the way of the create that takes it. An empty job (the daemon gave up,
//! shut down or died) makes it exit quietly having created nothing. Its
//! command line is rewritten to name the job (see `title`).

use crius_monitor_protocol::attach::{STDERR as ATTACH_STDERR, STDOUT as ATTACH_STDOUT};
use crius_monitor_protocol::crilog::{LineSplitter, Stream};
use crius_monitor_protocol::exitfile;
use crius_monitor_protocol::job::{self, decode_nul, Job, NO_JOB, TITLE_REQUIRED};
use crius_monitor_protocol::report::Report;
use crius_monitor_protocol::time::now_rfc3339_nano;

mod attach;
mod exec;
mod pause;
mod title;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, setsid, ForkResult, Pid};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: crius-monitor --runtime PATH --runtime-root DIR --id ID --bundle DIR \
--log FILE --exit-file FILE --pid-file FILE --sync-fd N [--max-line BYTES] [--tty] [--stdin] [--stdin-once] [--start] [--runtime-arg ARG]...
       crius-monitor standby [ROOM]   (job on fd 0, reports on fd 1)
       crius-monitor pause --id POD --sync-fd N
       crius-monitor exec --pid-file FILE -- RUNTIME ARGS...   (stop: end of file on fd 0)";

fn open_log(path: &PathBuf) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some(job::PAUSE) => return pause::pause(std::env::args().skip(2)),
        Some(job::STANDBY) => return standby(),
        Some(job::EXEC) => return exec::exec(std::env::args().skip(2)),
        _ => {}
    }
    let (args, sync_fd) = match Job::parse(std::env::args().skip(1)) {
        Ok(a) => match a.sync_fd {
            Some(fd) if fd >= 0 => (a, fd),
            _ => {
                eprintln!("crius-monitor: --sync-fd is required\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        Err(e) => {
            eprintln!("crius-monitor: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(code) = detach() {
        return code;
    }
    // SAFETY: sync_fd was inherited from the daemon for us alone.
    let mut sync = Some(sync_file(unsafe { File::from_raw_fd(sync_fd) }));
    let result = set_up().and_then(|p| run(&args, p, &mut sync));
    finish(result, sync)
}

/// Forks; the parent returns the exit code its caller should exit with
/// at once (the daemon waits for it), the child leads a session of its own,
/// detached from the daemon, and is reparented to init.
fn detach() -> Option<ExitCode> {
    // SAFETY: the monitor is single-threaded here; the parent only exits.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => Some(ExitCode::SUCCESS),
        Ok(ForkResult::Child) => {
            let _ = setsid();
            None
        }
        Err(e) => {
            eprintln!("crius-monitor: fork: {e}");
            Some(ExitCode::FAILURE)
        }
    }
}

/// The sync fd, never passed on: a runtime that leaks fds into the
/// container (crun does) would keep the daemon waiting for end of file.
fn sync_file(f: File) -> File {
    let _ = nix::fcntl::fcntl(
        &f,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    f
}

fn finish(result: Result<(), String>, sync: Option<File>) -> ExitCode {
    match result {
        Err(e) if e == NO_JOB => ExitCode::SUCCESS,
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Before the pid was reported the daemon is waiting for this;
            // afterwards the exit file (or its absence) tells the story.
            if let Some(mut s) = sync {
                let _ = writeln!(s, "{}", Report::Error(e));
            }
            ExitCode::FAILURE
        }
    }
}

/// `crius-monitor standby [ROOM]`: detached and set up ahead of any
/// container; the job arrives on fd 0, reports go to fd 1.
fn standby() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(code) = detach() {
        return code;
    }
    // SAFETY: fd 1 is the sync pipe the daemon gave the standby.
    let mut sync = Some(sync_file(unsafe { File::from_raw_fd(1) }));
    let result = (|| {
        let room = title::Room::find(&argv)?;
        let prepared = set_up()?;
        if let Some(s) = sync.as_mut() {
            writeln!(s, "{}", Report::Ready(std::process::id() as i32))
                .map_err(|e| format!("reporting ready: {e}"))?;
        }
        // Started by a low-priority filler, a pooled standby runs SCHED_IDLE
        // until the daemon gives it its own policy, before the job.
        let job = read_job()?;
        let args = Job::parse(job.iter().cloned())?;
        // The title leads with `--runtime R --id ID` (the daemon orders the
        // job so); without them the container would be unfindable.
        room.set(&job, TITLE_REQUIRED)?;
        run(&args, prepared, &mut sync)
    })();
    finish(result, sync)
}

/// The job on fd 0, read to end of file: NUL-separated arguments.
fn read_job() -> Result<Vec<String>, String> {
    // SAFETY: fd 0 is the job pipe, ours alone.
    let mut f = unsafe { File::from_raw_fd(0) };
    let mut job = Vec::new();
    loop {
        match f.read_to_end(&mut job) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the job: {e}")),
        }
    }
    decode_nul(job)
}

/// The kernel's `struct sigaction` (x86_64 and aarch64 layout).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Sets every signal but SIGKILL and SIGSTOP to its default action with
/// the raw system call: glibc refuses to touch the two real-time signals
/// it keeps for itself (32, 33), and an ignored one is inherited across
/// exec like any other. Async-signal-safe (for a pre_exec hook).
fn reset_signal_dispositions() {
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: a valid struct for the kernel to read; no old action
            // is asked for. Unknown signals fail harmlessly.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &default as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
    }
}

/// What a monitor sets up before it knows its container.
struct SetUp {
    sigfd: SignalFd,
    out: (OwnedFd, OwnedFd),
    err: (OwnedFd, OwnedFd),
}

fn set_up() -> Result<SetUp, String> {
    // Orphaned container processes come to us, so we can reap the container
    // init and learn its exit status.
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("PR_SET_CHILD_SUBREAPER: {e}"))?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGUSR1);
    mask.thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;
    let pipe =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    Ok(SetUp {
        sigfd,
        out: pipe()?,
        err: pipe()?,
    })
}

fn run(args: &Job, set_up: SetUp, sync: &mut Option<File>) -> Result<(), String> {
    let SetUp {
        sigfd,
        out: (out_r, out_w),
        err: (err_r, err_w),
    } = set_up;
    let mut log =
        open_log(&args.log).map_err(|e| format!("opening log {}: {e}", args.log.display()))?;
    // Bound before the runtime runs (and before the console thread: the
    // bind sets the umask), so it is there once the daemon hears of the
    // container. Dropped on any error below, which removes it.
    let mut attach = attach::Attach::bind(&args.pid_file)?;
    // Without a terminal, `--stdin` makes the container's stdin a pipe;
    // the monitor keeps the write end (CLOEXEC: the runtime gets only the
    // read end, as its fd 0).
    let stdin = if args.stdin && !args.tty {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("stdin pipe: {e}"))?;
        attach.set_stdin(w, args.stdin_once)?;
        Stdio::from(r)
    } else {
        Stdio::null()
    };

    // With a terminal the runtime hands us the pty master over a console
    // socket during create; accept it on a thread while create runs.
    // Its directory may be deeper than a socket address holds (under the
    // default root it is), so the socket is bound through /proc/self/fd
    // and the runtime is given the same place through our /proc/<pid>.
    let console = if args.tty {
        let path = args.pid_file.with_extension("console.sock");
        let dir = path.parent().unwrap_or(std::path::Path::new("/"));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dirfd = nix::fcntl::open(
            dir,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_CLOEXEC
                | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("console socket directory {}: {e}", dir.display()))?;
        let local = PathBuf::from(format!("/proc/self/fd/{}/{name}", dirfd.as_raw_fd()));
        let remote = PathBuf::from(format!(
            "/proc/{}/fd/{}/{name}",
            std::process::id(),
            dirfd.as_raw_fd()
        ));
        let _ = std::fs::remove_file(&local);
        let listener = std::os::unix::net::UnixListener::bind(&local)
            .map_err(|e| format!("console socket {}: {e}", path.display()))?;
        Some((
            (local, remote, dirfd),
            std::thread::spawn(move || receive_pty(listener)),
        ))
    } else {
        None
    };
    let mut cmd = Command::new(&args.runtime);
    cmd.arg("--root").arg(&args.runtime_root);
    cmd.args(&args.runtime_args);
    let verb = if args.start { "run" } else { "create" };
    cmd.arg(verb);
    if args.start {
        cmd.arg("--detach");
    }
    cmd.arg("--bundle")
        .arg(&args.bundle)
        .arg("--pid-file")
        .arg(&args.pid_file);
    if let Some(((_, remote, _), _)) = &console {
        cmd.arg("--console-socket").arg(remote);
    }
    cmd.arg(&args.id);
    // The runtime, and through it the container, starts with a clean signal
    // state: std resets neither the signal mask nor ignored signals other
    // than SIGPIPE, so the container would inherit the monitor's blocked
    // SIGCHLD and SIGUSR1 (nginx and others reopen logs on SIGUSR1) and
    // whatever the daemon's own parent ignored (SIGHUP under nohup).
    // runc happens to reset dispositions; crun passes them on.
    // SAFETY: the hook runs between fork and exec and only calls
    // sigprocmask and signal, which are async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            reset_signal_dispositions();
            nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&SigSet::empty()),
                None,
            )
            .map_err(std::io::Error::from)
        });
    }
    let status = cmd
        .stdin(stdin)
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w))
        .status()
        .map_err(|e| format!("running {}: {e}", args.runtime.display()))?;
    // The Command owns the pipes' write ends (and the stdin pipe's read
    // end): drop it, or the monitor holds them itself and never sees EOF
    // when the container exits (nor EPIPE when it closes its stdin).
    drop(cmd);
    let pty = match console {
        Some(((path, _, _dirfd), receiver)) if status.success() => {
            let _ = std::fs::remove_file(&path);
            Some(
                receiver
                    .join()
                    .map_err(|_| "console receiver panicked".to_string())??,
            )
        }
        Some(((path, _, _dirfd), _)) => {
            // Unblock the receiver thread; it exits with an error we ignore.
            let _ = std::os::unix::net::UnixStream::connect(&path);
            let _ = std::fs::remove_file(&path);
            None
        }
        None => None,
    };
    if !status.success() {
        // The runtime's own error went to the container's stderr pipe.
        let mut msg = vec![0u8; 8192];
        nix::fcntl::fcntl(
            &err_r,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .ok();
        let n = File::from(err_r).read(&mut msg).unwrap_or(0);
        return Err(format!(
            "{} {verb} failed ({status}): {}",
            args.runtime.display(),
            String::from_utf8_lossy(&msg[..n]).trim()
        ));
    }
    let pid: i32 = std::fs::read_to_string(&args.pid_file)
        .map_err(|e| format!("reading {}: {e}", args.pid_file.display()))?
        .trim()
        .parse()
        .map_err(|_| "runtime wrote no pid".to_string())?;
    if let Some(mut s) = sync.take() {
        // Closing the sync fd right after tells the daemon we are done
        // starting up (it reads to end of file).
        // The monitor's own pid lets the daemon signal it (SIGUSR1: reopen
        // the log) after a restart.
        // A failed report means the daemon died meanwhile: the container
        // exists all the same, so keep it (its log, its exit code) for the
        // restarted daemon, which finds it through the runtime.
        let report = Report::Pid {
            pid,
            monitor_pid: std::process::id() as i32,
        };
        let _ = writeln!(s, "{report}");
    }

    // With a terminal, stdout and stderr both arrive on the pty master,
    // logged as stdout (as kubelet expects for tty containers).
    let (out_r, err_r) = match pty {
        Some(master) => {
            // Attach writes stdin to and resizes the pty through
            // descriptors of its own (CLOEXEC, like the master).
            let dup = |m: &OwnedFd| m.try_clone().map_err(|e| format!("dup pty: {e}"));
            attach.set_pty(dup(&master)?);
            if args.stdin {
                attach.set_stdin(dup(&master)?, args.stdin_once)?;
            }
            (master, None)
        }
        None => (out_r, Some(err_r)),
    };
    let code = pump(args, pid, out_r, err_r, &sigfd, &mut log, &mut attach)?;
    let written = exitfile::write(&args.exit_file, code, &now_rfc3339_nano())
        .map_err(|e| format!("writing exit file {}: {e}", args.exit_file.display()));
    // After the exit file: a client told EXIT finds the container exited.
    attach.finish(code);
    written
}

/// Copies output into the log, and to attach clients, until the container
/// has exited and its pipes are closed (bounded: a descendant that keeps
/// them open after the container exited gets two seconds), serving attach
/// clients meanwhile. Returns the exit code.
fn pump(
    args: &Job,
    pid: i32,
    out_r: OwnedFd,
    err_r: Option<OwnedFd>,
    sigfd: &SignalFd,
    log: &mut File,
    attach: &mut attach::Attach,
) -> Result<i32, String> {
    let mut splitters = [
        LineSplitter::new(Stream::Stdout, args.max_line),
        LineSplitter::new(Stream::Stderr, args.max_line),
    ];
    let mut pipes: [Option<File>; 2] = [Some(File::from(out_r)), err_r.map(File::from)];
    let mut exit: Option<i32> = None;
    let mut exited_at: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut record = Vec::with_capacity(64 * 1024);
    loop {
        if exit.is_some()
            && (pipes.iter().all(Option::is_none)
                || exited_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2)))
        {
            break;
        }
        let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
        let open: Vec<usize> = (0..2).filter(|i| pipes[*i].is_some()).collect();
        for i in &open {
            fds.push(PollFd::new(
                pipes[*i].as_ref().map(|f| f.as_fd()).ok_or("pipe")?,
                PollFlags::POLLIN,
            ));
        }
        let base = fds.len();
        let mut tokens = Vec::new();
        attach.poll_fds(&mut fds, &mut tokens);
        match poll(&mut fds, PollTimeout::from(200u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        let ready: Vec<bool> = revents[..base].iter().map(|r| !r.is_empty()).collect();
        if ready[0] {
            while let Ok(Some(si)) = sigfd.read_signal() {
                if si.ssi_signo == Signal::SIGUSR1 as u32 {
                    // ReopenContainerLog: the log was rotated away.
                    if let Ok(f) = open_log(&args.log) {
                        *log = f;
                    }
                }
            }
            // Reap everything; remember the container init's status.
            loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(p, c)) if p.as_raw() == pid => exit = Some(c),
                    Ok(WaitStatus::Signaled(p, s, _)) if p.as_raw() == pid => {
                        exit = Some(128 + s as i32)
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            if exit.is_some() && exited_at.is_none() {
                exited_at = Some(Instant::now());
            }
        }
        for (slot, i) in open.iter().enumerate() {
            if !ready[slot + 1] {
                continue;
            }
            let n = match pipes[*i].as_mut().map(|f| f.read(&mut buf)) {
                Some(Ok(n)) => n,
                // WouldBlock: the pty master is non-blocking once attach
                // writes stdin to it (the flag is shared with its dup).
                Some(Err(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                    ) =>
                {
                    continue
                }
                _ => 0,
            };
            let ts = now_rfc3339_nano();
            record.clear();
            if n == 0 {
                let _ = splitters[*i].finish(&ts, &mut record);
                pipes[*i] = None;
            } else {
                let _ = splitters[*i].feed(&buf[..n], &ts, &mut record);
            }
            // A full disk must not kill the monitor: the exit code matters more.
            let _ = log.write_all(&record);
            // With a terminal everything arrives on the master: stdout.
            let kind = if *i == 0 {
                ATTACH_STDOUT
            } else {
                ATTACH_STDERR
            };
            attach.broadcast(kind, &buf[..n]);
        }
        attach.handle(&tokens, &revents[base..]);
    }
    let ts = now_rfc3339_nano();
    record.clear();
    for s in &mut splitters {
        let _ = s.finish(&ts, &mut record);
    }
    let _ = log.write_all(&record);
    let _ = log.sync_all();
    Ok(exit.unwrap_or(-1))
}

/// Accepts the runtime's connection on the console socket and receives
/// the pty master it sends (SCM_RIGHTS).
fn receive_pty(listener: std::os::unix::net::UnixListener) -> Result<OwnedFd, String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let (stream, _) = listener
        .accept()
        .map_err(|e| format!("console socket accept: {e}"))?;
    let mut name = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receiving the pty: {e}"))?;
    for c in msg.cmsgs().map_err(|e| format!("receiving the pty: {e}"))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just gave us this descriptor.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err("the runtime sent no pty on the console socket".into())
}
