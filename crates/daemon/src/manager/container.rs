//! Containers: CreateContainer, StartContainer, StopContainer,
//! RemoveContainer, ContainerStatus, ListContainers, ExecSync,
//! ReopenContainerLog, UpdateContainerResources.

use super::{blocking, filters, hostmounts, ids, now_ns, Ctr, Manager, ManagerError, Result};
use crate::state::{encode_config, ContainerPhase, ContainerRecord, RECORD_VERSION};
use crius_cri_api::v1::{
    ContainerConfig, ContainerFilter, ContainerState, LinuxContainerResources, MountPropagation,
    NamespaceMode, PodSandboxConfig, Signal,
};
use crius_image_store::db::ImageRecord;
use crius_oci_runtime::runtime::{exit_status, ContainerFiles, ExecOutput, OciRuntime};
use crius_oci_runtime::spec::{self, ImageConfig, PodFiles, PodNamespaces, SpecInput};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest log line before the monitor splits it (a "P" line), as
/// containerd's default.
pub const MAX_LOG_LINE: usize = 16 * 1024;
/// ExecSync output kept per stream.
pub const EXEC_OUTPUT_CAP: usize = 16 * 1024 * 1024;
/// Where a container's exec scratch files (pid, process spec) live, in its
/// directory.
pub const EXEC_SCRATCH_DIR: &str = "exec";
/// Termination messages are capped like kubelet's.
pub const MAX_TERMINATION_MESSAGE: u64 = 4096;
/// A container the runtime refused to run: containerd's and CRI-O's
/// reason and exit code for it.
pub const START_ERROR_REASON: &str = "StartError";
pub const START_ERROR_EXIT_CODE: i32 = 128;
/// A container stopped before it was started ends as one killed would
/// (128 + SIGKILL), as it did when the runtime's create preceded the start.
pub const NEVER_STARTED_EXIT_CODE: i32 = 137;
/// kubelet's annotation naming the termination message path.
pub const TERMINATION_PATH_ANNOTATION: &str = "io.kubernetes.container.terminationMessagePath";
pub const DEFAULT_TERMINATION_PATH: &str = "/dev/termination-log";

/// The reservation key of a container's name in its pod.
pub fn container_key(pod_id: &str, c: &ContainerConfig) -> Result<String> {
    let m = c
        .metadata
        .as_ref()
        .ok_or_else(|| ManagerError::InvalidArgument("config.metadata is required".into()))?;
    super::validate::name("config.metadata.name", &m.name)?;
    Ok(format!("{pod_id}/{}_{}", m.name, m.attempt))
}

/// The container's log file: the pod's log_directory joined with the
/// container's log_path (relative, no ".."), or a default under the root.
pub fn log_file(
    pod: &PodSandboxConfig,
    c: &ContainerConfig,
    default_dir: &Path,
) -> Result<PathBuf> {
    let name = c.metadata.as_ref().map(|m| (m.name.as_str(), m.attempt));
    let rel = if c.log_path.is_empty() {
        let (n, a) = name.unwrap_or(("container", 0));
        PathBuf::from(format!("{n}_{a}.log"))
    } else {
        let p = PathBuf::from(&c.log_path);
        if p.is_absolute()
            || p.components()
                .any(|x| !matches!(x, std::path::Component::Normal(_)))
        {
            return Err(ManagerError::InvalidArgument(format!(
                "config.log_path {:?} must be a relative path without \"..\"",
                c.log_path
            )));
        }
        p
    };
    let dir = if pod.log_directory.is_empty() {
        default_dir.to_path_buf()
    } else {
        PathBuf::from(&pod.log_directory)
    };
    Ok(dir.join(rel))
}

/// The signal StopContainer sends first: the CRI's, else the image's,
/// else SIGTERM.
pub fn stop_signal(c: &ContainerConfig, image_signal: &str) -> String {
    match Signal::try_from(c.stop_signal) {
        Ok(Signal::RuntimeDefault) | Err(_) => {
            if image_signal.is_empty() {
                "SIGTERM".into()
            } else {
                image_signal.to_string()
            }
        }
        Ok(s) => s
            .as_str_name()
            .strip_prefix("SIGNAL_")
            .unwrap_or("SIGTERM")
            .to_string(),
    }
}

/// Reads a file inside an untrusted root: symlinks resolve inside it
/// (openat2 RESOLVE_IN_ROOT), at most `cap` bytes. Missing: "".
pub fn read_in_root(root: &Path, rel: &str, cap: u64) -> String {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use std::io::Read;
    let Ok(dir) = nix::fcntl::open(
        root,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) else {
        return String::new();
    };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    // O_NOFOLLOW applies to the last component only; inner symlinks still
    // resolve within the root. A final symlink (e.g. /etc/passwd -> x) is
    // resolved by trying again without it.
    let fd = openat2(&dir, rel, how).or_else(|_| {
        openat2(
            &dir,
            rel,
            OpenHow::new()
                .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS),
        )
    });
    let Ok(fd) = fd else { return String::new() };
    let f = std::fs::File::from(fd);
    if !f.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return String::new();
    }
    let mut s = String::new();
    let _ = f.take(cap).read_to_string(&mut s);
    s
}

