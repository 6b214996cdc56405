//! The CRI RuntimeService: Version, Status, RuntimeConfig, and the pod and
//! container RPCs, which convert between the wire types and the manager
//! (`crate::manager`). Streaming RPCs, stats and checkpoints answer
//! UNIMPLEMENTED naming the RPC.

use super::error::manager_error;
use super::unimplemented::cri_service;
use crate::config::Config;
use crate::manager::container::cri_state;
use crate::manager::Manager;
use crate::runtimes::{RuntimeInfo, Runtimes};
use crate::state::{decode_config, ContainerRecord, PodPhase, PodRecord};
use crius_cri_api::v1::runtime_service_server::RuntimeService;
use crius_cri_api::v1::*;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// CRI API version string kubelet expects in `VersionResponse.version`.
pub const CRI_VERSION: &str = "0.1.0";
pub const RUNTIME_NAME: &str = "crius";
pub const RUNTIME_API_VERSION: &str = "v1";

pub const RUNTIME_READY: &str = "RuntimeReady";
pub const NETWORK_READY: &str = "NetworkReady";

pub struct RuntimeServiceImpl {
    config: Arc<Config>,
    runtimes: Arc<Runtimes>,
    manager: Arc<Manager>,
    streams: Arc<crius_streaming::server::Server>,
}

impl RuntimeServiceImpl {
    pub fn new(
        config: Arc<Config>,
        runtimes: Arc<Runtimes>,
        manager: Arc<Manager>,
        streams: Arc<crius_streaming::server::Server>,
    ) -> Self {
        Self {
            config,
            runtimes,
            manager,
            streams,
        }
    }

    /// The single-use URL for a request already checked.
    fn stream_url(&self, req: crius_streaming::Request) -> Result<String, Status> {
        self.streams
            .url(req)
            .map_err(|e| Status::resource_exhausted(e.to_string()))
    }
}

/// GetContainerEvents' stream: one subscriber's events, converted as they
/// are sent.
pub type ContainerEventStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<ContainerEventResponse, Status>> + Send + 'static>,
>;

fn container_events(
    rx: tokio::sync::broadcast::Receiver<Arc<crate::manager::events::Event>>,
) -> ContainerEventStream {
    use crate::manager::events::EventKind;
    use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
    use tokio_stream::StreamExt;
    tracing::info!("GetContainerEvents: a subscriber joined");
    let stream = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(|item| match item {
        Ok(e) => {
            let kind = match e.kind {
                EventKind::Created => ContainerEventType::ContainerCreatedEvent,
                EventKind::Started => ContainerEventType::ContainerStartedEvent,
                EventKind::Stopped => ContainerEventType::ContainerStoppedEvent,
                EventKind::Deleted => ContainerEventType::ContainerDeletedEvent,
            };
            Some(Ok(ContainerEventResponse {
                container_id: e.id.clone(),
                container_event_type: kind as i32,
                created_at: e.at,
                pod_sandbox_status: e.pod.as_ref().map(|(c, r)| pod_status(c, r)),
                containers_statuses: e
                    .containers
                    .iter()
                    .filter_map(|r| container_status(r).ok())
                    .collect(),
            }))
        }
        Err(BroadcastStreamRecvError::Lagged(n)) => {
            // The subscriber did not read: the oldest events went so that
            // no RPC ever waits for it (kubelet relists on a gap).
            tracing::warn!(
                dropped = n,
                "GetContainerEvents: a slow subscriber lost its oldest events"
            );
            None
        }
    });
    Box::pin(stream)
}

