//! The monitor with the real runc: it creates the container, reports its
//! pid, writes the container's stdout/stderr as CRI log lines, records the
//! exit code in the exit file after the container exits, and reports the
//! runtime's error when create fails; and serves attach clients: their
//! stdin (a pipe, or the pty), the container's output, the exit code.
#![allow(clippy::unwrap_used)]

use crius_monitor::attach::{self as proto, Decoder};
use crius_monitor::{crilog, exitfile};
use crius_oci_runtime::rootfs::{mount_rootfs, remove_rootfs};
use crius_test_support::image::{busybox_rootfs, sha256_digest};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MONITOR: &str = env!("CARGO_BIN_EXE_crius-monitor");

struct Container {
    dir: tempfile::TempDir,
    id: String,
    /// Where the pid file, and so the attach socket, lives.
    pid_dir: PathBuf,
}

impl Container {
    fn new(args: &[&str]) -> Self {
        Self::with_terminal(args, false)
    }

    fn with_terminal(args: &[&str], terminal: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tar = busybox_rootfs().unwrap().tar().unwrap();
        let layer = dir.path().join("layer");
        crius_image_store::unpack::unpack_layer(tar.as_slice(), &sha256_digest(&tar), &layer)
            .unwrap();
        let paths = mount_rootfs(&[layer], &dir.path().join("c")).unwrap();
        let bundle = dir.path().join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        assert!(Command::new("runc")
            .arg("spec")
            .current_dir(&bundle)
            .status()
            .unwrap()
            .success());
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
        spec["process"]["terminal"] = terminal.into();
        spec["process"]["args"] = serde_json::json!(args);
        spec["root"]["path"] = paths.merged.display().to_string().into();
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&spec).unwrap(),
        )
        .unwrap();
        Container {
            id: format!(
                "crius-mon-{}-{}",
                std::process::id(),
                dir.path().file_name().unwrap().to_string_lossy()
            ),
            pid_dir: dir.path().to_path_buf(),
            dir,
        }
    }

    /// The pid file (and the attach socket) in a directory whose path is
    /// longer than a socket address can hold.
    fn long_pid_dir(mut self) -> Self {
        self.pid_dir = self.dir.path().join("d".repeat(150));
        std::fs::create_dir(&self.pid_dir).unwrap();
        self
    }

    fn socket(&self) -> PathBuf {
        proto::socket_path(&self.pid_dir)
    }

    /// A client on the attach socket; through /proc/self/fd when its
    /// path is too long to connect to directly.
    fn attach(&self) -> Client {
        let path = self.socket();
        let stream = if path.as_os_str().len() < 100 {
            UnixStream::connect(&path).unwrap()
        } else {
            let dir = nix::fcntl::open(
                &self.pid_dir,
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .unwrap();
            UnixStream::connect(proto::proc_fd_path(dir.as_raw_fd())).unwrap()
        };
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Client {
            stream,
            decoder: Decoder::new(),
            frames: Vec::new(),
            eof: false,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts the monitor; returns what it reported on the sync pipe.
    fn monitor(&self) -> String {
        self.monitor_with(&[])
    }

    /// Starts the monitor with more arguments (a later `--max-line` wins).
    fn monitor_with(&self, extra: &[&str]) -> String {
        // CLOEXEC so that monitors of concurrent tests never inherit our
        // write end; only this child gets it, via pre_exec.
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let w_fd = w.as_raw_fd();
        let mut cmd = Command::new(MONITOR);
        // SAFETY: fcntl is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(w_fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let status = cmd
            .arg("--runtime")
            .arg("runc")
            .arg("--runtime-root")
            .arg(self.path("state"))
            .arg("--id")
            .arg(&self.id)
            .arg("--bundle")
            .arg(self.path("bundle"))
            .arg("--log")
            .arg(self.path("ctr.log"))
            .arg("--exit-file")
            .arg(self.path("exit"))
            .arg("--pid-file")
            .arg(self.pid_dir.join("pid"))
            .arg("--sync-fd")
            .arg(w.as_raw_fd().to_string())
            .arg("--max-line")
            .arg("8")
            .args(extra)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "the monitor's first process returns at once"
        );
        drop(w);
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        out
    }

    fn runc(&self, args: &[&str]) -> std::process::Output {
        Command::new("runc")
            .arg("--root")
            .arg(self.path("state"))
            .args(args)
            .output()
            .unwrap()
    }

    fn wait_exit(&self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(e) = exitfile::read(&self.path("exit")).unwrap() {
                return (e.code, e.at);
            }
            assert!(Instant::now() < deadline, "no exit file");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.runc(&["delete", "--force", &self.id]);
        let _ = remove_rootfs(&self.dir.path().join("c"));
    }
}

fn log_records(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let ts = it.next().unwrap();
            assert_eq!(
                ts.len(),
                "2026-11-26T10:38:15.123456789Z".len(),
                "timestamp {ts}"
            );
            assert!(ts.ends_with('Z'));
            (
                it.next().unwrap().to_string(),
                it.next().unwrap().to_string(),
                it.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn container_output_becomes_cri_log_and_exit_code_is_recorded() {
    crius_test_support::require_root();
    let c = Container::new(&[
        "/bin/sh",
        "-c",
        "echo out; echo err >&2; echo 0123456789abc; printf tail; exit 3",
    ]);
    let sync = c.monitor();
    // "pid <container> <monitor>"
    let pids: Vec<i32> = sync
        .strip_prefix("pid ")
        .map(|p| {
            p.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(pids.len(), 2, "sync said {sync:?}");
    assert!(pids[0] > 1);
    // The monitor that reported is alive and is a crius-monitor.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pids[1])).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("crius-monitor"));
    // Created, not started: nothing has run yet.
    assert!(exitfile::read(&c.path("exit")).unwrap().is_none());
    let out = c.runc(&["start", &c.id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (code, at) = c.wait_exit();
    assert_eq!(code, 3);
    assert!(at.ends_with('Z'));
    let mut records = log_records(&c.path("ctr.log"));
    records.sort_by_key(|r| r.0.clone());
    let want = [
        ("stderr", "F", "err"),
        ("stdout", "F", "out"),
        ("stdout", "P", "01234567"),
        ("stdout", "F", "89abc"),
        ("stdout", "P", "tail"),
    ];
    let mut got: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    got.sort();
    let mut want = want.to_vec();
    want.sort();
    assert_eq!(got, want);
    let _ = crilog::Stream::Stdout;
}

#[test]
fn container_killed_by_signal_reports_128_plus_signal() {
    crius_test_support::require_root();
    let c = Container::new(&["/bin/sleep", "600"]);
    assert!(c.monitor().starts_with("pid "));
    assert!(c.runc(&["start", &c.id]).status.success());
    assert!(c.runc(&["kill", &c.id, "KILL"]).status.success());
    assert_eq!(c.wait_exit().0, 137);
}

#[test]
fn runtime_create_error_is_reported() {
    crius_test_support::require_root();
    let c = Container::new(&["/no/such/binary"]);
    let sync = c.monitor();
    assert!(sync.starts_with("error "), "{sync:?}");
    assert!(
        sync.contains("create failed") && sync.contains("no/such/binary"),
        "{sync:?}"
    );
    assert!(exitfile::read(&c.path("exit")).unwrap().is_none());
    // The attach socket goes with the monitor.
    wait_gone(&c.socket());
}

/// One attach client, as the daemon would be.
struct Client {
    stream: UnixStream,
    decoder: Decoder,
    /// Every frame received so far.
    frames: Vec<(u8, Vec<u8>)>,
    eof: bool,
}

impl Client {
    fn send(&mut self, kind: u8, payload: &[u8]) {
        let mut out = Vec::new();
        proto::encode(kind, payload, &mut out);
        self.stream.write_all(&out).unwrap();
    }

    /// Reads frames until `done` holds of what came so far, or end of
    /// file; fails after `secs`.
    fn read_until(&mut self, secs: u64, done: impl Fn(&Client) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut buf = vec![0u8; 64 * 1024];
        while !done(self) && !self.eof {
            assert!(
                Instant::now() < deadline,
                "attach client timed out; stdout so far {:?}",
                String::from_utf8_lossy(&self.output(proto::STDOUT))
            );
            match self.stream.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.decoder.feed(&buf[..n]);
                    while let Some(f) = self.decoder.next().unwrap() {
                        self.frames.push(f);
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut) => {}
                // Dropped by the monitor with data unread on its side.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => self.eof = true,
                Err(e) => panic!("attach read: {e}"),
            }
        }
    }

    fn read_to_end(&mut self, secs: u64) {
        self.read_until(secs, |_| false);
    }

    /// The payloads of `kind` frames, concatenated.
    fn output(&self, kind: u8) -> Vec<u8> {
        self.frames
            .iter()
            .filter(|(k, _)| *k == kind)
            .flat_map(|(_, p)| p.iter().copied())
            .collect()
    }

    fn has_output(&self, kind: u8, want: &str) -> bool {
        String::from_utf8_lossy(&self.output(kind)).contains(want)
    }

    /// The exit code of the EXIT frame, if it was the last frame.
    fn exit(&self) -> Option<i32> {
        match self.frames.last() {
            Some((proto::EXIT, p)) => proto::parse_exit(p),
            _ => None,
        }
    }
}

fn wait_gone(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while path.exists() {
        assert!(Instant::now() < deadline, "{} left behind", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn attach_stdin_pipe_reaches_the_container_and_output_reaches_every_client() {
    crius_test_support::require_root();
    let c = Container::new(&["/bin/cat"]).long_pid_dir();
    assert!(c.socket().as_os_str().len() > 108);
    assert!(c.monitor_with(&["--stdin"]).starts_with("pid "));
    let mode = std::fs::metadata(c.socket()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let mut a = c.attach();
    let mut b = c.attach();
    assert!(c.runc(&["start", &c.id]).status.success());
    a.send(proto::STDIN, b"hello\n");
    a.read_until(5, |c| c.has_output(proto::STDOUT, "hello\n"));
    b.read_until(5, |c| c.has_output(proto::STDOUT, "hello\n"));
    assert_eq!(a.output(proto::STDOUT), b"hello\n");
    assert_eq!(b.output(proto::STDOUT), b"hello\n");
    // Without --stdin-once a client's end of stdin leaves the container's
    // stdin open: the other client's input still arrives.
    a.send(proto::STDIN_EOF, b"");
    b.send(proto::STDIN, b"again\n");
    b.read_until(5, |c| c.has_output(proto::STDOUT, "again\n"));
    assert!(c.runc(&["kill", &c.id, "KILL"]).status.success());
    assert_eq!(c.wait_exit().0, 137);
    for client in [&mut a, &mut b] {
        client.read_to_end(5);
        assert_eq!(client.exit(), Some(137), "{:?}", client.frames);
        assert!(client.eof);
    }
    assert_eq!(a.output(proto::STDOUT), b"hello\nagain\n");
    assert!(a.output(proto::STDERR).is_empty());
    let got: Vec<_> = log_records(&c.path("ctr.log"));
    assert_eq!(
        got,
        [
            ("stdout".into(), "F".into(), "hello".into()),
            ("stdout".into(), "F".into(), "again".into())
        ]
    );
    wait_gone(&c.socket());
}

#[test]
fn attach_stdin_once_closes_the_container_stdin_at_the_first_detach() {
    crius_test_support::require_root();
    let c = Container::new(&["/bin/cat"]);
    assert!(c
        .monitor_with(&["--stdin", "--stdin-once"])
        .starts_with("pid "));
    let mut a = c.attach();
    let mut b = c.attach();
    assert!(c.runc(&["start", &c.id]).status.success());
    a.send(proto::STDIN, b"once\n");
    a.send(proto::STDIN_EOF, b"");
    // cat reads end of file and exits 0.
    assert_eq!(c.wait_exit().0, 0);
    for client in [&mut a, &mut b] {
        client.read_to_end(5);
        assert_eq!(client.output(proto::STDOUT), b"once\n");
        assert_eq!(client.exit(), Some(0), "{:?}", client.frames);
    }
    assert_eq!(
        log_records(&c.path("ctr.log")),
        [("stdout".into(), "F".into(), "once".into())]
    );
    wait_gone(&c.socket());
}

#[test]
fn attach_tty_resize_and_stdin_go_to_the_pty() {
    crius_test_support::require_root();
    let c = Container::with_terminal(&["/bin/sh"], true);
    assert!(c.monitor_with(&["--tty", "--stdin"]).starts_with("pid "));
    let mut a = c.attach();
    assert!(c.runc(&["start", &c.id]).status.success());
    a.send(proto::RESIZE, &proto::resize_payload(100, 40));
    a.send(proto::STDIN, b"stty size\n");
    a.read_until(5, |c| c.has_output(proto::STDOUT, "40 100"));
    // A malformed frame drops only its client.
    let mut bad = c.attach();
    bad.send(proto::RESIZE, b"xyz");
    bad.read_to_end(5);
    assert!(bad.exit().is_none());
    a.send(proto::STDIN, b"exit 5\n");
    assert_eq!(c.wait_exit().0, 5);
    a.read_to_end(5);
    assert_eq!(a.exit(), Some(5));
    // A terminal's output is all stdout, in the log too.
    assert!(a.output(proto::STDERR).is_empty());
    let log = std::fs::read_to_string(c.path("ctr.log")).unwrap();
    assert!(log.contains(" stdout F 40 100"), "{log}");
    wait_gone(&c.socket());
}

#[test]
fn attach_client_that_never_reads_is_dropped_and_the_log_gets_everything() {
    crius_test_support::require_root();
    const BYTES: usize = 16_000_000;
    let c = Container::new(&[
        "/bin/sh",
        "-c",
        &format!("head -c {BYTES} /dev/zero | tr '\\0' x; exit 7"),
    ]);
    assert!(c.monitor_with(&["--max-line", "16384"]).starts_with("pid "));
    let mut lazy = c.attach();
    let mut reader = c.attach();
    let reading = std::thread::spawn(move || {
        reader.read_to_end(20);
        reader
    });
    let started = Instant::now();
    assert!(c.runc(&["start", &c.id]).status.success());
    assert_eq!(c.wait_exit().0, 7);
    let reader = reading.join().unwrap();
    assert_eq!(reader.output(proto::STDOUT).len(), BYTES);
    assert_eq!(reader.exit(), Some(7));
    lazy.read_to_end(5);
    let got = lazy.output(proto::STDOUT).len();
    assert!(got < BYTES, "the lazy client got all {got} bytes");
    assert!(lazy.exit().is_none(), "the lazy client was kept");
    let logged: usize = log_records(&c.path("ctr.log"))
        .iter()
        .filter(|r| r.0 == "stdout")
        .map(|r| r.2.len())
        .sum();
    assert_eq!(logged, BYTES);
    assert!(started.elapsed() < Duration::from_secs(10));
    wait_gone(&c.socket());
}

#[test]
fn attach_stdin_faster_than_the_container_reads_is_held_back_not_lost() {
    crius_test_support::require_root();
    // More than the monitor buffers for stdin (1 MiB) plus the pipe's.
    let input: Vec<u8> = (0..4 << 20)
        .map(|i| {
            if i % 1000 == 999 {
                b'\n'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect();
    let c = Container::new(&["/bin/cat"]);
    assert!(c
        .monitor_with(&["--stdin", "--stdin-once", "--max-line", "16384"])
        .starts_with("pid "));
    let mut a = c.attach();
    let mut writer = a.stream.try_clone().unwrap();
    assert!(c.runc(&["start", &c.id]).status.success());
    let sent = input.clone();
    let writing = std::thread::spawn(move || {
        let mut out = Vec::new();
        proto::encode_chunked(proto::STDIN, &sent, &mut out);
        proto::encode(proto::STDIN_EOF, b"", &mut out);
        writer.write_all(&out).unwrap();
    });
    a.read_to_end(10);
    writing.join().unwrap();
    assert_eq!(a.exit(), Some(0));
    assert!(
        a.output(proto::STDOUT) == input,
        "stdout differs from stdin"
    );
    assert_eq!(c.wait_exit().0, 0);
    let logged: usize = log_records(&c.path("ctr.log"))
        .iter()
        .map(|r| r.2.len() + usize::from(r.1 == "F"))
        .sum();
    assert_eq!(logged, input.len());
}