/// The image config fields the spec needs, from the image's config blob.
fn image_config(images: &crius_image_store::ImageStore, rec: &ImageRecord) -> Result<ImageConfig> {
    let blob = images
        .layout()
        .read_blob(&rec.id)
        .map_err(|e| ManagerError::Internal(format!("reading config of image {}: {e}", rec.id)))?;
    let v: serde_json::Value = serde_json::from_slice(&blob).map_err(|e| {
        ManagerError::FailedPrecondition(format!("image {} has an invalid config: {e}", rec.id))
    })?;
    let c = &v["config"];
    let strings = |k: &str| -> Vec<String> {
        c[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let string = |k: &str| c[k].as_str().unwrap_or("").to_string();
    Ok(ImageConfig {
        entrypoint: strings("Entrypoint"),
        cmd: strings("Cmd"),
        env: strings("Env"),
        working_dir: string("WorkingDir"),
        user: string("User"),
        stop_signal: string("StopSignal"),
    })
}

/// Why a handler cannot honour `recursive_read_only` (None: it can).
pub fn rro_unsupported(
    probe: &crius_oci_runtime::Probe,
    host: &crius_oci_runtime::HostFacts,
) -> Option<String> {
    if probe.status.recursive_read_only_mounts {
        return None;
    }
    Some(if let Some(why) = &probe.features_unknown {
        format!("its features are unknown ({why})")
    } else if !probe
        .mount_options
        .as_ref()
        .is_some_and(|m| m.iter().any(|o| o == "rro"))
    {
        "its `features` do not list the rro mount option".to_string()
    } else {
        format!(
            "the kernel ({}) is older than 5.12 (mount_setattr with AT_RECURSIVE)",
            host.kernel_release
        )
    })
}

/// Recursive read-only mounts (KEP-3857): valid only with `readonly` and
/// private propagation, and only where the handler can make every submount
/// read-only — never silently downgraded to a plain read-only bind.
pub fn check_recursive_read_only(
    mounts: &[crius_cri_api::v1::Mount],
    handler: &str,
    unsupported: Option<&str>,
) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        if !m.recursive_read_only {
            continue;
        }
        let at = format!("mounts[{i}] (container_path {:?})", m.container_path);
        if !m.readonly {
            return Err(ManagerError::InvalidArgument(format!(
                "{at}: recursive_read_only requires readonly"
            )));
        }
        if m.propagation != MountPropagation::PropagationPrivate as i32 {
            return Err(ManagerError::InvalidArgument(format!(
                "{at}: recursive_read_only requires PROPAGATION_PRIVATE"
            )));
        }
        if let Some(why) = unsupported {
            return Err(ManagerError::FailedPrecondition(format!(
                "{at}: recursive_read_only requested, but runtime handler {handler:?} cannot honour it: {why}"
            )));
        }
    }
    Ok(())
}

/// Checks and canonicalises the host side of CRI bind mounts: the path
/// exists (symlinks followed, so the runtime mounts what the operator
/// meant), and the propagation the mount asks for is possible.
fn check_host_mounts(c: &mut ContainerConfig) -> Result<()> {
    let mut mountinfo: Option<Vec<hostmounts::MountEntry>> = None;
    for (i, m) in c.mounts.iter_mut().enumerate() {
        if m.image.is_some() {
            // Image volumes: resolved by `acquire_image_volumes`.
            continue;
        }
        if m.host_path.is_empty() {
            return Err(ManagerError::InvalidArgument(format!(
                "mounts[{i}].host_path is required"
            )));
        }
        let real = std::fs::canonicalize(&m.host_path).map_err(|e| {
            ManagerError::InvalidArgument(format!(
                "mounts[{i}].host_path {:?}: {}",
                m.host_path,
                if e.kind() == std::io::ErrorKind::NotFound {
                    "does not exist".to_string()
                } else {
                    e.to_string()
                }
            ))
        })?;
        let real_s = real.to_string_lossy().into_owned();
        let prop = MountPropagation::try_from(m.propagation)
            .unwrap_or(MountPropagation::PropagationPrivate);
        if prop != MountPropagation::PropagationPrivate {
            let infos = mountinfo.get_or_insert_with(|| {
                hostmounts::parse_mountinfo(
                    &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
                )
            });
            let entry = hostmounts::mount_of(infos, &real_s);
            let (ok, want) = match prop {
                MountPropagation::PropagationBidirectional => {
                    (entry.is_some_and(|e| e.shared), "shared")
                }
                _ => (
                    entry.is_some_and(|e| e.shared || e.slave),
                    "shared or slave",
                ),
            };
            if !ok {
                return Err(ManagerError::FailedPrecondition(format!(
                    "mounts[{i}].host_path {:?} is on mount {:?}, which is not {want} \
                     (needed for propagation {}); make it so with `mount --make-rshared {}`",
                    m.host_path,
                    entry.map(|e| e.mount_point.as_str()).unwrap_or("?"),
                    prop.as_str_name(),
                    entry.map(|e| e.mount_point.as_str()).unwrap_or("/"),
                )));
            }
        }
        m.host_path = real_s;
    }
    Ok(())
}

