//! Pods and containers: the behaviour behind the RuntimeService RPCs.
//!
//! The manager owns the records (sled, `crate::state`), an in-memory index
//! of them, and the side effects: pinned namespaces and pod files
//! (crius-sandbox), root filesystems, OCI specs and the runtime
//! (crius-oci-runtime), images (crius-image-store).
//!
//! Locking: each pod and container has an async `op` mutex that serialises
//! the RPCs changing it, and a plain mutex around its record held only to
//! copy or update it. The index maps are behind RwLocks held for lookups
//! only. No lock is shared across pods, and no index lock is held across a
//! runtime call, so RPCs on different pods never wait for each other.
//!
//! - `sandbox`: RunPodSandbox, StopPodSandbox, RemovePodSandbox, status, list.
//! - `container/`: the container RPCs, one file per RPC family.
//! - `volumes`: image volumes (one read-only view per image, shared).
//! - `recover`: reconciling records with reality at start, decided
//!   against `host::Host`, the seam to the kernel (`host::RealHost`).
//! - `ids`, `filters`, `hostmounts`, `validate`: pure helpers.

pub mod container;
pub mod events;
mod exits;
pub mod filters;
pub(crate) mod host;
pub mod hostmounts;
pub mod ids;
pub mod metrics;
pub mod podstats;
pub mod portforward;
mod recover;
pub mod sandbox;
pub mod validate;
pub mod volumes;

use crate::config::{Config, OomClamp};
use crate::runtimes::Runtimes;
use crate::state::{ContainerRecord, PodRecord, StateDb, StateError};
use crius_cri_api::v1::{ContainerConfig, PodSandboxConfig};
use crius_image_store::ImageStore;
use crius_oci_runtime::spec::lsm::LsmHost;
use crius_oci_runtime::spec::HostLimits;
use crius_oci_runtime::standby::MonitorPool;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// What went wrong, by the gRPC code it becomes (`server::error`).
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, ManagerError>;

impl From<StateError> for ManagerError {
    fn from(e: StateError) -> Self {
        ManagerError::Internal(e.to_string())
    }
}

impl From<crius_oci_runtime::spec::SpecError> for ManagerError {
    fn from(e: crius_oci_runtime::spec::SpecError) -> Self {
        use crius_oci_runtime::spec::SpecError as S;
        let msg = e.to_string();
        match e {
            S::Invalid { .. }
            | S::UserNotFound { .. }
            | S::GroupNotFound { .. }
            | S::UnknownCapability { .. } => ManagerError::InvalidArgument(msg),
            S::HostUnsupported { .. } => ManagerError::FailedPrecondition(msg),
            S::Unsupported { .. } => ManagerError::Unimplemented(msg),
            S::Build(_) => ManagerError::Internal(msg),
        }
    }
}

impl From<crius_sandbox::SandboxError> for ManagerError {
    fn from(e: crius_sandbox::SandboxError) -> Self {
        match e {
            crius_sandbox::SandboxError::Dns(_) => ManagerError::InvalidArgument(e.to_string()),
            _ => ManagerError::Internal(e.to_string()),
        }
    }
}

impl From<crius_network::NetError> for ManagerError {
    fn from(e: crius_network::NetError) -> Self {
        use crius_network::NetError as N;
        match e {
            N::Arg(a) => ManagerError::InvalidArgument(format!("{a}")),
            N::NotReady(m) => ManagerError::FailedPrecondition(m),
            e @ (N::Plugin { .. } | N::Exec(_) | N::Cache(_)) => {
                ManagerError::Internal(e.to_string())
            }
        }
    }
}

impl From<crius_oci_runtime::runtime::RuntimeError> for ManagerError {
    fn from(e: crius_oci_runtime::runtime::RuntimeError) -> Self {
        ManagerError::Internal(e.to_string())
    }
}

