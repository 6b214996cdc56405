//! The standing adversarial suite for request fields: a careless or hostile
//! client's ids, names, paths, environment, arguments, labels and sizes.
//! Each is refused with a clear error naming what was refused (never
//! INTERNAL, never a dead daemon), and changes nothing.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use crius_test_support::cri::*;
use std::collections::HashMap;
use tonic::Code;

fn refused_cleanly(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::ResourceExhausted
    )
}

#[tokio::test]
async fn hostile_container_configs_are_refused() {
    let env = env("").await;
    let mut c = env.client().await;
    let pc = pod_config("requests", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let base = || container_config("c", &env.image, &["sleep", "300"]);
    type Mutate = Box<dyn Fn(&mut ContainerConfig)>;
    let cases: Vec<(&str, Mutate, &str)> = vec![
        (
            "NUL in an argument",
            Box::new(|c| c.command = vec!["sh".into(), "a\0b".into()]),
            "command[1]",
        ),
        (
            "NUL in args",
            Box::new(|c| c.args = vec!["a\0".into()]),
            "args[0]",
        ),
        (
            "NUL in an env key",
            Box::new(|c| {
                c.envs = vec![KeyValue {
                    key: "A\0B".into(),
                    value: b"x".to_vec(),
                }]
            }),
            "envs[0]",
        ),
        (
            "= in an env key",
            Box::new(|c| {
                c.envs = vec![KeyValue {
                    key: "A=B".into(),
                    value: b"x".to_vec(),
                }]
            }),
            "envs[0]",
        ),
        (
            "relative working_dir",
            Box::new(|c| c.working_dir = "tmp".into()),
            "working_dir",
        ),
        (
            "NUL in working_dir",
            Box::new(|c| c.working_dir = "/tmp\0".into()),
            "working_dir",
        ),
        (
            "absolute log_path",
            Box::new(|c| c.log_path = "/etc/passwd".into()),
            "log_path",
        ),
        (
            "climbing log_path",
            Box::new(|c| c.log_path = "../../x.log".into()),
            "log_path",
        ),
        (
            "NUL in log_path",
            Box::new(|c| c.log_path = "x\0.log".into()),
            "log_path",
        ),
        (
            "relative container_path",
            Box::new(|c| {
                c.mounts = vec![Mount {
                    container_path: "etc/x".into(),
                    host_path: "/tmp".into(),
                    ..Default::default()
                }]
            }),
            "container_path",
        ),
        (
            "empty container_path",
            Box::new(|c| {
                c.mounts = vec![Mount {
                    host_path: "/tmp".into(),
                    ..Default::default()
                }]
            }),
            "container_path",
        ),
        (
            "a device that is a regular file",
            Box::new(|c| {
                c.devices = vec![Device {
                    container_path: "/dev/x".into(),
                    host_path: "/etc/shadow".into(),
                    permissions: "rwm".into(),
                }]
            }),
            "devices[0]",
        ),
        (
            "NUL in a label",
            Box::new(|c| {
                c.labels = HashMap::from([("k\0".to_string(), "v".to_string())]);
            }),
            "labels",
        ),
        (
            "NUL in an annotation",
            Box::new(|c| {
                c.annotations = HashMap::from([("k".to_string(), "v\0".to_string())]);
            }),
            "annotations",
        ),
        (
            "a hostile sysctl",
            Box::new(|c| {
                c.linux.as_mut().unwrap().security_context = None;
                c.command = vec!["true".into()];
                c.metadata.as_mut().unwrap().attempt = 7;
                c.linux.as_mut().unwrap().resources = Some(LinuxContainerResources {
                    memory_limit_in_bytes: -5,
                    ..Default::default()
                });
            }),
            "memory_limit_in_bytes",
        ),
    ];
    for (what, f, needle) in cases {
        let mut cc = base();
        f(&mut cc);
        let e = create(&mut c, &pod, &pc, cc).await.unwrap_err();
        assert!(
            refused_cleanly(e.code()),
            "{what}: {:?} {}",
            e.code(),
            e.message()
        );
        assert!(e.message().contains(needle), "{what}: {}", e.message());
        assert!(
            list_all(&mut c).await.is_empty(),
            "{what}: a container was made"
        );
    }
    // At the limit of what a CRI client may send (kubelet's 16 MiB), a
    // request is served or refused, and the daemon lives on.
    let mut cc = base();
    cc.labels = (0..3000)
        .map(|i| (format!("label-{i}"), "v".repeat(1000)))
        .collect();
    match create(&mut c, &pod, &pc, cc).await {
        Ok(id) => {
            assert_eq!(status(&mut c, &id).await.labels.len(), 3000);
        }
        Err(e) => assert!(refused_cleanly(e.code()), "{e:?}"),
    }
    c.runtime.version(VersionRequest::default()).await.unwrap();
    remove_pod(&mut c, &pod).await;
}

#[tokio::test]
async fn hostile_ids_and_exec_commands_are_refused() {
    let env = env("").await;
    let mut c = env.client().await;
    for id in ["", "../../../etc", "a\0b", &"f".repeat(10_000), "/", "*"] {
        let e = c
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .unwrap_err();
        assert!(refused_cleanly(e.code()), "{id:?}: {e:?}");
        let e = c
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            })
            .await
            .unwrap_err();
        assert!(refused_cleanly(e.code()), "{id:?}: {e:?}");
        // Remove* and Stop* of what does not exist succeed (idempotent).
        c.runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(drop)
            .or_else(|e| {
                if refused_cleanly(e.code()) {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .unwrap();
    }
    let pc = pod_config("exec-requests", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let id = created(&mut c, &pod, &pc, ("c", &env.image), &["sleep", "300"]).await;
    start(&mut c, &id).await;
    for (cmd, needle) in [
        (vec![], "cmd"),
        (vec!["echo".to_string(), "a\0b".to_string()], "cmd[1]"),
    ] {
        let e = c
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: id.clone(),
                cmd,
                timeout: 5,
            })
            .await
            .unwrap_err();
        assert!(refused_cleanly(e.code()), "{e:?}");
        assert!(e.message().contains(needle), "{}", e.message());
    }
    // Output past the cap is cut, not buffered without end.
    let r = c
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: ["sh", "-c", "head -c 40000000 /dev/zero"]
                .map(String::from)
                .to_vec(),
            timeout: 30,
        })
        .await;
    match r {
        Ok(out) => assert!(out.into_inner().stdout.len() <= 16 << 20),
        Err(e) => assert!(refused_cleanly(e.code()), "{e:?}"),
    }
    c.runtime.version(VersionRequest::default()).await.unwrap();
    remove_pod(&mut c, &pod).await;
}
