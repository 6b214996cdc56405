//! `make bench` (monitor): the resident memory of crius-monitor next to
//! conmon's (Debian's `conmon`) watching the same kind of container, and
//! the time to create+start a container through the monitor — `runc run
//! --detach` under it (`--start`, what StartContainer does), and `runc
//! create` under it then `runc start` — next to a bare `runc run --detach`
//! of the same bundle (the floor).
//! And ExecSync's path: `runc exec` under `crius-monitor exec` (the
//! subreaper that owns the exec'd tree) next to a bare `runc exec` of the
//! same running container.
//! Targets: monitor RSS below conmon's; create+start overhead < 10 ms p50;
//! exec under the monitor within noise of a bare exec (ratio of medians
//! below 1.05).
//! Run as root: `cargo bench -p crius-monitor --bench monitor`.
#![allow(clippy::unwrap_used)]

use crius_oci_runtime::rootfs::{mount_rootfs, remove_rootfs};
use crius_test_support::image::{busybox_rootfs, sha256_digest};
use crius_test_support::runtime::{rss_kib, runc_spec_bundle};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MONITOR: &str = env!("CARGO_BIN_EXE_crius-monitor");
const RUNS: usize = 20;

/// The pid of the (daemonized) process whose command line has `needle`.
fn find_process(exe: &str, needle: &str) -> Option<i32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(exe) && cmd.contains(needle) {
            return Some(pid);
        }
    }
    None
}

fn runc(state: &Path, args: &[&str]) -> std::process::Output {
    Command::new("runc")
        .arg("--root")
        .arg(state)
        .args(args)
        .output()
        .unwrap()
}

/// Through the monitor: with `start`, `runc run --detach` under it (the
/// daemon's StartContainer); without, `runc create` under it, then `runc
/// start`.
fn monitor_launch(work: &Path, b: &Path, state: &Path, id: &str, start: bool) -> Duration {
    let t = Instant::now();
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let w_fd = w.as_raw_fd();
    let mut cmd = Command::new(MONITOR);
    // SAFETY: fcntl is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::fcntl(w_fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
    cmd.args(["--runtime", "runc", "--runtime-root"])
        .arg(state)
        .args(["--id", id, "--bundle"])
        .arg(b)
        .arg("--log")
        .arg(work.join(format!("{id}.log")))
        .arg("--exit-file")
        .arg(work.join(format!("{id}.exit")))
        .arg("--pid-file")
        .arg(work.join(format!("{id}.pid")))
        .arg("--sync-fd")
        .arg(w_fd.to_string());
    if start {
        cmd.arg("--start");
    }
    assert!(cmd.status().unwrap().success());
    drop(w);
    let mut sync = String::new();
    std::fs::File::from(r).read_to_string(&mut sync).unwrap();
    assert!(sync.starts_with("pid "), "{sync}");
    if !start {
        assert!(runc(state, &["start", id]).status.success());
    }
    t.elapsed()
}

fn bare_run(b: &Path, state: &Path, id: &str) -> Duration {
    let t = Instant::now();
    let st = Command::new("runc")
        .arg("--root")
        .arg(state)
        .args(["run", "--detach", "--bundle"])
        .arg(b)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    t.elapsed()
}

