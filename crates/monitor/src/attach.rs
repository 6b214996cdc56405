//! The attach socket (CRI Attach; the protocol is
//! `crius_monitor_protocol::attach`): clients join the container's stdio
//! while the monitor's poll loop keeps logging.
//!
//! The monitor must never block on a client, nor let one client cost
//! another (or the log) anything: every client has its own output queue,
//! written only as far as its socket takes without blocking; a client
//! whose queue outgrows [`CLIENT_QUEUE_LIMIT`] is dropped. Input is the
//! other way round: stdin is not to be lost, so while the container reads
//! slower than clients send, clients are no longer read (backpressure)
//! instead of their input being dropped.

use crius_monitor_protocol::attach::{self as proto, Decoder};
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Clients at once; more are accepted and closed at once (left in the
/// backlog they would wait for nothing, and the listener would stay
/// readable, spinning the poll loop).
const MAX_CLIENTS: usize = 64;
/// Output a client may have pending before it is dropped.
const CLIENT_QUEUE_LIMIT: usize = 4 << 20;
/// Stdin pending for the container; beyond it clients are not read.
const STDIN_LIMIT: usize = 1 << 20;
/// How long the last output and the EXIT frames may take to go out, for
/// all clients together, once the container has exited.
const FINAL_FLUSH: Duration = Duration::from_secs(1);
/// A queue's buffer kept after it empties; a burst's larger one is freed.
const QUEUE_KEEP: usize = 256 << 10;

/// Bytes waiting for a non-blocking writer.
#[derive(Default)]
struct Queue {
    buf: Vec<u8>,
    /// Bytes of `buf` already written: moved out lazily, not per write.
    start: usize,
}

impl Queue {
    fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    /// Writes as much as `w` takes without blocking. Err: `w` is broken.
    fn write_to(&mut self, mut w: impl Write) -> std::io::Result<()> {
        let result = loop {
            if self.is_empty() {
                break Ok(());
            }
            match w.write(&self.buf[self.start..]) {
                Ok(0) => break Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.start += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if self.is_empty() {
            self.clear();
            if self.buf.capacity() > QUEUE_KEEP {
                self.buf.shrink_to(QUEUE_KEEP);
            }
        } else if self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        result
    }
}

struct Client {
    stream: UnixStream,
    decoder: Decoder,
    out: Queue,
    /// The client's stdin ended (STDIN_EOF): its further STDIN is dropped.
    stdin_ended: bool,
    /// The client shut down its sending side: it is not read any more,
    /// but still gets output until writing to it fails.
    read_closed: bool,
    /// To be closed; removed at the end of [`Attach::handle`], so that
    /// tokens (indices) stay valid meanwhile.
    dead: bool,
}

/// What each descriptor [`Attach::poll_fds`] adds stands for.
#[derive(Debug, Clone, Copy)]
pub enum Token {
    Listener,
    Stdin,
    Client(usize),
}

/// The attach socket, its clients and where their stdin goes.
pub struct Attach {
    /// The directory of the socket, `O_PATH`: its path may be too long
    /// for `sun_path`, and the socket is removed through it at the end.
    dir: OwnedFd,
    listener: Option<UnixListener>,
    clients: Vec<Client>,
    /// A descriptor of the pty master, for RESIZE.
    pty: Option<OwnedFd>,
    /// The container's stdin: the write end of its stdin pipe, or the pty
    /// master. None: STDIN frames are dropped.
    stdin: Option<File>,
    stdin_queue: Queue,
    /// `stdin_once`: the first client to detach closes the stdin.
    stdin_once: bool,
    /// Close `stdin` once `stdin_queue` has gone out (a detached client's
    /// last input is still delivered).
    stdin_closing: bool,
    /// Encoded frames, reused.
    frame: Vec<u8>,
    /// Read buffer, reused.
    rbuf: Vec<u8>,
}

impl Attach {
    /// Binds the attach socket in the directory of `pid_file`, replacing a
    /// stale one. Before the runtime runs, so the socket exists by the
    /// time the daemon learns of the container; while the monitor is
    /// single-threaded (it changes the umask for the bind).
    pub fn bind(pid_file: &Path) -> Result<Attach, String> {
        let dir_path = pid_file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = open(
            dir_path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("opening {}: {e}", dir_path.display()))?;
        // A monitor killed before it could clean up leaves its socket.
        let _ = unlinkat(&dir, proto::SOCKET_NAME, UnlinkatFlags::NoRemoveDir);
        // Through /proc/self/fd the path is short whatever the directory's
        // (sun_path holds 108 bytes); conmon does the same.
        let path = proto::proc_fd_path(dir.as_raw_fd());
        // 0600 from the start, not chmod'ed after a window at the umask's.
        let old = umask(Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(&path);
        umask(old);
        // std's sockets are SOCK_CLOEXEC: neither the runtime nor the
        // container inherits the listener or a client.
        let listener = bound
            .map_err(|e| format!("binding the attach socket in {}: {e}", dir_path.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("attach socket: {e}"))?;
        Ok(Attach {
            dir,
            listener: Some(listener),
            clients: Vec::new(),
            pty: None,
            stdin: None,
            stdin_queue: Queue::default(),
            stdin_once: false,
            stdin_closing: false,
            frame: Vec::new(),
            rbuf: vec![0u8; proto::MAX_FRAME],
        })
    }

    /// Where clients' stdin goes: the write end of the container's stdin
    /// pipe, or (a descriptor of) the pty master. Made non-blocking.
    pub fn set_stdin(&mut self, sink: OwnedFd, stdin_once: bool) -> Result<(), String> {
        set_nonblocking(&sink)?;
        self.stdin = Some(File::from(sink));
        self.stdin_once = stdin_once;
        Ok(())
    }

    /// The pty master, for RESIZE.
    pub fn set_pty(&mut self, master: OwnedFd) {
        self.pty = Some(master);
    }

    /// Whether stdin has reached its bound: clients are not read until the
    /// container has taken some.
    fn stdin_full(&self) -> bool {
        self.stdin.is_some() && self.stdin_queue.len() >= STDIN_LIMIT
    }

    /// Adds the descriptors to poll, and what each stands for to `tokens`.
    pub fn poll_fds<'a>(&'a self, fds: &mut Vec<PollFd<'a>>, tokens: &mut Vec<Token>) {
        if let Some(l) = &self.listener {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            tokens.push(Token::Listener);
        }
        if let Some(s) = &self.stdin {
            if !self.stdin_queue.is_empty() {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLOUT));
                tokens.push(Token::Stdin);
            }
        }
        let read = !self.stdin_full();
        for (i, c) in self.clients.iter().enumerate() {
            if c.dead {
                continue;
            }
            let mut events = PollFlags::empty();
            if read && !c.read_closed {
                events |= PollFlags::POLLIN;
            }
            if !c.out.is_empty() {
                events |= PollFlags::POLLOUT;
            }
            // A client read no more (backpressure) with nothing to send is
            // not polled, or its hang-up would make poll return at once,
            // again and again; unless it only has hang-ups left to tell.
            if events.is_empty() && !c.read_closed {
                continue;
            }
            fds.push(PollFd::new(c.stream.as_fd(), events));
            tokens.push(Token::Client(i));
        }
    }

    /// Acts on what poll reported for [`Attach::poll_fds`]'s descriptors.
    pub fn handle(&mut self, tokens: &[Token], revents: &[PollFlags]) {
        let gone = PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
        // As in poll_fds: clients were not asked for input while stdin is
        // full, and a hang-up alone must not make them read.
        let read = !self.stdin_full();
        for (token, r) in tokens.iter().zip(revents) {
            if r.is_empty() {
                continue;
            }
            match *token {
                Token::Listener => self.accept(),
                Token::Stdin => self.flush_stdin(),
                Token::Client(i) => {
                    let (read_closed, has_out) = match self.clients.get(i) {
                        Some(c) if !c.dead => (c.read_closed, !c.out.is_empty()),
                        _ => continue,
                    };
                    if read && !read_closed && r.intersects(PollFlags::POLLIN | gone) {
                        self.read_client(i);
                    } else if read_closed && r.intersects(gone) {
                        self.drop_client(i);
                        continue;
                    }
                    if has_out && r.intersects(PollFlags::POLLOUT | gone) {
                        self.flush_client(i);
                    }
                }
            }
        }
        self.clients.retain(|c| !c.dead);
    }

    fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if self.clients.len() >= MAX_CLIENTS || stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    self.clients.push(Client {
                        stream,
                        decoder: Decoder::new(),
                        out: Queue::default(),
                        stdin_ended: false,
                        read_closed: false,
                        dead: false,
                    });
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // WouldBlock: the backlog is empty. Anything else (EMFILE,
                // a connection reset while queued): try again next time.
                Err(_) => break,
            }
        }
    }

    /// Reads one client's frames and acts on them.
    fn read_client(&mut self, i: usize) {
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        let n = match c.stream.read(&mut self.rbuf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => return,
            Err(_) => {
                self.drop_client(i);
                return;
            }
        };
        if n == 0 {
            // The client's sending side is closed: its stdin ended; it may
            // still be reading output.
            c.read_closed = true;
            let ended = std::mem::replace(&mut c.stdin_ended, true);
            if !ended {
                self.detached();
            }
            return;
        }
        c.decoder.feed(&self.rbuf[..n]);
        let mut frames = Vec::new();
        let malformed = loop {
            match c.decoder.next() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break false,
                Err(_) => break true,
            }
        };
        for (kind, payload) in frames {
            if !self.frame_from(i, kind, &payload) {
                self.drop_client(i);
                return;
            }
        }
        if malformed {
            self.drop_client(i);
        }
        self.flush_stdin();
    }

    /// One frame from client `i`; false if it is malformed.
    fn frame_from(&mut self, i: usize, kind: u8, payload: &[u8]) -> bool {
        let Some(c) = self.clients.get_mut(i) else {
            return false;
        };
        match kind {
            proto::STDIN => {
                // Without stdin (no --stdin, closed by stdin_once, or the
                // container closed it) the bytes have nowhere to go.
                if self.stdin.is_some() && !self.stdin_closing && !c.stdin_ended {
                    self.stdin_queue.push(payload);
                }
                true
            }
            proto::STDIN_EOF if payload.is_empty() => {
                if !std::mem::replace(&mut c.stdin_ended, true) {
                    self.detached();
                }
                true
            }
            proto::RESIZE => match proto::parse_resize(payload) {
                Some((width, height)) => {
                    if let Some(pty) = &self.pty {
                        resize(pty, width, height);
                    }
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    /// A client's stdin ended (STDIN_EOF, hang-up or dropped). With
    /// stdin_once the container's stdin is closed, after the input already
    /// queued: for a pipe the container then reads end of file; a pty
    /// master cannot be closed under the container's output, so its stdin
    /// is only no longer written (as conmon does).
    fn detached(&mut self) {
        if self.stdin_once && self.stdin.is_some() {
            self.stdin_closing = true;
            self.flush_stdin();
        }
    }

    /// Closes client `i` (at the end of `handle`); its stdin has ended.
    fn drop_client(&mut self, i: usize) {
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        c.dead = true;
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
        if !std::mem::replace(&mut c.stdin_ended, true) {
            self.detached();
        }
    }

    fn flush_stdin(&mut self) {
        if let Some(sink) = &self.stdin {
            if self.stdin_queue.write_to(sink).is_err() {
                // EPIPE: the container closed its stdin or is gone; what
                // clients send from now on has no reader.
                self.stdin = None;
            }
        }
        if self.stdin.is_none() || (self.stdin_closing && self.stdin_queue.is_empty()) {
            self.stdin = None;
            self.stdin_queue.clear();
        }
    }

    fn flush_client(&mut self, i: usize) {
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        if c.out.write_to(&c.stream).is_err() {
            self.drop_client(i);
        }
    }

    /// Sends a chunk of the container's output to every client.
    pub fn broadcast(&mut self, kind: u8, data: &[u8]) {
        if self.clients.is_empty() || data.is_empty() {
            return;
        }
        self.frame.clear();
        proto::encode_chunked(kind, data, &mut self.frame);
        for i in 0..self.clients.len() {
            let Some(c) = self.clients.get_mut(i) else {
                continue;
            };
            if c.dead {
                continue;
            }
            let was_empty = c.out.is_empty();
            c.out.push(&self.frame);
            // With nothing queued before, the socket likely takes it now;
            // otherwise it was full a moment ago: wait for POLLOUT.
            if was_empty && c.out.write_to(&c.stream).is_err() {
                self.drop_client(i);
            } else if c.out.len() > CLIENT_QUEUE_LIMIT {
                // Not reading: it must not hold the monitor's memory (nor
                // slow the log or other clients).
                self.drop_client(i);
            }
        }
    }

    /// The container has exited and its output is drained: every client
    /// gets what is queued and the EXIT frame, within [`FINAL_FLUSH`] in
    /// all; then clients and socket are closed and the socket removed.
    pub fn finish(mut self, code: i32) {
        // Clients that connected at the very end get their EXIT too.
        self.accept();
        self.close_listener();
        self.stdin = None;
        self.frame.clear();
        proto::encode(proto::EXIT, &code.to_be_bytes(), &mut self.frame);
        for c in self.clients.iter_mut().filter(|c| !c.dead) {
            c.out.push(&self.frame);
        }
        let deadline = Instant::now() + FINAL_FLUSH;
        loop {
            for i in 0..self.clients.len() {
                if self
                    .clients
                    .get(i)
                    .is_some_and(|c| !c.dead && !c.out.is_empty())
                {
                    self.flush_client(i);
                }
            }
            let mut waiting: Vec<PollFd> = self
                .clients
                .iter()
                .filter(|c| !c.dead && !c.out.is_empty())
                .map(|c| PollFd::new(c.stream.as_fd(), PollFlags::POLLOUT))
                .collect();
            let left = deadline.saturating_duration_since(Instant::now());
            if waiting.is_empty() || left.is_zero() {
                break;
            }
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            match poll(&mut waiting, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        // Dropping closes the clients.
        self.clients.clear();
    }

    /// Stops accepting and removes the socket file.
    fn close_listener(&mut self) {
        if self.listener.take().is_some() {
            let _ = unlinkat(&self.dir, proto::SOCKET_NAME, UnlinkatFlags::NoRemoveDir);
        }
    }
}

impl Drop for Attach {
    /// Every way out of the monitor removes the socket: a daemon must not
    /// connect to a socket nobody listens on any more.
    fn drop(&mut self) {
        self.close_listener();
    }
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), String> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| format!("F_GETFL: {e}"))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| format!("F_SETFL: {e}"))?;
    Ok(())
}

/// Sets the terminal's size; the kernel sends the container's foreground
/// process group SIGWINCH. A failure (the pty is gone) is of no concern.
fn resize(pty: &OwnedFd, width: u16, height: u16) {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which
    // points at a live, initialised one; `pty` is an open descriptor.
    unsafe {
        libc::ioctl(
            pty.as_raw_fd(),
            libc::TIOCSWINSZ,
            &ws as *const libc::winsize,
        );
    }
}
