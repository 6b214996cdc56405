//! `make install` into a DESTDIR, then the installed unit's own ExecStart
//! run the way systemd runs a `Type=notify` service: with NOTIFY_SOCKET
//! set. The daemon says READY=1 only once it serves (a CRI call made right
//! after the message succeeds), and STOPPING=1 on SIGTERM.
//!
//! `install-files` installs this build's binaries (`BINARIES`), so the
//! test needs no release build.
#![allow(clippy::unwrap_used)]

use crius_test_support::cri::*;
use crius_test_support::CriClient;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn workspace() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The value of `key=` in the unit's text.
fn unit_key<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
}

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("no sd_notify message in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn installed_unit_starts_notifies_and_serves() {
    crius_test_support::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    let bins = Path::new(env!("CARGO_BIN_EXE_crius")).parent().unwrap();
    assert!(
        bins.join("crius-monitor").exists(),
        "build crius-monitor first"
    );
    let out = Command::new("make")
        .arg("-C")
        .arg(workspace())
        .arg("--no-print-directory")
        .arg("install-files")
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("BINARIES={}", bins.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make install-files: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The layout.
    for (p, m) in [
        ("usr/local/bin/crius", 0o755),
        ("usr/local/bin/crius-monitor", 0o755),
        ("etc/crius/crius.toml", 0o644),
        ("etc/crius/crius.toml.example", 0o644),
        ("etc/systemd/system/crius.service", 0o644),
        ("usr/local/share/doc/crius/README.md", 0o644),
    ] {
        assert_eq!(mode(&dest.join(p)), m, "{p}");
    }
    // A config already there is the operator's: a second install keeps it.
    let config = dest.join("etc/crius/crius.toml");
    let mut own = std::fs::read_to_string(&config).unwrap();
    own.push_str("\n# the operator's own\n");
    std::fs::write(&config, &own).unwrap();
    let again = Command::new("make")
        .arg("-C")
        .arg(workspace())
        .args(["--no-print-directory", "install-files"])
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("BINARIES={}", bins.display()))
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), own);

    let unit = std::fs::read_to_string(dest.join("etc/systemd/system/crius.service")).unwrap();
    assert_eq!(unit_key(&unit, "Type"), Some("notify"));
    assert_eq!(unit_key(&unit, "KillMode"), Some("process"));
    // systemd's own check of the unit, where systemd is installed, on a
    // copy whose binary paths point into DESTDIR.
    let check = tmp.path().join("verify/crius.service");
    std::fs::create_dir_all(check.parent().unwrap()).unwrap();
    std::fs::write(
        &check,
        unit.replace("/usr/local/", &format!("{}/usr/local/", dest.display())),
    )
    .unwrap();
    if let Ok(v) = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&check)
        .output()
    {
        // Only the unit's own lines matter (the host's other units may
        // have complaints of their own).
        let err = String::from_utf8_lossy(&v.stderr);
        assert!(
            !err.lines().any(|l| l.contains("crius.service")),
            "systemd-analyze verify: {err}"
        );
    }

    // Run ExecStart as systemd would (its paths under DESTDIR), with state
    // kept in the test's directory.
    let exec: Vec<String> = unit_key(&unit, "ExecStart")
        .unwrap()
        .split_whitespace()
        .map(|a| {
            if a.starts_with('/') {
                dest.join(a.trim_start_matches('/')).display().to_string()
            } else {
                a.to_string()
            }
        })
        .collect();
    let notify_path = tmp.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let socket = tmp.path().join("crius.sock");
    let mut child = Command::new(&exec[0])
        .args(&exec[1..])
        .arg("--root")
        .arg(tmp.path().join("root"))
        .arg("--runroot")
        .arg(tmp.path().join("run"))
        .arg("--listen")
        .arg(&socket)
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(std::fs::File::create(tmp.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    let ready = tokio::task::spawn_blocking({
        let n = notify.try_clone().unwrap();
        move || recv(&n)
    })
    .await
    .unwrap();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // Serving as soon as it says so.
    let mut c = CriClient::connect(&socket).await.unwrap();
    let v = c
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "crius");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = tokio::task::spawn_blocking(move || recv(&notify))
        .await
        .unwrap();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{status:?}: {}",
        std::fs::read_to_string(tmp.path().join("log")).unwrap_or_default()
    );
}
