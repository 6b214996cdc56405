//! `crius-bench`: times the CRI RPCs of a pod's life against any CRI
//! endpoint, so crius can be measured side by side with containerd or
//! CRI-O on the same machine, and samples the daemon's resident memory.
//!
//! Phases: (1) N pod lifecycles, P at a time: RunPodSandbox,
//! CreateContainer, StartContainer (and their sum, "pod+container to
//! running"), StopContainer, RemoveContainer, StopPodSandbox,
//! RemovePodSandbox; (2) ListContainers with K containers present;
//! (3) R pods with a running container started P at a time, errors counted,
//! memory sampled. Prints a table and a JSON summary.
#![allow(clippy::unwrap_used)]

use anyhow::{bail, Context, Result};
use clap::Parser;
use crius_bench::{rss_kib, table, Samples};
use crius_cri_api::v1::*;
use crius_cri_api::CriClient;
use std::time::Instant;

#[derive(Parser, Debug, Clone)]
#[command(name = "crius-bench", about = "Time CRI RPCs against a CRI endpoint")]
struct Args {
    /// CRI endpoint, `unix:///run/crius/crius.sock` or a socket path.
    #[arg(long, default_value = "unix:///run/crius/crius.sock")]
    endpoint: String,
    /// Image of the containers (pulled first if absent).
    #[arg(long)]
    image: String,
    /// Runtime handler (RuntimeClass handler; "" = the default).
    #[arg(long, default_value = "")]
    handler: String,
    /// Pod lifecycles to time.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Untimed lifecycles first (connection set-up, caches).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Lifecycles in flight at once.
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Containers present while ListContainers is timed (0: skip).
    #[arg(long, default_value_t = 0)]
    list_containers: usize,
    /// ListContainers calls timed.
    #[arg(long, default_value_t = 50)]
    list_iterations: usize,
    /// Pods with a running container started for the memory sample (0: skip).
    #[arg(long, default_value_t = 0)]
    running_pods: usize,
    /// The daemon's pid, to sample its memory (VmRSS).
    #[arg(long)]
    pid: Option<u32>,
    /// Seconds StopContainer waits before SIGKILL.
    #[arg(long, default_value_t = 0)]
    stop_timeout: i64,
    /// Parent cgroup for the pods (cgroupfs path; "" = the runtime's default).
    #[arg(long, default_value = "")]
    cgroup_parent: String,
    /// Directory for the containers' logs.
    #[arg(long, default_value = "/tmp/crius-bench-logs")]
    log_dir: String,
    /// Mount this image (or artifact) as an image volume at /vol in every
    /// container (pulled first if absent).
    #[arg(long)]
    image_volume: Option<String>,
    /// Also write the JSON summary here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn pod_config(a: &Args, name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("{name}-{}", std::process::id()),
            namespace: "crius-bench".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: format!("{}/{name}", a.log_dir),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: a.cgroup_parent.clone(),
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

fn container_config(a: &Args, name: &str, cmd: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: a.image.clone(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        mounts: a
            .image_volume
            .iter()
            .map(|r| Mount {
                container_path: "/vol".into(),
                image: Some(ImageSpec {
                    image: r.clone(),
                    ..Default::default()
                }),
                // Image volumes are read-only; kubelet always says so.
                readonly: true,
                ..Default::default()
            })
            .collect(),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
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

async fn timed<T, F: std::future::Future<Output = Result<T, tonic::Status>>>(
    s: &mut Samples,
    rpc: &str,
    f: F,
) -> Result<T> {
    let t = Instant::now();
    let r = f.await.with_context(|| rpc.to_string())?;
    s.add(rpc, t.elapsed());
    Ok(r)
}

/// Runs a pod with one container until it is running; returns the ids.
async fn start_pod(
    c: &mut CriClient,
    a: &Args,
    name: &str,
    cmd: &[&str],
    s: &mut Samples,
) -> Result<(String, String)> {
    let pc = pod_config(a, name);
    let t0 = Instant::now();
    let pod = timed(
        s,
        "RunPodSandbox",
        c.runtime.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: a.handler.clone(),
        }),
    )
    .await?
    .into_inner()
    .pod_sandbox_id;
    let ctr = timed(
        s,
        "CreateContainer",
        c.runtime.create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config(a, "app", cmd)),
            sandbox_config: Some(pc),
        }),
    )
    .await?
    .into_inner()
    .container_id;
    timed(
        s,
        "StartContainer",
        c.runtime.start_container(StartContainerRequest {
            container_id: ctr.clone(),
        }),
    )
    .await?;
    s.add("pod+container to running", t0.elapsed());
    Ok((pod, ctr))
}

