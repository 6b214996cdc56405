//! Container behaviour kubelet relies on, through the real socket: exit
//! codes, OOMKilled, termination messages, users, read-only rootfs, host
//! path propagation, env/args rules, duplicate names, ExecSync timeouts,
//! log reopening, resource updates, bad input.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use crius_test_support::cri::*;
use crius_test_support::procs;
use std::time::Duration;

#[tokio::test]
async fn exit_codes_and_termination_messages() {
    let env = env("").await;
    let mut c = env.client().await;
    let pc = pod_config("exits", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let msg_dir = tempfile::tempdir().unwrap();
    let msg = msg_dir.path().join("termination-log");
    std::fs::write(&msg, "").unwrap();
    let mut cc = container_config(
        "fails",
        &env.image,
        &["sh", "-c", "echo bye > /dev/termination-log; exit 7"],
    );
    cc.mounts.push(Mount {
        container_path: "/dev/termination-log".into(),
        host_path: msg.display().to_string(),
        ..Default::default()
    });
    let id = create(&mut c, &pod, &pc, cc).await.unwrap();
    start(&mut c, &id).await;
    let s = wait_exited(&mut c, &id, Duration::from_secs(10)).await;
    assert_eq!(s.exit_code, 7);
    assert_eq!(s.reason, "Error");
    assert_eq!(s.message, "bye\n");
    assert!(s.finished_at >= s.started_at);

    let ok = created(&mut c, &pod, &pc, ("ok", &env.image), &["true"]).await;
    start(&mut c, &ok).await;
    let s = wait_exited(&mut c, &ok, Duration::from_secs(10)).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));
    remove_pod(&mut c, &pod).await;
}

#[tokio::test]
async fn users_readonly_rootfs_exec_timeout_and_bad_input() {
    let env = env("").await;
    let mut c = env.client().await;
    let pc = pod_config("rules", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "crun").await;

    // A non-root user by uid and a read-only rootfs.
    let mut cc = container_config("app", &env.image, &["sleep", "300"]);
    {
        let sc = cc
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap();
        sc.run_as_user = Some(Int64Value { value: 1000 });
        sc.run_as_group = Some(Int64Value { value: 1000 });
        sc.readonly_rootfs = true;
    }
    let id = create(&mut c, &pod, &pc, cc).await.unwrap();
    start(&mut c, &id).await;
    let s = status(&mut c, &id).await;
    let u = s.user.unwrap().linux.unwrap();
    assert_eq!((u.uid, u.gid), (1000, 1000));
    let out = exec(&mut c, &id, &["id", "-u"]).await;
    assert_eq!(out.stdout, b"1000\n");
    let out = exec(&mut c, &id, &["sh", "-c", "touch /newfile"]).await;
    assert_ne!(out.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only"),
        "{out:?}"
    );

    // ExecSync timeout is honoured and reported.
    let t0 = std::time::Instant::now();
    let e = c
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["sleep".into(), "30".into()],
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded);
    assert!(t0.elapsed() < Duration::from_secs(10));

    // Duplicate names are refused naming the holder; nothing is created.
    let e = create(
        &mut c,
        &pod,
        &pc,
        container_config("app", &env.image, &["true"]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists);
    assert!(e.message().contains(&id), "{}", e.message());
    let e = c
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: "crun".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists);

    // Bad input: clear codes naming the field, and nothing changes.
    let e = create(
        &mut c,
        &pod,
        &pc,
        container_config("x", "no-such-image:1", &["true"]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().contains("no-such-image"), "{}", e.message());
    let mut cc = container_config("y", &env.image, &["true"]);
    cc.mounts.push(Mount {
        container_path: "/data".into(),
        host_path: "/no/such/host/path".into(),
        ..Default::default()
    });
    let e = create(&mut c, &pod, &pc, cc).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("/no/such/host/path"),
        "{}",
        e.message()
    );
    let e = c
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("other", &env.logs)),
            runtime_handler: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().contains("nope"), "{}", e.message());
    let e = try_start(&mut c, &id).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    let list = list_all(&mut c).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let pods = list_pods(&mut c).await;
    assert_eq!(pods.len(), 1);

    // RemoveImage refuses while a container uses the image.
    let e = c
        .image
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: env.image.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains(&id), "{}", e.message());

    remove_pod(&mut c, &pod).await;
    c.image
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: env.image.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    assert!(mounts_under(env.daemon.dir()).is_empty());
}