/// The pod's recorded overhead and resources (UpdatePodSandboxResources),
/// as OCI resources.
fn pod_resources(rec: &PodRecord) -> Result<serde_json::Value, Status> {
    let config: PodSandboxConfig =
        decode_config(&rec.id, &rec.config).map_err(|e| Status::internal(e.to_string()))?;
    let linux = config.linux.unwrap_or_default();
    let oci = |r: Option<&LinuxContainerResources>| {
        r.and_then(|r| crius_oci_runtime::spec::resources(Some(r)).ok())
    };
    Ok(serde_json::json!({
        "overhead": oci(linux.overhead.as_ref()),
        "resources": oci(linux.resources.as_ref()),
    }))
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, Status> {
    serde_json::to_string(v).map_err(|e| Status::internal(format!("encoding info: {e}")))
}

fn pod_state(r: &PodRecord) -> i32 {
    if r.phase == PodPhase::Ready {
        PodSandboxState::SandboxReady as i32
    } else {
        PodSandboxState::SandboxNotready as i32
    }
}

fn to_map(m: &std::collections::HashMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn pod_status(config: &PodSandboxConfig, r: &PodRecord) -> PodSandboxStatus {
    let opts = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    PodSandboxStatus {
        id: r.id.clone(),
        metadata: config.metadata.clone(),
        state: pod_state(r),
        created_at: r.created_at,
        network: Some(PodSandboxNetworkStatus {
            ip: r.ips.first().cloned().unwrap_or_default(),
            additional_ips: r
                .ips
                .iter()
                .skip(1)
                .map(|ip| PodIp { ip: ip.clone() })
                .collect(),
        }),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace { options: opts }),
        }),
        labels: to_map(&config.labels),
        annotations: to_map(&config.annotations),
        runtime_handler: r.runtime_handler.clone(),
    }
}

fn container_proto(config: &ContainerConfig, r: &ContainerRecord) -> Container {
    Container {
        id: r.id.clone(),
        pod_sandbox_id: r.pod_id.clone(),
        metadata: config.metadata.clone(),
        image: Some(ImageSpec {
            image: r.image.clone(),
            ..Default::default()
        }),
        image_ref: r.image_ref.clone(),
        state: cri_state(r.phase) as i32,
        created_at: r.created_at,
        labels: to_map(&config.labels),
        annotations: to_map(&config.annotations),
        image_id: r.image_id.clone(),
    }
}

fn container_status(r: &ContainerRecord) -> Result<ContainerStatus, Status> {
    // The stored config carries resources updated since creation.
    let config: ContainerConfig =
        decode_config(&r.id, &r.config).map_err(|e| Status::internal(e.to_string()))?;
    Ok(ContainerStatus {
        id: r.id.clone(),
        metadata: config.metadata.clone(),
        state: cri_state(r.phase) as i32,
        created_at: r.created_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        exit_code: r.exit_code,
        image: Some(ImageSpec {
            image: r.image.clone(),
            ..Default::default()
        }),
        image_ref: r.image_ref.clone(),
        reason: r.reason.clone(),
        message: r.message.clone(),
        labels: to_map(&config.labels),
        annotations: to_map(&config.annotations),
        mounts: config.mounts.clone(),
        log_path: r.log_path.display().to_string(),
        resources: Some(ContainerResources {
            linux: config.linux.as_ref().and_then(|l| l.resources.clone()),
            windows: None,
        }),
        image_id: r.image_id.clone(),
        user: Some(ContainerUser {
            linux: Some(LinuxContainerUser {
                uid: r.uid as i64,
                gid: r.gid as i64,
                supplemental_groups: r.additional_gids.iter().map(|g| *g as i64).collect(),
            }),
        }),
        stop_signal: config.stop_signal,
    })
}

/// Every handler by name, and the default again as "" (kubelet asks about
/// the handler a RuntimeClass names, and "" for pods without one), with
/// the features the probe established.
pub fn runtime_handlers(info: &RuntimeInfo) -> Vec<RuntimeHandler> {
    let entry = |name: &str, p: &crius_oci_runtime::Probe| RuntimeHandler {
        name: name.to_string(),
        features: Some(RuntimeHandlerFeatures {
            recursive_read_only_mounts: p.status.recursive_read_only_mounts,
            user_namespaces: p.status.user_namespaces,
        }),
    };
    info.get("")
        .map(|p| entry("", p))
        .into_iter()
        .chain(info.probes.iter().map(|p| entry(&p.name, p)))
        .collect()
}

pub fn version_response() -> VersionResponse {
    VersionResponse {
        version: CRI_VERSION.into(),
        runtime_name: RUNTIME_NAME.into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: RUNTIME_API_VERSION.into(),
    }
}

