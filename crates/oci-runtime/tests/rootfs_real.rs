//! A container rootfs from real image layers (busybox-static, unpacked by
//! the image store's unpacker) run by the real runc, and by crun where the
//! probe says crun can run here (where it says it cannot, crun really
//! fails, with the reason the probe gave).
#![allow(clippy::unwrap_used)]

use crius_oci_runtime::probe::{probe_handler, HostFacts};
use crius_oci_runtime::rootfs::{mount_rootfs, remove_rootfs};
use crius_oci_runtime::RuntimeHandlers;
use crius_test_support::image::{busybox_rootfs, sha256_digest};
use crius_test_support::LayerBuilder;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn unpack(layer: &LayerBuilder, dir: &Path) -> PathBuf {
    let tar = layer.tar().unwrap();
    let target = dir.join(sha256_digest(&tar).trim_start_matches("sha256:"));
    crius_image_store::unpack::unpack_layer(tar.as_slice(), &sha256_digest(&tar), &target).unwrap();
    target
}

fn mounted(path: &Path) -> bool {
    let p = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(p.as_str()))
}

#[test]
fn overlay_rootfs_runs_under_each_ready_runtime() {
    crius_test_support::require_root();
    let work = tempfile::tempdir().unwrap();
    let layers = work.path().join("layers");
    std::fs::create_dir_all(&layers).unwrap();
    let base = unpack(&busybox_rootfs().unwrap(), &layers);
    let top = unpack(
        &LayerBuilder::new()
            .file("hello.txt", "hello from the top layer\n", 0o644)
            .whiteout("etc/group"),
        &layers,
    );

    let host = HostFacts::read();
    let path = std::env::var("PATH").unwrap_or_default() + ":/usr/sbin:/sbin";
    let handlers = RuntimeHandlers::resolve(
        &BTreeMap::new(),
        "runc",
        Path::new("/run/crius-test"),
        &path,
    )
    .unwrap();
    assert!(
        handlers.get("runc").is_some(),
        "runc installed (make test installs it)"
    );
    for h in handlers.handlers.values() {
        let probe = probe_handler(h, &host);
        let cdir = work.path().join(format!("c-{}", h.name));
        let paths = mount_rootfs(&[top.clone(), base.clone()], &cdir).unwrap();
        assert!(mounted(&paths.merged));
        let b = crius_test_support::runtime::runc_spec_bundle(
            &cdir,
            &paths.merged,
            &[
                "/bin/sh",
                "-c",
                "cat /hello.txt; test -e /etc/group || echo whiteout-ok; id -u",
            ],
        )
        .unwrap();
        let out = Command::new(h.binary.as_ref().unwrap())
            .arg("--root")
            .arg(work.path().join(format!("state-{}", h.name)))
            .args(["run", "--bundle"])
            .arg(&b)
            .arg(format!(
                "crius-rootfs-test-{}-{}",
                h.name,
                std::process::id()
            ))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if probe.status.ready {
            assert!(out.status.success(), "{}: {stderr}", h.name);
            assert_eq!(
                stdout, "hello from the top layer\nwhiteout-ok\n0\n",
                "{}",
                h.name
            );
        } else {
            // The probe's verdict is the truth: the runtime really fails here.
            assert!(
                !out.status.success(),
                "{} ran although probed not ready: {:?}",
                h.name,
                probe.status
            );
            assert!(stderr.contains("hybrid"), "{}: {stderr}", h.name);
        }
        // Writes went to the container's upper dir, never to the layers.
        remove_rootfs(&cdir).unwrap();
        assert!(!mounted(&paths.merged), "rootfs still mounted");
        remove_rootfs(&cdir).unwrap();
    }
    assert!(
        base.join("etc/group").exists(),
        "a lower layer was modified"
    );
}
