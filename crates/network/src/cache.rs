//! The attachment cache: one file per pod network attachment, written
//! before ADD starts (the intent) and again with its result, removed after
//! DEL succeeds — as libcni caches, so DEL is given the same network
//! config, arguments and result that ADD was, even after a daemon restart
//! or a change of the config directory, and so a daemon killed mid-ADD or
//! mid-DEL finds what to undo.
//!
//! Files live under `<root>/cni/results` (persistent: host-local's IPAM
//! files outlive a reboot, so the attachments that hold them must too).
//! Every write is atomic (temp file, rename): a daemon killed at any point
//! finds the old record or the new one, never a torn one. The intent is
//! also fsynced before ADD starts. Nothing else is: the only state a pod's
//! network leaves that survives a power loss is IPAM's files, which
//! host-local itself writes without fsync, so a record more durable than
//! the allocation it tracks buys nothing — and each fsync cost
//! RunPodSandbox 0.3-0.5 ms on the bench's disk. A record whose result was
//! lost is still deleted (DEL without prevResult, which plugins accept);
//! one whose removal was lost is deleted again (DEL is idempotent).

use crate::config::{NetworkConfigList, PluginConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const KIND: &str = "crius-cni-attachment-v1";

/// One pod's attachment to a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub kind: String,
    pub container_id: String,
    pub if_name: String,
    pub netns: PathBuf,
    /// The network as ADD used it.
    pub network: CachedNetwork,
    pub cni_args: Vec<(String, String)>,
    pub capability_args: Map<String, Value>,
    /// The last plugin's result; None while ADD is in flight (or if it
    /// failed before any result).
    pub result: Option<Value>,
}

/// A network config list, as cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedNetwork {
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<Map<String, Value>>,
    pub source: PathBuf,
}

impl CachedNetwork {
    pub fn from_list(l: &NetworkConfigList) -> Self {
        CachedNetwork {
            name: l.name.clone(),
            cni_version: l.cni_version.clone(),
            disable_check: l.disable_check,
            disable_gc: l.disable_gc,
            plugins: l.plugins.iter().map(|p| p.raw.clone()).collect(),
            source: l.source.clone(),
        }
    }

    /// Back to a list; a plugin entry without a usable type is dropped
    /// (it could not have been run).
    pub fn to_list(&self) -> NetworkConfigList {
        NetworkConfigList {
            name: self.name.clone(),
            cni_version: self.cni_version.clone(),
            disable_check: self.disable_check,
            disable_gc: self.disable_gc,
            plugins: self
                .plugins
                .iter()
                .filter_map(|raw| {
                    let kind = raw.get("type")?.as_str()?.to_string();
                    (!kind.is_empty() && !kind.contains('/') && kind != "..").then(|| {
                        PluginConfig {
                            kind,
                            raw: raw.clone(),
                        }
                    })
                })
                .collect(),
            source: self.source.clone(),
        }
    }
}