fn cleanup(state: &Path, id: &str) {
    let _ = runc(state, &["delete", "--force", id]);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let work = tempfile::tempdir().unwrap();
    let tar = busybox_rootfs().unwrap().tar().unwrap();
    let layer = work.path().join("layer");
    crius_image_store::unpack::unpack_layer(tar.as_slice(), &sha256_digest(&tar), &layer).unwrap();
    let paths = mount_rootfs(std::slice::from_ref(&layer), &work.path().join("c")).unwrap();
    let b = runc_spec_bundle(work.path(), &paths.merged, &["/bin/sleep", "600"]).unwrap();
    let state = work.path().join("state");

    // Latency, alternating to share any drift.
    let (mut ours, mut two_step, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..RUNS {
        let id = format!("bench-mon-{i}");
        ours.push(monitor_launch(work.path(), &b, &state, &id, true));
        cleanup(&state, &id);
        let id = format!("bench-mon2-{i}");
        two_step.push(monitor_launch(work.path(), &b, &state, &id, false));
        cleanup(&state, &id);
        let id = format!("bench-bare-{i}");
        floor.push(bare_run(&b, &state, &id));
        cleanup(&state, &id);
    }

    // ExecSync's path, alternating: runc exec under crius-monitor exec (as
    // OciRuntime::exec_sync_as runs it) and a bare runc exec.
    let id = "bench-exec";
    bare_run(&b, &state, id);
    let pid_file = work.path().join("exec.pid");
    let exec_args = |pid_file: &Path| {
        vec![
            "--root".to_string(),
            state.display().to_string(),
            "exec".into(),
            "--pid-file".into(),
            pid_file.display().to_string(),
            id.into(),
            "true".into(),
        ]
    };
    let (mut exec_ours, mut exec_bare) = (Vec::new(), Vec::new());
    for _ in 0..RUNS * 2 {
        let t = Instant::now();
        let mut child = Command::new(MONITOR)
            .arg("exec")
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("--")
            .arg("runc")
            .args(exec_args(&pid_file))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Held open as the daemon holds it: end of file would mean "stop".
        let keep = child.stdin.take();
        let out = child.wait_with_output().unwrap();
        drop(keep);
        exec_ours.push(t.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t = Instant::now();
        let out = Command::new("runc")
            .args(exec_args(&pid_file))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        exec_bare.push(t.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    cleanup(&state, id);

    // Memory: one container under each monitor, steady state.
    let id = "bench-rss-crius";
    monitor_launch(work.path(), &b, &state, id, true);
    std::thread::sleep(Duration::from_millis(300));
    let crius_pid = find_process("crius-monitor", id).expect("monitor process");
    let crius_rss = rss_kib(crius_pid as u32);
    cleanup(&state, id);

    let cid = "bench-rss-conmon";
    let conmon_pidfile = work.path().join("conmon.pid");
    let st = Command::new("conmon")
        .args([
            "--api-version",
            "1",
            "-c",
            cid,
            "-u",
            cid,
            "-n",
            cid,
            "-r",
            "/usr/sbin/runc",
            "-b",
        ])
        .arg(&b)
        .arg("-p")
        .arg(work.path().join("conmon-ctr.pid"))
        .arg("-P")
        .arg(&conmon_pidfile)
        .arg("-l")
        .arg(work.path().join("conmon.log"))
        .arg("--exit-dir")
        .arg(work.path())
        .arg("--socket-dir-path")
        .arg(work.path())
        .arg("--runtime-arg")
        .arg(format!("--root={}", state.display()))
        .stdin(Stdio::null())
        .status();
    let conmon_rss = match st {
        Ok(s) if s.success() => {
            // conmon's first process returns before the create finishes.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !String::from_utf8_lossy(&runc(&state, &["state", cid]).stdout)
                .contains("\"created\"")
            {
                assert!(
                    Instant::now() < deadline,
                    "conmon never created the container"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            let out = runc(&state, &["start", cid]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
            let pid: i32 = std::fs::read_to_string(&conmon_pidfile)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let rss = rss_kib(pid as u32);
            cleanup(&state, cid);
            Some(rss)
        }
        other => {
            eprintln!("conmon could not run: {other:?}");
            None
        }
    };
    remove_rootfs(&work.path().join("c")).unwrap();

    let (o, two, f) = (median(ours), median(two_step), median(floor));
    println!("crius monitor benchmark (median of {RUNS}, interleaved)");
    println!("{:<44} {:>10}", "", "ms");
    println!(
        "{:<44} {:>10.2}",
        "runc run --detach via crius-monitor",
        o.as_secs_f64() * 1e3
    );
    println!(
        "{:<44} {:>10.2}",
        "runc create via crius-monitor + runc start",
        two.as_secs_f64() * 1e3
    );
    println!(
        "{:<44} {:>10.2}",
        "bare runc run --detach (floor)",
        f.as_secs_f64() * 1e3
    );
    println!(
        "overhead: {:.2} ms p50 (target < 10 ms)",
        (o.as_secs_f64() - f.as_secs_f64()) * 1e3
    );
    let (eo, eb) = (median(exec_ours), median(exec_bare));
    println!(
        "{:<44} {:>10.2}",
        "runc exec under crius-monitor exec",
        eo.as_secs_f64() * 1e3
    );
    println!(
        "{:<44} {:>10.2}",
        "bare runc exec (floor)",
        eb.as_secs_f64() * 1e3
    );
    println!(
        "exec: {:.3}x a bare runc exec, {:+.2} ms p50 (target < 1.05x)",
        eo.as_secs_f64() / eb.as_secs_f64(),
        (eo.as_secs_f64() - eb.as_secs_f64()) * 1e3
    );
    println!(
        "RSS: crius-monitor {crius_rss} KiB, conmon {} (target: below conmon)",
        conmon_rss
            .map(|r| format!("{r} KiB"))
            .unwrap_or_else(|| "n/a".into())
    );
    println!(
        "{}",
        serde_json::json!({"bench": "monitor", "create_start_ms": o.as_secs_f64() * 1e3,
            "create_then_start_ms": two.as_secs_f64() * 1e3,
            "runc_run_ms": f.as_secs_f64() * 1e3, "monitor_rss_kib": crius_rss, "conmon_rss_kib": conmon_rss,
            "exec_under_monitor_ms": eo.as_secs_f64() * 1e3, "bare_exec_ms": eb.as_secs_f64() * 1e3})
    );
}
