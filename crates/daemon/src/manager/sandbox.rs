//! Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox,
//! PodSandboxStatus, ListPodSandbox.

use super::events::EventKind;
use super::host::{detach_network, remove_dir, teardown_pod as teardown};
use super::{blocking, filters, ids, now_ns, validate, Manager, ManagerError, Pod, Result};
use crate::state::{decode_config, encode_config, PodPhase, PodRecord, RECORD_VERSION};
use crius_cri_api::v1::{
    LinuxContainerResources, NamespaceMode, PodSandboxConfig, PodSandboxFilter, Protocol,
};
use crius_network::runtime::{Dns, PodNetwork, PortMapping};
use crius_network::Cni;
use crius_sandbox::{files, ns, shm};
use std::path::Path;
use std::sync::Arc;
use tracing::Instrument;

/// The reservation key of a pod's metadata (kubelet's uniqueness rule).
pub fn pod_key(c: &PodSandboxConfig) -> Result<String> {
    let m = c
        .metadata
        .as_ref()
        .ok_or_else(|| ManagerError::InvalidArgument("config.metadata is required".into()))?;
    validate::name("config.metadata.name", &m.name)?;
    validate::name("config.metadata.namespace", &m.namespace)?;
    validate::uid("config.metadata.uid", &m.uid)?;
    Ok(format!(
        "{}_{}_{}_{}",
        m.name, m.namespace, m.uid, m.attempt
    ))
}

/// The pod's namespace modes: (network, ipc, pid).
pub fn pod_modes(c: &PodSandboxConfig) -> Result<(NamespaceMode, NamespaceMode, NamespaceMode)> {
    let opts = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let mode = |field: &str, v: i32| {
        NamespaceMode::try_from(v).map_err(|_| {
            ManagerError::InvalidArgument(format!(
                "config.linux.security_context.namespace_options.{field}: unknown mode {v}"
            ))
        })
    };
    let (net, ipc, pid) = (
        mode("network", opts.network)?,
        mode("ipc", opts.ipc)?,
        mode("pid", opts.pid)?,
    );
    for (field, m) in [("network", net), ("ipc", ipc), ("pid", pid)] {
        if m == NamespaceMode::Target {
            return Err(ManagerError::InvalidArgument(format!(
                "config.linux.security_context.namespace_options.{field}: TARGET is only valid for containers"
            )));
        }
    }
    if let Some(u) = &opts.userns_options {
        if u.mode != NamespaceMode::Node as i32 {
            return Err(ManagerError::Unimplemented(
                "config.linux.security_context.namespace_options.userns_options: user namespaces are not supported by crius yet".into(),
            ));
        }
    }
    Ok((net, ipc, pid))
}

