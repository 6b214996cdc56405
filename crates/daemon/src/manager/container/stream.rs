//! The streaming side of Exec and Attach: what runs once a client has
//! upgraded the URL the RPC returned (the protocols are
//! `crius-streaming`'s). Checks shared with the RPCs live here too, so a
//! URL is only handed out for a request that can run.
//!
//! - Exec: the command runs under `crius-monitor exec` (its subreaper,
//!   as for ExecSync), with pipes or a pty for its stdio; the monitor's
//!   stop pipe is the session: when the session ends or the daemon dies,
//!   the exec'd process tree is stopped and reaped.
//! - Attach: the container's monitor keeps an attach socket; a session
//!   is one connection to it (several may attach at once).

use crate::manager::{Manager, ManagerError, Result};
use crate::state::ContainerPhase;
use bytes::Bytes;
use crius_monitor_protocol::attach as wire;
use crius_streaming::{AttachParams, ExecParams, Io, Outcome, TermSize};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The checks kubelet's streaming library makes before handing out a
/// URL: at least one stream, and a terminal merges stderr into stdout.
pub fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<()> {
    if !(stdin || stdout || stderr) {
        return Err(ManagerError::InvalidArgument(
            "one of stdin, stdout, or stderr must be set".into(),
        ));
    }
    if tty && stderr {
        return Err(ManagerError::InvalidArgument(
            "tty and stderr cannot both be true: a terminal has one output stream".into(),
        ));
    }
    Ok(())
}

impl Manager {
    /// Exec: the request can run (the container exists and is running).
    pub async fn check_exec(&self, p: &ExecParams) -> Result<()> {
        check_streams(p.stdin, p.stdout, p.stderr, p.tty)?;
        crate::manager::validate::exec_cmd(&p.cmd)?;
        let c = self.ctr(&p.container_id)?;
        self.refresh_expecting(&c, ContainerPhase::Running).await?;
        Ok(())
    }

    /// Attach: the container is running, and was created with stdin if
    /// stdin is asked for.
    pub async fn check_attach(&self, p: &AttachParams) -> Result<()> {
        check_streams(p.stdin, p.stdout, p.stderr, p.tty)?;
        let c = self.ctr(&p.container_id)?;
        self.refresh_expecting(&c, ContainerPhase::Running).await?;
        if p.stdin && !c.config.stdin {
            return Err(ManagerError::FailedPrecondition(format!(
                "container {} was not created with stdin: attach cannot write to it",
                c.id
            )));
        }
        Ok(())
    }

