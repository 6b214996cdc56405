//! Containers: one file per RPC family, as CRI-O's `server/` does —
//! `create` (CreateContainer), `start` (StartContainer), `stop`
//! (StopContainer), `remove` (RemoveContainer), `status` (ContainerStatus,
//! ListContainers), `exec` (ExecSync, ReopenContainerLog), `update`
//! (UpdateContainerResources). What they share is here: a container's
//! name key, log file, stop signal, files, and how an exit becomes its
//! record.

mod create;
mod exec;
mod remove;
mod start;
pub mod stats;
mod status;
mod stop;
pub mod stream;
mod update;

pub use exec::{EXEC_OUTPUT_CAP, EXEC_SCRATCH_DIR};
pub use update::merge_cri_resources;

use super::host::Host;
use super::{ManagerError, Result};
use crate::state::{ContainerPhase, ContainerRecord};
use crius_cri_api::v1::{ContainerConfig, ContainerState, PodSandboxConfig, Signal};
use crius_oci_runtime::runtime::ContainerFiles;
use std::path::{Path, PathBuf};

/// Longest log line before the monitor splits it (a "P" line), as
/// containerd's default.
pub const MAX_LOG_LINE: usize = crius_monitor_protocol::crilog::DEFAULT_MAX_LINE;
/// A container the runtime refused to run: containerd's and CRI-O's
/// reason and exit code for it.
pub const START_ERROR_REASON: &str = "StartError";
pub const START_ERROR_EXIT_CODE: i32 = 128;
/// A container stopped before it was started ends as one killed would
/// (128 + SIGKILL), as it did when the runtime's create preceded the start.
pub const NEVER_STARTED_EXIT_CODE: i32 = 137;

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

pub(crate) fn files_of(rec: &ContainerRecord) -> ContainerFiles {
    ContainerFiles {
        bundle: rec.dir.join("bundle"),
        log: rec.log_path.clone(),
        exit_file: rec.exit_file.clone(),
        pid_file: rec.dir.join("pid"),
    }
}

/// The record after the container's exit, from the exit file (None: still
/// running, or not running). Reads the cgroup for OOM and the termination
/// message.
pub(crate) fn exited_record(
    host: &dyn Host,
    rec: &ContainerRecord,
    config: &ContainerConfig,
) -> Option<ContainerRecord> {
    if !matches!(rec.phase, ContainerPhase::Created | ContainerPhase::Running) {
        return None;
    }
    let exit = host.exit_record(&rec.exit_file)?;
    let code = exit.code;
    let mut r = rec.clone();
    r.phase = ContainerPhase::Exited;
    r.exit_code = code;
    // Clock granularity aside, an exit is never before the start.
    r.finished_at = exit
        .at_ns()
        .unwrap_or_else(|| host.now_ns())
        .max(r.started_at);
    if r.started_at == 0 {
        // Started while no record of it was kept (a daemon killed inside
        // StartContainer).
        r.started_at = host
            .modified_ns(&files_of(rec).pid_file)
            .unwrap_or(r.finished_at)
            .min(r.finished_at);
    }
    r.reason = if host.oom_killed(&rec.cgroups_path) {
        "OOMKilled".into()
    } else if code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    r.message = host.termination_message(config);
    Some(r)
}

pub fn cri_state(p: ContainerPhase) -> ContainerState {
    match p {
        ContainerPhase::Creating | ContainerPhase::Created => ContainerState::ContainerCreated,
        ContainerPhase::Running => ContainerState::ContainerRunning,
        ContainerPhase::Exited => ContainerState::ContainerExited,
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
}