/// What the pod's CNI plugins are told, checked before anything is set up
/// (None for a host-network pod, which never touches CNI). The network
/// namespace's path is filled in once it is pinned.
pub fn pod_network(
    id: &str,
    config: &PodSandboxConfig,
    cgroup_parent: &str,
) -> Result<Option<PodNetwork>> {
    let (net, _, _) = pod_modes(config)?;
    if net == NamespaceMode::Node {
        return Ok(None);
    }
    let m = config.metadata.clone().unwrap_or_default();
    let mut port_mappings = Vec::new();
    for (i, p) in config.port_mappings.iter().enumerate() {
        let field = |f: &str| format!("config.port_mappings[{i}].{f}");
        // Only a host port needs the network's help (containerd and CRI-O
        // pass no others).
        if p.host_port <= 0 {
            continue;
        }
        let port = |f: &str, v: i32| {
            u16::try_from(v).ok().filter(|v| *v > 0).ok_or_else(|| {
                ManagerError::InvalidArgument(format!("{}: {v} is not a port (1-65535)", field(f)))
            })
        };
        let protocol = match Protocol::try_from(p.protocol) {
            Ok(Protocol::Tcp) => "tcp",
            Ok(Protocol::Udp) => "udp",
            Ok(Protocol::Sctp) => "sctp",
            Err(_) => {
                return Err(ManagerError::InvalidArgument(format!(
                    "{}: unknown protocol {}",
                    field("protocol"),
                    p.protocol
                )))
            }
        };
        if !p.host_ip.is_empty() && p.host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(ManagerError::InvalidArgument(format!(
                "{}: {:?} is not an IP address",
                field("host_ip"),
                p.host_ip
            )));
        }
        port_mappings.push(PortMapping {
            host_port: port("host_port", p.host_port)?,
            container_port: port("container_port", p.container_port)?,
            protocol: protocol.into(),
            host_ip: p.host_ip.clone(),
        });
    }
    let annotations: std::collections::BTreeMap<String, String> = config
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let bandwidth = crius_network::runtime::bandwidth_from_annotations(&annotations)
        .map_err(|e| ManagerError::InvalidArgument(e.to_string()))?;
    let dns = config.dns_config.as_ref().map(|d| Dns {
        servers: d.servers.clone(),
        searches: d.searches.clone(),
        options: d.options.clone(),
    });
    let pod = PodNetwork {
        id: id.to_string(),
        netns: Default::default(),
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        port_mappings,
        bandwidth,
        dns,
        cgroup_path: cgroup_parent.to_string(),
        annotations,
    };
    crius_network::runtime::cni_args(&pod)
        .map_err(|e| ManagerError::InvalidArgument(format!("config.{e}")))?;
    Ok(Some(pod))
}

/// The pause process's pid, next to the pod's files.
pub const PAUSE_PID_FILE: &str = "pause.pid";

