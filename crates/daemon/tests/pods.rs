//! The flows kubelet uses, through the real socket with the real runc and
//! crun: pod → pull → create → start → exec → logs → stop → remove.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use crius_test_support::cri::*;
use std::time::Duration;
use tonic::Code;

async fn kubelet_flow(handler: &str) {
    let env = env("").await;
    let mut c = env.client().await;
    let pc = pod_config(&format!("flow-{handler}"), &env.logs);
    let pod = run_pod(&mut c, pc.clone(), handler).await;
    assert_eq!(pod.len(), 64);
    let rc = c
        .runtime
        .runtime_config(RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        CgroupDriver::Cgroupfs as i32
    );

    let ps = c
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod[..8].into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let st = ps.status.unwrap();
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(st.runtime_handler, handler);
    assert_eq!(st.labels["app"], format!("flow-{handler}"));
    assert!(ps.info["info"].contains("\"network\""), "{:?}", ps.info);

    let mut cc = container_config(
        "app",
        &env.image,
        &[
            "sh",
            "-c",
            "echo out; echo err >&2; hostname; echo $FROM_IMAGE; exec sleep 300",
        ],
    );
    cc.envs.push(KeyValue {
        key: "FROM_CRI".into(),
        value: "1".into(),
    });
    let id = create(&mut c, &pod, &pc, cc).await.unwrap();
    let s = status(&mut c, &id).await;
    assert_eq!(s.state, ContainerState::ContainerCreated as i32);
    start(&mut c, &id).await;
    let s = status(&mut c, &id).await;
    assert_eq!(s.state, ContainerState::ContainerRunning as i32);
    assert!(s.started_at >= s.created_at && s.created_at > 0);
    assert!(s.image_ref.contains("@sha256:"), "{}", s.image_ref);

    let out = exec(
        &mut c,
        &id,
        &["sh", "-c", "echo $FROM_CRI; cat /etc/hostname; exit 3"],
    )
    .await;
    assert_eq!(out.exit_code, 3);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("1\nflow-{handler}\n")
    );

    // The log: stdout and stderr, full lines, the pod's hostname.
    let log = std::path::PathBuf::from(&s.log_path);
    assert!(
        log.starts_with(env.logs.join(format!("flow-{handler}"))),
        "{}",
        s.log_path
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while log_lines(&log).len() < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines = log_lines(&log);
    assert!(
        lines.contains(&("stdout".into(), "F".into(), "out".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "F".into(), "err".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stdout".into(), "F".into(), format!("flow-{handler}"))),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stdout".into(), "F".into(), "yes".into())),
        "{lines:?}"
    );

    // Listing with filters.
    let list = |f: ContainerFilter| {
        let mut c = c.clone();
        async move {
            c.runtime
                .list_containers(ListContainersRequest { filter: Some(f) })
                .await
                .unwrap()
                .into_inner()
                .containers
        }
    };
    assert_eq!(
        list(ContainerFilter {
            pod_sandbox_id: pod.clone(),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert_eq!(
        list(ContainerFilter {
            label_selector: [("container".to_string(), "app".to_string())].into(),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert_eq!(
        list(ContainerFilter {
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerExited as i32
            }),
            ..Default::default()
        })
        .await
        .len(),
        0
    );

    // Stop: sleep as pid 1 ignores SIGTERM, so the timeout expires and
    // SIGKILL follows.
    let t0 = std::time::Instant::now();
    stop(&mut c, &id, 1).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    let s = status(&mut c, &id).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32);
    assert_eq!(s.exit_code, 137);
    assert_eq!(s.reason, "Error");
    // Idempotent.
    stop(&mut c, &id, 0).await;

    c.runtime
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    c.runtime
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    let e = c
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    let st = c
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    remove_pod(&mut c, &pod).await;
    remove_pod(&mut c, &pod).await;
    assert!(
        mounts_under(env.daemon.dir()).is_empty(),
        "{:?}",
        mounts_under(env.daemon.dir())
    );
    let rt_root = env.daemon.runroot.join("runtimes").join(handler);
    assert!(runtime_list(handler, &rt_root).is_empty());
}

#[tokio::test]
async fn kubelet_flow_runc() {
    kubelet_flow("runc").await;
}

#[tokio::test]
async fn kubelet_flow_crun() {
    kubelet_flow("crun").await;
}

/// shareProcessNamespace: the pod's containers see each other's processes,
/// with crius's pause process as pid 1; stopping the pod ends it all.
#[tokio::test]
async fn shared_pid_namespace() {
    let env = env("").await;
    let mut c = env.client().await;
    let pc = with_pid_mode(pod_config("sharepid", &env.logs), NamespaceMode::Pod);
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let mut ids = Vec::new();
    for (name, cmd) in [("a", "sleep 301"), ("b", "sleep 302")] {
        let mut cc = container_config(name, &env.image, &["sh", "-c", &format!("exec {cmd}")]);
        cc.linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .namespace_options
            .as_mut()
            .unwrap()
            .pid = NamespaceMode::Pod as i32;
        let id = create(&mut c, &pod, &pc, cc).await.unwrap();
        start(&mut c, &id).await;
        ids.push(id);
    }
    let ps = exec(&mut c, &ids[1], &["ps", "-o", "pid,args"]).await;
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(ps.contains("sleep 301") && ps.contains("sleep 302"), "{ps}");
    assert!(
        ps.lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("crius-monitor")),
        "pause is pid 1: {ps}"
    );
    let info = c
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
        .info;
    let v: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    let pause = v["pausePid"].as_i64().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pause}")).exists());
    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pause}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "pause still running: {stat}"
    );
    remove_pod(&mut c, &pod).await;
    assert!(mounts_under(env.daemon.dir()).is_empty());
}