#[tokio::test]
async fn memory_limit_oom_killed() {
    let env = env("").await;
    let mut c = env.client().await;
    let pc = pod_config("oom", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let id = create(&mut c, &pod, &pc, memory_hog("hog", &env.image))
        .await
        .unwrap();
    start(&mut c, &id).await;
    let s = wait_exited(&mut c, &id, Duration::from_secs(60)).await;
    assert_eq!(s.reason, "OOMKilled", "{s:?}");
    assert_eq!(s.exit_code, 137);
    assert_eq!(
        s.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
        32 << 20
    );
    remove_pod(&mut c, &pod).await;
}

fn mount_tmpfs(path: &std::path::Path, shared: bool) {
    std::fs::create_dir_all(path).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=4m"),
    )
    .unwrap();
    let flag = if shared {
        nix::mount::MsFlags::MS_SHARED
    } else {
        nix::mount::MsFlags::MS_PRIVATE
    };
    nix::mount::mount(None::<&str>, path, None::<&str>, flag, None::<&str>).unwrap();
}

fn umount(path: &std::path::Path) {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
}

/// Host paths with each propagation mode, and env/args override rules.
#[tokio::test]
async fn host_path_propagation_and_args_rules() {
    let env = env("").await;
    let mut c = env.client().await;
    let pc = pod_config("prop", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let tmp = tempfile::tempdir().unwrap();
    let (private, slave, shared, plain) = (
        tmp.path().join("private"),
        tmp.path().join("slave"),
        tmp.path().join("shared"),
        tmp.path().join("plain"),
    );
    std::fs::create_dir_all(&private).unwrap();
    std::fs::write(private.join("hello"), "from host").unwrap();
    mount_tmpfs(&slave, true);
    mount_tmpfs(&shared, true);
    mount_tmpfs(&plain, false);
    let m = |host: &std::path::Path, ctr: &str, p: MountPropagation| Mount {
        container_path: ctr.into(),
        host_path: host.display().to_string(),
        propagation: p as i32,
        ..Default::default()
    };

    // Not shared: HostToContainer is refused, naming the path.
    let mut cc = container_config("bad", &env.image, &["true"]);
    cc.mounts.push(m(
        &plain,
        "/plain",
        MountPropagation::PropagationHostToContainer,
    ));
    let e = create(&mut c, &pod, &pc, cc).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains(plain.to_str().unwrap()),
        "{}",
        e.message()
    );

    // Image Entrypoint ["sh","-c","echo image-cmd"] is the Cmd here; CRI
    // args alone replace Cmd, keeping no Entrypoint; env from the image
    // and the CRI, CRI winning.
    let mut cc = container_config("app", &env.image, &[]);
    cc.args = vec![
        "sh".into(),
        "-c".into(),
        "echo $FROM_IMAGE $OVER; exec sleep 300".into(),
    ];
    cc.envs = vec![KeyValue {
        key: "OVER".into(),
        value: "cri".into(),
    }];
    cc.mounts = vec![
        m(&private, "/private", MountPropagation::PropagationPrivate),
        m(
            &slave,
            "/slave",
            MountPropagation::PropagationHostToContainer,
        ),
        m(
            &shared,
            "/shared",
            MountPropagation::PropagationBidirectional,
        ),
    ];
    cc.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .privileged = true;
    let id = create(&mut c, &pod, &pc, cc).await.unwrap();
    start(&mut c, &id).await;
    let out = exec(&mut c, &id, &["cat", "/private/hello"]).await;
    assert_eq!(out.stdout, b"from host");
    // Host → container.
    mount_tmpfs(&slave.join("late"), false);
    std::fs::write(slave.join("late/file"), "late").unwrap();
    let out = exec(&mut c, &id, &["cat", "/slave/late/file"]).await;
    assert_eq!(out.stdout, b"late", "{out:?}");
    // Container → host.
    let out = exec(
        &mut c,
        &id,
        &[
            "sh",
            "-c",
            "mkdir -p /shared/in && mount -t tmpfs t /shared/in && echo x > /shared/in/made",
        ],
    )
    .await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert_eq!(
        std::fs::read_to_string(shared.join("in/made")).unwrap(),
        "x\n"
    );
    let s = status(&mut c, &id).await;
    let log = std::path::PathBuf::from(&s.log_path);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while log_lines(&log).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log_lines(&log)[0].2, "yes cri");

    // ReopenContainerLog: kubelet renames the log, asks for a reopen, and
    // the next lines go to a new file at the old path.
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    c.runtime
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    assert!(log.exists());
    // UpdateContainerResources: lands in the cgroup and in the status.
    update_resources(&mut c, &id, 48 << 20, 512).await;
    let info = c
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let v: serde_json::Value = serde_json::from_str(&info.info["info"]).unwrap();
    assert_eq!(
        cgroup_memory_and_shares(v["cgroupsPath"].as_str().unwrap()),
        ((48u64 << 20).to_string(), "512".to_string())
    );
    let st = info.status.unwrap();
    assert_eq!(
        st.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
        48 << 20
    );

    // Pod label filters.
    let pods = c
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: [("app".to_string(), "prop".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    let none = c
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: [("app".to_string(), "other".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(none.is_empty());

    remove_pod(&mut c, &pod).await;
    umount(&shared.join("in"));
    umount(&slave.join("late"));
    for p in [&slave, &shared, &plain] {
        umount(p);
    }
    assert!(mounts_under(env.daemon.dir()).is_empty());
}

/// The pipe inodes a process holds open.
fn pipes_of(pid: u32) -> std::collections::HashSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|l| l.to_string_lossy().into_owned())
                .filter(|l| l.starts_with("pipe:"))
                .collect()
        })
        .unwrap_or_default()
}

