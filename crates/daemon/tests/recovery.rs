//! State survives `kill -9` of the daemon: pods, running containers (their
//! monitors outlive it), exit codes recorded while it was down, names.
#![allow(clippy::unwrap_used)]

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
    let running = created(&mut c, &pod, &pc, ("run", &env.image), &["sleep", "300"]).await;
    start(&mut c, &running).await;
    let exiting = created(
        &mut c,
        &pod,
        &pc,
        ("exit", &env.image),
        &["sh", "-c", "read x < /dev/null; sleep 2; exit 7"],
    )
    .await;
    start(&mut c, &exiting).await;
    let created = created(&mut c, &pod, &pc, ("later", &env.image), &["sleep", "300"]).await;

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

    let pods = list_pods(&mut c).await;
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

/// kill -9 inside CreateContainer (the rootfs overlay mounted, the bundle
/// not yet written): after restart nothing is left over.
#[tokio::test]
async fn kill_9_mid_create_leaves_nothing_behind() {
    let mut env = env_with("", &[("CRIUS_TEST_HOLD", "1")]).await;
    let hold = env.daemon.runroot.join("test-hold-create-container");
    std::fs::write(&hold, "").unwrap();
    let mut c = env.client().await;
    let pc = pod_config("midcreate", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "").await;
    let cc = container_config("app", &env.image, &["sleep", "300"]);
    let mut c2 = c.clone();
    let (pod2, pc2) = (pod.clone(), pc.clone());
    let pending = tokio::spawn(async move { create(&mut c2, &pod2, &pc2, cc).await });
    let containers = env.daemon.root.join("containers");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let held = std::fs::read_dir(&containers)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().join("held-create-container").exists());
        if held {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "CreateContainer never reached the hold"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The rootfs overlay is mounted now; the daemon dies.
    assert_eq!(mounts_under(&containers).len(), 1);
    env.daemon.kill().unwrap();
    let _ = pending.await;
    std::fs::remove_file(&hold).unwrap();
    env.daemon.start().await.unwrap();
    let mut c = env.client().await;
    let list = list_all(&mut c).await;
    assert!(list.is_empty(), "{list:?}");
    assert!(
        mounts_under(&containers).is_empty(),
        "{:?}",
        mounts_under(&containers)
    );
    assert_eq!(std::fs::read_dir(&containers).unwrap().count(), 0);
    // The name is free again.
    let id = created(&mut c, &pod, &pc, ("app", &env.image), &["sleep", "300"]).await;
    start(&mut c, &id).await;
    remove_pod(&mut c, &pod).await;
    assert!(mounts_under(env.daemon.dir()).is_empty());
}