    /// Runs an exec for a streaming session; the session owns it: dropping
    /// this future stops the exec'd process tree.
    pub async fn exec_stream(&self, p: ExecParams, io: Io) -> Outcome {
        match self.exec_stream_inner(p, io).await {
            Ok(code) => Outcome::Exited(code),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    async fn exec_stream_inner(&self, p: ExecParams, io: Io) -> Result<i32> {
        let c = self.ctr(&p.container_id)?;
        let rec = self.refresh_expecting(&c, ContainerPhase::Running).await?;
        let runtime = self.runtime_any(&rec.runtime_handler)?;
        let bundle = rec.dir.join("bundle/config.json");
        let spec: serde_json::Value = tokio::fs::read(&bundle)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| ManagerError::Internal(format!("reading {}", bundle.display())))?;
        let scratch = rec.dir.join(super::exec::EXEC_SCRATCH_DIR);
        tokio::fs::create_dir_all(&scratch)
            .await
            .map_err(|e| ManagerError::Internal(format!("creating {}: {e}", scratch.display())))?;
        // The console socket's path must fit a sockaddr_un: the runroot's
        // short directory rather than the container's.
        let console = if p.tty {
            Some(ConsoleSocket::bind(&self.cfg.runroot)?)
        } else {
            None
        };
        let (stop_r, stop_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| ManagerError::Internal(format!("pipe: {e}")))?;
        let prepared = runtime
            .prepare_stream_exec(
                &c.id,
                &p.cmd,
                &spec["process"],
                &scratch,
                console.as_ref().map(|s| s.path.as_path()),
                stop_r.as_raw_fd(),
            )
            .map_err(|e| ManagerError::Internal(e.to_string()))?;
        let mut cmd = tokio::process::Command::new(&prepared.monitor);
        cmd.args(&prepared.args)
            .stdin(if p.stdin && !p.tty {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            // With a terminal the process's output is the pty's; the
            // runtime's own complaints still arrive here.
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        // The stop pipe's read end reaches the monitor as itself (its
        // number is in the job), inherited: no pre_exec hook, which would
        // make the spawn fork the whole daemon (~3 ms) instead of
        // posix_spawn. Another spawn racing this one may inherit the read
        // end too; that is harmless (only the write end, CLOEXEC and held
        // here alone, decides when the monitor stops).
        nix::fcntl::fcntl(
            &stop_r,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .map_err(|e| ManagerError::Internal(format!("stop pipe: {e}")))?;
        let mut child = cmd
            .spawn()
            .map_err(|e| ManagerError::Internal(format!("running crius-monitor exec: {e}")))?;
        drop(stop_r);
        // Held for the session: its end is the monitor's stop.
        let _stop = stop_w;
        let Io {
            stdin,
            stdout,
            stderr,
            resize,
        } = io;
        let mut pumps = Vec::new();
        let pty = match console {
            Some(sock) => {
                let master = tokio::select! {
                    m = sock.receive() => m?,
                    status = child.wait() => {
                        // The runtime failed before handing over a pty.
                        let mut msg = String::new();
                        if let Some(mut e) = child.stderr.take() {
                            let _ = e.read_to_string(&mut msg).await;
                        }
                        let code = status.ok().and_then(|s| s.code()).unwrap_or(-1);
                        return Err(ManagerError::Internal(format!(
                            "exec in container {} failed ({code}): {}",
                            c.id,
                            msg.trim()
                        )));
                    }
                };
                Some(std::sync::Arc::new(Pty::new(master)?))
            }
            None => None,
        };
        // Input.
        if let Some(mut rx) = stdin {
            match (&pty, child.stdin.take()) {
                (Some(pty), _) => {
                    let pty = pty.clone();
                    pumps.push(tokio::spawn(async move {
                        while let Some(d) = rx.recv().await {
                            if pty.write_all(&d).await.is_err() {
                                break;
                            }
                        }
                    }));
                }
                (None, Some(mut w)) => {
                    tokio::spawn(async move {
                        while let Some(d) = rx.recv().await {
                            if w.write_all(&d).await.is_err() {
                                break;
                            }
                        }
                        // Dropping the pipe is the process's end of file.
                    });
                }
                (None, None) => {}
            }
        }
        if let (Some(mut rx), Some(pty)) = (resize, &pty) {
            let pty = pty.clone();
            tokio::spawn(async move {
                while let Some(s) = rx.recv().await {
                    pty.resize(s);
                }
            });
        }
        // Output.
        let mut outputs = Vec::new();
        if let Some(pty) = &pty {
            let pty = pty.clone();
            let tx = stdout.clone();
            outputs.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 128 * 1024];
                // EIO once every holder of the terminal's slave is gone.
                while let Ok(n) = pty.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if let Some(tx) = &tx {
                        if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                            break;
                        }
                    }
                }
            }));
        }
        let runtime_out = child.stdout.take();
        let runtime_err = child.stderr.take();
        // Without a terminal the pipes are the process's; with one they
        // carry only the runtime's errors, shown as output.
        let err_to = if pty.is_some() {
            stdout.clone()
        } else {
            stderr.clone()
        };
        if let Some(r) = runtime_out {
            outputs.push(tokio::spawn(copy_out(r, stdout.clone())));
        }
        if let Some(r) = runtime_err {
            outputs.push(tokio::spawn(copy_out(r, err_to)));
        }
        drop((stdout, stderr));
        // The monitor is waited for on a task of its own that keeps the
        // scratch files (its pid file) until it has exited: when this
        // session is dropped, the monitor stops the exec by that pid file.
        let (exited_tx, exited) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let status = child.wait().await;
            drop(prepared);
            let _ = exited_tx.send(status);
        });
        let status = exited
            .await
            .map_err(|_| ManagerError::Internal("waiting for the exec".into()))?
            .map_err(|e| ManagerError::Internal(format!("waiting for the exec: {e}")))?;
        // Output a background process still holds is given a moment, then
        // the session ends without it (as ExecSync does).
        let grace = tokio::time::Instant::now() + Duration::from_millis(500);
        for o in outputs {
            if tokio::time::timeout_at(grace, o).await.is_err() {
                tracing::debug!(container = %c.id, "exec output still open after the exec exited");
            }
        }
        for p in pumps {
            p.abort();
        }
        use std::os::unix::process::ExitStatusExt;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }

    /// Joins a running container's stdio through its monitor's attach
    /// socket until the client's stdin ends, the client goes, or the
    /// container exits.
    pub async fn attach_stream(&self, p: AttachParams, io: Io) -> Outcome {
        match self.attach_inner(p, io).await {
            Ok(()) => Outcome::Exited(0),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    async fn attach_inner(&self, p: AttachParams, io: Io) -> Result<()> {
        let c = self.ctr(&p.container_id)?;
        let rec = self.refresh_expecting(&c, ContainerPhase::Running).await?;
        let stdin_once = c.config.stdin_once;
        let sock = connect_attach(&rec.dir).await.map_err(|e| {
            ManagerError::FailedPrecondition(format!(
                "container {} cannot be attached to (its monitor has no attach socket: {e})",
                c.id
            ))
        })?;
        let (mut rd, mut wr) = sock.into_split();
        let Io {
            stdin,
            stdout,
            stderr,
            resize,
        } = io;
        // Client to monitor: stdin and resizes, one writer.
        let (to_mon, mut to_mon_rx) = mpsc::channel::<Vec<u8>>(16);
        let writer = tokio::spawn(async move {
            while let Some(frame) = to_mon_rx.recv().await {
                if wr.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let (stdin_done_tx, mut stdin_done) = tokio::sync::oneshot::channel::<()>();
        // Without stdin the sender stays here, unsent: only the
        // container's exit (or the client's going) ends the session.
        let mut _no_stdin = None;
        if let Some(mut rx) = stdin {
            let to_mon = to_mon.clone();
            tokio::spawn(async move {
                while let Some(d) = rx.recv().await {
                    for chunk in d.chunks(wire::MAX_FRAME) {
                        let mut f = Vec::with_capacity(chunk.len() + 5);
                        wire::encode(wire::STDIN, chunk, &mut f);
                        if to_mon.send(f).await.is_err() {
                            return;
                        }
                    }
                }
                let mut f = Vec::new();
                wire::encode(wire::STDIN_EOF, &[], &mut f);
                let _ = to_mon.send(f).await;
                let _ = stdin_done_tx.send(());
            });
        } else {
            _no_stdin = Some(stdin_done_tx);
        }
        if let Some(mut rx) = resize {
            let to_mon = to_mon.clone();
            tokio::spawn(async move {
                while let Some(TermSize { width, height }) = rx.recv().await {
                    let mut f = Vec::new();
                    wire::encode(wire::RESIZE, &wire::resize_payload(width, height), &mut f);
                    if to_mon.send(f).await.is_err() {
                        return;
                    }
                }
            });
        }
        drop(to_mon);
        // Monitor to client.
        let mut decoder = wire::Decoder::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut stdin_ended = false;
        let mut linger: Option<tokio::time::Instant> = None;
        loop {
            let read = async {
                match linger {
                    Some(t) => tokio::time::timeout_at(t, rd.read(&mut buf))
                        .await
                        .unwrap_or(Ok(0)),
                    None => rd.read(&mut buf).await,
                }
            };
            let n = tokio::select! {
                n = read => n.unwrap_or(0),
                _ = &mut stdin_done, if !stdin_ended => {
                    stdin_ended = true;
                    // The client detached. With stdin_once the container
                    // is now reading end of file and likely to finish:
                    // its last output is worth a moment.
                    if !stdin_once {
                        break;
                    }
                    linger = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                    continue;
                }
            };
            if n == 0 {
                break;
            }
            decoder.feed(&buf[..n]);
            loop {
                match decoder.next() {
                    Ok(Some((kind, payload))) => {
                        let to = match kind {
                            wire::STDOUT => &stdout,
                            wire::STDERR => &stderr,
                            wire::EXIT => {
                                writer.abort();
                                return Ok(());
                            }
                            _ => continue,
                        };
                        if let Some(tx) = to {
                            let _ = tx.send(Bytes::from(payload)).await;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        writer.abort();
                        return Err(ManagerError::Internal(format!(
                            "attach socket of container {}: {e}",
                            c.id
                        )));
                    }
                }
            }
        }
        writer.abort();
        Ok(())
    }
}

async fn copy_out<R: tokio::io::AsyncRead + Unpin>(mut r: R, tx: Option<mpsc::Sender<Bytes>>) {
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(tx) = &tx {
                    if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        // Nobody reads: keep draining so the process
                        // never blocks on a full pipe.
                    }
                }
            }
        }
    }
}

/// Connects to a container's attach socket. The directory may be deeper
/// than a socket address holds, so the path goes through /proc/self/fd.
async fn connect_attach(dir: &std::path::Path) -> std::io::Result<tokio::net::UnixStream> {
    let d = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )?;
    let path = format!("/proc/self/fd/{}/{}", d.as_raw_fd(), wire::SOCKET_NAME);
    let r = tokio::net::UnixStream::connect(&path).await;
    drop(d);
    r
}