impl From<crius_oci_runtime::rootfs::RootfsError> for ManagerError {
    fn from(e: crius_oci_runtime::rootfs::RootfsError) -> Self {
        ManagerError::Internal(e.to_string())
    }
}

/// Runs blocking work (fsync, mounts, runtime calls) off the async runtime.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ManagerError::Internal(format!("blocking task failed: {e}")))?
}

/// Crash-test hook: with `CRIUS_TEST_HOLD=1` in the daemon's environment
/// and a file `<runroot>/test-hold-<point>`, an RPC reaching `point` marks
/// it (`<dir>/held-<point>`) and blocks, so a test can kill the daemon in
/// the middle of it. Without the variable: one env lookup, nothing else.
pub(crate) fn test_hold(point: &str, runroot: &std::path::Path, dir: &std::path::Path) {
    if std::env::var_os("CRIUS_TEST_HOLD").is_none()
        || !runroot.join(format!("test-hold-{point}")).exists()
    {
        return;
    }
    tracing::warn!(point, "CRIUS_TEST_HOLD: holding here");
    let _ = std::fs::write(dir.join(format!("held-{point}")), b"");
    std::thread::sleep(std::time::Duration::from_secs(600));
}

/// Unix nanoseconds now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
    op: tokio::sync::Mutex<()>,
    rec: Mutex<PodRecord>,
    /// Set when StopPodSandbox begins: from then on no container of the
    /// pod is created or started (the stop's list of containers to stop
    /// is taken after it is set).
    stopping: std::sync::atomic::AtomicBool,
}