/// kill -9 inside RunPodSandbox (namespaces pinned, shm mounted, the pause
/// process of a shared PID namespace running): after restart the pod is
/// gone without a trace and its name is free.
#[tokio::test]
async fn kill_9_mid_run_pod_sandbox() {
    let mut env = env_with("", &[("CRIUS_TEST_HOLD", "1")]).await;
    let hold = env.daemon.runroot.join("test-hold-run-pod");
    std::fs::write(&hold, "").unwrap();
    let mut c = env.client().await;
    let pc = with_pid_mode(pod_config("midpod", &env.logs), NamespaceMode::Pod);
    let mut c2 = c.clone();
    let pc2 = pc.clone();
    let pending = tokio::spawn(async move {
        c2.runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pc2),
                runtime_handler: String::new(),
            })
            .await
    });
    let pods_dir = env.daemon.runroot.join("pods");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let held = loop {
        let found = std::fs::read_dir(&pods_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("held-run-pod").exists());
        if let Some(p) = found {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "RunPodSandbox never reached the hold"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let pause: i32 = std::fs::read_to_string(held.join("pause.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!mounts_under(&held).is_empty());
    env.daemon.kill().unwrap();
    let _ = pending.await;
    std::fs::remove_file(&hold).unwrap();
    env.daemon.start().await.unwrap();
    c = env.client().await;
    let pods = list_pods(&mut c).await;
    assert!(pods.is_empty(), "{pods:?}");
    assert!(
        mounts_under(&env.daemon.runroot).is_empty(),
        "{:?}",
        mounts_under(&env.daemon.runroot)
    );
    assert!(!held.exists());
    let stat = std::fs::read_to_string(format!("/proc/{pause}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "pause process leaked: {stat}"
    );
    // The name is free again.
    let pod = run_pod(&mut c, pc, "").await;
    remove_pod(&mut c, &pod).await;
    assert!(mounts_under(env.daemon.dir()).is_empty());
}

/// kill -9 inside StartContainer (the runtime's run hangs, then fails):
/// after restart the container is still created and can be started;
/// inside StopContainer (the runtime's kill hangs): after restart it still
/// runs and stops.
#[tokio::test]
async fn kill_9_mid_start_and_stop_container() {
    let tmp = tempfile::tempdir().unwrap();
    let start_wrapper = slow_runtime(tmp.path(), "run");
    let kill_wrapper = slow_runtime(tmp.path(), "kill");
    let mut env = env(&format!(
        "default_runtime = \"slow-start\"\n[runtimes.slow-start]\npath = \"{}\"\nroot = \"/run/crius-test-slow\"\n[runtimes.slow-kill]\npath = \"{}\"\nroot = \"/run/crius-test-slow\"\n",
        start_wrapper.display(),
        kill_wrapper.display()
    ))
    .await;
    let mut c = env.client().await;
    let pc = pod_config("midstart", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "slow-start").await;
    let id = created(&mut c, &pod, &pc, ("app", &env.image), &["sleep", "300"]).await;
    let mut c2 = c.clone();
    let id2 = id.clone();
    let pending = tokio::spawn(async move {
        c2.runtime
            .start_container(StartContainerRequest { container_id: id2 })
            .await
    });
    wait_for(&tmp.path().join("in-run"), Duration::from_secs(20)).await;
    env.daemon.kill().unwrap();
    let _ = pending.await;
    kill_wrappers();
    env.daemon.start().await.unwrap();
    c = env.client().await;
    assert_eq!(
        status(&mut c, &id).await.state,
        ContainerState::ContainerCreated as i32
    );
    start(&mut c, &id).await;
    assert_eq!(
        status(&mut c, &id).await.state,
        ContainerState::ContainerRunning as i32
    );

    // Now a pod whose handler hangs in kill.
    let pc = pod_config("midstop", &env.logs);
    let pod2 = run_pod(&mut c, pc.clone(), "slow-kill").await;
    let id3 = created(&mut c, &pod2, &pc, ("app", &env.image), &["sleep", "300"]).await;
    start(&mut c, &id3).await;
    let mut c2 = c.clone();
    let id4 = id3.clone();
    let pending = tokio::spawn(async move {
        c2.runtime
            .stop_container(StopContainerRequest {
                container_id: id4,
                timeout: 30,
            })
            .await
    });
    wait_for(&tmp.path().join("in-kill"), Duration::from_secs(20)).await;
    env.daemon.kill().unwrap();
    let _ = pending.await;
    kill_wrappers();
    env.daemon.start().await.unwrap();
    c = env.client().await;
    assert_eq!(
        status(&mut c, &id3).await.state,
        ContainerState::ContainerRunning as i32
    );
    stop(&mut c, &id3, 0).await;
    let s = status(&mut c, &id3).await;
    assert_eq!(
        (s.state, s.exit_code),
        (ContainerState::ContainerExited as i32, 137)
    );

    let list = list_all(&mut c).await;
    assert_eq!(list.len(), 2, "{list:?}");
    remove_pod(&mut c, &pod).await;
    remove_pod(&mut c, &pod2).await;
    assert!(
        mounts_under(env.daemon.dir()).is_empty(),
        "{:?}",
        mounts_under(env.daemon.dir())
    );
    assert!(runtime_list("runc", std::path::Path::new("/run/crius-test-slow")).is_empty());
}

/// kill -9 inside StartContainer while the runtime's run is under way; the
/// run then finishes with no daemon to hear of it. After restart the
/// container is running under its monitor: exec, logs, stop with the exit
/// code the monitor records.
#[tokio::test]
async fn kill_9_mid_start_the_run_finishes_without_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let gate = tmp.path().join("go");
    // Every run marks itself (in-run-<pid>) and waits at the gate.
    let wrapper = wrapper_runtime(
        &tmp.path().join("gated-runc"),
        &format!(
            "for a in \"$@\"; do if [ \"$a\" = run ]; then touch {d}/in-run-$$; while [ ! -e {g} ]; do sleep 0.05; done; fi; done",
            d = tmp.path().display(),
            g = gate.display()
        ),
    );
    let rt_root = std::path::Path::new("/run/crius-test-gated");
    let mut env = env(&format!(
        "default_runtime = \"gated\"\n[runtimes.gated]\npath = \"{}\"\nroot = \"{}\"\n",
        wrapper.display(),
        rt_root.display()
    ))
    .await;
    let mut c = env.client().await;
    let pc = pod_config("midrun", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "").await;
    // One keeps running; one exits at once, its exit recorded before the
    // daemon is back.
    let id = created(
        &mut c,
        &pod,
        &pc,
        ("app", &env.image),
        &["sh", "-c", "echo started; exec sleep 300"],
    )
    .await;
    let quick = created(
        &mut c,
        &pod,
        &pc,
        ("quick", &env.image),
        &["sh", "-c", "exit 3"],
    )
    .await;
    let mut pending = Vec::new();
    for cid in [&id, &quick] {
        let mut c2 = c.clone();
        let cid = cid.clone();
        pending.push(tokio::spawn(async move {
            c2.runtime
                .start_container(StartContainerRequest { container_id: cid })
                .await
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("in-run-"))
        .count()
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "the runs never began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.daemon.kill().unwrap();
    for p in pending {
        let _ = p.await;
    }
    std::fs::write(&gate, "").unwrap();
    // The runs finish, and the monitors carry on without a daemon.
    let quick_exit = env.daemon.runroot.join("exits").join(&quick);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !runtime_list("runc", rt_root).contains(&id) || !quick_exit.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the runs never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.daemon.start().await.unwrap();
    c = env.client().await;
    let s = status(&mut c, &id).await;
    assert_eq!(s.state, ContainerState::ContainerRunning as i32, "{s:?}");
    let out = exec(&mut c, &id, &["echo", "alive"]).await;
    assert_eq!(out.stdout, b"alive\n");
    let log = std::path::PathBuf::from(&s.log_path);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(" stdout F started")
    {
        assert!(std::time::Instant::now() < deadline, "nothing logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(&mut c, &id, 0).await;
    let s = status(&mut c, &id).await;
    assert_eq!(
        (s.state, s.exit_code),
        (ContainerState::ContainerExited as i32, 137)
    );
    let s = status(&mut c, &quick).await;
    assert_eq!(
        (s.state, s.exit_code),
        (ContainerState::ContainerExited as i32, 3),
        "{s:?}"
    );
    // Started when the runtime ran it (its pid file), before it finished.
    assert!(
        s.started_at > s.created_at && s.started_at < s.finished_at,
        "{s:?}"
    );
    remove_pod(&mut c, &pod).await;
    assert!(runtime_list("runc", rt_root).is_empty());
    assert!(
        mounts_under(env.daemon.dir()).is_empty(),
        "{:?}",
        mounts_under(env.daemon.dir())
    );
}

/// A container an older crius created (the runtime's create already done
/// under its monitor at CreateContainer, the record naming both) is re-made
/// at restart: monitor and runtime container gone, still created, and
/// started with one run like any other.
#[tokio::test]
async fn kill_9_upgrade_from_a_crius_that_created_at_create() {
    let mut env = env("").await;
    let mut c = env.client().await;
    let pc = pod_config("older", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let id = created(&mut c, &pod, &pc, ("app", &env.image), &["sleep", "300"]).await;
    env.daemon.kill().unwrap();
    // What the older crius left: `runc create` under a monitor.
    let state_db = env.daemon.root.join("state");
    let db = crius::state::StateDb::open(&state_db).unwrap();
    let mut rec = db
        .containers()
        .unwrap()
        .into_iter()
        .find(|r| r.id == id)
        .unwrap();
    let rt_root = env.daemon.runroot.join("runtimes/runc");
    let (r, w) = nix::unistd::pipe().unwrap();
    let monitor = std::path::Path::new(BIN).with_file_name("crius-monitor");
    let w_fd = std::os::fd::AsRawFd::as_raw_fd(&w);
    let st = std::process::Command::new(&monitor)
        .args(["--runtime", "runc", "--runtime-root"])
        .arg(&rt_root)
        .args(["--id", &id, "--bundle"])
        .arg(rec.dir.join("bundle"))
        .arg("--log")
        .arg(&rec.log_path)
        .arg("--exit-file")
        .arg(&rec.exit_file)
        .arg("--pid-file")
        .arg(rec.dir.join("pid"))
        .arg("--sync-fd")
        .arg(w_fd.to_string())
        .status()
        .unwrap();
    assert!(st.success());
    drop(w);
    let mut report = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut report).unwrap();
    let mut it = report
        .strip_prefix("pid ")
        .unwrap_or_else(|| panic!("{report}"))
        .split_whitespace()
        .map(|p| p.parse::<i32>().unwrap());
    let (pid, monitor_pid) = (it.next().unwrap(), it.next().unwrap());
    rec.pid = pid;
    rec.monitor_pid = monitor_pid;
    db.put_container(&rec).unwrap();
    drop(db);
    assert_eq!(runtime_list("runc", &rt_root), vec![id.clone()]);

    env.daemon.start().await.unwrap();
    c = env.client().await;
    assert_eq!(
        status(&mut c, &id).await.state,
        ContainerState::ContainerCreated as i32
    );
    assert!(
        runtime_list("runc", &rt_root).is_empty(),
        "runtime container left"
    );
    assert!(
        crius_test_support::procs::wait_gone(monitor_pid, Duration::from_secs(10)),
        "the older create's monitor is still there"
    );
    start(&mut c, &id).await;
    let out = exec(&mut c, &id, &["echo", "alive"]).await;
    assert_eq!(out.stdout, b"alive\n");
    remove_pod(&mut c, &pod).await;
    assert!(runtime_list("runc", &rt_root).is_empty());
    assert!(mounts_under(env.daemon.dir()).is_empty());
}