/// A console socket the runtime connects to, to hand over a pty master.
struct ConsoleSocket {
    path: std::path::PathBuf,
    listener: tokio::net::UnixListener,
}

impl ConsoleSocket {
    fn bind(runroot: &std::path::Path) -> Result<ConsoleSocket> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = runroot.join("console");
        std::fs::create_dir_all(&dir)
            .map_err(|e| ManagerError::Internal(format!("creating {}: {e}", dir.display())))?;
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).map_err(|e| {
            ManagerError::Internal(format!("console socket {}: {e}", path.display()))
        })?;
        Ok(ConsoleSocket { path, listener })
    }

    async fn receive(&self) -> Result<OwnedFd> {
        let err = |m: String| ManagerError::Internal(format!("receiving the exec's pty: {m}"));
        let (stream, _) = tokio::time::timeout(Duration::from_secs(30), self.listener.accept())
            .await
            .map_err(|_| err("the runtime never connected".into()))?
            .map_err(|e| err(e.to_string()))?;
        loop {
            stream.readable().await.map_err(|e| err(e.to_string()))?;
            match stream.try_io(tokio::io::Interest::READABLE, || {
                recv_fd(stream.as_raw_fd())
            }) {
                Ok(fd) => return Ok(fd),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(err(e.to_string())),
            }
        }
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn recv_fd(sock: RawFd) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut name = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just gave us this descriptor.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(std::io::Error::other("the runtime sent no pty"))
}

