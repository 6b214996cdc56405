//! CreateContainer: the image and its config, the host side of the
//! mounts and image volumes checked; then the rootfs, the OCI spec and the
//! bundle, and the record. The runtime is not called (see
//! `create_blocking`).
use super::{container_key, log_file, stop_signal};
use crate::manager::events::EventKind;
use crate::manager::host::{check_host_mounts, cleanup_dir, read_in_root};
use crate::manager::validate::{check_recursive_read_only, rro_unsupported};
use crate::manager::{blocking, ids, now_ns, Ctr, Manager, ManagerError, Result};
use crate::state::{encode_config, ContainerPhase, ContainerRecord, RECORD_VERSION};
use crius_cri_api::v1::{ContainerConfig, NamespaceMode, PodSandboxConfig};
use crius_image_store::db::ImageRecord;
use crius_oci_runtime::runtime::ContainerFiles;
use crius_oci_runtime::spec::{self, ImageConfig, PodFiles, PodNamespaces, SpecInput};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// The image config fields the spec needs (`ImageStore::image_config`).
fn image_config(images: &crius_image_store::ImageStore, rec: &ImageRecord) -> Result<ImageConfig> {
    let cfg = images
        .image_config(rec)
        .map_err(|e| ManagerError::Internal(format!("reading config of image {}: {e}", rec.id)))?
        .ok_or_else(|| {
            ManagerError::FailedPrecondition(format!(
                "{} is an OCI artifact, not a runnable image",
                rec.id
            ))
        })?;
    let c = cfg.config().clone().unwrap_or_default();
    Ok(ImageConfig {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        working_dir: c.working_dir().clone().unwrap_or_default(),
        user: c.user().clone().unwrap_or_default(),
        stop_signal: c.stop_signal().clone().unwrap_or_default(),
    })
}

struct CreateJob {
    id: String,
    dir: PathBuf,
    pod: PodSandboxConfig,
    pod_id: String,
    pod_files: PodFiles,
    namespaces: PodNamespaces,
    config: ContainerConfig,
    image_config: ImageConfig,
    lower: Vec<PathBuf>,
    host: spec::HostLimits,
    oci_version: String,
    files: ContainerFiles,
    runroot: PathBuf,
}

/// The blocking part of CreateContainer: rootfs, spec, bundle. Returns
/// the process's user (uid, gid, groups). The runtime is not called: as in
/// containerd's CRI, the runtime's container comes to be at
/// StartContainer, where one `run` replaces `create` + `start` (each a
/// runtime start-up of its own).
fn create_blocking(job: &CreateJob) -> Result<(u32, u32, Vec<u32>)> {
    let t0 = Instant::now();
    let bundle = &job.files.bundle;
    std::fs::create_dir_all(bundle)
        .map_err(|e| ManagerError::Internal(format!("creating {}: {e}", bundle.display())))?;
    let paths = crius_oci_runtime::rootfs::mount_rootfs(&job.lower, &job.dir.join("fs"))?;
    crate::manager::test_hold("create-container", &job.runroot, &job.dir);
    let passwd = read_in_root(&paths.merged, "etc/passwd", 4 << 20);
    let group = read_in_root(&paths.merged, "etc/group", 4 << 20);
    let devices = spec::devices::resolve(&job.config.devices)?;
    let sc = job
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let seccomp_localhost = match sc.and_then(|s| s.seccomp.as_ref()) {
        Some(p)
            if p.profile_type
                == crius_cri_api::v1::security_profile::ProfileType::Localhost as i32 =>
        {
            let path = Path::new(&p.localhost_ref);
            if !path.is_absolute() {
                return Err(ManagerError::InvalidArgument(format!(
                    "linux.security_context.seccomp.localhost_ref {:?} must be an absolute path",
                    p.localhost_ref
                )));
            }
            Some(std::fs::read_to_string(path).map_err(|e| {
                ManagerError::InvalidArgument(format!(
                    "linux.security_context.seccomp.localhost_ref {:?}: {e}",
                    p.localhost_ref
                ))
            })?)
        }
        _ => None,
    };
    let input = SpecInput {
        container_id: &job.id,
        sandbox_id: &job.pod_id,
        pod: &job.pod,
        container: &job.config,
        image: &job.image_config,
        passwd: &passwd,
        group: &group,
        rootfs: &paths.merged,
        namespaces: &job.namespaces,
        files: &job.pod_files,
        oci_version: &job.oci_version,
        host: &job.host,
        seccomp_localhost: seccomp_localhost.as_deref(),
        devices: &devices,
    };
    let spec = spec::generate(&input)?;
    let user = spec
        .process()
        .as_ref()
        .map(|p| {
            let u = p.user();
            (
                u.uid(),
                u.gid(),
                u.additional_gids().clone().unwrap_or_default(),
            )
        })
        .unwrap_or_default();
    let json = serde_json::to_vec_pretty(&spec)
        .map_err(|e| ManagerError::Internal(format!("encoding config.json: {e}")))?;
    // No fsync: a bundle is only needed while its container lives, and no
    // container survives the power loss that would lose the page cache.
    std::fs::write(bundle.join("config.json"), &json)
        .map_err(|e| ManagerError::Internal(format!("writing config.json: {e}")))?;
    if let Some(parent) = job.files.log.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            ManagerError::Internal(format!("creating log directory {}: {e}", parent.display()))
        })?;
    }
    let _ = std::fs::remove_file(&job.files.exit_file);
    tracing::debug!(
        container = %job.id,
        rootfs_and_spec_us = t0.elapsed().as_micros() as u64,
        "container bundle ready"
    );
    Ok(user)
}

