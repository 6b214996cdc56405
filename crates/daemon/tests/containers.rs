//! Container behaviour kubelet relies on, through the real socket: exit
//! codes, OOMKilled, termination messages, users, read-only rootfs, host
//! path propagation, env/args rules, duplicate names, ExecSync timeouts,
//! log reopening, resource updates, bad input.

mod common;
use common::*;
use crius_test_support::cri::*;
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

    let ok = create(
        &mut c,
        &pod,
        &pc,
        container_config("ok", &env.image, &["true"]),
    )
    .await
    .unwrap();
    start(&mut c, &ok).await;
    let s = wait_exited(&mut c, &ok, Duration::from_secs(10)).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));
    c.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}