impl Pod {
    fn new(rec: PodRecord, config: PodSandboxConfig) -> Self {
        Pod {
            id: rec.id.clone(),
            config,
            op: tokio::sync::Mutex::new(()),
            rec: Mutex::new(rec),
            stopping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Ready, and not being stopped.
    pub fn accepts_containers(&self) -> bool {
        !self.stopping.load(Ordering::Acquire)
            && self.record().phase == crate::state::PodPhase::Ready
    }

    pub fn record(&self) -> PodRecord {
        crate::sync::lock(&self.rec).clone()
    }

    fn set(&self, r: PodRecord) {
        *crate::sync::lock(&self.rec) = r;
    }
}

pub struct Ctr {
    pub id: String,
    pub pod_id: String,
    pub config: ContainerConfig,
    op: tokio::sync::Mutex<()>,
    rec: Mutex<ContainerRecord>,
}

impl Ctr {
    fn new(rec: ContainerRecord, config: ContainerConfig) -> Self {
        Ctr {
            id: rec.id.clone(),
            pod_id: rec.pod_id.clone(),
            config,
            op: tokio::sync::Mutex::new(()),
            rec: Mutex::new(rec),
        }
    }

    pub fn record(&self) -> ContainerRecord {
        crate::sync::lock(&self.rec).clone()
    }

    pub fn with<R>(&self, f: impl FnOnce(&ContainerRecord) -> R) -> R {
        f(&crate::sync::lock(&self.rec))
    }

    fn set(&self, r: ContainerRecord) {
        *crate::sync::lock(&self.rec) = r;
    }

    /// Replaces the record if `pred` holds for the current one: of two
    /// observers of the same exit (an RPC, the exit watcher) one wins.
    fn replace_if(&self, pred: impl FnOnce(&ContainerRecord) -> bool, r: ContainerRecord) -> bool {
        let mut cur = crate::sync::lock(&self.rec);
        if pred(&cur) {
            *cur = r;
            true
        } else {
            false
        }
    }
}

/// Facts about the daemon's own process, read once.
struct SelfLimits {
    bounding_caps: Vec<String>,
    min_oom_score_adj: i32,
    max_nofile: u64,
    lsm: LsmHost,
    kernel: Option<(u32, u32)>,
}

pub struct Manager {
    cfg: Arc<Config>,
    db: Arc<StateDb>,
    images: Arc<ImageStore>,
    runtimes: Arc<Runtimes>,
    monitor: PathBuf,
    /// The host as recovery and exits see it.
    host: host::RealHost,
    limits: SelfLimits,
    pods: RwLock<HashMap<String, Arc<Pod>>>,
    containers: RwLock<HashMap<String, Arc<Ctr>>>,
    /// Name reservations: pod key or container key → id.
    names: Mutex<HashMap<String, String>>,
    /// Image volume views in use: image id → containers using it.
    volume_users: Mutex<HashMap<String, usize>>,
    /// Namespace sets made ahead of RunPodSandbox (None: pool size 0).
    ns_pool: Option<Arc<crius_sandbox::ns::NsPool>>,
    /// Monitors started ahead of StartContainer (None: pool size 0).
    pub(crate) monitor_pool: Option<Arc<MonitorPool>>,
    /// What container stats keep between calls (CPU samples, layer usage).
    pub(crate) stats_cache: Arc<Mutex<container::stats::StatsCache>>,
    /// Wakes the pools' refiller (see [`refiller`]).
    refill: std::sync::mpsc::Sender<()>,
    /// Pod networking (CNI): the selected network, plugin calls, the
    /// attachment cache.
    pub(crate) network: Arc<crius_network::Cni>,
    /// Pod and container start-ups in flight (RunPodSandbox,
    /// CreateContainer, StartContainer): the pools refill between them.
    starting: Arc<AtomicUsize>,
    /// GetContainerEvents' subscribers (`events`).
    events: tokio::sync::broadcast::Sender<Arc<events::Event>>,
    /// Held while an observed exit is recorded and published.
    event_order: Mutex<()>,
}

/// Counts one start-up RPC in flight while it lives.
pub(crate) struct Starting(Arc<AtomicUsize>);

impl Drop for Starting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits (up to 200 ms) until no pod or container has been starting for
/// 3 ms (kubelet's RunPodSandbox, CreateContainer and StartContainer come
/// a fraction of a millisecond apart). Making a network namespace is
/// kernel work that an idle-priority thread does not give up at once:
/// refilled right after RunPodSandbox, it delayed the CreateContainer that
/// followed by 0.33-0.39 ms p50 (the daemon's gap between the two: 585 and
/// 640 us without this wait, 252 and 254 us with it, 211 lifecycles each).
fn wait_quiet(starting: &AtomicUsize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
    let mut quiet = 0;
    while quiet < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
        quiet = if starting.load(Ordering::Acquire) == 0 {
            quiet + 1
        } else {
            0
        };
    }
}

/// The pools' refiller: one long-lived thread at SCHED_IDLE (inherited by
/// the threads and processes it starts), so pools are refilled with CPU
/// time nobody else wants, woken by a message rather than started per RPC
/// (a thread's creation on the reply path cost tens of microseconds). It
/// ends when the manager (the sender) goes.
fn refiller(
    ns: Option<Arc<crius_sandbox::ns::NsPool>>,
    monitors: Option<Arc<MonitorPool>>,
    starting: Arc<AtomicUsize>,
) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    if ns.is_some() || monitors.is_some() {
        let _ = std::thread::Builder::new()
            .name("crius-pools".into())
            .spawn(move || {
                let idle = libc::sched_param { sched_priority: 0 };
                // SAFETY: plain syscall on the calling thread.
                unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) };
                while rx.recv().is_ok() {
                    // Several takes, one refill.
                    while rx.try_recv().is_ok() {}
                    if let Some(p) = ns.as_ref().filter(|p| p.needs_fill()) {
                        if let Err(e) = p.fill_with(|| wait_quiet(&starting)) {
                            tracing::warn!(error = %e, "filling the namespace pool");
                        }
                    }
                    if let Some(p) = monitors.as_ref().filter(|p| p.needs_fill()) {
                        if let Err(e) = p.fill_with(|| wait_quiet(&starting)) {
                            tracing::warn!(error = %e, "filling the monitor pool");
                        }
                    }
                }
            });
    }
    tx
}