/// A pty master, non-blocking, read and written from tokio.
struct Pty {
    fd: tokio::io::unix::AsyncFd<OwnedFd>,
}

impl Pty {
    fn new(master: OwnedFd) -> Result<Pty> {
        nix::fcntl::fcntl(
            &master,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| ManagerError::Internal(format!("pty: {e}")))?;
        // SAFETY: an OwnedFd is a valid, open descriptor that stays the
        // same until the AsyncFd that owns it is dropped.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(master) }
            .map_err(|e| ManagerError::Internal(format!("pty: {e}")))?;
        Ok(Pty { fd })
    }

    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut g = self.fd.readable().await?;
            match g.try_io(|fd| Ok(nix::unistd::read(fd.get_ref(), buf)?)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut g = self.fd.writable().await?;
            match g.try_io(|fd| Ok(nix::unistd::write(fd.get_ref(), data)?)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    fn resize(&self, s: TermSize) {
        let ws = libc::winsize {
            ws_row: s.height,
            ws_col: s.width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which is
        // valid for the call; the descriptor is our pty master.
        unsafe {
            libc::ioctl(self.fd.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_checks() {
        assert!(check_streams(false, false, false, false).is_err());
        assert!(check_streams(false, true, true, true).is_err());
        assert!(check_streams(true, true, false, true).is_ok());
        assert!(check_streams(false, true, true, false).is_ok());
        assert!(check_streams(true, false, false, false).is_ok());
    }
}
