//! A CRI client that never saw crius's proto — Python stubs generated from the
//! Kubernetes reference `api.proto` by grpcio-tools, standing in for crictl,
//! which Debian does not package — talks to the real daemon over its socket.
//!
//! Needs `make test`'s Python environment (target/pyenv with grpcio-tools)
//! and `../shared/cri-api/api.proto`; CI always has both.
#![allow(clippy::unwrap_used)]

use crius_test_support::Daemon;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn workspace() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn prerequisites() -> Option<(PathBuf, PathBuf)> {
    let python = std::env::var_os("CRIUS_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/pyenv/bin/python"));
    let proto = std::env::var_os("CRI_REFERENCE_PROTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/cri-api/api.proto"));
    if python.exists() && proto.exists() {
        return Some((python, proto));
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI without {} or {}: run through `make test`",
        python.display(),
        proto.display()
    );
    eprintln!(
        "skipping: {} or {} missing (run `make test`)",
        python.display(),
        proto.display()
    );
    None
}

#[tokio::test]
async fn reference_built_client_interoperates() {
    let Some((python, proto)) = prerequisites() else {
        return;
    };
    let d = Daemon::builder(env!("CARGO_BIN_EXE_crius"))
        .start()
        .await
        .unwrap();
    let out = tokio::task::spawn_blocking({
        let endpoint = format!("unix://{}", d.socket.display());
        move || {
            Command::new(python)
                .arg(workspace().join("test/interop/cri_client.py"))
                .arg("--proto")
                .arg(proto)
                .arg("--endpoint")
                .arg(endpoint)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "client failed: {stderr}\ndaemon log:\n{}",
        d.log()
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["version"]["runtime_name"], "crius");
    assert_eq!(r["version"]["runtime_api_version"], "v1");
    assert_eq!(r["version"]["version"], "0.1.0");
    assert_eq!(r["version"]["runtime_version"], env!("CARGO_PKG_VERSION"));
    let types: Vec<_> = r["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].clone())
        .collect();
    assert_eq!(types, ["RuntimeReady", "NetworkReady"]);
    assert_eq!(
        r["status"]["info_keys"],
        serde_json::json!(["config", "network", "probes"])
    );
    // Field 18 and its nested message decode in a client built from the reference.
    let handlers = r["status"]["handlers"].as_array().unwrap();
    assert_eq!(handlers[0]["name"], "", "the default handler first");
    assert!(handlers.iter().any(|h| h["name"] == "runc"));
    assert_eq!(r["pod"]["id_len"], 64);
    assert_eq!(r["pod"]["state"], "SANDBOX_READY");
    assert_eq!(r["pod"]["name"], "p");
    assert_eq!(r["stop_pod"]["code"], "OK");
    assert_eq!(r["remove_pod"]["code"], "OK");
    // A built RPC's error, and an unbuilt one's, as the reference decodes them.
    assert_eq!(r["container_stats"]["code"], "NOT_FOUND");
    assert_eq!(r["unbuilt"]["code"], "UNIMPLEMENTED");
    assert!(r["unbuilt"]["details"]
        .as_str()
        .unwrap()
        .contains("CheckpointContainer"));
    assert_eq!(r["list_images"]["code"], "OK");
    assert_eq!(r["pull_invalid"]["code"], "INVALID_ARGUMENT");
    assert!(r["pull_invalid"]["details"]
        .as_str()
        .unwrap()
        .contains("Bad:Ref:x"));
}