/// Tears down what a pod directory without a record holds (a daemon killed
/// in RunPodSandbox). Idempotent.
pub(crate) fn teardown_orphan(id: &str, dir: &Path) -> Result<()> {
    let pause = std::fs::read_to_string(dir.join(PAUSE_PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    crius_sandbox::pause::stop(pause, id)?;
    ns::unpin(&dir.join("ns"))?;
    shm::unmount_shm(&dir.join("shm"))?;
    remove_dir(dir)
}

/// A pod's namespaces: taken from the pool, or being pinned.
enum NsSetup {
    Claimed(ns::Pinned),
    Pending(ns::PendingPin),
}

/// Sets up a pod's host state (blocking). On error the caller tears down.
fn setup(
    rec: &mut PodRecord,
    config: &PodSandboxConfig,
    shm_size: u64,
    monitor: &Path,
    runroot: &Path,
    pool: Option<&ns::NsPool>,
    network: Option<(&Cni, PodNetwork)>,
) -> Result<()> {
    let (net, ipc, pid) = pod_modes(config)?;
    std::fs::create_dir_all(&rec.dir)
        .map_err(|e| ManagerError::Internal(format!("creating {}: {e}", rec.dir.display())))?;
    let host_net = net == NamespaceMode::Node;
    let host_ipc = ipc == NamespaceMode::Node;
    let mut kinds = Vec::new();
    if !host_net {
        kinds.push(ns::NsKind::Net);
        kinds.push(ns::NsKind::Uts);
    }
    if !host_ipc {
        kinds.push(ns::NsKind::Ipc);
    }
    // A pod that names no hostname gets the node's, as containerd and
    // CRI-O give it (kubelet always names one; a pod name can be longer
    // than sethostname(2) takes).
    let hostname = if host_net || config.hostname.is_empty() {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        config.hostname.clone()
    };
    let t0 = std::time::Instant::now();
    let ns_dir = rec.dir.join("ns");
    // A set made ahead when the pod shares none of the host's namespaces;
    // otherwise the kernel makes them on a thread of their own meanwhile.
    let claimed = match pool {
        Some(pool) if kinds.len() == ns::NsKind::ALL.len() => pool.claim(&ns_dir, &hostname),
        _ => None,
    };
    let ns_setup = match claimed {
        Some(Ok(p)) => NsSetup::Claimed(p),
        other => {
            if let Some(Err(e)) = other {
                // The pool is an optimisation: a set that cannot be claimed
                // (nothing stays of it) only means this pod makes its own.
                tracing::warn!(error = %e, "claiming namespaces from the pool");
            }
            NsSetup::Pending(ns::start_pin(&ns_dir, &kinds, Some(&hostname))?)
        }
    };
    write_pod_files(&rec.dir, config, &hostname)?;
    if !host_ipc {
        let p = rec.dir.join("shm");
        shm::mount_shm(&p, shm_size)?;
        rec.shm = Some(p);
    }
    let files_at = t0.elapsed();
    let pinned = match ns_setup {
        NsSetup::Claimed(p) => p,
        NsSetup::Pending(p) => p.wait()?,
    };
    let pinned_at = t0.elapsed();
    rec.netns = pinned.net;
    rec.utsns = pinned.uts;
    rec.ipcns = pinned.ipc;
    if pid == NamespaceMode::Pod {
        let pause = crius_sandbox::pause::start(monitor, &rec.id)?;
        // Noted at once beside the pod's files: a daemon killed now finds
        // and kills it (recover.rs).
        rec.pause_pid = pause;
        crius_sandbox::files::write_atomic(
            &rec.dir.join(PAUSE_PID_FILE),
            pause.to_string().as_bytes(),
        )?;
        rec.pidns = Some(ns::pin_pid(&rec.dir.join("ns"), pause)?);
    }
    let paused_at = t0.elapsed();
    if let (Some((cni, mut pod)), Some(netns)) = (network, rec.netns.clone()) {
        pod.netns = netns;
        match cni.add(&pod)? {
            Some(added) => {
                rec.network = added.network;
                rec.ips = crius_network::result::primary_first(&added.ips)
                    .iter()
                    .map(|a| a.to_string())
                    .collect();
            }
            None => tracing::warn!("no CNI network is configured: the pod has loopback only"),
        }
    }
    // Written once, with the pod's addresses when it has a network.
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    files::write_atomic(
        &rec.dir.join("hosts"),
        files::hosts(&hostname, host_net, &host_hosts, &rec.ips).as_bytes(),
    )?;
    crate::manager::test_hold("run-pod", runroot, &rec.dir);
    // Where RunPodSandbox's time goes (read by the CRI benchmark).
    tracing::debug!(
        files_and_shm_us = files_at.as_micros() as u64,
        namespaces_pinned_us = pinned_at.as_micros() as u64,
        pause_us = (paused_at - pinned_at).as_micros() as u64,
        cni_us = (t0.elapsed() - paused_at).as_micros() as u64,
        "pod sandbox set up"
    );
    Ok(())
}

/// resolv.conf, hostname and the log directory (hosts waits for the
/// pod's addresses).
fn write_pod_files(dir: &Path, config: &PodSandboxConfig, hostname: &str) -> Result<()> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let resolv = files::resolv_conf(config.dns_config.as_ref(), &read("/etc/resolv.conf"))?;
    files::write_atomic(&dir.join("resolv.conf"), resolv.as_bytes())?;
    files::write_atomic(
        &dir.join("hostname"),
        files::hostname_file(hostname).as_bytes(),
    )?;
    if !config.log_directory.is_empty() {
        let d = Path::new(&config.log_directory);
        if !d.is_absolute() {
            return Err(ManagerError::InvalidArgument(format!(
                "config.log_directory {:?} must be absolute",
                config.log_directory
            )));
        }
        std::fs::create_dir_all(d).map_err(|e| {
            ManagerError::Internal(format!("creating log directory {}: {e}", d.display()))
        })?;
    }
    Ok(())
}

impl Manager {
    pub async fn run_pod(
        self: &Arc<Self>,
        config: Option<PodSandboxConfig>,
        handler: &str,
    ) -> Result<String> {
        let _starting = self.starting();
        let config =
            config.ok_or_else(|| ManagerError::InvalidArgument("config is required".into()))?;
        let key = pod_key(&config)?;
        validate::hostname("config.hostname", &config.hostname)?;
        pod_modes(&config)?;
        // Resolve the handler first: an unknown one changes nothing.
        self.runtime(handler)?;
        let handler_name = if handler.is_empty() {
            self.runtimes.current().handlers.default.clone()
        } else {
            handler.to_string()
        };
        let linux = config.linux.clone().unwrap_or_default();
        let cgroup_parent = if linux.cgroup_parent.is_empty() {
            self.cfg.cgroup_parent.clone()
        } else {
            linux.cgroup_parent.clone()
        };
        if !cgroup_parent.starts_with('/') {
            return Err(ManagerError::InvalidArgument(format!(
                "config.linux.cgroup_parent {cgroup_parent:?}: crius uses the cgroupfs driver and \
                 needs an absolute cgroup path (is kubelet running with --cgroup-driver=systemd?)"
            )));
        }
        if !linux.sysctls.is_empty() {
            let (net, ipc, _) = pod_modes(&config)?;
            crius_oci_runtime::spec::sysctl::validate(
                &linux.sysctls,
                net == NamespaceMode::Node,
                ipc == NamespaceMode::Node,
            )
            .map_err(ManagerError::from)?;
        }
        let id = ids::new_id();
        let pod_net = pod_network(&id, &config, &cgroup_parent)?;
        // Before anything is set up: a network to join, with its plugins.
        if pod_net.is_some()
            && self.network.usable_network()?.is_none()
            && !self.cfg.allow_pods_without_network
        {
            return Err(ManagerError::FailedPrecondition(format!(
                "no CNI network is configured in {} (NetworkReady is false); \
                 pods that do not share the host's network need one \
                 (allow_pods_without_network runs them with loopback only)",
                self.cfg.cni_config_dir.display()
            )));
        }
        self.reserve(&key, &id).map_err(|holder| {
            ManagerError::AlreadyExists(format!(
                "pod sandbox name {key:?} is reserved by pod {holder}"
            ))
        })?;
        let span = tracing::info_span!("pod", pod = %id, name = %key);
        // The span covers the rest of the RPC, across its awaits
        // (`Span::enter` would be held by whatever task this thread polls
        // next while this one waits).
        async move {
            let mut rec = PodRecord {
                version: RECORD_VERSION,
                id: id.clone(),
                phase: PodPhase::Creating,
                created_at: now_ns(),
                config: encode_config(&config),
                runtime_handler: handler_name,
                dir: self.cfg.runroot.join("pods").join(&id),
                netns: None,
                ipcns: None,
                utsns: None,
                shm: None,
                cgroup_parent,
                pidns: None,
                pause_pid: 0,
                network: String::new(),
                ips: Vec::new(),
            };
            let db = self.db.clone();
            let shm_size = self.cfg.shm_size;
            let cfg2 = config.clone();
            let monitor = self.monitor.clone();
            let runroot = self.cfg.runroot.clone();
            let pool = self.ns_pool.clone();
            let cni = self.network.clone();
            let result = blocking(move || {
                // No record before the side effects: a daemon killed meanwhile
                // finds the pod's directory without a record and tears it down
                // (recover.rs), which costs no fsync here.
                match setup(
                    &mut rec,
                    &cfg2,
                    shm_size,
                    &monitor,
                    &runroot,
                    pool.as_deref(),
                    pod_net.map(|p| (&*cni, p)),
                ) {
                    Ok(()) => {
                        rec.phase = PodPhase::Ready;
                        let t = std::time::Instant::now();
                        db.put_pod(&rec)?;
                        tracing::debug!(
                            flush_us = t.elapsed().as_micros() as u64,
                            "pod record flushed"
                        );
                        Ok(rec)
                    }
                    Err(e) => {
                        // A failed ADD undid itself; anything failing after
                        // a good ADD leaves an attachment to delete.
                        if let Err(de) = detach_network(&cni, &rec.id) {
                            tracing::error!(error = %de, "CNI DEL after a failed RunPodSandbox (retried at the next start)");
                        }
                        let _ = teardown(&rec);
                        let _ = remove_dir(&rec.dir);
                        let _ = db.delete_pod(&rec.id);
                        Err(e)
                    }
                }
            })
            .await;
            match result {
                Ok(rec) => {
                    tracing::info!("pod sandbox ready");
                    self.refill_pools();
                    let pod = Arc::new(Pod::new(rec, config));
                    crate::sync::write(&self.pods).insert(id.clone(), pod.clone());
                    // The sandbox is made and running in one step.
                    self.publish_for(EventKind::Created, &id, &id, Some(&pod));
                    self.publish_for(EventKind::Started, &id, &id, Some(&pod));
                    Ok(id)
                }
                Err(e) => {
                    self.release(&key, &id);
                    Err(e)
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Stops every container (gracefully, then SIGKILL: kubelet has usually
    /// stopped them already) and releases the namespaces. Idempotent; a
    /// pod that does not exist is not an error.
    pub async fn stop_pod(self: &Arc<Self>, query: &str) -> Result<()> {
        let pod = match self.pod(query) {
            Ok(p) => p,
            Err(ManagerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _op = pod.op.lock().await;
        pod.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        // Graceful (the stop signal, then SIGKILL after the grace), all of
        // the pod's containers at once.
        let grace = self.cfg.stop_pod_grace_seconds as i64;
        let stops = self
            .pod_containers(&pod.id)
            .into_iter()
            .map(|c| async move {
                let _op = c.op.lock().await;
                self.stop_container_inner(&c, grace).await
            });
        for r in futures_util::future::join_all(stops).await {
            r?;
        }
        let mut rec = pod.record();
        let db = self.db.clone();
        let r2 = rec.clone();
        let cni = self.network.clone();
        blocking(move || {
            // DEL while the namespace is pinned; if it fails the pod stays
            // as it was and kubelet's next StopPodSandbox tries again.
            detach_network(&cni, &r2.id)?;
            teardown(&r2)?;
            if r2.phase != PodPhase::NotReady || !r2.ips.is_empty() {
                let mut r = r2;
                r.phase = PodPhase::NotReady;
                // Released: another pod may have them by now.
                r.ips.clear();
                db.put_pod(&r)?;
            }
            Ok(())
        })
        .await?;
        let was_ready = rec.phase == PodPhase::Ready;
        rec.phase = PodPhase::NotReady;
        rec.ips.clear();
        pod.set(rec);
        tracing::info!(pod = %pod.id, "pod sandbox stopped");
        self.forget_stats(&format!("pod:{}", pod.id));
        if was_ready {
            self.publish_for(EventKind::Stopped, &pod.id, &pod.id, Some(&pod));
        }
        Ok(())
    }

    /// Removes the pod and everything it owns. Idempotent.
    pub async fn remove_pod(self: &Arc<Self>, query: &str) -> Result<()> {
        let pod = match self.pod(query) {
            Ok(p) => p,
            Err(ManagerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _op = pod.op.lock().await;
        for c in self.pod_containers(&pod.id) {
            self.remove_container_inner(&c).await?;
        }
        let rec = pod.record();
        let db = self.db.clone();
        // crius's own log directory for pods that named none goes with the
        // pod (a kubelet's log_directory is kubelet's to clean).
        let own_logs = self.cfg.root.join("pod-logs").join(&rec.id);
        let cni = self.network.clone();
        blocking(move || {
            detach_network(&cni, &rec.id)?;
            teardown(&rec)?;
            remove_dir(&rec.dir)?;
            remove_dir(&own_logs)?;
            db.delete_pod(&rec.id)?;
            Ok(())
        })
        .await?;
        crate::sync::write(&self.pods).remove(&pod.id);
        if let Ok(key) = pod_key(&pod.config) {
            self.release(&key, &pod.id);
        }
        tracing::info!(pod = %pod.id, "pod sandbox removed");
        self.forget_stats(&format!("pod:{}", pod.id));
        self.publish_for(EventKind::Deleted, &pod.id, &pod.id, Some(&pod));
        Ok(())
    }

    /// The NetworkReady condition (a CNI 1.1 network's STATUS calls its
    /// plugins, so off the async runtime).
    pub async fn network_status(&self) -> crius_network::Readiness {
        let cni = self.network.clone();
        tokio::task::spawn_blocking(move || cni.status())
            .await
            .unwrap_or_else(|e| crius_network::Readiness {
                ready: false,
                reason: crius_network::NOT_READY_REASON.into(),
                message: format!("checking the network: {e}"),
            })
    }

    /// The CNI network pods join now, if any.
    pub fn network_config(&self) -> Option<crius_network::config::NetworkConfigList> {
        self.network.network()
    }

    /// A pod's cached CNI attachment (config, arguments, result) for
    /// verbose status.
    pub fn network_attachment(&self, pod_id: &str) -> Option<serde_json::Value> {
        self.network
            .attachment(pod_id)
            .and_then(|a| serde_json::to_value(a).ok())
    }

    /// UpdatePodSandboxResources (KEP-1287, in-place pod resize): kubelet
    /// has already resized the pod's cgroup and tells the runtime the pod's
    /// new overhead and resources, which crius checks and records in the
    /// pod's stored config (kept across restarts, shown in the verbose
    /// status). Only a ready pod is resized.
    pub async fn update_pod_resources(
        &self,
        query: &str,
        overhead: Option<LinuxContainerResources>,
        resources: Option<LinuxContainerResources>,
    ) -> Result<()> {
        let pod = self.pod(query)?;
        let _op = pod.op.lock().await;
        let mut rec = pod.record();
        if rec.phase != PodPhase::Ready {
            return Err(ManagerError::FailedPrecondition(format!(
                "pod sandbox {} is not ready: only a ready pod can be resized",
                pod.id
            )));
        }
        for (field, r) in [("overhead", &overhead), ("resources", &resources)] {
            if let Some(r) = r {
                crius_oci_runtime::spec::resources(Some(r))
                    .map_err(|e| ManagerError::InvalidArgument(format!("{field}: {e}")))?;
            }
        }
        if overhead.is_none() && resources.is_none() {
            return Ok(());
        }
        let mut config: PodSandboxConfig = decode_config(&rec.id, &rec.config)?;
        let linux = config.linux.get_or_insert_with(Default::default);
        if overhead.is_some() {
            linux.overhead = overhead;
        }
        if resources.is_some() {
            linux.resources = resources;
        }
        rec.config = encode_config(&config);
        let db = self.db.clone();
        let r2 = rec.clone();
        blocking(move || Ok(db.put_pod(&r2)?)).await?;
        pod.set(rec);
        tracing::info!(pod = %pod.id, "pod sandbox resources updated");
        Ok(())
    }

    pub fn pod_status(&self, query: &str) -> Result<(Arc<Pod>, PodRecord)> {
        let pod = self.pod(query)?;
        let rec = pod.record();
        Ok((pod, rec))
    }

    pub fn list_pods(&self, filter: Option<&PodSandboxFilter>) -> Vec<(Arc<Pod>, PodRecord)> {
        let pods = crate::sync::read(&self.pods);
        let mut out: Vec<_> = pods
            .values()
            .filter(|p| {
                let Some(f) = filter else { return true };
                if !filters::id_matches(&f.id, &p.id) {
                    return false;
                }
                if !filters::labels_match(&f.label_selector, &p.config.labels) {
                    return false;
                }
                if let Some(s) = &f.state {
                    let ready = p.record().phase == PodPhase::Ready;
                    let want_ready =
                        s.state == crius_cri_api::v1::PodSandboxState::SandboxReady as i32;
                    if ready != want_ready {
                        return false;
                    }
                }
                true
            })
            .map(|p| (p.clone(), p.record()))
            .collect();
        out.sort_by_key(|(_, r)| r.created_at);
        out
    }
}
