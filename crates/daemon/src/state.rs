//! Pod and container records in sled (`<root>/state`), the daemon's memory
//! of what it created. A record is written (and flushed) before the side
//! effect it describes is reported done, and before a slow side effect
//! starts (phase `Creating`), so a daemon killed at any point finds either
//! nothing or a record telling it what to finish or clean up.
//!
//! Records are JSON with a `version`; the CRI configs inside are kept as
//! their protobuf encoding (base64), exactly as kubelet sent them.

use base64::Engine;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database: {0}")]
    Sled(#[from] sled::Error),
    #[error("state record {key}: {message}")]
    Corrupt { key: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPhase {
    /// RunPodSandbox is in progress (or was, when the daemon died).
    Creating,
    Ready,
    NotReady,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    pub version: u32,
    pub id: String,
    pub phase: PodPhase,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// The PodSandboxConfig, protobuf-encoded, base64.
    pub config: String,
    /// The handler's name as resolved ("" became the default's name).
    pub runtime_handler: String,
    /// Volatile files: pinned namespaces, shm, hosts, resolv.conf.
    pub dir: PathBuf,
    pub netns: Option<PathBuf>,
    pub ipcns: Option<PathBuf>,
    pub utsns: Option<PathBuf>,
    pub shm: Option<PathBuf>,
    pub cgroup_parent: String,
    /// The shared PID namespace (pid mode POD) and its pause process.
    #[serde(default)]
    pub pidns: Option<PathBuf>,
    #[serde(default)]
    pub pause_pid: i32,
    /// The CNI network the pod is attached to ("" for none: host network,
    /// or no network configured when it was run).
    #[serde(default)]
    pub network: String,
    /// The pod's addresses from the CNI result, the primary first.
    #[serde(default)]
    pub ips: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerPhase {
    /// CreateContainer is in progress (or was, when the daemon died).
    Creating,
    Created,
    Running,
    Exited,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub version: u32,
    pub id: String,
    pub pod_id: String,
    pub phase: ContainerPhase,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// The ContainerConfig, protobuf-encoded, base64.
    pub config: String,
    /// The image as the CRI named it, its id and its digest reference.
    pub image: String,
    pub image_id: String,
    pub image_ref: String,
    pub runtime_handler: String,
    /// Persistent: bundle (config.json) and the rootfs overlay.
    pub dir: PathBuf,
    pub log_path: PathBuf,
    pub exit_file: PathBuf,
    pub pid: i32,
    pub monitor_pid: i32,
    /// cgroupfs path of the container (for OOM detection).
    pub cgroups_path: String,
    /// The signal StopContainer sends first (runtime's name or number).
    pub stop_signal: String,
    /// The user the process runs as, as the spec says.
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Images mounted as volumes (ids), one entry per image mount.
    #[serde(default)]
    pub image_volumes: Vec<String>,
}

pub fn encode_config<M: Message>(m: &M) -> String {
    base64::engine::general_purpose::STANDARD.encode(m.encode_to_vec())
}

pub fn decode_config<M: Message + Default>(key: &str, s: &str) -> Result<M, StateError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| StateError::Corrupt {
            key: key.into(),
            message: e.to_string(),
        })?;
    M::decode(bytes.as_slice()).map_err(|e| StateError::Corrupt {
        key: key.into(),
        message: e.to_string(),
    })
}

/// The pods and containers trees.
pub struct StateDb {
    db: sled::Db,
    pods: sled::Tree,
    containers: sled::Tree,
}

impl StateDb {
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let db = crius_image_store::db::open_sled(path)?;
        Ok(StateDb {
            pods: db.open_tree("pods")?,
            containers: db.open_tree("containers")?,
            db,
        })
    }

    fn put<T: Serialize>(
        &self,
        tree: &sled::Tree,
        id: &str,
        v: &T,
        flush: bool,
    ) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(v).map_err(|e| StateError::Corrupt {
            key: id.into(),
            message: e.to_string(),
        })?;
        tree.insert(id.as_bytes(), bytes)?;
        if flush {
            self.db.flush()?;
        }
        Ok(())
    }

    fn all<T: for<'de> Deserialize<'de>>(tree: &sled::Tree) -> Result<Vec<T>, StateError> {
        let mut out = Vec::new();
        for kv in tree.iter() {
            let (k, v) = kv?;
            out.push(serde_json::from_slice(&v).map_err(|e| StateError::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                message: e.to_string(),
            })?);
        }
        Ok(out)
    }

    /// Writes a pod record durably (blocking: fsync).
    pub fn put_pod(&self, r: &PodRecord) -> Result<(), StateError> {
        self.put(&self.pods, &r.id, r, true)
    }

    /// Writes a container record durably (blocking: fsync).
    pub fn put_container(&self, r: &ContainerRecord) -> Result<(), StateError> {
        self.put(&self.containers, &r.id, r, true)
    }

    /// Writes a container record that recovery could rebuild from the host
    /// anyway (running: the runtime's state; exited: the exit file), so it
    /// need not wait for an fsync; sled flushes it within half a second.
    pub fn put_container_lazily(&self, r: &ContainerRecord) -> Result<(), StateError> {
        self.put(&self.containers, &r.id, r, false)
    }

    pub fn delete_pod(&self, id: &str) -> Result<(), StateError> {
        self.pods.remove(id.as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    pub fn delete_container(&self, id: &str) -> Result<(), StateError> {
        self.containers.remove(id.as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    pub fn pods(&self) -> Result<Vec<PodRecord>, StateError> {
        Self::all(&self.pods)
    }

    pub fn containers(&self) -> Result<Vec<ContainerRecord>, StateError> {
        Self::all(&self.containers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_cri_api::v1::{PodSandboxConfig, PodSandboxMetadata};

    #[test]
    fn records_round_trip_and_survive_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "p".into(),
                uid: "u".into(),
                namespace: "n".into(),
                attempt: 2,
            }),
            hostname: "h".into(),
            ..Default::default()
        };
        let rec = PodRecord {
            version: RECORD_VERSION,
            id: "a".repeat(64),
            phase: PodPhase::Ready,
            created_at: 5,
            config: encode_config(&cfg),
            runtime_handler: "runc".into(),
            dir: "/run/crius/pods/a".into(),
            netns: Some("/run/crius/pods/a/ns/net".into()),
            ipcns: None,
            utsns: None,
            shm: None,
            cgroup_parent: "/kubepods".into(),
            pidns: None,
            pause_pid: 0,
            network: "pods".into(),
            ips: vec!["10.88.0.5".into()],
        };
        {
            let db = StateDb::open(&tmp.path().join("state")).unwrap();
            db.put_pod(&rec).unwrap();
        }
        let db = StateDb::open(&tmp.path().join("state")).unwrap();
        let pods = db.pods().unwrap();
        assert_eq!(pods, vec![rec.clone()]);
        let back: PodSandboxConfig = decode_config("x", &pods[0].config).unwrap();
        assert_eq!(back, cfg);
        db.delete_pod(&rec.id).unwrap();
        assert!(db.pods().unwrap().is_empty());
        assert!(decode_config::<PodSandboxConfig>("x", "!!").is_err());
    }
}
