//! The monitor with the real runc: it creates the container, reports its
//! pid, writes the container's stdout/stderr as CRI log lines, records the
//! exit code in the exit file after the container exits, and reports the
//! runtime's error when create fails.
#![allow(clippy::unwrap_used)]

use crius_monitor::{crilog, exitfile};
use crius_oci_runtime::rootfs::{mount_rootfs, remove_rootfs};
use crius_test_support::image::{busybox_rootfs, sha256_digest};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MONITOR: &str = env!("CARGO_BIN_EXE_crius-monitor");

struct Container {
    dir: tempfile::TempDir,
    id: String,
}

impl Container {
    fn new(args: &[&str]) -> Self {
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
        spec["process"]["terminal"] = false.into();
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
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts the monitor; returns what it reported on the sync pipe.
    fn monitor(&self) -> String {
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
            .arg(self.path("pid"))
            .arg("--sync-fd")
            .arg(w.as_raw_fd().to_string())
            .arg("--max-line")
            .arg("8")
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
}