/// Resolves an id or unique id prefix in an index; errors name the field.
fn lookup<T>(
    index: &RwLock<HashMap<String, Arc<T>>>,
    query: &str,
    field: &str,
    what: &str,
    plural: &str,
) -> Result<Arc<T>> {
    if query.is_empty() {
        return Err(ManagerError::InvalidArgument(format!(
            "{field} is required"
        )));
    }
    let map = crate::sync::read(index);
    match ids::lookup(map.keys().map(String::as_str), query) {
        ids::Lookup::Found(id) => map
            .get(&id)
            .cloned()
            .ok_or_else(|| ManagerError::NotFound(format!("{what} {query:?} not found"))),
        ids::Lookup::NotFound => Err(ManagerError::NotFound(format!(
            "{what} {query:?} not found"
        ))),
        ids::Lookup::Ambiguous(n) => Err(ManagerError::InvalidArgument(format!(
            "{what} id prefix {query:?} is ambiguous ({n} {plural} match)"
        ))),
        ids::Lookup::TooShort => Err(ManagerError::InvalidArgument(format!(
            "{what} id prefix {query:?} is too short (at least {} characters)",
            ids::MIN_PREFIX
        ))),
    }
}

/// The crius-monitor binary: next to the daemon's own binary, else PATH.
pub fn find_monitor() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("crius-monitor")))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        let path = std::env::var("PATH").unwrap_or_default();
        crius_oci_runtime::handlers::which(std::path::Path::new("crius-monitor"), &path)
    })
}

