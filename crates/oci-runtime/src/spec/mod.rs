//! Generating the OCI runtime spec (`config.json`) of a CRI container.
//!
//! Everything here is pure: the caller reads the image's /etc/passwd and
//! /etc/group, the Localhost seccomp profile and the daemon's capability
//! bounding set, and passes their contents in; [`generate`] returns the spec
//! or a [`SpecError`] naming the offending CRI field.
//!
//! - `args`: argv (kubelet's override rules), environment, working dir.
//! - `user`: uid/gid/supplementary groups from the CRI and the image.
//! - `caps`: capability sets.
//! - `mounts`: default and CRI mounts, masked and read-only paths.
//! - `seccomp`: profile selection; RuntimeDefault and Localhost profiles
//!   (OCI or docker/containers form) converted for the container.
//! - `lsm`: the AppArmor profile; SELinux options checked against the host.
//! - `devices`, `sysctl`: CRI devices and pod sysctls.
//!
//! Not handled here: CDI devices, user namespaces (an error), and the stdin
//! pipes (stdin/stdin_once are recorded as annotations for the caller).

pub mod args;
pub mod caps;
pub mod devices;
pub mod lsm;
pub mod mounts;
pub mod seccomp;
pub mod sysctl;
pub mod user;

#[cfg(test)]
mod tests;

use crius_cri_api::v1::{
    ContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext, NamespaceMode,
    NamespaceOption, PodSandboxConfig,
};
use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResources, LinuxResourcesBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use caps::CapabilityPlan;
pub use mounts::MountPlan;
pub use user::ResolvedUser;

/// Annotation listing (comma-separated) the capabilities removed because
/// the daemon's bounding set lacks them.
pub const ANNOTATION_DROPPED_CAPS: &str = "io.crius.dropped-capabilities";
/// Annotation: the container wants stdin ("true"/"false").
pub const ANNOTATION_STDIN: &str = "io.crius.stdin";
/// Annotation: stdin is closed after the first attach ("true"/"false").
pub const ANNOTATION_STDIN_ONCE: &str = "io.crius.stdin-once";
/// Annotation: the image's stop signal, when it has one.
pub const ANNOTATION_STOP_SIGNAL: &str = "io.crius.stop-signal";
/// The RLIMIT_NOFILE soft and hard limit of container processes.
pub const NOFILE_LIMIT: u64 = 1_048_576;
/// The highest oom_score_adj.
pub const MAX_OOM_SCORE_ADJ: i32 = 1000;

/// The `config` section of the OCI image config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: String,
}

/// The pod's pinned namespace files. `None` for network/ipc/uts means the
/// host namespace when the pod's namespace option is NODE (otherwise a new
/// namespace). For pid: `Some` = the pod's namespace (mode POD).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNamespaces {
    pub network: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub pid: Option<PathBuf>,
    /// The pod uses the host's network (and UTS), IPC or PID namespace: a
    /// container asking for the pod's gets the host's (critest's host
    /// network containers send no namespace options at all).
    pub host_network: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
}

/// Files the pod provides to all its containers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFiles {
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    pub hostname: Option<PathBuf>,
    pub shm: Option<PathBuf>,
}

/// What the daemon itself is limited to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostLimits {
    /// The daemon's capability bounding set ("CAP_CHOWN", ...).
    pub bounding_caps: Vec<String>,
    /// The daemon's own oom_score_adj: lower values are clamped up to it
    /// (lowering needs CAP_SYS_RESOURCE).
    pub min_oom_score_adj: i32,
    /// The cgroup parent (cgroupfs path).
    pub cgroup_parent: String,
    /// The daemon's own hard RLIMIT_NOFILE: raising a limit above it needs
    /// CAP_SYS_RESOURCE, which these machines lack. 0: no cap.
    pub max_nofile: u64,
    /// The node's per-container process limit (pids cgroup; CRI carries
    /// none per container). 0: unlimited.
    pub pids_limit: i64,
    /// AppArmor and SELinux on this host.
    pub lsm: lsm::LsmHost,
    /// The running kernel (major, minor), for seccomp rules that need a
    /// minimum kernel; `None`: unknown (treated as older than any).
    pub kernel: Option<(u32, u32)>,
}