/// hostNetwork: the node's network namespace and hostname.
#[tokio::test]
async fn host_network_pod() {
    let env = env("").await;
    let mut c = env.client().await;
    let mut pc = pod_config("hostnet", &env.logs);
    pc.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap()
        .network = NamespaceMode::Node as i32;
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let mut cc = container_config("app", &env.image, &["sleep", "300"]);
    cc.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap()
        .network = NamespaceMode::Node as i32;
    let id = create(&mut c, &pod, &pc, cc).await.unwrap();
    start(&mut c, &id).await;
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let out = exec(&mut c, &id, &["hostname"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), host);
    let net = exec(&mut c, &id, &["readlink", "/proc/self/ns/net"]).await;
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&net.stdout).trim(),
        own.to_string_lossy()
    );
    // StopPodSandbox is graceful: a container that exits on SIGTERM does.
    let graceful = created(
        &mut c,
        &pod,
        &pc,
        ("graceful", &env.image),
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 0.1; done",
        ],
    )
    .await;
    start(&mut c, &graceful).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    assert_eq!(status(&mut c, &graceful).await.exit_code, 0);
    assert_eq!(status(&mut c, &id).await.exit_code, 137);
    remove_pod(&mut c, &pod).await;
    assert!(mounts_under(env.daemon.dir()).is_empty());
}

/// Namespace sets in the daemon's pool: network namespaces it holds open.
fn pool_sets(env: &Env) -> usize {
    let pid = env.daemon.pid().unwrap();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("net:["))
                })
                .count()
        })
        .unwrap_or(0)
}