impl Manager {
    pub async fn create_container(
        self: &Arc<Self>,
        pod_query: &str,
        config: Option<ContainerConfig>,
        _sandbox_config: Option<PodSandboxConfig>,
    ) -> Result<String> {
        let t_rpc = Instant::now();
        let _starting = self.starting();
        let pod = self.pod(pod_query)?;
        let mut config =
            config.ok_or_else(|| ManagerError::InvalidArgument("config is required".into()))?;
        let key = container_key(&pod.id, &config)?;
        crate::manager::validate::container_config(&config)?;
        let pod_rec = pod.record();
        let (pod_net, pod_ipc, pod_pid) = crate::manager::sandbox::pod_modes(&pod.config)?;
        if !pod.accepts_containers() {
            return Err(ManagerError::FailedPrecondition(format!(
                "pod sandbox {} is not ready (stopped, or being stopped)",
                pod.id
            )));
        }
        let handler_rro;
        {
            let info = self.runtimes.current();
            let why = info
                .get(&pod_rec.runtime_handler)
                .and_then(|p| rro_unsupported(p, &info.host));
            check_recursive_read_only(&config.mounts, &pod_rec.runtime_handler, why.as_deref())?;
            handler_rro = why.is_none();
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .filter(|i| !i.is_empty())
            .ok_or_else(|| {
                ManagerError::InvalidArgument("config.image.image is required".into())
            })?;
        // One trip off the async runtime: the image, its config, and the
        // host side of the mounts, all checked before anything is created.
        let images = self.images.clone();
        let name2 = image_name.clone();
        let mut checked = config.clone();
        let (image, image_config, checked) = blocking(move || {
            let image = images
                .resolve(&name2)
                .map_err(|e| ManagerError::InvalidArgument(format!("config.image.image: {e}")))?
                .ok_or_else(|| {
                    ManagerError::NotFound(format!(
                        "config.image.image: image {name2:?} not found; pull it first"
                    ))
                })?;
            if image.is_artifact() {
                return Err(ManagerError::FailedPrecondition(format!(
                    "config.image.image: {name2:?} is an OCI artifact, not a runnable image"
                )));
            }
            let ic = image_config(&images, &image)?;
            check_host_mounts(&mut checked)?;
            Ok((image, ic, checked))
        })
        .await?;
        // The handler must be usable now, though only StartContainer runs it.
        self.runtime(&pod_rec.runtime_handler)?;
        let log_path = log_file(
            &pod.config,
            &config,
            &self.cfg.root.join("pod-logs").join(&pod.id),
        )?;
        let id = ids::new_id();
        self.reserve(&key, &id).map_err(|holder| {
            ManagerError::AlreadyExists(format!(
                "container name {key:?} is reserved by container {holder}"
            ))
        })?;
        let span = tracing::info_span!("container", pod = %pod.id, container = %id);
        // The span covers the rest of the RPC, across its awaits
        // (`Span::enter` would be held by whatever task this thread polls
        // next while this one waits).
        async move {
            let dir = self.cfg.root.join("containers").join(&id);
            let exit_file = self.cfg.runroot.join("exits").join(&id);
            let cgroups_path =
                format!("{}/crius-{id}", pod_rec.cgroup_parent.trim_end_matches('/'));
            let mut rec = ContainerRecord {
                version: RECORD_VERSION,
                id: id.clone(),
                pod_id: pod.id.clone(),
                phase: ContainerPhase::Creating,
                created_at: now_ns(),
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
                reason: String::new(),
                message: String::new(),
                config: encode_config(&config),
                image: image_name,
                image_id: image.id.clone(),
                image_ref: image
                    .repo_digests
                    .first()
                    .cloned()
                    .unwrap_or_else(|| image.id.clone()),
                runtime_handler: pod_rec.runtime_handler.clone(),
                dir: dir.clone(),
                log_path: log_path.clone(),
                exit_file: exit_file.clone(),
                pid: 0,
                monitor_pid: 0,
                cgroups_path,
                stop_signal: String::new(),
                uid: 0,
                gid: 0,
                additional_gids: Vec::new(),
                image_volumes: Vec::new(),
            };
            rec.stop_signal = stop_signal(&config, &image_config.stop_signal);
            let as_sent = std::mem::replace(&mut config, checked);
            // Image volumes: views mounted (or shared) before the spec names them.
            let acquired = if config.mounts.iter().any(|m| m.image.is_some()) {
                let me = self.clone();
                let (mut cfg, dir2) = (config.clone(), dir.clone());
                let r = blocking(move || {
                    let ids = me.acquire_image_volumes(&mut cfg, &dir2, handler_rro)?;
                    Ok((ids, cfg))
                })
                .await;
                match r {
                    Ok((ids, cfg)) => {
                        // ContainerStatus reports the mounts as kubelet sent them,
                        // plus each image volume's digest reference.
                        let mut shown = as_sent;
                        for (m, done) in shown.mounts.iter_mut().zip(cfg.mounts.iter()) {
                            if let (Some(img), Some(d)) = (m.image.as_mut(), done.image.as_ref()) {
                                img.image_ref = d.image_ref.clone();
                            }
                        }
                        rec.config = encode_config(&shown);
                        rec.image_volumes = ids.clone();
                        config = cfg;
                        ids
                    }
                    Err(e) => {
                        self.release(&key, &id);
                        return Err(e);
                    }
                }
            } else {
                Vec::new()
            };
            let job = CreateJob {
                id: id.clone(),
                dir: dir.clone(),
                pod: pod.config.clone(),
                pod_id: pod.id.clone(),
                pod_files: PodFiles {
                    hosts: Some(pod_rec.dir.join("hosts")),
                    resolv_conf: Some(pod_rec.dir.join("resolv.conf")),
                    hostname: Some(pod_rec.dir.join("hostname")),
                    shm: pod_rec.shm.clone(),
                },
                namespaces: PodNamespaces {
                    network: pod_rec.netns.clone(),
                    ipc: pod_rec.ipcns.clone(),
                    uts: pod_rec.utsns.clone(),
                    pid: pod_rec.pidns.clone(),
                    host_network: pod_net == NamespaceMode::Node,
                    host_ipc: pod_ipc == NamespaceMode::Node,
                    host_pid: pod_pid == NamespaceMode::Node,
                },
                config: config.clone(),
                image_config,
                lower: self
                    .images
                    .lower_dirs(&image)
                    .map_err(|e| ManagerError::FailedPrecondition(e.to_string()))?,
                host: self.host_limits(&pod_rec.cgroup_parent),
                oci_version: self.oci_version(&pod_rec.runtime_handler),
                runroot: self.cfg.runroot.clone(),
                files: ContainerFiles {
                    bundle: dir.join("bundle"),
                    log: log_path,
                    exit_file,
                    pid_file: dir.join("pid"),
                },
            };
            let db = self.db.clone();
            tracing::debug!(
                checks_us = t_rpc.elapsed().as_micros() as u64,
                "container checked"
            );
            let result = blocking(move || {
                // No record before the side effects: a daemon killed meanwhile
                // finds the container's directory without a record and removes
                // it (recover.rs sweeps orphans), which costs no fsync here.
                match create_blocking(&job) {
                    Ok((uid, gid, groups)) => {
                        rec.phase = ContainerPhase::Created;
                        rec.uid = uid;
                        rec.gid = gid;
                        rec.additional_gids = groups;
                        let t = Instant::now();
                        db.put_container(&rec)?;
                        tracing::debug!(
                            flush_us = t.elapsed().as_micros() as u64,
                            "container record flushed"
                        );
                        Ok(rec)
                    }
                    Err(e) => {
                        cleanup_dir(&job.dir);
                        let _ = std::fs::remove_file(&job.files.exit_file);
                        let _ = db.delete_container(&job.id);
                        Err(e)
                    }
                }
            })
            .await;
            match result {
                Ok(rec) => {
                    tracing::info!("container created");
                    let ctr = Arc::new(Ctr::new(rec, config));
                    crate::sync::write(&self.containers).insert(id.clone(), ctr.clone());
                    self.publish(EventKind::Created, &id, &pod.id);
                    // A StopPodSandbox that began meanwhile may have listed the
                    // pod's containers before this one was there: it must not
                    // stay behind in a pod on its way down.
                    if !pod.accepts_containers() {
                        self.remove_container_inner(&ctr).await?;
                        return Err(ManagerError::FailedPrecondition(format!(
                            "pod sandbox {} is being stopped",
                            pod.id
                        )));
                    }
                    Ok(id)
                }
                Err(e) => {
                    if !acquired.is_empty() {
                        let me = self.clone();
                        let (dir2, n) = (dir.clone(), config.mounts.len());
                        let _ = blocking(move || {
                            me.release_image_volumes(&dir2, &acquired, n);
                            Ok(())
                        })
                        .await;
                    }
                    self.release(&key, &id);
                    Err(e)
                }
            }
        }
        .instrument(span)
        .await
    }
}
