//! State survives `kill -9` of the daemon: pods, running containers (their
//! monitors outlive it), exit codes recorded while it was down, names.

mod common;
use common::*;
use crius_test_support::cri::*;
use std::time::Duration;
use tonic::Code;

#[tokio::test]
async fn kill_9_keeps_pods_and_containers_manageable() {
    let mut env = env("").await;
    let mut c = env.client().await;
    let pc = pod_config("survivor", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    // One keeps running, one exits while the daemon is down, one is only created.
    let running = create(
        &mut c,
        &pod,
        &pc,
        container_config("run", &env.image, &["sleep", "300"]),
    )
    .await
    .unwrap();
    start(&mut c, &running).await;
    let exiting = create(
        &mut c,
        &pod,
        &pc,
        container_config(
            "exit",
            &env.image,
            &["sh", "-c", "read x < /dev/null; sleep 2; exit 7"],
        ),
    )
    .await
    .unwrap();
    start(&mut c, &exiting).await;
    let created = create(
        &mut c,
        &pod,
        &pc,
        container_config("later", &env.image, &["sleep", "300"]),
    )
    .await
    .unwrap();

    env.daemon.kill().unwrap();
    // The monitor records the exit while no daemon runs.
    let exit_file = env.daemon.runroot.join("exits").join(&exiting);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !exit_file.exists() {
        assert!(std::time::Instant::now() < deadline, "no exit recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.daemon.start().await.unwrap();
    let mut c = env.client().await;

    let pods = c
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].id, pod);
    assert_eq!(pods[0].state, PodSandboxState::SandboxReady as i32);

    let s = status(&mut c, &running).await;
    assert_eq!(s.state, ContainerState::ContainerRunning as i32, "{s:?}");
    let s = status(&mut c, &exiting).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32, "{s:?}");
    assert_eq!(s.exit_code, 7);
    assert_eq!(s.reason, "Error");
    let s = status(&mut c, &created).await;
    assert_eq!(s.state, ContainerState::ContainerCreated as i32, "{s:?}");

    // Names are still reserved.
    let e = create(
        &mut c,
        &pod,
        &pc,
        container_config("run", &env.image, &["true"]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(e.message().contains(&running), "{}", e.message());
    let e = c
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(e.message().contains(&pod), "{}", e.message());

    // Still manageable: exec, start the created one, stop, remove.
    let out = exec(&mut c, &running, &["echo", "alive"]).await;
    assert_eq!(out.stdout, b"alive\n");
    start(&mut c, &created).await;
    assert_eq!(
        status(&mut c, &created).await.state,
        ContainerState::ContainerRunning as i32
    );
    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    assert_eq!(status(&mut c, &running).await.exit_code, 137);
    remove_pod(&mut c, &pod).await;
    assert!(
        mounts_under(env.daemon.dir()).is_empty(),
        "{:?}",
        mounts_under(env.daemon.dir())
    );
    assert!(runtime_list("runc", &env.daemon.runroot.join("runtimes/runc")).is_empty());
}

/// A wrapper runtime that hangs in `create` lets the test kill the daemon
/// in the middle of CreateContainer; after restart nothing is left over.
#[tokio::test]
async fn kill_9_mid_create_leaves_nothing_behind() {
    crius_test_support::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let wrapper = tmp.path().join("slow-runc");
    let marker = tmp.path().join("in-create");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do if [ \"$a\" = create ]; then touch {m}; sleep 30; fi; done\nexec runc \"$@\"\n",
            m = marker.display()
        ),
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&wrapper).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut env = env(&format!(
        "default_runtime = \"slow\"\n[runtimes.slow]\npath = \"{}\"\n",
        wrapper.display()
    ))
    .await;
    let mut c = env.client().await;
    let pc = pod_config("midcreate", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "").await;
    let cc = container_config("app", &env.image, &["sleep", "300"]);
    let mut c2 = c.clone();
    let (pod2, pc2) = (pod.clone(), pc.clone());
    let pending = tokio::spawn(async move { create(&mut c2, &pod2, &pc2, cc).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "runtime create never called"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The rootfs overlay is mounted now; the daemon dies.
    assert!(mounts_under(&env.daemon.root.join("containers")).len() == 1);
    env.daemon.kill().unwrap();
    let _ = pending.await;
    env.daemon.start().await.unwrap();
    let mut c = env.client().await;
    let list = c
        .runtime
        .list_containers(ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(list.is_empty(), "{list:?}");
    assert!(
        mounts_under(&env.daemon.root.join("containers")).is_empty(),
        "{:?}",
        mounts_under(&env.daemon.root.join("containers"))
    );
    assert_eq!(
        std::fs::read_dir(env.daemon.root.join("containers"))
            .unwrap()
            .count(),
        0
    );
    // The name is free again.
    std::fs::remove_file(&marker).unwrap();
    remove_pod(&mut c, &pod).await;
    assert!(mounts_under(env.daemon.dir()).is_empty());
}