async fn teardown(
    c: &mut CriClient,
    a: &Args,
    pod: &str,
    ctr: &str,
    s: &mut Samples,
) -> Result<()> {
    timed(
        s,
        "StopContainer",
        c.runtime.stop_container(StopContainerRequest {
            container_id: ctr.into(),
            timeout: a.stop_timeout,
        }),
    )
    .await?;
    timed(
        s,
        "RemoveContainer",
        c.runtime.remove_container(RemoveContainerRequest {
            container_id: ctr.into(),
        }),
    )
    .await?;
    timed(
        s,
        "StopPodSandbox",
        c.runtime.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        }),
    )
    .await?;
    timed(
        s,
        "RemovePodSandbox",
        c.runtime.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        }),
    )
    .await?;
    Ok(())
}

/// Runs `jobs` over `parallel` workers; each job gets its index.
async fn fan_out<F, Fut, T>(parallel: usize, jobs: usize, f: F) -> Vec<Result<T>>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<T>> + Send,
    T: Send + 'static,
{
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..parallel.max(1) {
        let (f, next) = (f.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= jobs {
                    break;
                }
                out.push(f(i).await);
            }
            out
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        match h.await {
            Ok(v) => all.extend(v),
            Err(e) => all.push(Err(anyhow::anyhow!("worker: {e}"))),
        }
    }
    all
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let path = a
        .endpoint
        .strip_prefix("unix://")
        .unwrap_or(&a.endpoint)
        .to_string();
    let mut c = CriClient::connect(&path)
        .await
        .with_context(|| format!("connecting to {}", a.endpoint))?;
    let v = c
        .runtime
        .version(VersionRequest::default())
        .await?
        .into_inner();
    eprintln!(
        "crius-bench: {} {} at {}",
        v.runtime_name, v.runtime_version, a.endpoint
    );
    for image in std::iter::once(&a.image).chain(a.image_volume.iter()) {
        let present = c
            .image
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await?
            .into_inner()
            .image
            .is_some();
        if !present {
            c.image
                .pull_image(PullImageRequest {
                    image: Some(ImageSpec {
                        image: image.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .with_context(|| format!("pulling {image}"))?;
        }
    }
    let run = std::process::id();
    let mut json = serde_json::Map::new();
    let mut rss = serde_json::Map::new();
    if let Some(pid) = a.pid {
        rss.insert("idle".into(), rss_kib(pid).into());
    }

    // (0) Warm-up, untimed.
    for i in 0..a.warmup {
        let mut s = Samples::default();
        let name = format!("bench-{run}-warm-{i}");
        let (pod, ctr) = start_pod(&mut c, &a, &name, &["sleep", "3600"], &mut s).await?;
        teardown(&mut c, &a, &pod, &ctr, &mut s).await?;
    }

    // (1) Lifecycles.
    let mut samples = Samples::default();
    let results = {
        let (a2, c2) = (a.clone(), c.clone());
        fan_out(a.parallel, a.iterations, move |i| {
            let (a, c0) = (a2.clone(), c2.clone());
            async move {
                let mut c = c0.clone();
                let mut s = Samples::default();
                let name = format!("bench-{run}-{i}");
                let (pod, ctr) = start_pod(&mut c, &a, &name, &["sleep", "3600"], &mut s).await?;
                teardown(&mut c, &a, &pod, &ctr, &mut s).await?;
                Ok(s)
            }
        })
        .await
    };
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(s) => samples.merge(s),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }

    // (2) ListContainers with K containers present (started, exited: no
    // processes left, every record still listed).
    if a.list_containers > 0 {
        let pc = pod_config(&a, &format!("bench-{run}-list"));
        let pod = c
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pc.clone()),
                runtime_handler: a.handler.clone(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        let created = {
            let (a2, c2, pod2, pc2) = (a.clone(), c.clone(), pod.clone(), pc.clone());
            fan_out(a.parallel, a.list_containers, move |i| {
                let (a, c0, pod, pc) = (a2.clone(), c2.clone(), pod2.clone(), pc2.clone());
                async move {
                    let mut c = c0.clone();
                    let id = c
                        .runtime
                        .create_container(CreateContainerRequest {
                            pod_sandbox_id: pod,
                            config: Some(container_config(&a, &format!("c{i}"), &["true"])),
                            sandbox_config: Some(pc),
                        })
                        .await?
                        .into_inner()
                        .container_id;
                    c.runtime
                        .start_container(StartContainerRequest { container_id: id })
                        .await?;
                    Ok(())
                }
            })
            .await
        };
        for r in created {
            if let Err(e) = r {
                errors.push(format!("list set-up: {e:#}"));
            }
        }
        let mut listed = 0;
        for _ in 0..a.list_iterations {
            let t = Instant::now();
            listed = c
                .runtime
                .list_containers(ListContainersRequest { filter: None })
                .await?
                .into_inner()
                .containers
                .len();
            samples.add(
                &format!("ListContainers ({} present)", a.list_containers),
                t.elapsed(),
            );
        }
        json.insert("listed".into(), listed.into());
        if let Some(pid) = a.pid {
            rss.insert(
                format!("with_{}_containers", a.list_containers),
                rss_kib(pid).into(),
            );
        }
        c.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod,
            })
            .await?;
    }

    // (3) R running pods.
    if a.running_pods > 0 {
        let t = Instant::now();
        let results = {
            let (a2, c2) = (a.clone(), c.clone());
            fan_out(a.parallel, a.running_pods, move |i| {
                let (a, c0) = (a2.clone(), c2.clone());
                async move {
                    let mut c = c0.clone();
                    let mut s = Samples::default();
                    start_pod(
                        &mut c,
                        &a,
                        &format!("bench-{run}-run-{i}"),
                        &["sleep", "3600"],
                        &mut s,
                    )
                    .await
                }
            })
            .await
        };
        let elapsed = t.elapsed();
        let mut started = Vec::new();
        let mut run_errors = 0;
        for r in results {
            match r {
                Ok(ids) => started.push(ids),
                Err(e) => {
                    run_errors += 1;
                    errors.push(format!("running pods: {e:#}"));
                }
            }
        }
        let running = c
            .runtime
            .list_containers(ListContainersRequest {
                filter: Some(ContainerFilter {
                    state: Some(ContainerStateValue {
                        state: ContainerState::ContainerRunning as i32,
                    }),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .containers
            .len();
        if let Some(pid) = a.pid {
            rss.insert(
                format!("with_{}_running_pods", a.running_pods),
                rss_kib(pid).into(),
            );
        }
        json.insert(
            "running_pods".into(),
            serde_json::json!({
                "requested": a.running_pods,
                "parallel": a.parallel,
                "errors": run_errors,
                "running": running,
                "seconds": elapsed.as_secs_f64(),
            }),
        );
        let mut s = Samples::default();
        for (pod, ctr) in started {
            if let Err(e) = teardown(&mut c, &a, &pod, &ctr, &mut s).await {
                errors.push(format!("teardown: {e:#}"));
            }
        }
    }

    let summaries = samples.summaries();
    println!("{}", table(&summaries));
    if !rss.is_empty() {
        for (k, v) in &rss {
            println!("daemon RSS {k}: {} KiB", v);
        }
    }
    json.insert("endpoint".into(), a.endpoint.clone().into());
    json.insert(
        "runtime".into(),
        format!("{} {}", v.runtime_name, v.runtime_version).into(),
    );
    json.insert("iterations".into(), a.iterations.into());
    json.insert("parallel".into(), a.parallel.into());
    json.insert("rpcs".into(), serde_json::to_value(&summaries)?);
    json.insert("rss_kib".into(), rss.into());
    json.insert("errors".into(), errors.clone().into());
    let out = serde_json::to_string_pretty(&serde_json::Value::Object(json))?;
    println!("{out}");
    if let Some(p) = &a.json {
        std::fs::write(p, &out).with_context(|| format!("writing {}", p.display()))?;
    }
    if !errors.is_empty() {
        for e in errors.iter().take(10) {
            eprintln!("error: {e}");
        }
        bail!("{} errors", errors.len());
    }
    Ok(())
}
