//! What critest and crictl expect of a CRI runtime that crius's own
//! clients did not check (issue 13), and hostile request fields (names,
//! durations) refused or clamped before they reach a path or a deadline.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use crius_test_support::cri::*;
use std::time::{Duration, Instant};
use tonic::Code;

/// A pod that names no hostname gets the node's, however long its name (critest's
/// pod names are ~66 characters, longer than sethostname(2) takes); a
/// hostname over 64 bytes is refused naming the field, and nothing is made.
#[tokio::test]
async fn pods_without_a_hostname_get_the_nodes() {
    let env = env("").await;
    let mut c = env.client().await;
    let name = format!("podsandbox-for-hostname-{}", "x".repeat(48));
    assert!(name.len() > 64);
    let mut pc = pod_config(&name, &env.logs);
    pc.hostname.clear();
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let id = created(&mut c, &pod, &pc, ("h", &env.image), &["sleep", "300"]).await;
    start(&mut c, &id).await;
    let out = exec(&mut c, &id, &["hostname"]).await;
    let node = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), node);
    remove_pod(&mut c, &pod).await;

    let mut pc = pod_config("long-host", &env.logs);
    pc.hostname = "h".repeat(65);
    let e = c
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc),
            runtime_handler: "runc".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("config.hostname"),
        "{}",
        e.message()
    );
    assert!(list_pods(&mut c).await.is_empty());
}

/// ContainerStatus.user lists the groups the process really has, the
/// primary one included, as `id -G` prints them.
#[tokio::test]
async fn status_user_lists_the_primary_group_too() {
    let env = env("").await;
    let mut c = env.client().await;
    let pc = pod_config("groups", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let mut cc = container_config("g", &env.image, &["sleep", "300"]);
    let sc = security_context(&mut cc);
    sc.run_as_user = Some(Int64Value { value: 1000 });
    sc.supplemental_groups = vec![1234];
    let id = create(&mut c, &pod, &pc, cc.clone()).await.unwrap();
    start(&mut c, &id).await;
    let user = status(&mut c, &id).await.user.unwrap().linux.unwrap();
    let mut groups = user.supplemental_groups.clone();
    groups.sort();
    // crius-user (1000:1000) is a member of `users` (100) in the image.
    assert_eq!(
        (user.uid, user.gid, groups),
        (1000, 1000, vec![100, 1000, 1234])
    );
    let out = exec(&mut c, &id, &["id", "-G"]).await;
    let mut real: Vec<i64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    real.sort();
    real.dedup();
    assert_eq!(real, vec![100, 1000, 1234], "what the process has");

    // A group without a user is refused, naming the field.
    let sc = security_context(&mut cc);
    sc.run_as_user = None;
    sc.run_as_group = Some(Int64Value { value: 1234 });
    cc.metadata.as_mut().unwrap().name = "group-only".into();
    let e = create(&mut c, &pod, &pc, cc).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("run_as_group"), "{}", e.message());
    assert_eq!(list_all(&mut c).await.len(), 1);
    remove_pod(&mut c, &pod).await;
}