impl HostLimits {
    /// The limits of the calling process (the daemon): its capability
    /// bounding set, oom_score_adj, hard RLIMIT_NOFILE and the kernel
    /// version. No pids limit.
    pub fn of_this_process(cgroup_parent: impl Into<String>) -> Self {
        HostLimits {
            bounding_caps: crate::probe::bounding_set(),
            min_oom_score_adj: crate::probe::own_oom_score_adj(),
            cgroup_parent: cgroup_parent.into(),
            max_nofile: crate::probe::own_nofile_limit(),
            pids_limit: 0,
            lsm: lsm::LsmHost::read(lsm::DEFAULT_APPARMOR_PROFILE),
            kernel: crate::probe::kernel_version(),
        }
    }
}

/// Everything [`generate`] needs.
#[derive(Debug, Clone, Copy)]
pub struct SpecInput<'a> {
    pub container_id: &'a str,
    pub sandbox_id: &'a str,
    pub pod: &'a PodSandboxConfig,
    pub container: &'a ContainerConfig,
    pub image: &'a ImageConfig,
    /// Contents of the image's /etc/passwd ("" if absent).
    pub passwd: &'a str,
    /// Contents of the image's /etc/group ("" if absent).
    pub group: &'a str,
    pub rootfs: &'a Path,
    pub namespaces: &'a PodNamespaces,
    pub files: &'a PodFiles,
    pub oci_version: &'a str,
    pub host: &'a HostLimits,
    /// Contents of the Localhost seccomp profile `localhost_ref` names.
    pub seccomp_localhost: Option<&'a str>,
    /// The CRI `devices`, resolved on the host (`devices::resolve`).
    pub devices: &'a [devices::HostDevice],
}

/// Why a spec could not be generated; messages start with the CRI field.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{field}: user {name:?} not found in the image's /etc/passwd")]
    UserNotFound { field: String, name: String },
    #[error("{field}: group {name:?} not found in the image's /etc/group")]
    GroupNotFound { field: String, name: String },
    #[error("{field}: unknown capability {name:?}")]
    UnknownCapability { field: String, name: String },
    /// The request is valid but this host cannot honour it.
    #[error("{field}: {reason}")]
    HostUnsupported { field: String, reason: String },
    #[error("{field}: {what} is not supported yet")]
    Unsupported { field: String, what: String },
    #[error("building the OCI spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}

impl SpecError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SpecError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

const NS_FIELD: &str = "linux.security_context.namespace_options";

fn mode(field: &str, raw: i32) -> Result<NamespaceMode, SpecError> {
    let m = NamespaceMode::try_from(raw).map_err(|_| {
        SpecError::invalid(format!("{NS_FIELD}.{field}"), format!("unknown mode {raw}"))
    })?;
    if m == NamespaceMode::Target {
        return Err(SpecError::Unsupported {
            field: format!("{NS_FIELD}.{field}"),
            what: "namespace mode TARGET".into(),
        });
    }
    Ok(m)
}

fn ns(typ: LinuxNamespaceType, path: Option<&PathBuf>) -> Result<LinuxNamespace, SpecError> {
    let b = LinuxNamespaceBuilder::default().typ(typ);
    Ok(match path {
        Some(p) => b.path(p.clone()).build()?,
        None => b.build()?,
    })
}