pub(crate) fn cleanup_dir(dir: &Path) {
    // Image sub path binds first: never recurse into a mounted view.
    if let Ok(entries) = std::fs::read_dir(dir.join("volumes")) {
        for e in entries.flatten() {
            let _ = crius_oci_runtime::imagevol::unmount(&e.path());
        }
    }
    if let Err(e) = crius_oci_runtime::rootfs::remove_rootfs(&dir.join("fs")) {
        tracing::warn!(dir = %dir.display(), error = %e, "removing rootfs");
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "removing container dir");
        }
    }
}

pub(crate) fn files_of(rec: &ContainerRecord) -> ContainerFiles {
    ContainerFiles {
        bundle: rec.dir.join("bundle"),
        log: rec.log_path.clone(),
        exit_file: rec.exit_file.clone(),
        pid_file: rec.dir.join("pid"),
    }
}

/// Whether the container's memory cgroup saw an OOM kill (v1 or v2).
fn oom_killed(cgroups_path: &str) -> bool {
    let rel = cgroups_path.trim_start_matches('/');
    for (file, base) in [
        ("memory.oom_control", "/sys/fs/cgroup/memory"),
        ("memory.events", "/sys/fs/cgroup"),
        ("memory.events", "/sys/fs/cgroup/unified"),
    ] {
        let p = Path::new(base).join(rel).join(file);
        if let Ok(s) = std::fs::read_to_string(&p) {
            let n = s
                .lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            if n > 0 {
                return true;
            }
        }
    }
    false
}

/// The termination message the container wrote, read from the host side
/// of the mount kubelet provides for it.
fn termination_message(c: &ContainerConfig) -> String {
    let path = c
        .annotations
        .get(TERMINATION_PATH_ANNOTATION)
        .map(String::as_str)
        .unwrap_or(DEFAULT_TERMINATION_PATH);
    let Some(m) = c.mounts.iter().find(|m| m.container_path == path) else {
        return String::new();
    };
    use std::io::Read;
    let mut s = String::new();
    // The host path may be a symlink the container replaced: never follow.
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&m.host_path)
    {
        let _ = f.take(MAX_TERMINATION_MESSAGE).read_to_string(&mut s);
    }
    s
}

use std::os::unix::fs::OpenOptionsExt;

/// The record after the container's exit, from the exit file (None: still
/// running). Reads the cgroup for OOM and the termination message.
pub(crate) fn exited_record(
    rec: &ContainerRecord,
    config: &ContainerConfig,
) -> Option<ContainerRecord> {
    if !matches!(rec.phase, ContainerPhase::Created | ContainerPhase::Running) {
        return None;
    }
    let (code, time) = exit_status(&files_of(rec)).ok()??;
    let mut r = rec.clone();
    r.phase = ContainerPhase::Exited;
    r.exit_code = code;
    // Clock granularity aside, an exit is never before the start.
    r.finished_at = parse_rfc3339_ns(&time)
        .unwrap_or_else(now_ns)
        .max(r.started_at);
    if r.started_at == 0 {
        // Started while no record of it was kept (a daemon killed inside
        // StartContainer).
        r.started_at = pid_file_time(rec)
            .unwrap_or(r.finished_at)
            .min(r.finished_at);
    }
    r.reason = if oom_killed(&rec.cgroups_path) {
        "OOMKilled".into()
    } else if code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    r.message = termination_message(config);
    Some(r)
}

/// When the runtime wrote the container's pid file (as it ran it), in
/// Unix nanoseconds.
pub(crate) fn pid_file_time(rec: &ContainerRecord) -> Option<i64> {
    std::fs::metadata(files_of(rec).pid_file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64)
}