/// The node conditions kubelet gates on. Each one that is false says why:
/// kubelet shows reason and message in the node's status, and an operator
/// reads them to learn what is missing.
pub fn conditions(
    runtime: (bool, String, String),
    network: &crius_network::Readiness,
) -> Vec<RuntimeCondition> {
    vec![
        RuntimeCondition {
            r#type: RUNTIME_READY.into(),
            status: runtime.0,
            reason: runtime.1,
            message: runtime.2,
        },
        RuntimeCondition {
            r#type: NETWORK_READY.into(),
            status: network.ready,
            reason: network.reason.clone(),
            message: network.message.clone(),
        },
    ]
}

/// Status(verbose)'s info map: JSON objects under keys of crius's own.
/// crictl merges these over its rendering of `status`, `runtimeHandlers`
/// and `features` (and parses only values starting with `{` as JSON), so
/// they must not reuse those names: the configuration under `config`, as
/// CRI-O keeps it, what the probes found under `probes`, and the CNI
/// network pods join now under `network`.
pub fn verbose_info(
    config: &crate::config::Config,
    runtimes: &crate::runtimes::RuntimeInfo,
    network: Option<&crius_network::config::NetworkConfigList>,
) -> serde_json::Result<HashMap<String, String>> {
    let probes = serde_json::json!({ "handlers": runtimes.probes, "host": runtimes.host });
    // An object either way (crictl parses only values that start with `{`).
    let network = match network {
        Some(n) => serde_json::json!({
            "configDir": config.cni_config_dir,
            "name": n.name,
            "file": n.source,
            "cniVersion": n.cni_version,
            "plugins": n.plugins.iter().map(|p| p.kind.as_str()).collect::<Vec<_>>(),
        }),
        None => serde_json::json!({ "configDir": config.cni_config_dir, "name": null }),
    };
    Ok(HashMap::from([
        ("config".to_string(), serde_json::to_string(config)?),
        ("probes".to_string(), serde_json::to_string(&probes)?),
        ("network".to_string(), serde_json::to_string(&network)?),
    ]))
}