impl Manager {
    /// Opens the state database and reconciles it with the host (blocking).
    pub fn open(
        cfg: Arc<Config>,
        images: Arc<ImageStore>,
        runtimes: Arc<Runtimes>,
    ) -> std::result::Result<Arc<Self>, String> {
        let monitor = find_monitor().ok_or_else(|| {
            "crius-monitor not found next to the crius binary or in PATH".to_string()
        })?;
        for d in [
            cfg.runroot.join("exits"),
            cfg.runroot.join("pods"),
            cfg.root.join("containers"),
        ] {
            std::fs::create_dir_all(&d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        let db = StateDb::open(&cfg.root.join("state")).map_err(|e| e.to_string())?;
        let own_oom = crius_oci_runtime::probe::own_oom_score_adj();
        let has_sys_resource = crius_oci_runtime::probe::effective_set()
            .iter()
            .any(|c| c == "CAP_SYS_RESOURCE");
        let min_oom_score_adj = match cfg.restrict_oom_score_adj {
            OomClamp::Always => own_oom,
            OomClamp::Never => -1000,
            OomClamp::Auto if has_sys_resource => -1000,
            OomClamp::Auto => own_oom,
        };
        if min_oom_score_adj > -1000 {
            tracing::debug!(
                min_oom_score_adj,
                "container oom_score_adj is clamped to the daemon's own (no CAP_SYS_RESOURCE)"
            );
        }
        let limits = SelfLimits {
            bounding_caps: crius_oci_runtime::probe::bounding_set(),
            min_oom_score_adj,
            max_nofile: crius_oci_runtime::probe::own_nofile_limit(),
            lsm: LsmHost::read(&cfg.apparmor_default_profile),
            kernel: crius_oci_runtime::probe::kernel_version(),
        };
        let ns_pool = if cfg.namespace_pool_size > 0 {
            let dir = cfg.runroot.join("ns-pool");
            match crius_sandbox::ns::NsPool::open(&dir, cfg.namespace_pool_size) {
                Ok(pool) => Some(Arc::new(pool)),
                Err(e) => {
                    // An optimisation only: pods pin their own namespaces.
                    tracing::warn!(dir = %dir.display(), error = %e, "namespace pool disabled");
                    None
                }
            }
        } else {
            None
        };
        let monitor_pool = (cfg.monitor_pool_size > 0)
            .then(|| Arc::new(MonitorPool::new(&monitor, cfg.monitor_pool_size)));
        let starting = Arc::new(AtomicUsize::new(0));
        let refill = refiller(ns_pool.clone(), monitor_pool.clone(), starting.clone());
        let network = crius_network::Cni::open(crius_network::CniOptions {
            config_dir: cfg.cni_config_dir.clone(),
            plugin_dirs: cfg.cni_plugin_dirs.clone(),
            default_network: cfg.cni_default_network.clone(),
            cache_dir: cfg.root.join("cni").join("results"),
            plugin_timeout: std::time::Duration::from_secs(cfg.cni_plugin_timeout_seconds),
        })
        .map_err(|e| format!("CNI ({}): {e}", cfg.cni_config_dir.display()))?;
        crius_network::watch::start(&network)
            .map_err(|e| format!("watching {}: {e}", cfg.cni_config_dir.display()))?;
        let event_tx = events::channel(cfg.container_events_buffer);
        let m = Arc::new(Manager {
            cfg,
            db: Arc::new(db),
            images,
            host: host::RealHost {
                runtimes: runtimes.clone(),
                monitor: monitor.clone(),
            },
            network,
            runtimes,
            monitor,
            limits,
            pods: RwLock::new(HashMap::new()),
            containers: RwLock::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            volume_users: Mutex::new(HashMap::new()),
            ns_pool,
            monitor_pool,
            stats_cache: Arc::default(),
            refill,
            starting,
            events: event_tx,
            event_order: Mutex::new(()),
        });
        m.recover().map_err(|e| format!("recovering state: {e}"))?;
        m.refill_pools();
        Ok(m)
    }

    /// Has the refiller top the pools up (never in the way of an RPC; a
    /// failure only means pods pin their own namespaces and containers
    /// start their own monitors). A host-network pod took nothing: no
    /// wake-up.
    pub(crate) fn refill_pools(&self) {
        let ns = self.ns_pool.as_ref().is_some_and(|p| p.needs_fill());
        let monitors = self.monitor_pool.as_ref().is_some_and(|p| p.needs_fill());
        if ns || monitors {
            let _ = self.refill.send(());
        }
    }

    /// Pods (ready, not ready) and containers (created, running, exited),
    /// as the metrics endpoint reports them (records as they are: no exit
    /// is looked for).
    pub fn counts_by_state(&self) -> ((usize, usize), (usize, usize, usize)) {
        let (mut ready, mut notready) = (0, 0);
        for p in crate::sync::read(&self.pods).values() {
            if p.record().phase == crate::state::PodPhase::Ready {
                ready += 1;
            } else {
                notready += 1;
            }
        }
        let (mut created, mut running, mut exited) = (0, 0, 0);
        for c in crate::sync::read(&self.containers).values() {
            match c.with(|r| r.phase) {
                crate::state::ContainerPhase::Creating | crate::state::ContainerPhase::Created => {
                    created += 1
                }
                crate::state::ContainerPhase::Running => running += 1,
                crate::state::ContainerPhase::Exited => exited += 1,
            }
        }
        ((ready, notready), (created, running, exited))
    }

    /// The pools' takes so far: (pool, (hits, misses)); a pool of size 0
    /// is not listed.
    pub fn pool_hits_misses(&self) -> Vec<(&'static str, (u64, u64))> {
        let mut out = Vec::new();
        if let Some(p) = &self.monitor_pool {
            out.push(("monitor", p.hits_misses()));
        }
        if let Some(p) = &self.ns_pool {
            out.push(("namespace", p.hits_misses()));
        }
        out
    }

    /// Marks a pod or container start-up in flight until dropped.
    pub(crate) fn starting(&self) -> Starting {
        self.starting.fetch_add(1, Ordering::AcqRel);
        Starting(self.starting.clone())
    }

    /// Releases what the daemon holds for itself alone (the namespace and
    /// monitor pools) at shutdown; pods and containers stay.
    pub fn shutdown(&self) {
        if let Some(pool) = &self.ns_pool {
            pool.drain();
        }
        if let Some(pool) = &self.monitor_pool {
            pool.drain();
        }
    }

    fn host_limits(&self, cgroup_parent: &str) -> HostLimits {
        HostLimits {
            bounding_caps: self.limits.bounding_caps.clone(),
            min_oom_score_adj: self.limits.min_oom_score_adj,
            cgroup_parent: cgroup_parent.to_string(),
            max_nofile: self.limits.max_nofile,
            pids_limit: self.cfg.pids_limit,
            lsm: self.limits.lsm.clone(),
            kernel: self.limits.kernel,
        }
    }

    /// Reserves a name for `id`; the holder's id if it is taken.
    fn reserve(&self, key: &str, id: &str) -> std::result::Result<(), String> {
        let mut names = crate::sync::lock(&self.names);
        match names.get(key) {
            Some(holder) if holder != id => Err(holder.clone()),
            _ => {
                names.insert(key.to_string(), id.to_string());
                Ok(())
            }
        }
    }

    fn release(&self, key: &str, id: &str) {
        let mut names = crate::sync::lock(&self.names);
        if names.get(key).is_some_and(|h| h == id) {
            names.remove(key);
        }
    }

    fn pod(&self, query: &str) -> Result<Arc<Pod>> {
        lookup(&self.pods, query, "pod_sandbox_id", "pod sandbox", "pods")
    }

    fn ctr(&self, query: &str) -> Result<Arc<Ctr>> {
        lookup(
            &self.containers,
            query,
            "container_id",
            "container",
            "containers",
        )
    }

    fn pod_containers(&self, pod_id: &str) -> Vec<Arc<Ctr>> {
        crate::sync::read(&self.containers)
            .values()
            .filter(|c| c.pod_id == pod_id)
            .cloned()
            .collect()
    }

    /// A container (not removed) using the image `image_id`, if any:
    /// RemoveImage refuses to remove an image in use.
    pub fn container_using_image(&self, image_id: &str) -> Option<String> {
        crate::sync::read(&self.containers)
            .values()
            .find(|c| {
                c.with(|r| r.image_id == image_id || r.image_volumes.iter().any(|v| v == image_id))
            })
            .map(|c| c.id.clone())
    }

    /// Whether the default runtime handler can run containers, and why not.
    pub fn runtime_ready(&self) -> (bool, String, String) {
        let info = self.runtimes.current();
        match info.get("") {
            Some(p) if p.status.ready => (true, String::new(), String::new()),
            Some(p) => (false, p.status.reason.clone(), p.status.message.clone()),
            None => (
                false,
                "NoDefaultRuntime".into(),
                format!(
                    "the default runtime handler {:?} is not configured",
                    info.handlers.default
                ),
            ),
        }
    }

    /// The runtime of a handler name, if it can run containers.
    fn runtime(&self, handler: &str) -> Result<crius_oci_runtime::runtime::OciRuntime> {
        let info = self.runtimes.current();
        let name = if handler.is_empty() {
            info.handlers.default.clone()
        } else {
            handler.to_string()
        };
        let h = info.handlers.get(&name).ok_or_else(|| {
            ManagerError::NotFound(format!("runtime handler {name:?} is not configured"))
        })?;
        if let Some(p) = info.get(&name) {
            if !p.status.ready {
                return Err(ManagerError::FailedPrecondition(format!(
                    "runtime handler {name:?} is not ready ({}): {}",
                    p.status.reason, p.status.message
                )));
            }
        }
        Ok(crius_oci_runtime::runtime::OciRuntime::new(
            h,
            &self.monitor,
        )?)
    }

    fn oci_version(&self, handler: &str) -> String {
        self.runtimes
            .current()
            .get(handler)
            .map(|p| p.status.oci_version.clone())
            .unwrap_or_else(|| crius_oci_runtime::probe::FALLBACK_OCI_VERSION.to_string())
    }
}
