//! Pinning real namespaces and mounting a real shm tmpfs (root only).
#![allow(clippy::unwrap_used)]

use crius_sandbox::{ns, shm};
use std::os::unix::fs::MetadataExt;
use std::process::Command;

fn mounts_under(dir: &std::path::Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.to_str().unwrap();
    info.lines().filter(|l| l.contains(d)).count()
}

fn nsenter(args: &[&str]) -> String {
    let out = Command::new("nsenter").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "nsenter {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pinned_namespaces_live_without_a_process_and_unpin_cleanly() {
    crius_test_support::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ns");
    let host_uts = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let pinned = ns::pin(&dir, &ns::NsKind::ALL, Some("pod-a")).unwrap();
    let (net, ipc, uts) = (
        pinned.net.unwrap(),
        pinned.ipc.unwrap(),
        pinned.uts.unwrap(),
    );
    for p in [&net, &ipc, &uts] {
        assert!(ns::is_pinned(p), "{} not an nsfs mount", p.display());
    }
    // New namespaces, not the daemon's.
    let self_net = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    assert_ne!(std::fs::metadata(&net).unwrap().ino(), self_net);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_uts
    );
    // The hostname was set in the pinned UTS namespace, loopback is up.
    let uts_arg = format!("--uts={}", uts.display());
    assert_eq!(
        nsenter(&[&uts_arg, "cat", "/proc/sys/kernel/hostname"]).trim(),
        "pod-a"
    );
    let net_arg = format!("--net={}", net.display());
    let links = nsenter(&[&net_arg, "ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "only loopback: {links}");
    assert!(links.contains("lo:") && links.contains(",UP"), "{links}");
    assert_eq!(mounts_under(&dir), 3);
    ns::unpin(&dir).unwrap();
    assert_eq!(mounts_under(&dir), 0);
    assert!(!net.exists());
    // Idempotent.
    ns::unpin(&dir).unwrap();
}

#[test]
fn pinning_only_some_kinds() {
    crius_test_support::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ns");
    let p = ns::pin(&dir, &[ns::NsKind::Ipc], None).unwrap();
    assert!(p.net.is_none() && p.uts.is_none());
    assert!(ns::is_pinned(p.ipc.as_ref().unwrap()));
    assert!(!ns::pin_path(&dir, ns::NsKind::Net).exists());
    ns::unpin(&dir).unwrap();
    assert_eq!(mounts_under(&dir), 0);
}

#[test]
fn shm_is_a_sized_tmpfs_and_unmounts() {
    crius_test_support::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("shm");
    shm::mount_shm(&path, 8 << 20).unwrap();
    assert!(shm::is_mounted(&path));
    // Idempotent.
    shm::mount_shm(&path, 8 << 20).unwrap();
    assert_eq!(mounts_under(&path), 1);
    let st = nix::sys::statvfs::statvfs(&path).unwrap();
    assert_eq!(st.blocks() * st.fragment_size(), 8 << 20);
    let m = std::fs::metadata(&path).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o1777);
    shm::unmount_shm(&path).unwrap();
    assert!(!path.exists());
    assert_eq!(mounts_under(&path), 0);
    shm::unmount_shm(&path).unwrap();
}

#[test]
fn namespaces_pinned_while_other_work_runs_and_undone_when_abandoned() {
    crius_test_support::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ns");
    let pending = ns::start_pin(&dir, &ns::NsKind::ALL, Some("pod-b")).unwrap();
    let pinned = pending.wait().unwrap();
    assert!(ns::is_pinned(pinned.net.as_ref().unwrap()));
    assert_eq!(mounts_under(&dir), 3);
    ns::unpin(&dir).unwrap();
    // The caller failed meanwhile: dropping the pending pin waits for the
    // namespace thread and leaves nothing pinned.
    let pending = ns::start_pin(&dir, &ns::NsKind::ALL, Some("pod-c")).unwrap();
    drop(pending);
    assert_eq!(mounts_under(&dir), 0);
    assert!(!ns::pin_path(&dir, ns::NsKind::Net).exists());
}

/// This process's open network namespace files.
fn net_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("net:["))
        })
        .count()
}

#[test]
fn namespace_pool_fills_hands_out_fresh_sets_and_sweeps_leftovers() {
    crius_test_support::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let pool_dir = tmp.path().join("pool");
    // Leftovers of an earlier daemon that kept its pool as mounts: swept.
    ns::pin(&pool_dir.join("old"), &ns::NsKind::ALL, None).unwrap();
    assert_eq!(mounts_under(&pool_dir), 3);
    let pool = ns::NsPool::open(&pool_dir, 2).unwrap();
    assert_eq!(mounts_under(tmp.path()), 0);
    assert!(!pool_dir.exists());
    // The sets are held open, not mounted: the host's mount table (which
    // every runtime call copies) does not grow.
    let fds = net_fds();
    pool.fill().unwrap();
    assert_eq!((pool.available(), net_fds()), (2, fds + 2));
    assert_eq!(mounts_under(tmp.path()), 0);

    let pods = tmp.path().join("pods");
    let a = pool.claim(&pods.join("a/ns"), "pod-a").unwrap().unwrap();
    let b = pool.claim(&pods.join("b/ns"), "pod-b").unwrap().unwrap();
    assert!(pool.claim(&pods.join("c"), "pod-c").is_none(), "empty pool");
    assert_eq!(net_fds(), fds, "the pool let go of the claimed sets");
    assert_eq!(mounts_under(&pods), 6, "each pod's set pinned by mounts");
    let ino = |p: &std::path::PathBuf| std::fs::metadata(p).unwrap().ino();
    let (a_net, b_net) = (a.net.clone().unwrap(), b.net.clone().unwrap());
    assert!(ns::is_pinned(&a_net) && ns::is_pinned(&b_net));
    assert_ne!(ino(&a_net), ino(&b_net), "each pod its own network");
    assert_ne!(
        ino(&a_net),
        std::fs::metadata("/proc/self/ns/net").unwrap().ino()
    );
    // The claim set each pod's hostname; loopback came up in the pool.
    for (p, name) in [(&a, "pod-a"), (&b, "pod-b")] {
        let uts_arg = format!("--uts={}", p.uts.as_ref().unwrap().display());
        assert_eq!(
            nsenter(&[&uts_arg, "cat", "/proc/sys/kernel/hostname"]).trim(),
            name
        );
        let net_arg = format!("--net={}", p.net.as_ref().unwrap().display());
        assert!(nsenter(&[&net_arg, "ip", "-o", "link"]).contains(",UP"));
    }
    // Refilled with new sets; drained at shutdown.
    pool.fill().unwrap();
    assert_eq!((pool.available(), net_fds()), (2, fds + 2));
    pool.drain();
    assert_eq!((pool.available(), net_fds()), (0, fds));
    ns::unpin(&pods.join("a/ns")).unwrap();
    ns::unpin(&pods.join("b/ns")).unwrap();
    assert_eq!(mounts_under(tmp.path()), 0);
}
