//! The flows kubelet uses, through the real socket with the real runc and
//! crun: pod → pull → create → start → exec → logs → stop → remove.

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
    c.runtime
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await
        .unwrap();
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
    c.runtime
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();

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
    c.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    c.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
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
