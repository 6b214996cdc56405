//! The crius binary over its real unix socket: Version, Status, UNIMPLEMENTED
//! RPCs, the root lock, socket mode and ownership, stale sockets, graceful
//! shutdown and `crius config`.
#![allow(clippy::unwrap_used)]

use crius::config::Config;
use crius_test_support::cri::*;
use crius_test_support::{require_root, Daemon};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_crius");

#[tokio::test]
async fn version_over_the_socket() {
    let d = Daemon::builder(BIN).start().await.unwrap();
    let mut c = d.client().await.unwrap();
    let v = c
        .runtime
        .version(VersionRequest {
            version: "0.1.0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.version, "0.1.0");
    assert_eq!(v.runtime_name, "crius");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(v.runtime_api_version, "v1");
}

#[tokio::test]
async fn status_reports_honest_conditions_and_verbose_config() {
    let d = Daemon::builder(BIN).start().await.unwrap();
    let mut c = d.client().await.unwrap();
    let s = c
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(s.info.is_empty(), "non-verbose status carries no info");
    let conds = s.status.unwrap().conditions;
    // runc is installed: the default handler can run containers.
    assert!(
        conds.iter().any(|c| c.r#type == "RuntimeReady" && c.status),
        "{conds:?}"
    );
    for kind in ["RuntimeReady", "NetworkReady"] {
        let cond = conds
            .iter()
            .find(|c| c.r#type == kind)
            .unwrap_or_else(|| panic!("no {kind}"));
        if !cond.status {
            assert!(
                !cond.reason.is_empty() && !cond.message.is_empty(),
                "{kind} false without why: {cond:?}"
            );
        }
    }

    let s = c
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let config: Config = serde_json::from_str(&s.info["config"]).unwrap();
    assert_eq!(config.root, d.root);
    assert_eq!(config.runroot, d.runroot);
    assert_eq!(config.listen, d.socket);
}

#[tokio::test]
async fn unbuilt_rpcs_are_unimplemented_naming_the_rpc() {
    let d = Daemon::builder(BIN).start().await.unwrap();
    let mut c = d.client().await.unwrap();
    let e = c
        .runtime
        .checkpoint_container(CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(
        e.message().contains("CheckpointContainer"),
        "{}",
        e.message()
    );
    let e = c
        .image
        .stream_images(StreamImagesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.message().contains("StreamImages"), "{}", e.message());
    let e = c
        .runtime
        .stream_containers(StreamContainersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.message().contains("StreamContainers"), "{}", e.message());
    // The daemon is still healthy afterwards, and logged each RPC in a span.
    c.runtime.version(VersionRequest::default()).await.unwrap();
    let log = d.log();
    assert!(
        log.contains("rpc{rpc=CheckpointContainer}"),
        "no RPC span in log:\n{log}"
    );
    assert!(log.contains("elapsed_us"), "no RPC duration in log:\n{log}");
    assert!(
        log.contains("grpc_code=Unimplemented"),
        "no RPC status in log:\n{log}"
    );
}

#[tokio::test]
async fn socket_is_0660_owned_by_root() {
    require_root();
    let d = Daemon::builder(BIN).start().await.unwrap();
    let meta = std::fs::symlink_metadata(&d.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
}

#[tokio::test]
async fn second_daemon_on_the_same_root_refuses_to_start() {
    let first = Daemon::builder(BIN).start().await.unwrap();
    let second = Daemon::builder(BIN).root(&first.root).prepare().unwrap();
    let (status, output) = second.run_to_exit(Duration::from_secs(20)).unwrap();
    assert!(!status.success(), "second daemon started: {output}");
    let pid = first.pid().unwrap().to_string();
    assert!(
        output.contains("holds root") && output.contains(&pid),
        "unclear refusal: {output}"
    );
    assert!(!second.socket.exists(), "refused daemon created its socket");
    // The first one is unaffected.
    let mut c = first.client().await.unwrap();
    c.runtime.version(VersionRequest::default()).await.unwrap();
}

#[tokio::test]
async fn live_socket_of_another_daemon_is_not_stolen() {
    let first = Daemon::builder(BIN).start().await.unwrap();
    let second = Daemon::builder(BIN)
        .listen(&first.socket)
        .prepare()
        .unwrap();
    let out = second.command().output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use"), "{stderr}");
    first
        .client()
        .await
        .unwrap()
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn stale_socket_is_replaced_and_sigterm_exits_cleanly() {
    let mut d = Daemon::builder(BIN).prepare().unwrap();
    std::fs::create_dir_all(d.socket.parent().unwrap()).unwrap();
    // A socket file nobody listens on, as a crashed daemon leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&d.socket).unwrap());
    assert!(d.socket.exists());
    d.start().await.unwrap();
    d.client()
        .await
        .unwrap()
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap();

    let status = d.stop().await.unwrap();
    assert!(status.success(), "SIGTERM exit: {status}\n{}", d.log());
    assert!(!d.socket.exists(), "socket left after clean shutdown");
    assert!(d.log().contains("received shutdown signal"));

    // After a SIGKILL the lock is released by the kernel and the socket is
    // stale: a new daemon starts on the same root.
    d.start().await.unwrap();
    d.kill().unwrap();
    assert!(d.socket.exists());
    d.start().await.unwrap();
    d.client()
        .await
        .unwrap()
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn unresponsive_client_does_not_hold_shutdown_beyond_the_grace_period() {
    use std::io::Write;
    let mut d = Daemon::builder(BIN)
        .config_toml("shutdown_timeout_seconds = 2\n")
        .start()
        .await
        .unwrap();
    // A client that opened an HTTP/2 connection and then went silent: it
    // will never acknowledge the daemon's GOAWAY.
    let mut raw = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let mut c = d.client().await.unwrap();
    c.runtime.version(VersionRequest::default()).await.unwrap();
    let started = std::time::Instant::now();
    let status = d.stop().await.unwrap();
    assert!(status.success(), "{status}\n{}", d.log());
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "shutdown took {took:?} with a 2 s grace"
    );
    drop(raw);
}

fn crius(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_command_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, defaults, err) = crius(&["config"]);
    assert!(ok, "{err}");
    assert_eq!(Config::from_toml_str(&defaults).unwrap(), Config::default());

    // Flags override; printing, re-reading and printing again is a fixpoint.
    let (ok, first, err) = crius(&[
        "--root",
        "/srv/crius",
        "--runroot",
        "/run/x",
        "--listen",
        "unix:///run/x/c.sock",
        "--log-level",
        "debug",
        "--log-format",
        "json",
        "config",
    ]);
    assert!(ok, "{err}");
    let file = dir.path().join("c.toml");
    std::fs::write(&file, &first).unwrap();
    let (ok, second, err) = crius(&["--config", file.to_str().unwrap(), "config"]);
    assert!(ok, "{err}");
    assert_eq!(first, second);
    let c = Config::from_toml_str(&second).unwrap();
    assert_eq!(c.listen.to_str(), Some("/run/x/c.sock"));
    assert_eq!(c.root.to_str(), Some("/srv/crius"));

    // A flag beats the file.
    let (_, third, _) = crius(&[
        "--config",
        file.to_str().unwrap(),
        "--root",
        "/other",
        "config",
    ]);
    assert_eq!(
        Config::from_toml_str(&third).unwrap().root.to_str(),
        Some("/other")
    );

    // The shipped example is the defaults.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../conf/crius.toml");
    let (ok, out, err) = crius(&["--config", shipped, "config"]);
    assert!(ok, "{err}");
    assert_eq!(out, defaults);
}

#[test]
fn unknown_config_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "root = \"/tmp/x\"\nlisten_adress = \"/tmp/s.sock\"\n",
    )
    .unwrap();
    let (ok, _, err) = crius(&["--config", file.to_str().unwrap(), "config"]);
    assert!(!ok);
    assert!(
        err.contains("listen_adress") && err.contains(file.to_str().unwrap()),
        "{err}"
    );
    // The daemon refuses to start with it too.
    let (ok, _, err) = crius(&["--config", file.to_str().unwrap()]);
    assert!(!ok && err.contains("listen_adress"), "{err}");
}

#[test]
fn version_flag() {
    let (ok, out, _) = crius(&["--version"]);
    assert!(ok);
    assert_eq!(out.trim(), format!("crius {}", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn json_logs_are_json() {
    let d = Daemon::builder(BIN)
        .arg("--log-format")
        .arg("json")
        .start()
        .await
        .unwrap();
    d.client()
        .await
        .unwrap()
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap();
    let log = d.log();
    let mut n = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("level").is_some(), "{line}");
        n += 1;
    }
    assert!(n > 0);
}