cri_service! {
    impl RuntimeService as "runtime.v1.RuntimeService" for RuntimeServiceImpl {
        async fn version(
            &self,
            _request: Request<VersionRequest>,
        ) -> Result<Response<VersionResponse>, Status> {
            Ok(Response::new(version_response()))
        }

        async fn status(
            &self,
            request: Request<StatusRequest>,
        ) -> Result<Response<StatusResponse>, Status> {
            let runtimes = self.runtimes.current();
            let mut info = HashMap::new();
            if request.get_ref().verbose {
                info = verbose_info(&self.config, &runtimes, self.manager.network_config().as_ref()).map_err(|e| Status::internal(format!("encoding status: {e}")))?;
            }
            Ok(Response::new(StatusResponse {
                status: Some(RuntimeStatus { conditions: conditions(self.manager.runtime_ready(), &self.manager.network_status().await) }),
                info,
                runtime_handlers: runtime_handlers(&runtimes),
                features: Some(RuntimeFeatures {
                    // Merge and Strict are both applied (spec::user).
                    supplemental_groups_policy: true,
                    user_namespaces_host_network: false,
                    mount_options: false,
                }),
            }))
        }

        async fn runtime_config(&self, _request: Request<RuntimeConfigRequest>) -> Result<Response<RuntimeConfigResponse>, Status> {
            Ok(Response::new(RuntimeConfigResponse {
                linux: Some(LinuxRuntimeConfiguration { cgroup_driver: CgroupDriver::Cgroupfs as i32 }),
            }))
        }

        async fn update_runtime_config(&self, request: Request<UpdateRuntimeConfigRequest>) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
            // kubelet sends the node's pod CIDR; it matters to CNI plugins,
            // which read their own configuration (CRI-O ignores it too).
            let cidr = request.get_ref().runtime_config.as_ref().and_then(|c| c.network_config.as_ref()).map(|n| n.pod_cidr.clone()).unwrap_or_default();
            tracing::info!(pod_cidr = %cidr, "UpdateRuntimeConfig: the node's pod CIDR (CNI plugins read their own configuration)");
            Ok(Response::new(UpdateRuntimeConfigResponse {}))
        }

        async fn run_pod_sandbox(&self, request: Request<RunPodSandboxRequest>) -> Result<Response<RunPodSandboxResponse>, Status> {
            let req = request.into_inner();
            let id = self.manager.run_pod(req.config, &req.runtime_handler).await.map_err(manager_error)?;
            Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id: id }))
        }

        async fn stop_pod_sandbox(&self, request: Request<StopPodSandboxRequest>) -> Result<Response<StopPodSandboxResponse>, Status> {
            self.manager.stop_pod(&request.get_ref().pod_sandbox_id).await.map_err(manager_error)?;
            Ok(Response::new(StopPodSandboxResponse {}))
        }

        async fn remove_pod_sandbox(&self, request: Request<RemovePodSandboxRequest>) -> Result<Response<RemovePodSandboxResponse>, Status> {
            self.manager.remove_pod(&request.get_ref().pod_sandbox_id).await.map_err(manager_error)?;
            Ok(Response::new(RemovePodSandboxResponse {}))
        }

        async fn pod_sandbox_status(&self, request: Request<PodSandboxStatusRequest>) -> Result<Response<PodSandboxStatusResponse>, Status> {
            let req = request.into_inner();
            let (pod, rec) = self.manager.pod_status(&req.pod_sandbox_id).map_err(manager_error)?;
            let mut info = HashMap::new();
            if req.verbose {
                info.insert("info".to_string(), json(&serde_json::json!({
                    "id": rec.id,
                    "phase": rec.phase,
                    "runtimeHandler": rec.runtime_handler,
                    "dir": rec.dir,
                    "namespaces": { "network": rec.netns, "ipc": rec.ipcns, "uts": rec.utsns, "pid": rec.pidns },
                    "shm": rec.shm,
                    "cgroupParent": rec.cgroup_parent,
                    "pausePid": rec.pause_pid,
                    "network": rec.network,
                    "ips": rec.ips,
                    "cni": self.manager.network_attachment(&rec.id),
                    "resources": pod_resources(&rec)?,
                }))?);
            }
            Ok(Response::new(PodSandboxStatusResponse {
                status: Some(pod_status(&pod.config, &rec)),
                info,
                containers_statuses: Vec::new(),
                timestamp: 0,
            }))
        }

        async fn list_pod_sandbox(&self, request: Request<ListPodSandboxRequest>) -> Result<Response<ListPodSandboxResponse>, Status> {
            let req = request.into_inner();
            let items = self.manager.list_pods(req.filter.as_ref()).into_iter().map(|(pod, rec)| PodSandbox {
                id: rec.id.clone(),
                metadata: pod.config.metadata.clone(),
                state: pod_state(&rec),
                created_at: rec.created_at,
                labels: to_map(&pod.config.labels),
                annotations: to_map(&pod.config.annotations),
                runtime_handler: rec.runtime_handler.clone(),
            }).collect();
            Ok(Response::new(ListPodSandboxResponse { items }))
        }

        async fn create_container(&self, request: Request<CreateContainerRequest>) -> Result<Response<CreateContainerResponse>, Status> {
            let req = request.into_inner();
            let id = self.manager.create_container(&req.pod_sandbox_id, req.config, req.sandbox_config).await.map_err(manager_error)?;
            Ok(Response::new(CreateContainerResponse { container_id: id }))
        }

        async fn start_container(&self, request: Request<StartContainerRequest>) -> Result<Response<StartContainerResponse>, Status> {
            self.manager.start_container(&request.get_ref().container_id).await.map_err(manager_error)?;
            Ok(Response::new(StartContainerResponse {}))
        }

        async fn stop_container(&self, request: Request<StopContainerRequest>) -> Result<Response<StopContainerResponse>, Status> {
            let req = request.get_ref();
            self.manager.stop_container(&req.container_id, req.timeout).await.map_err(manager_error)?;
            Ok(Response::new(StopContainerResponse {}))
        }

        async fn remove_container(&self, request: Request<RemoveContainerRequest>) -> Result<Response<RemoveContainerResponse>, Status> {
            self.manager.remove_container(&request.get_ref().container_id).await.map_err(manager_error)?;
            Ok(Response::new(RemoveContainerResponse {}))
        }

        async fn list_containers(&self, request: Request<ListContainersRequest>) -> Result<Response<ListContainersResponse>, Status> {
            let req = request.into_inner();
            let containers = self.manager.list_containers(req.filter.as_ref()).await.into_iter()
                .map(|c| c.with(|rec| container_proto(&c.config, rec))).collect();
            Ok(Response::new(ListContainersResponse { containers }))
        }

        async fn container_status(&self, request: Request<ContainerStatusRequest>) -> Result<Response<ContainerStatusResponse>, Status> {
            let req = request.into_inner();
            let (_c, rec) = self.manager.container_status(&req.container_id).await.map_err(manager_error)?;
            let mut info = HashMap::new();
            if req.verbose {
                let spec: serde_json::Value = std::fs::read(rec.dir.join("bundle/config.json")).ok()
                    .and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
                info.insert("info".to_string(), json(&serde_json::json!({
                    "sandboxID": rec.pod_id,
                    "pid": rec.pid,
                    "monitorPid": rec.monitor_pid,
                    "runtimeHandler": rec.runtime_handler,
                    "bundle": rec.dir.join("bundle"),
                    "exitFile": rec.exit_file,
                    "cgroupsPath": rec.cgroups_path,
                    "runtimeSpec": spec,
                }))?);
            }
            Ok(Response::new(ContainerStatusResponse { status: Some(container_status(&rec)?), info }))
        }

        async fn update_container_resources(&self, request: Request<UpdateContainerResourcesRequest>) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
            let req = request.into_inner();
            self.manager.update_resources(&req.container_id, req.linux).await.map_err(manager_error)?;
            Ok(Response::new(UpdateContainerResourcesResponse {}))
        }

        async fn reopen_container_log(&self, request: Request<ReopenContainerLogRequest>) -> Result<Response<ReopenContainerLogResponse>, Status> {
            self.manager.reopen_log(&request.get_ref().container_id).await.map_err(manager_error)?;
            Ok(Response::new(ReopenContainerLogResponse {}))
        }

        async fn exec_sync(&self, request: Request<ExecSyncRequest>) -> Result<Response<ExecSyncResponse>, Status> {
            let req = request.into_inner();
            let out = self.manager.exec_sync(&req.container_id, req.cmd, req.timeout).await.map_err(manager_error)?;
            Ok(Response::new(ExecSyncResponse { stdout: out.stdout, stderr: out.stderr, exit_code: out.exit_code }))
        }

        async fn container_stats(&self, request: Request<ContainerStatsRequest>) -> Result<Response<ContainerStatsResponse>, Status> {
            let stats = self.manager.container_stats(&request.get_ref().container_id).await.map_err(manager_error)?;
            Ok(Response::new(ContainerStatsResponse { stats: Some(stats) }))
        }

        async fn list_container_stats(&self, request: Request<ListContainerStatsRequest>) -> Result<Response<ListContainerStatsResponse>, Status> {
            let stats = self.manager.list_container_stats(request.get_ref().filter.as_ref()).await;
            Ok(Response::new(ListContainerStatsResponse { stats }))
        }

        async fn pod_sandbox_stats(&self, request: Request<PodSandboxStatsRequest>) -> Result<Response<PodSandboxStatsResponse>, Status> {
            let stats = self.manager.pod_sandbox_stats(&request.get_ref().pod_sandbox_id).await.map_err(manager_error)?;
            Ok(Response::new(PodSandboxStatsResponse { stats: Some(stats) }))
        }

        async fn list_pod_sandbox_stats(&self, request: Request<ListPodSandboxStatsRequest>) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
            let stats = self.manager.list_pod_sandbox_stats(request.get_ref().filter.as_ref()).await;
            Ok(Response::new(ListPodSandboxStatsResponse { stats }))
        }

        async fn update_pod_sandbox_resources(&self, request: Request<UpdatePodSandboxResourcesRequest>) -> Result<Response<UpdatePodSandboxResourcesResponse>, Status> {
            let req = request.into_inner();
            self.manager.update_pod_resources(&req.pod_sandbox_id, req.overhead, req.resources).await.map_err(manager_error)?;
            Ok(Response::new(UpdatePodSandboxResourcesResponse {}))
        }

        async fn list_metric_descriptors(&self, _request: Request<ListMetricDescriptorsRequest>) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
            Ok(Response::new(ListMetricDescriptorsResponse { descriptors: crate::manager::metrics::descriptors() }))
        }

        async fn list_pod_sandbox_metrics(&self, _request: Request<ListPodSandboxMetricsRequest>) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
            Ok(Response::new(ListPodSandboxMetricsResponse { pod_metrics: self.manager.list_pod_sandbox_metrics().await }))
        }

        type GetContainerEventsStream = ContainerEventStream;

        async fn get_container_events(&self, _request: Request<GetEventsRequest>) -> Result<Response<Self::GetContainerEventsStream>, Status> {
            Ok(Response::new(container_events(self.manager.subscribe_events())))
        }

        async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
            let req = request.into_inner();
            if req.container_id.is_empty() {
                return Err(Status::invalid_argument("container_id is empty"));
            }
            let p = crius_streaming::ExecParams {
                container_id: req.container_id,
                cmd: req.cmd,
                tty: req.tty,
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
            };
            self.manager.check_exec(&p).await.map_err(manager_error)?;
            // The full id: a prefix could name another container by the
            // time the URL is used.
            let p = crius_streaming::ExecParams { container_id: self.manager.container_status(&p.container_id).await.map_err(manager_error)?.0.id.clone(), ..p };
            Ok(Response::new(ExecResponse { url: self.stream_url(crius_streaming::Request::Exec(p))? }))
        }

        async fn attach(&self, request: Request<AttachRequest>) -> Result<Response<AttachResponse>, Status> {
            let req = request.into_inner();
            if req.container_id.is_empty() {
                return Err(Status::invalid_argument("container_id is empty"));
            }
            let p = crius_streaming::AttachParams {
                container_id: req.container_id,
                tty: req.tty,
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
            };
            self.manager.check_attach(&p).await.map_err(manager_error)?;
            let p = crius_streaming::AttachParams { container_id: self.manager.container_status(&p.container_id).await.map_err(manager_error)?.0.id.clone(), ..p };
            Ok(Response::new(AttachResponse { url: self.stream_url(crius_streaming::Request::Attach(p))? }))
        }

        async fn port_forward(&self, request: Request<PortForwardRequest>) -> Result<Response<PortForwardResponse>, Status> {
            let req = request.into_inner();
            if req.pod_sandbox_id.is_empty() {
                return Err(Status::invalid_argument("pod_sandbox_id is empty"));
            }
            let p = self.manager.check_port_forward(&req.pod_sandbox_id, &req.port).map_err(manager_error)?;
            Ok(Response::new(PortForwardResponse { url: self.stream_url(crius_streaming::Request::PortForward(p))? }))
        }
    }
    not_built {
        CheckpointContainer => checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        CheckpointPod => checkpoint_pod(CheckpointPodRequest) -> CheckpointPodResponse;
        RestorePod => restore_pod(RestorePodRequest) -> RestorePodResponse;
    }
    not_built_streams {
        StreamPodSandboxes => stream_pod_sandboxes(StreamPodSandboxesRequest) -> StreamPodSandboxesStream<StreamPodSandboxesResponse>;
        StreamContainers => stream_containers(StreamContainersRequest) -> StreamContainersStream<StreamContainersResponse>;
        StreamContainerStats => stream_container_stats(StreamContainerStatsRequest) -> StreamContainerStatsStream<StreamContainerStatsResponse>;
        StreamPodSandboxStats => stream_pod_sandbox_stats(StreamPodSandboxStatsRequest) -> StreamPodSandboxStatsStream<StreamPodSandboxStatsResponse>;
        StreamPodSandboxMetrics => stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest) -> StreamPodSandboxMetricsStream<StreamPodSandboxMetricsResponse>;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_what_kubelet_expects() {
        let v = version_response();
        assert_eq!(v.version, "0.1.0");
        assert_eq!(v.runtime_name, "crius");
        assert_eq!(v.runtime_api_version, "v1");
        assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn every_false_condition_says_why() {
        let c = conditions(
            (false, "X".into(), "y".into()),
            &crius_network::Readiness {
                ready: false,
                reason: "NetworkPluginNotReady".into(),
                message: "no network".into(),
            },
        );
        let types: Vec<_> = c.iter().map(|c| c.r#type.as_str()).collect();
        assert_eq!(types, [RUNTIME_READY, NETWORK_READY]);
        for cond in c.iter().filter(|c| !c.status) {
            assert!(
                !cond.reason.is_empty() && !cond.message.is_empty(),
                "{cond:?}"
            );
        }
    }
}