/// A container id usable as a file name (crius's ids are hex; a cache
/// directory could hold anything).
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn open(dir: &Path) -> std::io::Result<Cache> {
        std::fs::create_dir_all(dir)?;
        Ok(Cache {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, container_id: &str, if_name: &str, ext: &str) -> Option<PathBuf> {
        (valid_id(container_id) && valid_id(if_name))
            .then(|| self.dir.join(format!("{container_id}-{if_name}.{ext}")))
    }

    /// Writes `bytes` to a new name through a temp file: atomic, and
    /// never a rename over an existing file (ext4 flushes the data of a
    /// file renamed over another, which cost ~1 ms here).
    fn write(&self, path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            if durable {
                f.sync_all()?;
            }
        }
        std::fs::rename(&tmp, path)
    }

    fn paths(&self, a: &Attachment) -> std::io::Result<(PathBuf, PathBuf)> {
        let bad = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("container id {:?} cannot name a cache file", a.container_id),
            )
        };
        Ok((
            self.path(&a.container_id, &a.if_name, "json")
                .ok_or_else(bad)?,
            self.path(&a.container_id, &a.if_name, "result")
                .ok_or_else(bad)?,
        ))
    }

    /// Writes the record of an attachment about to be added (its result,
    /// if it has one, too); `durable` fsyncs it first.
    pub fn put(&self, a: &Attachment, durable: bool) -> std::io::Result<()> {
        let (intent, _) = self.paths(a)?;
        let mut record = a.clone();
        record.result = None;
        let bytes = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        self.write(&intent, &bytes, durable)?;
        if a.result.is_some() {
            self.put_result(a)?;
        }
        Ok(())
    }

    /// Adds the result to an attachment's record (a file beside it).
    pub fn put_result(&self, a: &Attachment) -> std::io::Result<()> {
        let (_, result) = self.paths(a)?;
        let bytes = serde_json::to_vec(&a.result).map_err(std::io::Error::other)?;
        self.write(&result, &bytes, false)
    }

    fn read(&self, intent: &Path) -> Result<Attachment, String> {
        let b = std::fs::read(intent).map_err(|e| e.to_string())?;
        let mut a: Attachment = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
        let result = intent.with_extension("result");
        a.result = match std::fs::read(&result) {
            // A result that cannot be read is treated as none: DEL then
            // goes without prevResult, which plugins accept.
            Ok(b) => serde_json::from_slice(&b).ok().flatten(),
            Err(_) => None,
        };
        Ok(a)
    }

    pub fn get(&self, container_id: &str, if_name: &str) -> std::io::Result<Option<Attachment>> {
        let Some(path) = self.path(container_id, if_name, "json") else {
            return Ok(None);
        };
        if !path.exists() {
            return Ok(None);
        }
        self.read(&path)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Forgets an attachment (its result first, so a record is never left
    /// claiming a result it lost).
    pub fn remove(&self, container_id: &str, if_name: &str) -> std::io::Result<()> {
        for ext in ["result", "json"] {
            let Some(path) = self.path(container_id, if_name, ext) else {
                return Ok(());
            };
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Every attachment on disk (unreadable files are skipped, with their
    /// paths, for the caller to log), and stray temp files removed.
    pub fn list(&self) -> (Vec<Attachment>, Vec<(PathBuf, String)>) {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return (out, bad);
        };
        for e in rd.flatten() {
            let p = e.path();
            match p.extension().and_then(|x| x.to_str()) {
                Some("json") => {}
                Some("tmp") => {
                    let _ = std::fs::remove_file(&p);
                    continue;
                }
                _ => continue,
            }
            match self.read(&p) {
                Ok(a) => out.push(a),
                Err(e) => bad.push((p, e)),
            }
        }
        out.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        (out, bad)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn att(id: &str) -> Attachment {
        let list = crate::config::parse(
            Path::new("/n.conflist"),
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
            true,
        )
        .unwrap();
        Attachment {
            kind: KIND.into(),
            container_id: id.into(),
            if_name: "eth0".into(),
            netns: "/run/ns".into(),
            network: CachedNetwork::from_list(&list),
            cni_args: vec![("IgnoreUnknown".into(), "1".into())],
            capability_args: Map::new(),
            result: None,
        }
    }

    #[test]
    fn put_get_list_remove() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        assert_eq!(c.get("abc", "eth0").unwrap(), None);
        let mut a = att("abc");
        c.put(&a, true).unwrap();
        a.result = Some(serde_json::json!({"ips":[]}));
        c.put(&a, true).unwrap();
        assert_eq!(c.get("abc", "eth0").unwrap(), Some(a.clone()));
        assert_eq!(a.network.to_list().plugins.len(), 2);
        std::fs::write(d.path().join("junk.json"), b"{").unwrap();
        std::fs::write(d.path().join("x.tmp"), b"{").unwrap();
        let (all, bad) = c.list();
        assert_eq!(all, vec![a]);
        assert_eq!(bad.len(), 1);
        assert!(!d.path().join("x.tmp").exists());
        c.remove("abc", "eth0").unwrap();
        c.remove("abc", "eth0").unwrap();
        assert_eq!(c.get("abc", "eth0").unwrap(), None);
    }

    #[test]
    fn ids_that_are_not_file_names_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        for id in ["../x", "", "a/b", "a.b"] {
            assert!(c.put(&att(id), false).is_err(), "{id:?}");
            assert_eq!(c.get(id, "eth0").unwrap(), None);
        }
    }
}
