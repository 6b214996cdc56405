//! Reconciling the records with the host at start (blocking, before the
//! socket serves): what was half-done when the daemon died is finished or
//! undone, and every container's state is read from its monitor's exit
//! file and the runtime.
//!
//! The decisions (`recover_pod`, `recover_container`) ask the host only
//! through [`Host`] and say what becomes of the record ([`Outcome`]); the
//! manager writes it. So the decision table is unit-tested below against a
//! scripted host, without root; the integration tests (tests/recovery.rs,
//! tests/crash_storm.rs) run it against the real one.

use super::container::{container_key, exited_record, files_of, EXEC_SCRATCH_DIR};
use super::host::Host;
use super::sandbox::pod_key;
use super::{Ctr, Manager, Pod, Result};
use crate::state::{decode_config, ContainerPhase, ContainerRecord, PodPhase, PodRecord};
use crius_cri_api::v1::{ContainerConfig, PodSandboxConfig};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What becomes of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome<R> {
    /// Kept as it is.
    Keep(R),
    /// Kept, changed: written back.
    Put(R),
    /// Forgotten: its record deleted (what it held on the host is gone).
    Delete,
}

impl<R> Outcome<R> {
    fn kept(self) -> Option<R> {
        match self {
            Outcome::Keep(r) | Outcome::Put(r) => Some(r),
            Outcome::Delete => None,
        }
    }
}

/// Every crius-monitor's pid by the container it names, read from /proc
/// once at recovery rather than once per container.
pub(crate) struct Monitors(HashMap<String, Vec<i32>>);

impl Monitors {
    pub(crate) fn scan(host: &dyn Host) -> Monitors {
        let mut by_id: HashMap<String, Vec<i32>> = HashMap::new();
        for (id, pid) in host.container_monitors() {
            by_id.entry(id).or_default().push(pid);
        }
        Monitors(by_id)
    }