/// The namespaces of the container, and whether it gets its own (or the
/// pod's) UTS namespace rather than the host's.
///
/// network/ipc/uts: NODE → host (omitted); otherwise the pod's pinned file
/// when given, else a new one. UTS follows the network mode. pid: POD → the
/// pod's namespace, CONTAINER → new, NODE → host. POD in a pod that uses
/// the host's namespace → the host's. TARGET → error.
pub fn namespaces(
    opts: Option<&NamespaceOption>,
    pod: &PodNamespaces,
) -> Result<(Vec<LinuxNamespace>, bool), SpecError> {
    let default = NamespaceOption::default();
    let opts = opts.unwrap_or(&default);
    // POD means whatever the pod has, the host's included.
    let follow = |m: NamespaceMode, host: bool| {
        if m == NamespaceMode::Pod && host {
            NamespaceMode::Node
        } else {
            m
        }
    };
    let network = follow(mode("network", opts.network)?, pod.host_network);
    let ipc = follow(mode("ipc", opts.ipc)?, pod.host_ipc);
    let pid = follow(mode("pid", opts.pid)?, pod.host_pid);
    if let Some(userns) = &opts.userns_options {
        let m = mode("userns_options.mode", userns.mode)?;
        if m != NamespaceMode::Node {
            return Err(SpecError::Unsupported {
                field: format!("{NS_FIELD}.userns_options.mode"),
                what: "user namespaces".into(),
            });
        }
    }
    let mut v = vec![ns(LinuxNamespaceType::Mount, None)?];
    let mut own_uts = false;
    for (typ, m, path) in [
        (LinuxNamespaceType::Network, network, &pod.network),
        (LinuxNamespaceType::Ipc, ipc, &pod.ipc),
        (LinuxNamespaceType::Uts, network, &pod.uts),
    ] {
        if m == NamespaceMode::Node {
            continue;
        }
        if typ == LinuxNamespaceType::Uts {
            own_uts = true;
        }
        v.push(ns(typ, path.as_ref())?);
    }
    match pid {
        NamespaceMode::Pod => v.push(ns(LinuxNamespaceType::Pid, pod.pid.as_ref())?),
        NamespaceMode::Container => v.push(ns(LinuxNamespaceType::Pid, None)?),
        _ => {}
    }
    Ok((v, own_uts))
}

/// Clamps an oom_score_adj into [min, 1000].
pub fn clamp_oom_score_adj(requested: i64, min: i32) -> i32 {
    let min = min.clamp(-MAX_OOM_SCORE_ADJ, MAX_OOM_SCORE_ADJ);
    requested.clamp(min as i64, MAX_OOM_SCORE_ADJ as i64) as i32
}

const RES_FIELD: &str = "linux.resources";

fn non_negative(field: &str, v: i64) -> Result<u64, SpecError> {
    u64::try_from(v).map_err(|_| {
        SpecError::invalid(
            format!("{RES_FIELD}.{field}"),
            format!("{v} must not be negative"),
        )
    })
}

