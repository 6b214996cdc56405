//! Shared set-up of the pod and container tests: a registry with a busybox
//! image, a daemon with that image pulled, and CRI config builders.
#![allow(dead_code)]

use crius_test_support::cri::*;
use crius_test_support::{CriClient, Daemon, ImageBuilder, Registry};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_crius");

pub struct Env {
    pub registry: Registry,
    pub daemon: Daemon,
    pub image: String,
    pub logs: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Env {
    pub async fn client(&self) -> CriClient {
        self.daemon.client().await.unwrap()
    }
}

/// A registry, a busybox image pushed to it (with a stop signal and a
/// non-root user available), a daemon (extra TOML appended) that pulled it.
pub async fn env(extra_toml: &str) -> Env {
    env_with(extra_toml, &[]).await
}

/// `env` with extra environment variables for the daemon.
pub async fn env_with(extra_toml: &str, vars: &[(&str, &str)]) -> Env {
    crius_test_support::require_root();
    let registry = Registry::start().await.unwrap();
    let image = ImageBuilder::busybox()
        .unwrap()
        .env("FROM_IMAGE", "yes")
        .cmd(&["sh", "-c", "echo image-cmd"])
        .build()
        .unwrap();
    let reference = registry.reference("busybox:pods");
    image.push(&registry, "busybox:pods").await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("registries.conf"), "").unwrap();
    let toml = format!(
        "registries_conf = \"{}/registries.conf\"\nauth_file = \"{}/none.json\"\ncgroup_parent = \"/crius-test\"\nstop_pod_grace_seconds = 1\n{extra_toml}",
        tmp.path().display(),
        tmp.path().display()
    );
    let mut builder = Daemon::builder(BIN).config_toml(toml);
    for (k, v) in vars {
        builder = builder.env(*k, *v);
    }
    let daemon = builder.start().await.unwrap();
    let mut c = daemon.client().await.unwrap();
    c.image
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: reference.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let logs = tmp.path().join("logs");
    Env {
        registry,
        daemon,
        image: reference,
        logs,
        _tmp: tmp,
    }
}

pub fn pod_config(name: &str, logs: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: logs.join(name).display().to_string(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        annotations: HashMap::from([("note".to_string(), "pod".to_string())]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: "/crius-test".into(),
            // What kubelet sends for a pod without shareProcessNamespace.
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container config's security context (container_config has one).
pub fn security_context(cc: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    cc.linux
        .as_mut()
        .unwrap()
        .security_context
        .get_or_insert_with(Default::default)
}

/// A pod config's namespace options (pod_config has them).
pub fn pod_namespaces(pc: &mut PodSandboxConfig) -> &mut NamespaceOption {
    pc.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .get_or_insert_with(Default::default)
}

/// The pod config with its PID namespace mode set.
pub fn with_pid_mode(mut pc: PodSandboxConfig, mode: NamespaceMode) -> PodSandboxConfig {
    pc.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap()
        .pid = mode as i32;
    pc
}

pub fn container_config(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("container".to_string(), name.to_string())]),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                // The pod's network/IPC namespaces, as kubelet sends them.
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container the OOM killer kills: a shell variable grows until the
/// 32 MiB limit (swap included) is reached.
pub fn memory_hog(name: &str, image: &str) -> ContainerConfig {
    let mut cc = container_config(
        name,
        image,
        &["sh", "-c", "x=0123456789; while true; do x=$x$x; done"],
    );
    if let Some(l) = cc.linux.as_mut() {
        l.resources = Some(LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            memory_swap_limit_in_bytes: 32 << 20,
            ..Default::default()
        });
    }
    cc
}

pub async fn run_pod(c: &mut CriClient, config: PodSandboxConfig, handler: &str) -> String {
    c.runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: handler.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id
}

/// CreateContainer of `command` from `image` named `name`; must succeed.
pub async fn created(
    c: &mut CriClient,
    pod: &str,
    pod_config: &PodSandboxConfig,
    (name, image): (&str, &str),
    command: &[&str],
) -> String {
    create(c, pod, pod_config, container_config(name, image, command))
        .await
        .unwrap()
}

pub async fn create(
    c: &mut CriClient,
    pod: &str,
    pod_config: &PodSandboxConfig,
    config: ContainerConfig,
) -> Result<String, tonic::Status> {
    c.runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .map(|r| r.into_inner().container_id)
}

pub async fn remove_pod(c: &mut CriClient, pod: &str) {
    c.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .unwrap();
}

pub async fn start(c: &mut CriClient, id: &str) {
    try_start(c, id).await.unwrap();
}

/// StartContainer, its answer as is.
pub async fn try_start(c: &mut CriClient, id: &str) -> Result<(), tonic::Status> {
    c.runtime
        .start_container(StartContainerRequest {
            container_id: id.into(),
        })
        .await
        .map(drop)
}

/// StopContainer with `timeout` seconds before SIGKILL; must succeed.
pub async fn stop(c: &mut CriClient, id: &str, timeout: i64) {
    c.runtime
        .stop_container(StopContainerRequest {
            container_id: id.into(),
            timeout,
        })
        .await
        .unwrap();
}

pub async fn status(c: &mut CriClient, id: &str) -> ContainerStatus {
    c.runtime
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
}

/// Waits until the container has exited; its status.
pub async fn wait_exited(c: &mut CriClient, id: &str, timeout: Duration) -> ContainerStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(c, id).await;
        if s.state == ContainerState::ContainerExited as i32 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} did not exit: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn exec(c: &mut CriClient, id: &str, cmd: &[&str]) -> ExecSyncResponse {
    c.runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner()
}