/// Stop* is idempotent: StopContainer of an id nobody knows succeeds.
#[tokio::test]
async fn stopping_an_unknown_container_succeeds() {
    let env = env("").await;
    let mut c = env.client().await;
    c.runtime
        .stop_container(StopContainerRequest {
            container_id: "0123456789abcdef".into(),
            timeout: 1,
        })
        .await
        .unwrap();
    // Status of it is still NOT_FOUND: only the stop is idempotent.
    let e = c
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: "0123456789abcdef".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

/// Status(verbose)'s info keys never collide with the keys crictl renders
/// itself (`crictl info` would show a string where the handler list
/// belongs), and every value is a JSON object.
#[tokio::test]
async fn verbose_status_info_leaves_crictls_keys_alone() {
    let env = env("").await;
    let mut c = env.client().await;
    let s = c
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    for k in ["status", "runtimeHandlers", "features"] {
        assert!(!s.info.contains_key(k), "info has {k}");
    }
    assert!(!s.info.is_empty());
    for (k, v) in &s.info {
        let parsed: serde_json::Value = serde_json::from_str(v).unwrap();
        assert!(parsed.is_object() && v.starts_with('{'), "{k}: {v}");
    }
    assert!(!s.runtime_handlers.is_empty());
}

/// Names become log file names and reservation keys: one that climbs, or
/// holds "/" or NUL, or is too long, is refused naming the field, and
/// nothing is written outside the pod's log directory.
#[tokio::test]
async fn hostile_names_are_refused() {
    let env = env("").await;
    let mut c = env.client().await;
    let canary = tempfile::tempdir().unwrap();
    let pc = pod_config("names", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let escape = format!("../../../../../../../..{}/y", canary.path().display());
    for (name, why) in [
        (escape.as_str(), "\"/\""),
        ("..", "\"..\""),
        ("a/b", "\"/\""),
        ("a\0b", "NUL"),
        (&"n".repeat(254) as &str, "longer than 253"),
    ] {
        let mut cc = container_config(name, &env.image, &["echo", "escaped"]);
        cc.log_path.clear();
        let e = create(&mut c, &pod, &pc, cc).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name:?}");
        assert!(
            e.message().starts_with("config.metadata.name") && e.message().contains(why),
            "{name:?}: {}",
            e.message()
        );
    }
    assert!(list_all(&mut c).await.is_empty());
    assert_eq!(std::fs::read_dir(canary.path()).unwrap().count(), 0);
    // Pods too: name, namespace.
    for (field, f) in [
        (
            "name",
            (|m: &mut PodSandboxMetadata| m.name = "../x".into()) as fn(&mut PodSandboxMetadata),
        ),
        ("namespace", |m: &mut PodSandboxMetadata| {
            m.namespace = "a/b".into()
        }),
        ("uid", |m: &mut PodSandboxMetadata| m.uid = "u\0".into()),
    ] {
        let mut pc = pod_config("hostile-pod", &env.logs);
        f(pc.metadata.as_mut().unwrap());
        let e = c
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pc),
                runtime_handler: "runc".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}");
        assert!(
            e.message().starts_with(&format!("config.metadata.{field}")),
            "{field}: {}",
            e.message()
        );
    }
    assert_eq!(list_pods(&mut c).await.len(), 1);
    remove_pod(&mut c, &pod).await;
}

/// Durations near i64::MAX neither overflow a deadline nor kill the RPC:
/// StopContainer still stops, ExecSync still answers.
#[tokio::test]
async fn huge_durations_are_clamped() {
    let env = env("").await;
    let mut c = env.client().await;
    let pc = pod_config("durations", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let id = created(
        &mut c,
        &pod,
        &pc,
        ("d", &env.image),
        &[
            "sh",
            "-c",
            "trap 'exit 3' TERM; while :; do sleep 0.1; done",
        ],
    )
    .await;
    start(&mut c, &id).await;
    let out = c
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["echo".into(), "ok".into()],
            timeout: i64::MAX,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.stdout, b"ok\n");
    let t = Instant::now();
    for timeout in [i64::MAX, i64::MAX - 1, i64::MIN] {
        c.runtime
            .stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout,
            })
            .await
            .unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(30));
    let s = status(&mut c, &id).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32);
    assert_eq!(s.exit_code, 3, "stopped by its stop signal: {s:?}");
    remove_pod(&mut c, &pod).await;
}

/// A container that asks for the pod's namespaces (as critest's host
/// network containers do, sending no namespace options) in a pod on the
/// host's network and IPC gets the host's, not fresh ones.
#[tokio::test]
async fn pod_mode_in_a_host_network_pod_is_the_hosts() {
    let env = env("").await;
    let mut c = env.client().await;
    let mut pc = pod_config("hostnet", &env.logs);
    let ns = pod_namespaces(&mut pc);
    ns.network = NamespaceMode::Node as i32;
    ns.ipc = NamespaceMode::Node as i32;
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let mut cc = container_config("web", &env.image, &["sleep", "300"]);
    cc.linux.as_mut().unwrap().security_context = None;
    let id = create(&mut c, &pod, &pc, cc).await.unwrap();
    start(&mut c, &id).await;
    for kind in ["net", "ipc"] {
        let out = exec(&mut c, &id, &["readlink", &format!("/proc/self/ns/{kind}")]).await;
        let host = std::fs::read_link(format!("/proc/self/ns/{kind}")).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            host.display().to_string(),
            "{kind}"
        );
    }
    remove_pod(&mut c, &pod).await;
}