    /// The monitors watching container `id`.
    fn of(&self, id: &str) -> &[i32] {
        self.0.get(id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Kills every monitor watching container `id`, with its process
    /// group (a monitor leads its own session and group, with the runtime
    /// it runs).
    fn kill(&self, host: &dyn Host, id: &str) {
        for &pid in self.of(id) {
            tracing::warn!(container = %id, pid, "killing the monitor of an orphaned container");
            host.kill_monitor(pid);
        }
    }
}

impl Manager {
    pub(super) fn recover(self: &Arc<Self>) -> Result<()> {
        let mut pods = 0;
        for rec in self.db.pods()? {
            let Some(rec) = self.apply_pod(recover_pod(&self.host, rec)?)? else {
                continue;
            };
            let config: PodSandboxConfig = decode_config(&rec.id, &rec.config)?;
            if let Ok(key) = pod_key(&config) {
                let _ = self.reserve(&key, &rec.id);
            }
            crate::sync::write(&self.pods).insert(rec.id.clone(), Arc::new(Pod::new(rec, config)));
            pods += 1;
        }
        let mut ctrs = 0;
        let monitors = Monitors::scan(&self.host);
        for rec in self.db.containers()? {
            let config: ContainerConfig = decode_config(&rec.id, &rec.config)?;
            let pod_known = crate::sync::read(&self.pods).contains_key(&rec.pod_id);
            let id = rec.id.clone();
            let outcome = recover_container(&self.host, rec, &config, pod_known, &monitors);
            let Some(rec) = self.apply_container(&id, outcome)? else {
                continue;
            };
            if let Ok(key) = container_key(&rec.pod_id, &config) {
                let _ = self.reserve(&key, &rec.id);
            }
            {
                let mut users = crate::sync::lock(&self.volume_users);
                for v in &rec.image_volumes {
                    *users.entry(v.clone()).or_insert(0) += 1;
                }
            }
            crate::sync::write(&self.containers)
                .insert(rec.id.clone(), Arc::new(Ctr::new(rec, config)));
            ctrs += 1;
        }
        self.sweep_orphans(&monitors);
        // Attachments of pods that are gone or not ready (killed inside
        // RunPodSandbox or StopPodSandbox, a reboot) are deleted; the
        // network's CNI 1.1 plugins get GC with the rest.
        let live: std::collections::HashSet<String> = crate::sync::read(&self.pods)
            .values()
            .filter(|p| p.record().phase == PodPhase::Ready)
            .map(|p| p.id.clone())
            .collect();
        let stale = self.network.stale(&live);
        tracing::info!(
            pods,
            containers = ctrs,
            cni_stale = stale.attachments.len(),
            "state recovered"
        );
        self.collect_networks(stale, live);
        Ok(())
    }

    /// On a thread of its own, so serving does not wait for plugins (which
    /// may need pods of this node that only a serving runtime can run):
    /// DEL of the attachments of pods that are gone or not ready, CNI 1.1
    /// GC, then CHECK of every live pod's network (CNI 0.4.0 on, unless the
    /// network disables it) — a pod whose network is no longer what ADD
    /// left is logged with the plugin's words.
    fn collect_networks(
        &self,
        stale: crius_network::Stale,
        live: std::collections::HashSet<String>,
    ) {
        if stale.attachments.is_empty() && live.is_empty() && self.network.network().is_none() {
            return;
        }
        let cni = self.network.clone();
        let _ = std::thread::Builder::new()
            .name("crius-cni-gc".into())
            .spawn(move || {
                let detached = cni.collect(stale);
                if !detached.is_empty() {
                    tracing::info!(count = detached.len(), "CNI attachments of pods that are gone deleted");
                }
                for id in live {
                    if let Err(e) = cni.check(&id) {
                        tracing::warn!(pod = %id, error = %e, "CNI CHECK: the pod's network is not as ADD left it");
                    }
                }
            });
    }

    fn apply_pod(&self, outcome: (String, Outcome<PodRecord>)) -> Result<Option<PodRecord>> {
        let (id, outcome) = outcome;
        match &outcome {
            Outcome::Put(r) => self.db.put_pod(r)?,
            Outcome::Delete => self.db.delete_pod(&id)?,
            Outcome::Keep(_) => {}
        }
        Ok(outcome.kept())
    }

    fn apply_container(
        &self,
        id: &str,
        outcome: Outcome<ContainerRecord>,
    ) -> Result<Option<ContainerRecord>> {
        match &outcome {
            Outcome::Put(r) => self.db.put_container(r)?,
            Outcome::Delete => self.db.delete_container(id)?,
            Outcome::Keep(_) => {}
        }
        Ok(outcome.kept())
    }

    /// Removes what a daemon killed inside RunPodSandbox or CreateContainer
    /// left without a record: pod directories (namespaces, shm, pause),
    /// container directories (runtime state, rootfs mount), exit files.
    fn sweep_orphans(&self, monitors: &Monitors) {
        let known_pods: std::collections::HashSet<String> =
            crate::sync::read(&self.pods).keys().cloned().collect();
        let known_ctrs: std::collections::HashSet<String> = crate::sync::read(&self.containers)
            .keys()
            .cloned()
            .collect();
        let entries = |dir: std::path::PathBuf| {
            std::fs::read_dir(&dir)
                .map(|r| {
                    r.flatten()
                        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        for (id, path) in entries(self.cfg.runroot.join("pods")) {
            if !known_pods.contains(&id) {
                tracing::warn!(pod = %id, "pod sandbox left without a record (crius stopped while creating it); removing");
                if let Err(e) = super::sandbox::teardown_orphan(&id, &path) {
                    tracing::error!(pod = %id, error = %e, "removing orphaned pod sandbox");
                }
            }
        }
        let info = self.runtimes.current();
        for (id, path) in entries(self.cfg.root.join("containers")) {
            if known_ctrs.contains(&id) {
                continue;
            }
            tracing::warn!(container = %id, "container left without a record (crius stopped while creating it); removing");
            // An older crius ran the runtime's create inside
            // CreateContainer: a monitor still inside it would create the
            // container after this sweep, so it (and its runtime) goes first.
            monitors.kill(&self.host, &id);
            for name in info.handlers.handlers.keys() {
                self.host.runtime_delete(name, &id);
            }
            self.host.remove_container_dir(&path);
        }
        // Image volume views nobody uses any more (their last container was
        // removed while the daemon was down, or it died mid-create).
        let used: std::collections::HashSet<String> = crate::sync::lock(&self.volume_users)
            .keys()
            .map(|k| k.trim_start_matches("sha256:").to_string())
            .collect();
        for (hex, path) in entries(self.cfg.runroot.join("image-volumes")) {
            if !used.contains(&hex) {
                let _ = crius_oci_runtime::imagevol::unmount(&path);
            }
        }
        for (id, path) in entries(self.cfg.runroot.join("exits")) {
            if !known_ctrs.contains(&id) {
                let _ = std::fs::remove_file(path);
            }
        }
        // No exec outlives the daemon that started it (its monitor stops it
        // at end of file on its stdin): what execs in flight at a crash
        // left in their containers' exec/ directories is garbage.
        for id in &known_ctrs {
            let dir = self
                .cfg
                .root
                .join("containers")
                .join(id)
                .join(EXEC_SCRATCH_DIR);
            for (_, path) in entries(dir) {
                let _ = std::fs::remove_file(path);
            }
        }
        // An older crius wrote exec pid and process files into the
        // runtimes' own roots, where nothing removed them after a crash.
        for h in info.handlers.handlers.values() {
            let root = if h.config.root.as_os_str().is_empty() {
                self.cfg.runroot.join("runtimes").join(&h.name)
            } else {
                h.config.root.clone()
            };
            for (name, path) in entries(root) {
                if name.starts_with(".exec-") {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        // Logs of pods without a log_directory, whose pods are gone.
        for (id, path) in entries(self.cfg.root.join("pod-logs")) {
            if !known_pods.contains(&id) {
                let _ = std::fs::remove_dir_all(path);
            }
        }
    }
}

/// One pod record at start: a pod caught being created is torn down and
/// forgotten; a ready pod whose namespaces are gone (the host rebooted)
/// becomes NotReady. Returns the pod's id with the outcome.
pub(crate) fn recover_pod(
    host: &dyn Host,
    mut rec: PodRecord,
) -> Result<(String, Outcome<PodRecord>)> {
    let id = rec.id.clone();
    let outcome = match rec.phase {
        PodPhase::Creating => {
            tracing::warn!(pod = %rec.id, "pod sandbox was being created when crius stopped; cleaning up");
            host.teardown_pod(&rec)?;
            host.remove_pod_dir(&rec.dir)?;
            Outcome::Delete
        }
        PodPhase::Ready => {
            let lost = [&rec.netns, &rec.ipcns, &rec.utsns, &rec.pidns]
                .into_iter()
                .flatten()
                .any(|p: &PathBuf| !host.ns_pinned(p))
                || (rec.pidns.is_some() && !host.pause_alive(rec.pause_pid, &rec.id));
            if lost {
                tracing::warn!(pod = %rec.id, "pod sandbox's namespaces are gone; marking it NotReady");
                host.teardown_pod(&rec)?;
                rec.phase = PodPhase::NotReady;
                Outcome::Put(rec)
            } else {
                Outcome::Keep(rec)
            }
        }
        PodPhase::NotReady => Outcome::Keep(rec),
    };
    Ok((id, outcome))
}

/// One container record at start.
pub(crate) fn recover_container(
    host: &dyn Host,
    mut rec: ContainerRecord,
    config: &ContainerConfig,
    pod_known: bool,
    monitors: &Monitors,
) -> Outcome<ContainerRecord> {
    let handler = rec.runtime_handler.clone();
    if rec.phase == ContainerPhase::Creating || !pod_known {
        tracing::warn!(
            container = %rec.id,
            "container was being created when crius stopped (or its pod is gone); cleaning up"
        );
        host.runtime_delete(&handler, &rec.id);
        host.remove_container_dir(&rec.dir);
        host.remove_file(&rec.exit_file);
        return Outcome::Delete;
    }
    if rec.phase == ContainerPhase::Exited {
        return Outcome::Keep(rec);
    }
    if let Some(r) = exited_record(host, &rec, config) {
        tracing::info!(container = %rec.id, exit_code = r.exit_code, "container exited while crius was down");
        return Outcome::Put(r);
    }
    // No exit recorded: ask the runtime.
    let state = host.runtime_state(&handler, &rec.id);
    let status = state.as_ref().map(|s| s.status.clone());
    if rec.phase == ContainerPhase::Created && rec.monitor_pid > 0 {
        // Created by an older crius, which ran the runtime's create at
        // CreateContainer (its process never ran): undone, so the
        // container is created as this crius makes them and its start
        // is one `run` like any other.
        tracing::info!(container = %rec.id, "container created by an older crius: re-made for a run at start");
        monitors.kill(host, &rec.id);
        host.runtime_delete(&handler, &rec.id);
        host.remove_file(&files_of(&rec).pid_file);
        host.remove_file(&rec.exit_file);
        rec.pid = 0;
        rec.monitor_pid = 0;
        return Outcome::Put(rec);
    }
    if rec.phase == ContainerPhase::Created {
        return recover_unstarted(host, rec, config, monitors, state.as_ref());
    }
    let before = rec.clone();
    match status.as_deref() {
        Some("running") => {}
        Some("created") => rec.phase = ContainerPhase::Created,
        _ if host.monitor_alive(rec.monitor_pid, &rec.id) => {
            // Exited, and the monitor is still writing the log and the
            // exit file: the next look at the container records it.
        }
        other => {
            // The runtime has no such live container and the monitor
            // recorded nothing: the host rebooted or the monitor was
            // killed. The exit code is unknown.
            tracing::warn!(container = %rec.id, state = ?other, "container lost while crius was down");
            rec.phase = ContainerPhase::Exited;
            rec.exit_code = 255;
            rec.finished_at = host.now_ns();
            rec.reason = "Error".into();
            rec.message = "the container's monitor disappeared; its exit code is unknown".into();
        }
    }
    if rec != before {
        Outcome::Put(rec)
    } else {
        Outcome::Keep(rec)
    }
}

/// A created container whose record has no monitor: StartContainer
/// never ran, or the daemon died inside it (the record of a start is
/// written after the runtime's run returns, and without an fsync). A run
/// that finished is completed: the container, running or already
/// exited (its monitor still writing the exit file), is watched by its
/// monitor and recorded as started; with no monitor and no exit
/// recorded its exit code is lost. Anything half-done (a monitor still
/// inside the runtime's run, a container the runtime is still creating,
/// a running one without its monitor) is undone: the container is
/// created again, and can be started.
fn recover_unstarted(
    host: &dyn Host,
    mut rec: ContainerRecord,
    config: &ContainerConfig,
    monitors: &Monitors,
    state: Option<&crius_oci_runtime::runtime::RuntimeState>,
) -> Outcome<ContainerRecord> {
    let status = state.map(|s| s.status.as_str());
    let pid_file = files_of(&rec).pid_file;
    let pid = state
        .map(|s| s.pid)
        .filter(|p| *p > 0)
        .or_else(|| host.read_pid(&pid_file))
        .unwrap_or(0);
    match (status, monitors.of(&rec.id)) {
        (None, []) => Outcome::Keep(rec),
        (Some("running" | "stopped"), [monitor]) => {
            tracing::info!(container = %rec.id, pid, state = ?status, "container started while crius stopped");
            rec.phase = ContainerPhase::Running;
            rec.started_at = host.modified_ns(&pid_file).unwrap_or_else(|| host.now_ns());
            rec.pid = pid;
            rec.monitor_pid = *monitor;
            Outcome::Put(rec)
        }
        (Some("stopped"), []) => {
            // The monitor may have written the exit file since it was
            // first looked for.
            if let Some(r) = exited_record(host, &rec, config) {
                return Outcome::Put(r);
            }
            tracing::warn!(container = %rec.id, "container started and exited while crius stopped, its monitor gone");
            rec.phase = ContainerPhase::Exited;
            rec.finished_at = host.now_ns();
            rec.started_at = host
                .modified_ns(&pid_file)
                .unwrap_or(rec.finished_at)
                .min(rec.finished_at);
            rec.exit_code = 255;
            rec.reason = "Error".into();
            rec.message = "the container's monitor disappeared; its exit code is unknown".into();
            Outcome::Put(rec)
        }
        _ => {
            tracing::warn!(container = %rec.id, state = ?status, monitors = monitors.of(&rec.id).len(), "container was being started when crius stopped; undoing the start");
            monitors.kill(host, &rec.id);
            host.runtime_delete(&rec.runtime_handler, &rec.id);
            host.remove_file(&pid_file);
            host.remove_file(&rec.exit_file);
            Outcome::Keep(rec)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RECORD_VERSION;
    use crius_monitor_protocol::exitfile::ExitRecord;
    use crius_oci_runtime::runtime::RuntimeState;
    use std::path::Path;
    use std::sync::Mutex;

    /// A scripted host: what it reports is set per test; what recovery
    /// asks it to do is logged.
    #[derive(Default)]
    struct FakeHost {
        exit: Option<ExitRecord>,
        state: Option<RuntimeState>,
        monitors: Vec<(String, i32)>,
        alive: bool,
        pid_file: Option<i32>,
        pinned: bool,
        pause: bool,
        done: Mutex<Vec<String>>,
    }

    const NOW: i64 = 5_000;

    impl FakeHost {
        fn did(&self, what: impl Into<String>) {
            self.done.lock().unwrap().push(what.into());
        }
        fn done(&self) -> Vec<String> {
            self.done.lock().unwrap().clone()
        }
    }

    impl Host for FakeHost {
        fn exit_record(&self, _: &Path) -> Option<ExitRecord> {
            self.exit.clone()
        }
        fn oom_killed(&self, _: &str) -> bool {
            false
        }
        fn termination_message(&self, _: &ContainerConfig) -> String {
            String::new()
        }
        fn modified_ns(&self, _: &Path) -> Option<i64> {
            Some(1_000)
        }
        fn read_pid(&self, _: &Path) -> Option<i32> {
            self.pid_file
        }
        fn monitor_alive(&self, _: i32, _: &str) -> bool {
            self.alive
        }
        fn container_monitors(&self) -> Vec<(String, i32)> {
            self.monitors.clone()
        }
        fn kill_monitor(&self, pid: i32) {
            self.did(format!("kill {pid}"));
        }
        fn runtime_state(&self, _: &str, _: &str) -> Option<RuntimeState> {
            self.state.clone()
        }
        fn runtime_delete(&self, _: &str, id: &str) {
            self.did(format!("delete {id}"));
        }
        fn remove_container_dir(&self, _: &Path) {
            self.did("rm dir");
        }
        fn remove_file(&self, p: &Path) {
            self.did(format!(
                "rm {}",
                p.file_name().unwrap_or_default().to_string_lossy()
            ));
        }
        fn ns_pinned(&self, _: &Path) -> bool {
            self.pinned
        }
        fn pause_alive(&self, _: i32, _: &str) -> bool {
            self.pause
        }
        fn teardown_pod(&self, _: &PodRecord) -> Result<()> {
            self.did("teardown");
            Ok(())
        }
        fn remove_pod_dir(&self, _: &Path) -> Result<()> {
            self.did("rm pod dir");
            Ok(())
        }
        fn now_ns(&self) -> i64 {
            NOW
        }
    }

    fn ctr(phase: ContainerPhase, pid: i32, monitor_pid: i32) -> ContainerRecord {
        ContainerRecord {
            version: RECORD_VERSION,
            id: "c1".into(),
            pod_id: "p1".into(),
            phase,
            created_at: 1,
            started_at: if phase == ContainerPhase::Running {
                10
            } else {
                0
            },
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            config: String::new(),
            image: "img".into(),
            image_id: "sha256:x".into(),
            image_ref: "sha256:x".into(),
            runtime_handler: "runc".into(),
            dir: "/var/lib/crius/containers/c1".into(),
            log_path: "/var/log/c1.log".into(),
            exit_file: "/run/crius/exits/c1".into(),
            pid,
            monitor_pid,
            cgroups_path: "/crius/crius-c1".into(),
            stop_signal: "SIGTERM".into(),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            image_volumes: Vec::new(),
        }
    }

    fn state(status: &str, pid: i32) -> Option<RuntimeState> {
        Some(RuntimeState {
            status: status.into(),
            pid,
        })
    }

    fn exit(code: i32) -> Option<ExitRecord> {
        Some(ExitRecord {
            code,
            at: "1970-01-01T00:00:00.000002Z".into(),
        })
    }

    /// What recovery made of the record: kept/put/deleted, phase, exit
    /// code, pid, monitor pid.
    type Got = (&'static str, Option<(ContainerPhase, i32, i32, i32)>);

    fn summary(o: &Outcome<ContainerRecord>) -> Got {
        let of = |r: &ContainerRecord| Some((r.phase, r.exit_code, r.pid, r.monitor_pid));
        match o {
            Outcome::Keep(r) => ("keep", of(r)),
            Outcome::Put(r) => ("put", of(r)),
            Outcome::Delete => ("delete", None),
        }
    }

    #[test]
    fn container_decision_table() {
        use ContainerPhase::*;
        struct Case {
            name: &'static str,
            rec: ContainerRecord,
            pod_known: bool,
            host: FakeHost,
            want: Got,
            did: &'static [&'static str],
        }
        let mon = |pids: &[i32]| pids.iter().map(|p| ("c1".to_string(), *p)).collect();
        let cases = vec![
            Case {
                name: "caught being created",
                rec: ctr(Creating, 0, 0),
                pod_known: true,
                host: FakeHost::default(),
                want: ("delete", None),
                did: &["delete c1", "rm dir", "rm c1"],
            },
            Case {
                name: "its pod is gone",
                rec: ctr(Running, 7, 8),
                pod_known: false,
                host: FakeHost::default(),
                want: ("delete", None),
                did: &["delete c1", "rm dir", "rm c1"],
            },
            Case {
                name: "exited before: kept as it is",
                rec: ctr(Exited, 7, 8),
                pod_known: true,
                host: FakeHost::default(),
                want: ("keep", Some((Exited, 0, 7, 8))),
                did: &[],
            },
            Case {
                name: "exited while down: the exit file tells",
                rec: ctr(Running, 7, 8),
                pod_known: true,
                host: FakeHost {
                    exit: exit(3),
                    ..Default::default()
                },
                want: ("put", Some((Exited, 3, 7, 8))),
                did: &[],
            },
            Case {
                name: "still running",
                rec: ctr(Running, 7, 8),
                pod_known: true,
                host: FakeHost {
                    state: state("running", 7),
                    ..Default::default()
                },
                want: ("keep", Some((Running, 0, 7, 8))),
                did: &[],
            },
            Case {
                name: "exited, its monitor still writing",
                rec: ctr(Running, 7, 8),
                pod_known: true,
                host: FakeHost {
                    state: state("stopped", 0),
                    alive: true,
                    ..Default::default()
                },
                want: ("keep", Some((Running, 0, 7, 8))),
                did: &[],
            },
            Case {
                name: "lost: no runtime state, no monitor, no exit file",
                rec: ctr(Running, 7, 8),
                pod_known: true,
                host: FakeHost::default(),
                want: ("put", Some((Exited, 255, 7, 8))),
                did: &[],
            },
            Case {
                name: "created by an older crius (runtime create at CreateContainer)",
                rec: ctr(Created, 7, 8),
                pod_known: true,
                host: FakeHost {
                    state: state("created", 7),
                    monitors: mon(&[8]),
                    ..Default::default()
                },
                want: ("put", Some((Created, 0, 0, 0))),
                did: &["kill 8", "delete c1", "rm pid", "rm c1"],
            },
            Case {
                name: "never started",
                rec: ctr(Created, 0, 0),
                pod_known: true,
                host: FakeHost::default(),
                want: ("keep", Some((Created, 0, 0, 0))),
                did: &[],
            },
            Case {
                name: "started while the daemon died: the run finished",
                rec: ctr(Created, 0, 0),
                pod_known: true,
                host: FakeHost {
                    state: state("running", 42),
                    monitors: mon(&[43]),
                    ..Default::default()
                },
                want: ("put", Some((Running, 0, 42, 43))),
                did: &[],
            },
            Case {
                name: "started and exited while down: the exit file tells",
                rec: ctr(Created, 0, 0),
                pod_known: true,
                host: FakeHost {
                    exit: exit(0),
                    ..Default::default()
                },
                want: ("put", Some((Exited, 0, 0, 0))),
                did: &[],
            },
            Case {
                name: "started and exited, its monitor gone: exit code lost",
                rec: ctr(Created, 0, 0),
                pod_known: true,
                host: FakeHost {
                    state: state("stopped", 0),
                    pid_file: Some(42),
                    ..Default::default()
                },
                want: ("put", Some((Exited, 255, 0, 0))),
                did: &[],
            },
            Case {
                name: "half-started: a monitor still inside the runtime's run",
                rec: ctr(Created, 0, 0),
                pod_known: true,
                host: FakeHost {
                    monitors: mon(&[43]),
                    ..Default::default()
                },
                want: ("keep", Some((Created, 0, 0, 0))),
                did: &["kill 43", "delete c1", "rm pid", "rm c1"],
            },
            Case {
                name: "half-started: running without its monitor",
                rec: ctr(Created, 0, 0),
                pod_known: true,
                host: FakeHost {
                    state: state("running", 42),
                    ..Default::default()
                },
                want: ("keep", Some((Created, 0, 0, 0))),
                did: &["delete c1", "rm pid", "rm c1"],
            },
            Case {
                name: "half-started: two monitors claim it",
                rec: ctr(Created, 0, 0),
                pod_known: true,
                host: FakeHost {
                    state: state("running", 42),
                    monitors: mon(&[43, 44]),
                    ..Default::default()
                },
                want: ("keep", Some((Created, 0, 0, 0))),
                did: &["kill 43", "kill 44", "delete c1", "rm pid", "rm c1"],
            },
        ];
        for c in cases {
            let monitors = Monitors::scan(&c.host);
            let got = recover_container(
                &c.host,
                c.rec,
                &ContainerConfig::default(),
                c.pod_known,
                &monitors,
            );
            assert_eq!(summary(&got), c.want, "{}", c.name);
            assert_eq!(c.host.done(), c.did, "{}", c.name);
        }
    }

    #[test]
    fn exit_times_from_the_exit_file_never_before_the_start() {
        let host = FakeHost {
            exit: exit(1),
            ..Default::default()
        };
        let got = recover_container(
            &host,
            ctr(ContainerPhase::Running, 7, 8),
            &ContainerConfig::default(),
            true,
            &Monitors::scan(&host),
        );
        let Outcome::Put(r) = got else {
            panic!("{got:?}")
        };
        // 2 us after the epoch in the file, but the start (10) is later.
        assert_eq!((r.finished_at, r.reason.as_str()), (2_000, "Error"));
        let host = FakeHost {
            exit: Some(ExitRecord {
                code: 0,
                at: String::new(),
            }),
            ..Default::default()
        };
        let got = recover_container(
            &host,
            ctr(ContainerPhase::Running, 7, 8),
            &ContainerConfig::default(),
            true,
            &Monitors::scan(&host),
        );
        let Outcome::Put(r) = got else {
            panic!("{got:?}")
        };
        // No time in the file: now.
        assert_eq!((r.finished_at, r.reason.as_str()), (NOW, "Completed"));
    }

    fn pod(phase: PodPhase, pidns: bool) -> PodRecord {
        PodRecord {
            version: RECORD_VERSION,
            id: "p1".into(),
            phase,
            created_at: 1,
            config: String::new(),
            runtime_handler: "runc".into(),
            dir: "/run/crius/pods/p1".into(),
            netns: Some("/run/crius/pods/p1/ns/net".into()),
            ipcns: Some("/run/crius/pods/p1/ns/ipc".into()),
            utsns: None,
            shm: None,
            cgroup_parent: "/crius".into(),
            pidns: pidns.then(|| "/run/crius/pods/p1/ns/pid".into()),
            pause_pid: if pidns { 9 } else { 0 },
            network: String::new(),
            ips: Vec::new(),
        }
    }

    #[test]
    fn pod_decision_table() {
        use PodPhase::*;
        // name, record, namespaces pinned, pause alive, outcome, host calls
        type Case = (
            &'static str,
            PodRecord,
            bool,
            bool,
            Option<(&'static str, PodPhase)>,
            &'static [&'static str],
        );
        let cases: Vec<Case> = vec![
            (
                "caught being created",
                pod(Creating, false),
                true,
                true,
                None,
                &["teardown", "rm pod dir"],
            ),
            (
                "ready, all there",
                pod(Ready, false),
                true,
                true,
                Some(("keep", Ready)),
                &[],
            ),
            (
                "ready, namespaces gone (reboot)",
                pod(Ready, false),
                false,
                true,
                Some(("put", NotReady)),
                &["teardown"],
            ),
            (
                "ready, shared pid, pause alive",
                pod(Ready, true),
                true,
                true,
                Some(("keep", Ready)),
                &[],
            ),
            (
                "ready, shared pid, pause gone",
                pod(Ready, true),
                true,
                false,
                Some(("put", NotReady)),
                &["teardown"],
            ),
            (
                "not ready stays",
                pod(NotReady, false),
                false,
                false,
                Some(("keep", NotReady)),
                &[],
            ),
        ];
        for (name, rec, pinned, pause, want, did) in cases {
            let host = FakeHost {
                pinned,
                pause,
                ..Default::default()
            };
            let (id, got) = recover_pod(&host, rec).unwrap();
            assert_eq!(id, "p1");
            let got = match got {
                Outcome::Keep(r) => Some(("keep", r.phase)),
                Outcome::Put(r) => Some(("put", r.phase)),
                Outcome::Delete => None,
            };
            assert_eq!(got, want, "{name}");
            assert_eq!(host.done(), did, "{name}");
        }
    }
}