/// The lines of a CRI log file: (stream, tag, text).
pub fn log_lines(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(4, ' ');
            let _ts = it.next()?;
            Some((
                it.next()?.to_string(),
                it.next()?.to_string(),
                it.next().unwrap_or("").to_string(),
            ))
        })
        .collect()
}

/// Mounts under `dir` in this process's mount table.
/// Mounts at or under `dir`, except the daemon's namespace pool (fresh
/// namespaces no pod has used are not a leak).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&d))
        .map(str::to_string)
        .collect()
}

/// Containers the runtime still knows about under the daemon's runroot.
pub fn runtime_list(runtime: &str, root: &Path) -> Vec<String> {
    let out = std::process::Command::new(runtime)
        .arg("--root")
        .arg(root)
        .args(["list", "-q"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

impl Drop for Env {
    /// Whatever a failed test left behind: containers the runtimes still
    /// run under this daemon's state, and mounts under its directories.
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        for rt in ["runc", "crun"] {
            let root = self.daemon.runroot.join("runtimes").join(rt);
            for id in runtime_list(rt, &root) {
                let _ = std::process::Command::new(rt)
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", &id])
                    .output();
            }
        }
        crius_test_support::daemon::unmount_all_under(self.daemon.dir());
    }
}

/// A runtime wrapper around runc that hangs (once) in `subcommand`, after
/// touching `<dir>/in-<subcommand>`; later calls go straight to runc.
pub fn slow_runtime(dir: &Path, subcommand: &str) -> PathBuf {
    let marker = dir.join(format!("in-{subcommand}"));
    wrapper_runtime(
        &dir.join(format!("slow-{subcommand}")),
        &format!(
            "for a in \"$@\"; do if [ \"$a\" = {subcommand} ] && [ ! -e {m} ]; then touch {m}; exec sleep 600; fi; done",
            m = marker.display()
        ),
    )
}

/// A runtime at `path` that runs the shell `script` and then execs runc
/// with its arguments.
pub fn wrapper_runtime(path: &Path, script: &str) -> PathBuf {
    std::fs::write(path, format!("#!/bin/sh\n{script}\nexec runc \"$@\"\n")).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

/// UpdateContainerResources with a memory limit and CPU shares; must
/// succeed.
pub async fn update_resources(c: &mut CriClient, id: &str, memory: i64, cpu_shares: i64) {
    c.runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: memory,
                cpu_shares,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// The memory limit and CPU shares in force in the v1 cgroup `cg`.
pub fn cgroup_memory_and_shares(cg: &str) -> (String, String) {
    let read = |f: String| std::fs::read_to_string(&f).unwrap().trim().to_string();
    (
        read(format!("/sys/fs/cgroup/memory{cg}/memory.limit_in_bytes")),
        read(format!("/sys/fs/cgroup/cpu{cg}/cpu.shares")),
    )
}

/// Waits until `path` exists.
pub async fn wait_for(path: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kills the leftover `sleep 600` of a slow runtime wrapper.
pub fn kill_wrappers() {
    let _ = std::process::Command::new("pkill")
        .args(["-f", "^sleep 600$"])
        .status();
}

/// PullImage of `image` (anonymous).
pub async fn pull(c: &mut CriClient, image: &str) {
    c.image
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Pulls `image` and returns what PullImage answered (the image id).
pub async fn pull_ref(c: &mut CriClient, image: &str) -> String {
    try_pull(c, image).await.unwrap()
}

/// PullImage of `image`, its answer as is.
pub async fn try_pull(c: &mut CriClient, image: &str) -> Result<String, tonic::Status> {
    c.image
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

/// Every container the daemon lists.
pub async fn list_all(c: &mut CriClient) -> Vec<Container> {
    c.runtime
        .list_containers(ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers
}

/// Every pod sandbox, unfiltered.
pub async fn list_pods(c: &mut CriClient) -> Vec<PodSandbox> {
    c.runtime
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items
}

/// ContainerStatus's verbose `info`, parsed.
pub async fn verbose_info(c: &mut CriClient, id: &str) -> serde_json::Value {
    let info = c
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
        .info;
    serde_json::from_str(&info["info"]).unwrap()
}
