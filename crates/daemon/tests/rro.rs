//! Recursive read-only mounts (KEP-3857) through the socket: the seed's
//! scenario with runc, and an honest refusal from crun 1.8.1 (no `features`).
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use crius_test_support::cri::*;
use tonic::Code;

fn data_mount(host: &std::path::Path, rro: bool) -> Mount {
    Mount {
        container_path: "/data".into(),
        host_path: host.display().to_string(),
        readonly: true,
        recursive_read_only: rro,
        ..Default::default()
    }
}

#[tokio::test]
async fn recursive_read_only_makes_submounts_read_only() {
    let env = env("").await;
    let mut c = env.client().await;
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("data");
    std::fs::create_dir_all(host.join("sub")).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &host.join("sub"),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();

    let pc = pod_config("rro", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    // readonly only: the submount stays writable (why rro exists).
    let mut cc = container_config("ro", &env.image, &["sleep", "300"]);
    cc.mounts.push(data_mount(&host, false));
    let ro = create(&mut c, &pod, &pc, cc).await.unwrap();
    start(&mut c, &ro).await;
    let out = exec(
        &mut c,
        &ro,
        &["sh", "-c", "touch /data/sub/a && touch /data/b"],
    )
    .await;
    assert!(host.join("sub/a").exists(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only"),
        "{out:?}"
    );
    // readonly + recursive_read_only: the submount is read-only too.
    let mut cc = container_config("rro", &env.image, &["sleep", "300"]);
    cc.mounts.push(data_mount(&host, true));
    let rro = create(&mut c, &pod, &pc, cc).await.unwrap();
    start(&mut c, &rro).await;
    let out = exec(&mut c, &rro, &["touch", "/data/sub/c"]).await;
    assert_ne!(out.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{out:?}"
    );
    assert!(!host.join("sub/c").exists());
    let v = verbose_info(&mut c, &rro).await;
    let m = v["runtimeSpec"]["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/data")
        .unwrap()
        .clone();
    let opts: Vec<&str> = m["options"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.as_str())
        .collect();
    assert!(opts.contains(&"rro") && opts.contains(&"ro"), "{opts:?}");

    // Validation, each naming the mount's container path, changing nothing.
    let mut bad = data_mount(&host, true);
    bad.readonly = false;
    let mut cc = container_config("bad1", &env.image, &["true"]);
    cc.mounts.push(bad);
    let e = create(&mut c, &pod, &pc, cc).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("\"/data\""), "{}", e.message());
    let mut bad = data_mount(&host, true);
    bad.propagation = MountPropagation::PropagationHostToContainer as i32;
    let mut cc = container_config("bad2", &env.image, &["true"]);
    cc.mounts.push(bad);
    let e = create(&mut c, &pod, &pc, cc).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // crun 1.8.1 has no `features`: refused, never downgraded.
    let pc2 = pod_config("rro-crun", &env.logs);
    let pod2 = run_pod(&mut c, pc2.clone(), "crun").await;
    let mut cc = container_config("rro", &env.image, &["true"]);
    cc.mounts.push(data_mount(&host, true));
    let e = create(&mut c, &pod2, &pc2, cc).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("\"crun\"") && e.message().contains("/data"),
        "{}",
        e.message()
    );
    let list = list_all(&mut c).await;
    assert_eq!(list.len(), 2, "only the two good containers exist");

    remove_pod(&mut c, &pod).await;
    remove_pod(&mut c, &pod2).await;
    let _ = nix::mount::umount2(&host.join("sub"), nix::mount::MntFlags::MNT_DETACH);
    assert!(mounts_under(env.daemon.dir()).is_empty());
}