async fn wait_pool(env: &Env, sets: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pool_sets(env) != sets {
        assert!(
            std::time::Instant::now() < deadline,
            "namespace pool holds {} sets, not {sets}",
            pool_sets(env)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The namespace pool (4 sets by default, held open, never mounted until
/// claimed): pods take fresh, distinct network namespaces from it with
/// their own hostname, it refills, and a restart after kill -9 starts a
/// new pool while the pods keep theirs.
#[tokio::test]
async fn namespace_pool_hands_out_fresh_namespaces() {
    let mut env = env("").await;
    wait_pool(&env, 4).await;
    assert!(
        mounts_under(&env.daemon.runroot).is_empty(),
        "the pool mounts nothing"
    );
    let mut c = env.client().await;
    let mut nets = Vec::new();
    for name in ["pool-a", "pool-b"] {
        let pod = run_pod(&mut c, pod_config(name, &env.logs), "").await;
        let ns_dir = env.daemon.runroot.join("pods").join(&pod).join("ns");
        let net = ns_dir.join("net");
        assert!(
            crius_sandbox::ns::is_pinned(&net),
            "{name}: no pinned netns"
        );
        nets.push(std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(&net).unwrap(),
        ));
        let hostname = std::process::Command::new("nsenter")
            .arg(format!("--uts={}", ns_dir.join("uts").display()))
            .args(["cat", "/proc/sys/kernel/hostname"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&hostname.stdout).trim(), name);
    }
    assert_ne!(nets[0], nets[1]);
    // Refilled to four sets again, off the RPCs' path.
    wait_pool(&env, 4).await;
    let log = env.daemon.log();
    assert!(!log.contains("filling the namespace pool"), "{log}");

    env.daemon.kill().unwrap();
    env.daemon.start().await.unwrap();
    wait_pool(&env, 4).await;
    let mut c = env.client().await;
    let pods = list_pods(&mut c).await;
    assert_eq!(pods.len(), 2, "pods survive the restart");
    for p in &pods {
        let net = env.daemon.runroot.join("pods").join(&p.id).join("ns/net");
        assert!(crius_sandbox::ns::is_pinned(&net), "{}: netns kept", p.id);
    }
    for p in pods {
        remove_pod(&mut c, &p.id).await;
    }
    env.daemon.stop().await.unwrap();
}

/// The verbose PodSandboxStatus's `info` JSON.
async fn pod_info(c: &mut crius_test_support::CriClient, pod: &str) -> serde_json::Value {
    let r = c
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    serde_json::from_str(&r.info["info"]).unwrap()
}

#[tokio::test]
async fn update_pod_sandbox_resources_is_checked_recorded_and_kept() {
    let mut env = env("").await;
    let mut c = env.client().await;
    let pc = pod_config("resize", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "").await;
    let update =
        |overhead: Option<LinuxContainerResources>, resources| UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: pod.clone(),
            overhead,
            resources,
        };
    let resources = LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 150_000,
        cpu_shares: 1536,
        memory_limit_in_bytes: 256 << 20,
        ..Default::default()
    };
    let overhead = LinuxContainerResources {
        cpu_shares: 10,
        memory_limit_in_bytes: 8 << 20,
        ..Default::default()
    };

    // Bad input names the field and changes nothing.
    let e = c
        .runtime
        .update_pod_sandbox_resources(update(
            None,
            Some(LinuxContainerResources {
                memory_limit_in_bytes: -5,
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("resources"), "{}", e.message());
    assert!(pod_info(&mut c, &pod).await["resources"]["resources"].is_null());
    let e = c
        .runtime
        .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "0123456789abcdef".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    c.runtime
        .update_pod_sandbox_resources(update(Some(overhead), Some(resources.clone())))
        .await
        .unwrap();
    let check = |info: &serde_json::Value| {
        let r = &info["resources"];
        assert_eq!(r["resources"]["cpu"]["quota"], 150_000, "{r}");
        assert_eq!(r["resources"]["cpu"]["shares"], 1536, "{r}");
        assert_eq!(r["resources"]["memory"]["limit"], 256 << 20, "{r}");
        assert_eq!(r["overhead"]["memory"]["limit"], 8 << 20, "{r}");
    };
    check(&pod_info(&mut c, &pod).await);
    // Only the resources given change: the overhead stays.
    c.runtime
        .update_pod_sandbox_resources(update(None, Some(resources)))
        .await
        .unwrap();
    check(&pod_info(&mut c, &pod).await);

    // Kept across a daemon killed and restarted.
    env.daemon.kill().unwrap();
    env.daemon.start().await.unwrap();
    let mut c = env.client().await;
    check(&pod_info(&mut c, &pod).await);

    // A stopped pod is not resized.
    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    let e = c
        .runtime
        .update_pod_sandbox_resources(update(None, Some(LinuxContainerResources::default())))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    remove_pod(&mut c, &pod).await;
}
