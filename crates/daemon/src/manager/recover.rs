//! Reconciling the records with the host at start (blocking, before the
//! socket serves): what was half-done when the daemon died is finished or
//! undone, and every container's state is read from its monitor's exit
//! file and the runtime.

use super::container::{cleanup_dir, container_key, exited_record};
use super::sandbox::{pod_key, recover_pod};
use super::{now_ns, Ctr, Manager, Pod, Result};
use crate::state::{decode_config, ContainerPhase, ContainerRecord};
use crius_cri_api::v1::{ContainerConfig, PodSandboxConfig};
use std::sync::Arc;

/// Whether the container's monitor process still runs (its pid is checked
/// against its command line, so a recycled pid does not count).
pub(crate) fn monitor_alive(rec: &ContainerRecord) -> bool {
    rec.monitor_pid > 0
        && std::fs::read(format!("/proc/{}/cmdline", rec.monitor_pid))
            .map(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("crius-monitor") && c.contains(&rec.id)
            })
            .unwrap_or(false)
}

/// Every crius-monitor's pid by the container it names (`--id <id>` in
/// its command line), read from /proc once at recovery rather than once
/// per container.
struct Monitors(std::collections::HashMap<String, Vec<i32>>);

impl Monitors {
    fn scan() -> Monitors {
        let mut by_id: std::collections::HashMap<String, Vec<i32>> = Default::default();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Monitors(by_id);
        };
        for e in procs.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            if !args.first().is_some_and(|a| a.ends_with(b"crius-monitor")) {
                continue;
            }
            if let Some(w) = args.windows(2).find(|w| w[0] == b"--id") {
                by_id
                    .entry(String::from_utf8_lossy(w[1]).into_owned())
                    .or_default()
                    .push(pid);
            }
        }
        Monitors(by_id)
    }

    /// The monitors watching container `id`.
    fn of(&self, id: &str) -> &[i32] {
        self.0.get(id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// SIGKILLs the process group of every monitor watching container `id`
    /// (a monitor leads its own session and group, with the runtime it
    /// runs).
    fn kill(&self, id: &str) {
        for &pid in self.of(id) {
            tracing::warn!(container = %id, pid, "killing the monitor of an orphaned container");
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Manager {
    pub(super) fn recover(self: &Arc<Self>) -> Result<()> {
        let mut pods = 0;
        for rec in self.db.pods()? {
            let Some(rec) = recover_pod(&self.db, rec)? else {
                continue;
            };
            let config: PodSandboxConfig = decode_config(&rec.id, &rec.config)?;
            if let Ok(key) = pod_key(&config) {
                let _ = self.reserve(&key, &rec.id);
            }
            self.pods
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(rec.id.clone(), Arc::new(Pod::new(rec, config)));
            pods += 1;
        }
        let mut ctrs = 0;
        let monitors = Monitors::scan();
        for rec in self.db.containers()? {
            let config: ContainerConfig = decode_config(&rec.id, &rec.config)?;
            let pod_known = self
                .pods
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&rec.pod_id);
            let Some(rec) = self.recover_container(rec, &config, pod_known, &monitors)? else {
                continue;
            };
            if let Ok(key) = container_key(&rec.pod_id, &config) {
                let _ = self.reserve(&key, &rec.id);
            }
            {
                let mut users = self.volume_users.lock().unwrap_or_else(|p| p.into_inner());
                for v in &rec.image_volumes {
                    *users.entry(v.clone()).or_insert(0) += 1;
                }
            }
            self.containers
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(rec.id.clone(), Arc::new(Ctr::new(rec, config)));
            ctrs += 1;
        }
        self.sweep_orphans(&monitors);
        tracing::info!(pods, containers = ctrs, "state recovered");
        Ok(())
    }

    /// Removes what a daemon killed inside RunPodSandbox or CreateContainer
    /// left without a record: pod directories (namespaces, shm, pause),
    /// container directories (runtime state, rootfs mount), exit files.
    fn sweep_orphans(&self, monitors: &Monitors) {
        let known_pods: std::collections::HashSet<String> = self
            .pods
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        let known_ctrs: std::collections::HashSet<String> = self
            .containers
            .read()
            .unwrap_or_else(|p| p.into_inner())
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
            monitors.kill(&id);
            for h in info.handlers.handlers.values() {
                if let Ok(rt) = crius_oci_runtime::runtime::OciRuntime::new(h, &self.monitor) {
                    let _ = rt.delete(&id, true);
                }
            }
            cleanup_dir(&path);
        }
        // Image volume views nobody uses any more (their last container was
        // removed while the daemon was down, or it died mid-create).
        let used: std::collections::HashSet<String> = self
            .volume_users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
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
                .join(super::container::EXEC_SCRATCH_DIR);
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

    fn recover_container(
        &self,
        mut rec: ContainerRecord,
        config: &ContainerConfig,
        pod_known: bool,
        monitors: &Monitors,
    ) -> Result<Option<ContainerRecord>> {
        let runtime = self.runtime_any(&rec.runtime_handler).ok();
        if rec.phase == ContainerPhase::Creating || !pod_known {
            tracing::warn!(
                container = %rec.id,
                "container was being created when crius stopped (or its pod is gone); cleaning up"
            );
            if let Some(rt) = &runtime {
                let _ = rt.delete(&rec.id, true);
            }
            cleanup_dir(&rec.dir);
            let _ = std::fs::remove_file(&rec.exit_file);
            self.db.delete_container(&rec.id)?;
            return Ok(None);
        }
        if rec.phase == ContainerPhase::Exited {
            return Ok(Some(rec));
        }
        if let Some(r) = exited_record(&rec, config) {
            tracing::info!(container = %rec.id, exit_code = r.exit_code, "container exited while crius was down");
            self.db.put_container(&r)?;
            return Ok(Some(r));
        }
        // No exit recorded: ask the runtime.
        let state = runtime.as_ref().and_then(|rt| rt.state(&rec.id).ok());
        let status = state
            .as_ref()
            .and_then(|v| v["status"].as_str().map(str::to_string));
        if rec.phase == ContainerPhase::Created && rec.monitor_pid > 0 {
            // Created by an older crius, which ran the runtime's create at
            // CreateContainer (its process never ran): undone, so the
            // container is created as this crius makes them and its start
            // is one `run` like any other.
            tracing::info!(container = %rec.id, "container created by an older crius: re-made for a run at start");
            monitors.kill(&rec.id);
            if let Some(rt) = &runtime {
                let _ = rt.delete(&rec.id, true);
            }
            let _ = std::fs::remove_file(super::container::files_of(&rec).pid_file);
            let _ = std::fs::remove_file(&rec.exit_file);
            rec.pid = 0;
            rec.monitor_pid = 0;
            self.db.put_container(&rec)?;
            return Ok(Some(rec));
        }
        if rec.phase == ContainerPhase::Created {
            return self.recover_unstarted(rec, config, monitors, runtime.as_ref(), state.as_ref());
        }
        let before = rec.clone();
        match status.as_deref() {
            Some("running") => {
                if rec.phase == ContainerPhase::Created {
                    // StartContainer started it but died before recording it.
                    rec.phase = ContainerPhase::Running;
                    rec.started_at = now_ns();
                }
            }
            Some("created") => rec.phase = ContainerPhase::Created,
            _ if monitor_alive(&rec) => {
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
                rec.finished_at = now_ns();
                rec.reason = "Error".into();
                rec.message =
                    "the container's monitor disappeared; its exit code is unknown".into();
            }
        }
        if rec != before {
            self.db.put_container(&rec)?;
        }
        Ok(Some(rec))
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
        &self,
        mut rec: ContainerRecord,
        config: &ContainerConfig,
        monitors: &Monitors,
        runtime: Option<&crius_oci_runtime::runtime::OciRuntime>,
        state: Option<&serde_json::Value>,
    ) -> Result<Option<ContainerRecord>> {
        let status = state.and_then(|v| v["status"].as_str());
        let pid = state
            .and_then(|v| v["pid"].as_i64())
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 0)
            .or_else(|| {
                std::fs::read_to_string(super::container::files_of(&rec).pid_file)
                    .ok()
                    .and_then(|p| p.trim().parse().ok())
            })
            .unwrap_or(0);
        match (status, monitors.of(&rec.id)) {
            (None, []) => {}
            (Some("running" | "stopped"), [monitor]) => {
                tracing::info!(container = %rec.id, pid, state = ?status, "container started while crius stopped");
                rec.phase = ContainerPhase::Running;
                rec.started_at = super::container::pid_file_time(&rec).unwrap_or_else(now_ns);
                rec.pid = pid;
                rec.monitor_pid = *monitor;
                self.db.put_container(&rec)?;
            }
            (Some("stopped"), []) => {
                // The monitor may have written the exit file since it was
                // first looked for.
                if let Some(r) = exited_record(&rec, config) {
                    self.db.put_container(&r)?;
                    return Ok(Some(r));
                }
                tracing::warn!(container = %rec.id, "container started and exited while crius stopped, its monitor gone");
                rec.phase = ContainerPhase::Exited;
                rec.finished_at = now_ns();
                rec.started_at = super::container::pid_file_time(&rec)
                    .unwrap_or(rec.finished_at)
                    .min(rec.finished_at);
                rec.exit_code = 255;
                rec.reason = "Error".into();
                rec.message =
                    "the container's monitor disappeared; its exit code is unknown".into();
                self.db.put_container(&rec)?;
            }
            _ => {
                tracing::warn!(container = %rec.id, state = ?status, monitors = monitors.of(&rec.id).len(), "container was being started when crius stopped; undoing the start");
                monitors.kill(&rec.id);
                if let Some(rt) = runtime {
                    let _ = rt.delete(&rec.id, true);
                }
                let files = super::container::files_of(&rec);
                let _ = std::fs::remove_file(&files.pid_file);
                let _ = std::fs::remove_file(&rec.exit_file);
            }
        }
        Ok(Some(rec))
    }
}
