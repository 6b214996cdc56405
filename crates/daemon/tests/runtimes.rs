//! Runtime handlers through the socket: `Status` lists every handler and ""
//! for the default, with the features the probe established (runc 1.1.5
//! lists `rro`; crun 1.8.1 has no `features`, so false), a handler whose
//! binary is missing is reported not ready rather than fatal, and SIGHUP
//! re-probes.
#![allow(clippy::unwrap_used)]

use crius_test_support::cri::*;
use crius_test_support::Daemon;
use nix::sys::signal::Signal;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_crius");

async fn status(d: &Daemon) -> StatusResponse {
    let mut c = d.client().await.unwrap();
    c.runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner()
}

fn handler<'a>(s: &'a StatusResponse, name: &str) -> &'a RuntimeHandlerFeatures {
    s.runtime_handlers
        .iter()
        .find(|h| h.name == name)
        .and_then(|h| h.features.as_ref())
        .unwrap_or_else(|| panic!("no handler {name:?} in {:?}", s.runtime_handlers))
}

fn probes(s: &StatusResponse) -> Vec<Value> {
    let v: Value = serde_json::from_str(&s.info["probes"]).unwrap();
    serde_json::from_value(v["handlers"].clone()).unwrap()
}

#[tokio::test]
async fn default_handlers_report_probed_features() {
    let d = Daemon::builder(BIN).start().await.unwrap();
    let s = status(&d).await;
    let names: Vec<_> = s.runtime_handlers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        ["", "crun", "runc"],
        "default first, then every handler"
    );
    let host: Value = serde_json::from_str::<Value>(&s.info["probes"]).unwrap()["host"].clone();
    let kernel = host["kernel"]
        .as_array()
        .map(|k| (k[0].as_u64().unwrap(), k[1].as_u64().unwrap()))
        .unwrap();
    let new_kernel = kernel >= (5, 12);
    assert_eq!(handler(&s, "runc").recursive_read_only_mounts, new_kernel);
    assert_eq!(
        handler(&s, "").recursive_read_only_mounts,
        new_kernel,
        "\"\" is runc, the default"
    );
    assert!(
        !handler(&s, "runc").user_namespaces,
        "runc 1.1.5 reports no idmap support"
    );
    let p = probes(&s);
    let crun = p.iter().find(|p| p["name"] == "crun").unwrap();
    if crun["version"].as_str().unwrap_or("").contains("1.8.") {
        assert!(
            !handler(&s, "crun").recursive_read_only_mounts,
            "unknown features are never guessed"
        );
        assert!(crun["featuresUnknown"].as_str().is_some());
        assert_eq!(crun["ociVersion"], "1.0.2");
    }
    if crun["ready"] == false {
        assert_eq!(crun["reason"], "UnsupportedCgroupLayout");
    }
    let features = s.features.unwrap();
    // Merge and Strict are applied by spec generation.
    assert!(features.supplemental_groups_policy);
    assert!(!features.user_namespaces_host_network);
}

#[tokio::test]
async fn missing_runtime_binary_is_reported_not_fatal_and_sighup_reprobes() {
    let bin_dir = tempfile::tempdir().unwrap();
    let fake = bin_dir.path().join("myrt");
    let d = Daemon::builder(BIN)
        .config_toml(format!(
            "default_runtime = \"runc\"\n[runtimes.runc]\npath = \"runc\"\n[runtimes.myrt]\npath = \"{}\"\n",
            fake.display()
        ))
        .start()
        .await
        .unwrap();
    let s = status(&d).await;
    let names: Vec<_> = s.runtime_handlers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["", "myrt", "runc"]);
    let p = probes(&s);
    let myrt = p.iter().find(|p| p["name"] == "myrt").unwrap();
    assert_eq!(myrt["ready"], false);
    assert_eq!(myrt["reason"], "RuntimeBinaryNotFound");
    assert!(myrt["message"].as_str().unwrap().contains("myrt"));

    // Install a "runtime" whose features list rro, then SIGHUP.
    std::fs::write(
        &fake,
        "#!/bin/sh\ncase \"$1\" in\n  features) echo '{\"ociVersionMin\":\"1.0.0\",\"ociVersionMax\":\"1.1.0\",\"mountOptions\":[\"rro\"]}';;\n  --version) echo 'myrt version 9';;\nesac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    d.signal(Signal::SIGHUP).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let s = status(&d).await;
        let p = probes(&s);
        let myrt = p.iter().find(|p| p["name"] == "myrt").unwrap().clone();
        if myrt["ready"] == true {
            assert_eq!(myrt["version"], "myrt version 9");
            assert_eq!(myrt["ociVersion"], "1.1.0");
            let host: Value =
                serde_json::from_str::<Value>(&s.info["probes"]).unwrap()["host"].clone();
            let new_kernel = host["kernel"][0].as_u64().unwrap() * 1000
                + host["kernel"][1].as_u64().unwrap()
                >= 5012;
            assert_eq!(
                handler(&s, "myrt").recursive_read_only_mounts,
                new_kernel,
                "rro from the new features"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not re-probe: {myrt}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(d.log().contains("re-probed"));
}

#[tokio::test]
async fn unknown_default_runtime_refuses_to_start() {
    let d = Daemon::builder(BIN)
        .config_toml("default_runtime = \"kata\"\n[runtimes.runc]\npath = \"runc\"\n")
        .prepare()
        .unwrap();
    let (status, out) = d.run_to_exit(std::time::Duration::from_secs(20)).unwrap();
    assert!(!status.success());
    assert!(out.contains("default_runtime \"kata\""), "{out}");
}