/// Applies UpdateContainerResources to a spec not yet run (a created
/// container's bundle) as `<runtime> update` applies it to the cgroup:
/// every field the update sets replaces the spec's, field by field within
/// each group (`cpu.cpus` alone keeps `cpu.shares` and `cpu.quota`; kubelet's
/// CPU manager sends exactly that), and what it leaves unset (null)
/// stays. `devices`, the spec's device rules, which the CRI never updates,
/// always stay. `update` is a serialised [`LinuxResources`].
pub fn merge_resources(spec: &mut serde_json::Value, update: &serde_json::Value) {
    fn merge(into: &mut serde_json::Value, from: &serde_json::Value) {
        match (into.as_object_mut(), from.as_object()) {
            (Some(i), Some(f)) => {
                for (k, v) in f {
                    if v.is_null() {
                        continue;
                    }
                    match i.get_mut(k) {
                        Some(old) if old.is_object() && v.is_object() => merge(old, v),
                        _ => {
                            i.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            _ if !from.is_null() => *into = from.clone(),
            _ => {}
        }
    }
    let Some(groups) = update.as_object() else {
        return;
    };
    let Some(root) = spec.as_object_mut() else {
        return;
    };
    let linux = root.entry("linux").or_insert_with(|| serde_json::json!({}));
    let Some(linux) = linux.as_object_mut() else {
        return;
    };
    let res = linux
        .entry("resources")
        .or_insert_with(|| serde_json::json!({}));
    if !res.is_object() {
        return;
    }
    for (k, v) in groups {
        if k != "devices" && !v.is_null() {
            merge(res, &serde_json::json!({ k: v }));
        }
    }
}

/// The OCI cgroup resources of the CRI resources (zero/empty = unset).
pub fn resources(r: Option<&LinuxContainerResources>) -> Result<LinuxResources, SpecError> {
    let mut b = LinuxResourcesBuilder::default();
    let Some(r) = r else {
        return Ok(b.build()?);
    };
    let mut cpu = LinuxCpuBuilder::default();
    let mut any_cpu = false;
    if r.cpu_shares != 0 {
        cpu = cpu.shares(non_negative("cpu_shares", r.cpu_shares)?);
        any_cpu = true;
    }
    if r.cpu_quota != 0 {
        cpu = cpu.quota(r.cpu_quota);
        any_cpu = true;
    }
    if r.cpu_period != 0 {
        cpu = cpu.period(non_negative("cpu_period", r.cpu_period)?);
        any_cpu = true;
    }
    if !r.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(r.cpuset_cpus.clone());
        any_cpu = true;
    }
    if !r.cpuset_mems.is_empty() {
        cpu = cpu.mems(r.cpuset_mems.clone());
        any_cpu = true;
    }
    if any_cpu {
        b = b.cpu(cpu.build()?);
    }
    if r.memory_limit_in_bytes != 0 || r.memory_swap_limit_in_bytes != 0 {
        let mut mem = LinuxMemoryBuilder::default();
        if r.memory_limit_in_bytes != 0 {
            non_negative("memory_limit_in_bytes", r.memory_limit_in_bytes)?;
            mem = mem.limit(r.memory_limit_in_bytes);
        }
        if r.memory_swap_limit_in_bytes != 0 {
            mem = mem.swap(r.memory_swap_limit_in_bytes);
        }
        b = b.memory(mem.build()?);
    }
    if !r.hugepage_limits.is_empty() {
        let mut v = Vec::new();
        for (i, h) in r.hugepage_limits.iter().enumerate() {
            let limit = i64::try_from(h.limit).map_err(|_| {
                SpecError::invalid(
                    format!("{RES_FIELD}.hugepage_limits[{i}].limit"),
                    "out of range",
                )
            })?;
            if h.page_size.is_empty() {
                return Err(SpecError::invalid(
                    format!("{RES_FIELD}.hugepage_limits[{i}].page_size"),
                    "must not be empty",
                ));
            }
            v.push(
                LinuxHugepageLimitBuilder::default()
                    .page_size(h.page_size.clone())
                    .limit(limit)
                    .build()?,
            );
        }
        b = b.hugepage_limits(v);
    }
    if !r.unified.is_empty() {
        b = b.unified(
            r.unified
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        );
    }
    Ok(b.build()?)
}

/// The annotations of the spec: the CRI container annotations plus the
/// `io.kubernetes.*` ones CRI-O and containerd set.
pub fn annotations(input: &SpecInput) -> HashMap<String, String> {
    let c = input.container;
    let mut a: HashMap<String, String> = c
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let meta = input.pod.metadata.clone().unwrap_or_default();
    for (k, v) in [
        ("io.kubernetes.cri.container-type", "container".to_string()),
        ("io.kubernetes.cri.sandbox-id", input.sandbox_id.to_string()),
        (
            "io.kubernetes.cri.container-name",
            c.metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
        ),
        ("io.kubernetes.pod.name", meta.name),
        ("io.kubernetes.pod.namespace", meta.namespace),
        ("io.kubernetes.pod.uid", meta.uid),
        (ANNOTATION_STDIN, c.stdin.to_string()),
        (ANNOTATION_STDIN_ONCE, c.stdin_once.to_string()),
    ] {
        a.insert(k.to_string(), v);
    }
    if !input.image.stop_signal.is_empty() {
        a.insert(
            ANNOTATION_STOP_SIGNAL.into(),
            input.image.stop_signal.clone(),
        );
    }
    a
}

/// Generates the OCI runtime spec of a container.
pub fn generate(input: &SpecInput) -> Result<Spec, SpecError> {
    let c = input.container;
    let empty_sc = LinuxContainerSecurityContext::default();
    let sc_opt = c.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let sc = sc_opt.unwrap_or(&empty_sc);
    let privileged = sc.privileged;

    let argv = args::process_args(&c.command, &c.args, input.image)?;
    let user = user::resolve_user(sc_opt, &input.image.user, input.passwd, input.group)?;
    let (nss, own_uts) = namespaces(sc.namespace_options.as_ref(), input.namespaces)?;
    let hostname = if own_uts {
        input.pod.hostname.clone()
    } else {
        String::new()
    };
    let env = args::merge_env(
        &input.image.env,
        &c.envs,
        &args::EnvContext {
            hostname: &input.pod.hostname,
            tty: c.tty,
            home: user.home.as_deref(),
        },
    )?;
    let cwd = args::working_dir(&c.working_dir, input.image)?;
    let caps = caps::capabilities(
        sc.capabilities.as_ref(),
        privileged,
        &input.host.bounding_caps,
    )?;
    let mount_plan = mounts::mounts(&c.mounts, privileged, input.files)?;
    let (masked, readonly) =
        mounts::masked_and_readonly_paths(&sc.masked_paths, &sc.readonly_paths, privileged);
    // Conditional seccomp rules look at the capabilities the container
    // really gets (after the daemon's bounding set), as the kernel will.
    let seccomp = seccomp::seccomp(
        sc.seccomp.as_ref(),
        privileged,
        input.seccomp_localhost,
        &seccomp::Target {
            arch: seccomp::native_arch(),
            kernel: input.host.kernel,
            caps: &caps.set,
        },
    )?;
    // The deprecated string form is still sent by older kubelets.
    #[allow(deprecated)]
    let deprecated_apparmor = sc.apparmor_profile.as_str();
    let apparmor = lsm::apparmor_profile(
        sc.apparmor.as_ref(),
        deprecated_apparmor,
        privileged,
        &input.host.lsm,
    )?;
    lsm::check_selinux(sc.selinux_options.as_ref(), &input.host.lsm)?;
    let res = c.linux.as_ref().and_then(|l| l.resources.as_ref());
    let mut resources = resources(res)?;
    let (device_nodes, device_rules) = devices::to_oci(input.devices)?;
    resources.set_devices(Some(device_rules));
    if input.host.pids_limit > 0 {
        resources.set_pids(Some(
            oci_spec::runtime::LinuxPidsBuilder::default()
                .limit(input.host.pids_limit)
                .build()?,
        ));
    }
    let oom = clamp_oom_score_adj(
        res.map_or(0, |r| r.oom_score_adj),
        input.host.min_oom_score_adj,
    );

    let nofile = match input.host.max_nofile {
        0 => NOFILE_LIMIT,
        max => NOFILE_LIMIT.min(max),
    };
    let process = ProcessBuilder::default()
        .terminal(c.tty)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids.clone())
                .build()?,
        )
        .args(argv)
        .env(env)
        .cwd(cwd)
        .capabilities(caps.to_oci()?)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(nofile)
            .hard(nofile)
            .build()?])
        .no_new_privileges(sc.no_new_privs)
        .oom_score_adj(oom)
        .build()?;
    let mut process = process;
    process.set_apparmor_profile(apparmor);

    let mut linux = LinuxBuilder::default()
        .namespaces(nss)
        .resources(resources)
        .cgroups_path(crate::cgroups::container_path(
            &input.host.cgroup_parent,
            input.container_id,
        ))
        .masked_paths(masked)
        .readonly_paths(readonly)
        .build()?;
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    linux.set_devices((!device_nodes.is_empty()).then_some(device_nodes));
    linux.set_seccomp(seccomp);
    linux.set_rootfs_propagation(mount_plan.rootfs_propagation().map(String::from));
    let pod_ns = input
        .pod
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|sc| sc.namespace_options.as_ref());
    let is_host = |m: Option<i32>| m == Some(NamespaceMode::Node as i32);
    let sysctls = match input.pod.linux.as_ref().map(|l| &l.sysctls) {
        Some(s) if !s.is_empty() => Some(
            sysctl::validate(
                s,
                is_host(pod_ns.map(|o| o.network)),
                is_host(pod_ns.map(|o| o.ipc)),
            )?
            .into_iter()
            .collect(),
        ),
        _ => None,
    };
    linux.set_sysctl(sysctls);

    let mut annotations = annotations(input);
    if !caps.dropped.is_empty() {
        annotations.insert(
            ANNOTATION_DROPPED_CAPS.into(),
            caps.dropped.iter().cloned().collect::<Vec<_>>().join(","),
        );
    }

    let mut spec = SpecBuilder::default()
        .version(input.oci_version)
        .root(
            RootBuilder::default()
                .path(input.rootfs)
                .readonly(sc.readonly_rootfs)
                .build()?,
        )
        .mounts(mount_plan.mounts)
        .process(process)
        .annotations(annotations)
        .linux(linux)
        .build()?;
    spec.set_hostname((!hostname.is_empty()).then_some(hostname));
    spec.set_hooks(None);
    Ok(spec)
}
