//! The CRI RuntimeService. `Version` and `Status` are served here; pods and
//! containers arrive with the OCI runtime layer and answer UNIMPLEMENTED
//! (naming the RPC) until then.

use super::runtimes::{RuntimeInfo, Runtimes};
use super::unimplemented::cri_service;
use crate::config::Config;
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
}

impl RuntimeServiceImpl {
    pub fn new(config: Arc<Config>, runtimes: Arc<Runtimes>) -> Self {
        Self { config, runtimes }
    }
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
pub fn conditions() -> Vec<RuntimeCondition> {
    vec![
        RuntimeCondition {
            r#type: RUNTIME_READY.into(),
            status: false,
            reason: "ContainersNotSupported".into(),
            message: "this crius build cannot run pod sandboxes or containers yet: \
                      the OCI runtime layer is not built"
                .into(),
        },
        RuntimeCondition {
            r#type: NETWORK_READY.into(),
            status: false,
            reason: "NetworkPluginNotReady".into(),
            message: "pod networking (CNI) is not built in this crius yet".into(),
        },
    ]
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
                let encode = |v: serde_json::Result<String>| v.map_err(|e| Status::internal(format!("encoding status: {e}")));
                info.insert("config".to_string(), encode(serde_json::to_string(&*self.config))?);
                info.insert("runtimeHandlers".to_string(), encode(serde_json::to_string(&runtimes.probes))?);
                info.insert("host".to_string(), encode(serde_json::to_string(&runtimes.host))?);
            }
            Ok(Response::new(StatusResponse {
                status: Some(RuntimeStatus { conditions: conditions() }),
                info,
                runtime_handlers: runtime_handlers(&runtimes),
                // Nothing of these is implemented yet: say so.
                features: Some(RuntimeFeatures {
                    supplemental_groups_policy: false,
                    user_namespaces_host_network: false,
                    mount_options: false,
                }),
            }))
        }
    }
    not_built {
        RunPodSandbox => run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse;
        StopPodSandbox => stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse;
        RemovePodSandbox => remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse;
        PodSandboxStatus => pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse;
        ListPodSandbox => list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse;
        CreateContainer => create_container(CreateContainerRequest) -> CreateContainerResponse;
        StartContainer => start_container(StartContainerRequest) -> StartContainerResponse;
        StopContainer => stop_container(StopContainerRequest) -> StopContainerResponse;
        RemoveContainer => remove_container(RemoveContainerRequest) -> RemoveContainerResponse;
        ListContainers => list_containers(ListContainersRequest) -> ListContainersResponse;
        ContainerStatus => container_status(ContainerStatusRequest) -> ContainerStatusResponse;
        UpdateContainerResources => update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse;
        ReopenContainerLog => reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse;
        ExecSync => exec_sync(ExecSyncRequest) -> ExecSyncResponse;
        Exec => exec(ExecRequest) -> ExecResponse;
        Attach => attach(AttachRequest) -> AttachResponse;
        PortForward => port_forward(PortForwardRequest) -> PortForwardResponse;
        ContainerStats => container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
        ListContainerStats => list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse;
        PodSandboxStats => pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse;
        ListPodSandboxStats => list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse;
        UpdateRuntimeConfig => update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse;
        CheckpointContainer => checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        CheckpointPod => checkpoint_pod(CheckpointPodRequest) -> CheckpointPodResponse;
        RestorePod => restore_pod(RestorePodRequest) -> RestorePodResponse;
        ListMetricDescriptors => list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse;
        ListPodSandboxMetrics => list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse;
        RuntimeConfig => runtime_config(RuntimeConfigRequest) -> RuntimeConfigResponse;
        UpdatePodSandboxResources => update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest) -> UpdatePodSandboxResourcesResponse;
    }
    not_built_streams {
        StreamPodSandboxes => stream_pod_sandboxes(StreamPodSandboxesRequest) -> StreamPodSandboxesStream<StreamPodSandboxesResponse>;
        StreamContainers => stream_containers(StreamContainersRequest) -> StreamContainersStream<StreamContainersResponse>;
        StreamContainerStats => stream_container_stats(StreamContainerStatsRequest) -> StreamContainerStatsStream<StreamContainerStatsResponse>;
        StreamPodSandboxStats => stream_pod_sandbox_stats(StreamPodSandboxStatsRequest) -> StreamPodSandboxStatsStream<StreamPodSandboxStatsResponse>;
        GetContainerEvents => get_container_events(GetEventsRequest) -> GetContainerEventsStream<ContainerEventResponse>;
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
        let c = conditions();
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