/// Parses the monitor's RFC 3339 UTC timestamp (`2024-01-02T03:04:05.123456789Z`).
pub fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, mo, da) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (h, mi, se) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let mut frac = frac.to_string();
    frac.truncate(9);
    while frac.len() < 9 {
        frac.push('0');
    }
    let ns: i64 = frac.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) * 1_000_000_000) + ns)
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
        super::validate::container_config(&config)?;
        let pod_rec = pod.record();
        let (pod_net, pod_ipc, pod_pid) = super::sandbox::pod_modes(&pod.config)?;
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
        let _g = span.enter();
        let dir = self.cfg.root.join("containers").join(&id);
        let exit_file = self.cfg.runroot.join("exits").join(&id);
        let cgroups_path = format!("{}/crius-{id}", pod_rec.cgroup_parent.trim_end_matches('/'));
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
                self.containers
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.clone(), ctr.clone());
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

    /// Observes an exit the monitor recorded and persists it.
    pub(crate) async fn refresh(&self, c: &Ctr) -> ContainerRecord {
        let rec = c.record();
        // Only a running container exits: a created one that has an exit
        // file is being started right now (its monitor ran it, the start
        // has not recorded it yet), and the start records it first.
        if rec.phase != ContainerPhase::Running {
            return rec;
        }
        let Some(new) = exited_record(&rec, &c.config) else {
            return rec;
        };
        c.set(new.clone());
        let db = self.db.clone();
        let r2 = new.clone();
        if let Err(e) = blocking(move || Ok(db.put_container_lazily(&r2)?)).await {
            tracing::error!(container = %c.id, error = %e, "persisting the container's exit");
        }
        tracing::info!(container = %c.id, exit_code = new.exit_code, reason = %new.reason, "container exited");
        new
    }

    /// The current record, or FAILED_PRECONDITION if the container is not
    /// in `phase`.
    async fn refresh_expecting(&self, c: &Ctr, phase: ContainerPhase) -> Result<ContainerRecord> {
        let rec = self.refresh(c).await;
        if rec.phase != phase {
            return Err(ManagerError::FailedPrecondition(format!(
                "container {} is {}, not {}",
                c.id,
                phase_name(rec.phase),
                phase_name(phase)
            )));
        }
        Ok(rec)
    }

    /// Runs the container: its monitor (a pooled standby, or a fresh one)
    /// makes the runtime create and start it in one call (`run --detach`).
    /// A runtime that refuses leaves the container exited with reason
    /// `StartError` and exit code 128 (as containerd and CRI-O report it),
    /// and nothing of the runtime's behind.
    pub async fn start_container(self: &Arc<Self>, query: &str) -> Result<()> {
        // Carried through even if the client goes away (its deadline, a
        // cancelled call): a container must not run while its record, in
        // memory, says created, nor the op lock be let go mid-start.
        use tracing::Instrument;
        let me = self.clone();
        let query = query.to_string();
        tokio::spawn(
            async move { me.start_container_inner(&query).await }
                .instrument(tracing::Span::current()),
        )
        .await
        .map_err(|e| ManagerError::Internal(format!("StartContainer task failed: {e}")))?
    }

    async fn start_container_inner(self: &Arc<Self>, query: &str) -> Result<()> {
        let _starting = self.starting();
        let c = self.ctr(query)?;
        let _op = c.op.lock().await;
        let rec = self.refresh_expecting(&c, ContainerPhase::Created).await?;
        // The pod's namespaces and mounts, which the spec names, must still
        // be there, and stay: a pod being stopped takes no new starts.
        let pod_ready = self
            .pod(&c.pod_id)
            .map(|p| p.accepts_containers())
            .unwrap_or(false);
        if !pod_ready {
            return Err(ManagerError::FailedPrecondition(format!(
                "container {}: its pod sandbox {} is not ready (stopped, or being stopped)",
                c.id, c.pod_id
            )));
        }
        let runtime = self.runtime(&rec.runtime_handler)?;
        let pool = self.monitor_pool.clone();
        let (tty, files) = (c.config.tty, files_of(&rec));
        let db = self.db.clone();
        let c2 = c.clone();
        let mut r = rec.clone();
        let result = blocking(move || {
            let id = &c2.id;
            // Taken before the run: a container can exit before the
            // runtime returns, and must not finish before it started.
            let started = now_ns();
            let t = Instant::now();
            let launched = runtime
                .prepare_run(pool.as_deref(), id, &files, MAX_LOG_LINE, tty)
                .and_then(|p| p.launch())
                .map(|l| (l.pid, l.monitor_pid));
            match launched {
                Ok((pid, monitor_pid)) => {
                    tracing::debug!(
                        runtime_run_us = t.elapsed().as_micros() as u64,
                        "runtime run returned"
                    );
                    r.phase = ContainerPhase::Running;
                    r.started_at = started;
                    r.pid = pid;
                    r.monitor_pid = monitor_pid;
                    c2.set(r.clone());
                    // No fsync: recovery finds a container started after
                    // the last flushed record through the runtime, which is
                    // also why a failed write does not fail the start (the
                    // container runs).
                    if let Err(e) = db.put_container_lazily(&r) {
                        tracing::error!(error = %e, "recording the start");
                    }
                    Ok(Ok(()))
                }
                Err(e) => {
                    // Whatever the runtime made of it before failing.
                    if let Err(d) = runtime.delete(id, true) {
                        tracing::debug!(error = %d, "runtime delete after a failed run");
                    }
                    let _ = std::fs::remove_file(&files.pid_file);
                    r.phase = ContainerPhase::Exited;
                    r.finished_at = now_ns();
                    r.exit_code = START_ERROR_EXIT_CODE;
                    r.reason = START_ERROR_REASON.into();
                    r.message = e.to_string();
                    c2.set(r.clone());
                    // Unrecorded, a restarted daemon finds it created again
                    // (nothing of the runtime's is left): still true.
                    if let Err(e) = db.put_container(&r) {
                        tracing::error!(error = %e, "recording the failed start");
                    }
                    Ok(Err(e))
                }
            }
        })
        .await?;
        self.refill_pools();
        match result {
            Ok(()) => {
                tracing::info!(container = %c.id, "container started");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(container = %c.id, error = %e, "container failed to start");
                Err(ManagerError::FailedPrecondition(e.to_string()))
            }
        }
    }

    pub async fn stop_container(self: &Arc<Self>, query: &str, timeout: i64) -> Result<()> {
        // Stop* is idempotent in the CRI: kubelet retries a stop whose
        // container is already gone.
        let c = match self.ctr(query) {
            Ok(c) => c,
            Err(ManagerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _op = c.op.lock().await;
        self.stop_container_inner(&c, timeout).await
    }

    /// Sends the stop signal, waits up to `timeout` seconds for the exit,
    /// then SIGKILL. The caller holds the container's op lock (or owns the
    /// pod's). Idempotent.
    pub(crate) async fn stop_container_inner(&self, c: &Arc<Ctr>, timeout: i64) -> Result<()> {
        let rec = self.refresh(c).await;
        if rec.phase == ContainerPhase::Created {
            // Nothing runs yet (StartContainer runs it): it ends unstarted.
            let mut r = rec;
            r.phase = ContainerPhase::Exited;
            r.finished_at = now_ns();
            r.exit_code = NEVER_STARTED_EXIT_CODE;
            r.reason = "Error".into();
            r.message = "stopped before it was started".into();
            let db = self.db.clone();
            let r2 = r.clone();
            blocking(move || Ok(db.put_container(&r2)?)).await?;
            c.set(r);
            tracing::info!(container = %c.id, "container stopped before it was started");
            return Ok(());
        }
        if rec.phase != ContainerPhase::Running {
            return Ok(());
        }
        let runtime = self.runtime_any(&rec.runtime_handler)?;
        let files = files_of(&rec);
        if timeout > 0 {
            let (rt, id, sig) = (runtime.clone(), c.id.clone(), rec.stop_signal.clone());
            let sent = blocking(move || Ok(rt.kill(&id, &sig)?)).await;
            if let Err(e) = sent {
                tracing::debug!(container = %c.id, error = %e, "stop signal not delivered");
            }
            wait_exit(
                &files,
                Duration::from_secs(super::validate::timeout_secs(timeout)),
            )
            .await;
        }
        if exit_status(&files).ok().flatten().is_none() {
            let (rt, id) = (runtime.clone(), c.id.clone());
            let killed = blocking(move || Ok(rt.kill(&id, "SIGKILL")?)).await;
            if let Err(e) = killed {
                tracing::debug!(container = %c.id, error = %e, "SIGKILL not delivered");
            }
            if !wait_exit(&files, Duration::from_secs(30)).await {
                return Err(ManagerError::Internal(format!(
                    "container {} did not exit after SIGKILL",
                    c.id
                )));
            }
        }
        self.refresh(c).await;
        tracing::info!(container = %c.id, "container stopped");
        Ok(())
    }

    /// The runtime of a handler even when its probe says not ready (to
    /// stop and delete what it already runs).
    pub(crate) fn runtime_any(&self, handler: &str) -> Result<OciRuntime> {
        let info = self.runtimes.current();
        let h = info.handlers.get(handler).ok_or_else(|| {
            ManagerError::FailedPrecondition(format!(
                "runtime handler {handler:?} is no longer configured"
            ))
        })?;
        Ok(OciRuntime::new(h, &self.monitor)?)
    }

    pub async fn remove_container(self: &Arc<Self>, query: &str) -> Result<()> {
        let c = match self.ctr(query) {
            Ok(c) => c,
            Err(ManagerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.remove_container_inner(&c).await
    }

    pub(crate) async fn remove_container_inner(self: &Arc<Self>, c: &Arc<Ctr>) -> Result<()> {
        let _op = c.op.lock().await;
        if !self
            .containers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&c.id)
        {
            return Ok(());
        }
        self.stop_container_inner(c, 0).await?;
        let rec = c.record();
        let runtime = self.runtime_any(&rec.runtime_handler).ok();
        let db = self.db.clone();
        let me = self.clone();
        let mounts = c.config.mounts.len();
        blocking(move || {
            if let Some(rt) = runtime {
                if let Err(e) = rt.delete(&rec.id, true) {
                    tracing::debug!(container = %rec.id, error = %e, "runtime delete");
                }
            }
            me.release_image_volumes(&rec.dir, &rec.image_volumes, mounts);
            crius_oci_runtime::rootfs::remove_rootfs(&rec.dir.join("fs"))?;
            cleanup_dir(&rec.dir);
            let _ = std::fs::remove_file(&rec.exit_file);
            db.delete_container(&rec.id)?;
            Ok(())
        })
        .await?;
        self.containers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&c.id);
        if let Ok(key) = container_key(&c.pod_id, &c.config) {
            self.release(&key, &c.id);
        }
        tracing::info!(container = %c.id, "container removed");
        Ok(())
    }

    pub async fn container_status(&self, query: &str) -> Result<(Arc<Ctr>, ContainerRecord)> {
        let c = self.ctr(query)?;
        let rec = self.refresh(&c).await;
        Ok((c, rec))
    }

    /// The containers matching `filter`, oldest first, their exits observed.
    /// Callers read each record in place (`Ctr::with`): with a thousand
    /// containers, copying every record would dominate the call.
    pub async fn list_containers(&self, filter: Option<&ContainerFilter>) -> Vec<Arc<Ctr>> {
        let all: Vec<Arc<Ctr>> = {
            let ctrs = self.containers.read().unwrap_or_else(|p| p.into_inner());
            ctrs.values()
                .filter(|c| match filter {
                    None => true,
                    Some(f) => {
                        filters::id_matches(&f.id, &c.id)
                            && filters::id_matches(&f.pod_sandbox_id, &c.pod_id)
                            && filters::labels_match(&f.label_selector, &c.config.labels)
                    }
                })
                .cloned()
                .collect()
        };
        let mut out = Vec::with_capacity(all.len());
        for c in all {
            let live =
                c.with(|r| matches!(r.phase, ContainerPhase::Created | ContainerPhase::Running));
            if live {
                self.refresh(&c).await;
            }
            let (phase, created_at) = c.with(|r| (r.phase, r.created_at));
            if let Some(s) = filter.and_then(|f| f.state.as_ref()) {
                if s.state != cri_state(phase) as i32 {
                    continue;
                }
            }
            out.push((created_at, c));
        }
        out.sort_by_key(|(t, _)| *t);
        out.into_iter().map(|(_, c)| c).collect()
    }

    pub async fn exec_sync(
        &self,
        query: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<ExecOutput> {
        let c = self.ctr(query)?;
        super::validate::exec_cmd(&cmd)?;
        let rec = self.refresh_expecting(&c, ContainerPhase::Running).await?;
        let runtime = self.runtime_any(&rec.runtime_handler)?;
        let id = c.id.clone();
        let t = Duration::from_secs(super::validate::timeout_secs(timeout));
        let cmd2 = cmd.clone();
        let bundle = rec.dir.join("bundle/config.json");
        // Exec scratch files live in the container's directory: removing
        // the container removes whatever a daemon killed mid-exec left.
        let scratch = rec.dir.join(EXEC_SCRATCH_DIR);
        // A client that gives up drops this future: the guard tells the
        // blocking exec to stop (and reap) the process tree at once.
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _guard = CancelOnDrop(cancel.clone());
        let out = blocking(move || {
            let spec: serde_json::Value = std::fs::read(&bundle)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| ManagerError::Internal(format!("reading {}", bundle.display())))?;
            std::fs::create_dir_all(&scratch).map_err(|e| {
                ManagerError::Internal(format!("creating {}: {e}", scratch.display()))
            })?;
            let exec = crius_oci_runtime::runtime::ExecSync {
                argv: &cmd2,
                process: Some(&spec["process"]),
                scratch: &scratch,
                timeout: t,
                cap: EXEC_OUTPUT_CAP,
                cancel: Some(&cancel),
            };
            runtime
                .exec_sync_as(&id, &exec)
                .map_err(|e| ManagerError::Internal(e.to_string()))
        })
        .await?;
        if out.timed_out {
            return Err(ManagerError::DeadlineExceeded(format!(
                "command {cmd:?} in container {} timed out after {timeout}s",
                c.id
            )));
        }
        Ok(out)
    }

    pub async fn reopen_log(&self, query: &str) -> Result<()> {
        let c = self.ctr(query)?;
        let rec = self.refresh_expecting(&c, ContainerPhase::Running).await?;
        // Only signal the pid if it is still this container's monitor.
        if !super::recover::monitor_alive(&rec) {
            return Err(ManagerError::FailedPrecondition(format!(
                "container {}'s monitor is gone",
                c.id
            )));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(rec.monitor_pid),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .map_err(|e| ManagerError::Internal(format!("signalling the monitor: {e}")))?;
        // kubelet renames the log, then asks for a reopen and expects the
        // new file: wait (briefly) until the monitor has created it.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !rec.log_path.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !rec.log_path.exists() {
            return Err(ManagerError::Internal(format!(
                "the monitor did not reopen {}",
                rec.log_path.display()
            )));
        }
        Ok(())
    }

    pub async fn update_resources(
        &self,
        query: &str,
        linux: Option<LinuxContainerResources>,
    ) -> Result<()> {
        let c = self.ctr(query)?;
        let _op = c.op.lock().await;
        let rec = self.refresh(&c).await;
        if !matches!(rec.phase, ContainerPhase::Created | ContainerPhase::Running) {
            return Err(ManagerError::FailedPrecondition(format!(
                "container {} is {}; only created or running containers can be updated",
                c.id,
                phase_name(rec.phase)
            )));
        }
        let Some(linux) = linux else {
            return Ok(());
        };
        let res = spec::resources(Some(&linux))?;
        let json = serde_json::to_vec(&res)
            .map_err(|e| ManagerError::Internal(format!("encoding resources: {e}")))?;
        if rec.phase == ContainerPhase::Created {
            // Not run yet (kubelet's CPU manager updates between create and
            // start): the bundle's spec takes the update, so the container
            // starts with it.
            let bundle = files_of(&rec).bundle.join("config.json");
            blocking(move || {
                let mut spec: serde_json::Value = std::fs::read(&bundle)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .ok_or_else(|| {
                        ManagerError::Internal(format!("reading {}", bundle.display()))
                    })?;
                let update = serde_json::from_slice(&json)
                    .map_err(|e| ManagerError::Internal(format!("resources: {e}")))?;
                spec::merge_resources(&mut spec, &update);
                let out = serde_json::to_vec_pretty(&spec)
                    .map_err(|e| ManagerError::Internal(format!("encoding config.json: {e}")))?;
                // Whole or not at all: a new file renamed over the old.
                let tmp = bundle.with_extension("json.tmp");
                std::fs::write(&tmp, &out)
                    .and_then(|_| std::fs::rename(&tmp, &bundle))
                    .map_err(|e| {
                        ManagerError::Internal(format!("writing {}: {e}", bundle.display()))
                    })
            })
            .await?;
        } else {
            let runtime = self.runtime_any(&rec.runtime_handler)?;
            let id = c.id.clone();
            blocking(move || {
                runtime
                    .update(&id, &json)
                    .map_err(|e| ManagerError::FailedPrecondition(e.to_string()))
            })
            .await?;
        }
        // Keep the record's config in step, so ContainerStatus reports the
        // resources in force: what the update sets, over what it leaves.
        let mut cfg: ContainerConfig = crate::state::decode_config(&c.id, &c.record().config)
            .unwrap_or_else(|_| c.config.clone());
        let l = cfg.linux.get_or_insert_with(Default::default);
        let merged = merge_cri_resources(l.resources.take().unwrap_or_default(), linux);
        l.resources = Some(merged);
        let mut r = c.record();
        r.config = encode_config(&cfg);
        let db = self.db.clone();
        let r2 = r.clone();
        blocking(move || Ok(db.put_container(&r2)?)).await?;
        c.set(r);
        Ok(())
    }
}

/// The resources in force after an update: every field the update sets
/// (non-zero, non-empty) replaces the old one, the rest stay, as the
/// runtime's `update` treats the cgroup (kubelet's CPU manager sends only
/// `cpuset_cpus`).
pub fn merge_cri_resources(
    mut old: LinuxContainerResources,
    new: LinuxContainerResources,
) -> LinuxContainerResources {
    fn set<T: PartialEq + Default>(old: &mut T, new: T) {
        if new != T::default() {
            *old = new;
        }
    }
    set(&mut old.cpu_period, new.cpu_period);
    set(&mut old.cpu_quota, new.cpu_quota);
    set(&mut old.cpu_shares, new.cpu_shares);
    set(&mut old.memory_limit_in_bytes, new.memory_limit_in_bytes);
    set(&mut old.oom_score_adj, new.oom_score_adj);
    set(&mut old.cpuset_cpus, new.cpuset_cpus);
    set(&mut old.cpuset_mems, new.cpuset_mems);
    set(&mut old.hugepage_limits, new.hugepage_limits);
    set(
        &mut old.memory_swap_limit_in_bytes,
        new.memory_swap_limit_in_bytes,
    );
    old.unified.extend(new.unified);
    old
}

/// Polls for the monitor's exit file; true once it exists.
async fn wait_exit(files: &ContainerFiles, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(2);
    loop {
        if files.exit_file.exists() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// Sets its flag when dropped (an RPC future dropped by a cancelling
/// client).
struct CancelOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

pub fn cri_state(p: ContainerPhase) -> ContainerState {
    match p {
        ContainerPhase::Creating | ContainerPhase::Created => ContainerState::ContainerCreated,
        ContainerPhase::Running => ContainerState::ContainerRunning,
        ContainerPhase::Exited => ContainerState::ContainerExited,
    }
}

fn phase_name(p: ContainerPhase) -> &'static str {
    match p {
        ContainerPhase::Creating => "being created",
        ContainerPhase::Created => "created",
        ContainerPhase::Running => "running",
        ContainerPhase::Exited => "exited",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_cri_api::v1::ContainerMetadata;

    fn cfg(name: &str, attempt: u32, log: &str) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt,
            }),
            log_path: log.into(),
            ..Default::default()
        }
    }

    #[test]
    fn log_file_table() {
        let pod = PodSandboxConfig {
            log_directory: "/var/log/pods/ns_p_uid".into(),
            ..Default::default()
        };
        let d = Path::new("/var/lib/crius/pod-logs/x");
        assert_eq!(
            log_file(&pod, &cfg("app", 0, "app/0.log"), d).unwrap(),
            PathBuf::from("/var/log/pods/ns_p_uid/app/0.log")
        );
        assert_eq!(
            log_file(&PodSandboxConfig::default(), &cfg("app", 2, ""), d).unwrap(),
            d.join("app_2.log")
        );
        for bad in ["/etc/passwd", "../x.log", "a/../../b"] {
            assert!(log_file(&pod, &cfg("app", 0, bad), d).is_err(), "{bad}");
        }
    }

    #[test]
    fn stop_signal_precedence() {
        let mut c = cfg("a", 0, "");
        assert_eq!(stop_signal(&c, ""), "SIGTERM");
        assert_eq!(stop_signal(&c, "SIGQUIT"), "SIGQUIT");
        c.stop_signal = Signal::Sigusr1 as i32;
        assert_eq!(stop_signal(&c, "SIGQUIT"), "SIGUSR1");
    }

    #[test]
    fn names_are_keyed_by_pod_name_and_attempt() {
        assert_eq!(container_key("p", &cfg("a", 1, "")).unwrap(), "p/a_1");
        assert!(container_key("p", &ContainerConfig::default()).is_err());
    }

    #[test]
    fn recursive_read_only_table() {
        use crius_cri_api::v1::Mount;
        let m = |ro: bool, rro: bool, prop: MountPropagation| Mount {
            container_path: "/data".into(),
            host_path: "/srv".into(),
            readonly: ro,
            recursive_read_only: rro,
            propagation: prop as i32,
            ..Default::default()
        };
        let private = MountPropagation::PropagationPrivate;
        let cases = [
            (m(true, false, private), None, Ok(())),
            (m(false, false, private), Some("x"), Ok(())),
            (m(true, true, private), None, Ok(())),
            (m(false, true, private), None, Err("requires readonly")),
            (
                m(true, true, MountPropagation::PropagationHostToContainer),
                None,
                Err("requires PROPAGATION_PRIVATE"),
            ),
            (
                m(true, true, private),
                Some("no rro"),
                Err("runtime handler \"crun\" cannot honour it: no rro"),
            ),
        ];
        for (i, (mount, why, want)) in cases.into_iter().enumerate() {
            let got = check_recursive_read_only(&[mount], "crun", why);
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(w)) => {
                    assert!(e.to_string().contains(w), "case {i}: {e}");
                    assert!(
                        e.to_string().contains("\"/data\""),
                        "case {i}: names the path: {e}"
                    );
                }
                (g, w) => panic!("case {i}: {g:?} vs {w:?}"),
            }
        }
    }

    #[test]
    fn resource_updates_keep_what_they_leave_unset() {
        let r = |shares: i64, mem: i64, cpus: &str| LinuxContainerResources {
            cpu_shares: shares,
            memory_limit_in_bytes: mem,
            cpuset_cpus: cpus.into(),
            ..Default::default()
        };
        // (in force, update, in force after)
        let cases = [
            (r(512, 64 << 20, ""), r(0, 0, "1"), r(512, 64 << 20, "1")),
            (r(512, 64 << 20, "0"), r(256, 0, ""), r(256, 64 << 20, "0")),
            (r(0, 0, ""), r(2, 3, "0-1"), r(2, 3, "0-1")),
            (r(1, 2, "0"), r(0, 0, ""), r(1, 2, "0")),
        ];
        for (old, update, want) in cases {
            assert_eq!(
                merge_cri_resources(old.clone(), update.clone()),
                want,
                "{old:?} + {update:?}"
            );
        }
        let mut old = r(1, 0, "");
        old.unified.insert("memory.high".into(), "1".into());
        old.unified.insert("pids.max".into(), "5".into());
        let mut update = r(0, 0, "");
        update.unified.insert("memory.high".into(), "2".into());
        let got = merge_cri_resources(old, update);
        assert_eq!(got.unified["memory.high"], "2");
        assert_eq!(got.unified["pids.max"], "5");
        assert_eq!(got.cpu_shares, 1);
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ns("2024-03-01T12:34:56.123456789Z"),
            Some(1_709_296_496_123_456_789)
        );
        assert_eq!(
            parse_rfc3339_ns("2000-01-01T00:00:01.5Z"),
            Some(946_684_801_500_000_000)
        );
        assert_eq!(parse_rfc3339_ns("garbage"), None);
    }

    #[test]
    fn reading_in_root_never_leaves_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let outside = tmp.path().join("secret");
        std::fs::write(&outside, "host secret").unwrap();
        std::fs::write(root.join("etc/group"), "g:x:1:\n").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../secret", root.join("etc/shadow")).unwrap();
        assert_eq!(read_in_root(&root, "etc/group", 100), "g:x:1:\n");
        // Absolute and relative escapes resolve inside the root: nothing.
        assert_eq!(read_in_root(&root, "etc/passwd", 100), "");
        assert_eq!(read_in_root(&root, "etc/shadow", 100), "");
        assert_eq!(read_in_root(&root, "etc/group", 3), "g:x");
    }
}