/// Standby monitors of the daemon `daemon`: detached `crius-monitor
/// standby` processes (their first process, with the same command line and
/// fd 0, leads no session) whose job pipe (their fd 0) the daemon holds the
/// other end of.
fn standbys_of(daemon: u32) -> Vec<i32> {
    let held = pipes_of(daemon);
    procs::pids_where(|pid, cmd| {
        cmd.contains("crius-monitor\0standby\0")
            && procs::leads_session(pid)
            && std::fs::read_link(format!("/proc/{pid}/fd/0"))
                .is_ok_and(|l| held.contains(l.to_string_lossy().as_ref()))
    })
}

async fn wait_standbys(daemon: u32, n: usize) -> Vec<i32> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = standbys_of(daemon);
        if s.len() == n {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} standby monitors, not {n}",
            s.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_gone(pid: i32, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while procs::alive(pid) {
        assert!(std::time::Instant::now() < deadline, "{what}: {pid}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The monitor pool (2 by default): the daemon starts monitors ahead at
/// idle priority; CreateContainer hands one its job (the container's
/// monitor is a pooled process, now named by the container's id, at
/// normal priority, as is the container); the pool refills; standbys
/// leave when the daemon is killed (their job pipe closes) or stops, and
/// the containers they took stay manageable across the restart.
#[tokio::test]
async fn monitor_pool_hands_out_started_monitors() {
    let mut env = env("").await;
    let daemon = env.daemon.pid().unwrap();
    let first = wait_standbys(daemon, 2).await;
    for pid in &first {
        assert_eq!(
            procs::sched_policy(*pid),
            libc::SCHED_IDLE,
            "standby filled at idle"
        );
    }
    let mut c = env.client().await;
    let pc = pod_config("mon-pool", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let id = created(&mut c, &pod, &pc, ("app", &env.image), &["sleep", "300"]).await;
    start(&mut c, &id).await;
    let info = verbose_info(&mut c, &id).await;
    let pid = info["pid"].as_i64().unwrap() as i32;
    let monitor = *procs::pids_where(|_, cmd| {
        cmd.contains("crius-monitor") && cmd.contains(&format!("--id\0{id}\0"))
    })
    .first()
    .expect("the container's monitor, named by its id");
    assert!(first.contains(&monitor), "a pooled standby took the job");
    assert_eq!(procs::sched_policy(monitor), libc::SCHED_OTHER, "monitor");
    assert_eq!(procs::sched_policy(pid), libc::SCHED_OTHER, "container");
    // Refilled with new standbys.
    let refilled = wait_standbys(daemon, 2).await;
    assert!(!refilled.contains(&monitor));

    env.daemon.kill().unwrap();
    for s in &refilled {
        wait_gone(*s, "standby outlived its daemon").await;
    }
    assert!(
        procs::alive(monitor) && procs::alive(pid),
        "the container outlives the daemon"
    );
    env.daemon.start().await.unwrap();
    let daemon = env.daemon.pid().unwrap();
    let again = wait_standbys(daemon, 2).await;
    let mut c = env.client().await;
    assert_eq!(
        status(&mut c, &id).await.state,
        ContainerState::ContainerRunning as i32
    );
    stop(&mut c, &id, 0).await;
    assert_eq!(status(&mut c, &id).await.exit_code, 137);
    remove_pod(&mut c, &pod).await;
    env.daemon.stop().await.unwrap();
    for s in again {
        wait_gone(s, "standby outlived a graceful stop").await;
    }
}

/// The runtime's container comes to be at StartContainer (one `run`):
/// a created container has no runtime state yet; an update before the
/// start is in force when it runs; a stop before the start ends it
/// unstarted (137); a runtime that refuses to run it leaves it exited
/// with reason StartError (128), the runtime's words, nothing behind.
#[tokio::test]
async fn containers_run_at_start_with_updates_stops_and_start_errors() {
    let env = env("").await;
    let mut c = env.client().await;
    let pc = pod_config("run-at-start", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let rt_root = env.daemon.runroot.join("runtimes/runc");

    let id = created(&mut c, &pod, &pc, ("app", &env.image), &["sleep", "300"]).await;
    assert!(runtime_list("runc", &rt_root).is_empty(), "nothing run yet");
    // kubelet's CPU manager updates between create and start.
    update_resources(&mut c, &id, 40 << 20, 256).await;
    // The CPU manager's update: cpuset alone; the limits above stay.
    c.runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                cpuset_cpus: "0".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let s = status(&mut c, &id).await;
    assert_eq!(s.state, ContainerState::ContainerCreated as i32);
    let res = s.resources.unwrap().linux.unwrap();
    assert_eq!(
        (
            res.memory_limit_in_bytes,
            res.cpu_shares,
            res.cpuset_cpus.as_str()
        ),
        (40 << 20, 256, "0")
    );
    start(&mut c, &id).await;
    let v = verbose_info(&mut c, &id).await;
    let cg = v["cgroupsPath"].as_str().unwrap();
    assert_eq!(
        cgroup_memory_and_shares(cg),
        ((40u64 << 20).to_string(), "256".to_string())
    );
    let cpus = std::fs::read_to_string(format!("/sys/fs/cgroup/cpuset{cg}/cpuset.cpus")).unwrap();
    assert_eq!(cpus.trim(), "0");
    // The spec's device rules (deny all first) survived the update.
    let rules = &v["runtimeSpec"]["linux"]["resources"]["devices"];
    assert_eq!(rules[0]["allow"], false, "{rules}");
    assert_eq!(
        v["runtimeSpec"]["linux"]["resources"]["memory"]["limit"],
        40 << 20
    );
    assert_eq!(runtime_list("runc", &rt_root), vec![id.clone()]);

    // Stopped before it was started.
    let never = created(&mut c, &pod, &pc, ("never", &env.image), &["sleep", "300"]).await;
    stop(&mut c, &never, 10).await;
    let s = status(&mut c, &never).await;
    assert_eq!(
        (s.state, s.exit_code, s.started_at),
        (ContainerState::ContainerExited as i32, 137, 0)
    );
    assert!(s.finished_at >= s.created_at, "{s:?}");
    let e = try_start(&mut c, &never).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");

    // The runtime refuses: no such executable.
    let bad = created(&mut c, &pod, &pc, ("bad", &env.image), &["/no/such/binary"]).await;
    let e = try_start(&mut c, &bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("/no/such/binary"), "{}", e.message());
    let s = status(&mut c, &bad).await;
    assert_eq!(
        (s.state, s.exit_code, s.reason.as_str()),
        (ContainerState::ContainerExited as i32, 128, "StartError")
    );
    assert!(s.message.contains("/no/such/binary"), "{}", s.message);
    assert_eq!(runtime_list("runc", &rt_root), vec![id.clone()]);
    assert!(
        procs::pids_where(|_, cmd| cmd.contains("crius-monitor") && cmd.contains(&bad)).is_empty(),
        "the failed run's monitor is gone"
    );
    c.runtime
        .remove_container(RemoveContainerRequest {
            container_id: bad.clone(),
        })
        .await
        .unwrap();

    // A pod that stopped: its created containers do not start.
    let late = created(&mut c, &pod, &pc, ("late", &env.image), &["sleep", "300"]).await;
    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    assert_eq!(status(&mut c, &id).await.exit_code, 137);
    let e = try_start(&mut c, &late).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    remove_pod(&mut c, &pod).await;
    assert!(runtime_list("runc", &rt_root).is_empty());
    assert!(mounts_under(env.daemon.dir()).is_empty());
}

/// While StopPodSandbox is under way (its container's stop held inside
/// the runtime's kill), the pod takes no new container; the stop then
/// finishes with nothing left behind.
#[tokio::test]
async fn a_pod_being_stopped_takes_no_new_containers() {
    let tmp = tempfile::tempdir().unwrap();
    let wrapper = slow_runtime(tmp.path(), "kill");
    let env = env(&format!(
        "default_runtime = \"slow-kill\"\n[runtimes.slow-kill]\npath = \"{}\"\n",
        wrapper.display()
    ))
    .await;
    let mut c = env.client().await;
    let pc = pod_config("stopping", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "slow-kill").await;
    let id = created(&mut c, &pod, &pc, ("app", &env.image), &["sleep", "300"]).await;
    start(&mut c, &id).await;
    let mut c2 = c.clone();
    let pod2 = pod.clone();
    let stopping = tokio::spawn(async move {
        c2.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod2,
            })
            .await
    });
    wait_for(&tmp.path().join("in-kill"), Duration::from_secs(20)).await;
    let e = create(
        &mut c,
        &pod,
        &pc,
        container_config("late", &env.image, &["true"]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("being stopped"), "{}", e.message());
    kill_wrappers();
    stopping.await.unwrap().unwrap();
    let list = list_all(&mut c).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].state, ContainerState::ContainerExited as i32);
    remove_pod(&mut c, &pod).await;
    assert!(mounts_under(env.daemon.dir()).is_empty());
}
