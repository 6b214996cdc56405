//! ExecSync's processes belong to crius until they are reaped: a timed-out
//! or cancelled exec has its whole process tree killed and reaped, for
//! runc and crun, in a container's own PID namespace and in the pod's
//! shared one; nothing is left as a zombie in the container or under the
//! host's init, and the exec's scratch files go with it.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use crius_test_support::cri::*;
use crius_test_support::CriClient;
use std::time::{Duration, Instant};
use tonic::Code;

/// The `comm` of every process in the container, zombies included.
async fn processes_in(c: &mut CriClient, id: &str) -> Vec<String> {
    let out = exec(
        c,
        id,
        &[
            "sh",
            "-c",
            "for p in /proc/[0-9]*; do cat $p/comm 2>/dev/null; done",
        ],
    )
    .await;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Host processes named `comm` that are zombies whose parent is pid 1.
fn host_zombies_under_init(comm: &str) -> Vec<(i32, String)> {
    crius_test_support::procs::zombies_of(1, &[comm])
}

/// Waits until the container runs no `sleep`; the processes it still has.
async fn wait_no_sleep(c: &mut CriClient, id: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ps = processes_in(c, id).await;
        if !ps.iter().any(|p| p == "sleep") || Instant::now() > deadline {
            return ps;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn exec_trees_are_reaped(handler: &str, pid: NamespaceMode) {
    let env = env("").await;
    let mut c = env.client().await;
    let name = format!("exec-{handler}-{}", pid as i32);
    let pc = with_pid_mode(pod_config(&name, &env.logs), pid);
    let pod = run_pod(&mut c, pc.clone(), handler).await;
    // An init that reaps what is re-parented to it (as a real one does):
    // crius cannot reap inside a container's own PID namespace.
    let mut cc = container_config("x", &env.image, &["sh", "-c", "tail -f /dev/null & wait"]);
    security_context(&mut cc)
        .namespace_options
        .get_or_insert_with(Default::default)
        .pid = pid as i32;
    let id = create(&mut c, &pod, &pc, cc).await.unwrap();
    start(&mut c, &id).await;
    let scratch = env.daemon.root.join("containers").join(&id).join("exec");

    // A timed-out exec: DEADLINE_EXCEEDED only once the tree is gone.
    let t = Instant::now();
    let e = c
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: ["sh", "-c", "sleep 100 & sleep 200"]
                .map(String::from)
                .to_vec(),
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let ps = processes_in(&mut c, &id).await;
    assert!(!ps.iter().any(|p| p == "sleep"), "{handler}: {ps:?}");
    assert!(host_zombies_under_init("sleep").is_empty());
    // critest's own: one process, a zombie of nobody's before.
    let e = c
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: ["sleep", "4321"].map(String::from).to_vec(),
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    let ps = processes_in(&mut c, &id).await;
    assert!(!ps.iter().any(|p| p == "sleep"), "{handler}: {ps:?}");

    // A client that gives up: the exec is stopped all the same.
    let mut c2 = c.clone();
    let req = ExecSyncRequest {
        container_id: id.clone(),
        cmd: ["sh", "-c", "sleep 300 & sleep 400"]
            .map(String::from)
            .to_vec(),
        timeout: 0,
    };
    let r = tokio::time::timeout(Duration::from_millis(1500), c2.runtime.exec_sync(req)).await;
    assert!(r.is_err(), "the exec should still run: {r:?}");
    let ps = wait_no_sleep(&mut c, &id).await;
    assert!(
        !ps.iter().any(|p| p == "sleep"),
        "{handler} cancelled: {ps:?}"
    );
    assert!(host_zombies_under_init("sleep").is_empty());
    // No exec scratch file outlives its exec.
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // An exec that ends on its own still answers with its code and output.
    let out = exec(&mut c, &id, &["sh", "-c", "echo out; exit 4"]).await;
    assert_eq!((out.exit_code, out.stdout.as_slice()), (4, &b"out\n"[..]));
    remove_pod(&mut c, &pod).await;
    // Nothing of the container is left where its files were.
    assert!(!scratch.exists());
}

#[tokio::test]
async fn exec_trees_are_reaped_runc_own_pid_namespace() {
    exec_trees_are_reaped("runc", NamespaceMode::Container).await;
}

#[tokio::test]
async fn exec_trees_are_reaped_runc_pod_pid_namespace() {
    exec_trees_are_reaped("runc", NamespaceMode::Pod).await;
}

#[tokio::test]
async fn exec_trees_are_reaped_crun_own_pid_namespace() {
    exec_trees_are_reaped("crun", NamespaceMode::Container).await;
}

#[tokio::test]
async fn exec_trees_are_reaped_crun_pod_pid_namespace() {
    exec_trees_are_reaped("crun", NamespaceMode::Pod).await;
}
