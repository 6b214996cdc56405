//! Image records in sled: `images` (id → record), `tags` (repo tag → id),
//! `digests` (repo digest → id). Every change is one sled transaction over
//! the three trees, flushed (fsync) before the caller reports success, so a
//! tag never points at a missing image and a crash never half-moves a tag.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use std::collections::BTreeMap;
use std::path::Path;

/// Bumped when the record layout changes; older records are migrated on read.
pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// The uncompressed digest from the image config (images only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<String>,
    /// `org.opencontainers.image.title` (artifact files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// ORAS's `io.deis.oras.content.unpack: "true"`: a titled layer that is
    /// a (gzipped) tar of the directory its title names.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unpack: bool,
    /// ModelPack's `org.cncf.model.filepath`: where a raw layer's file goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filepath: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub version: u32,
    /// The CRI image id: an image's config digest (`sha256:…`), as every
    /// runtime reports it; an artifact's manifest digest, since artifacts
    /// commonly share one config (ORAS's empty `{}`) and would otherwise
    /// collide.
    pub id: String,
    /// The config blob's digest where it differs from `id` (artifacts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub manifest_size: u64,
    /// The image index (manifest list) the manifest was chosen from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    pub config_media_type: String,
    pub config_size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub layers: Vec<LayerRecord>,
    /// Size of the stored content (config + layers), as the CRI reports it.
    pub size: u64,
    /// The image config's `User` (images only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub pinned: bool,
    pub annotations: BTreeMap<String, String>,
    /// When crius first stored it, unix nanoseconds.
    pub created_at: i64,
}

/// Whether a config media type is a runnable image's (else: an artifact).
pub fn is_image_config(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.config.v1+json"
            | "application/vnd.docker.container.image.v1+json"
    )
}

impl ImageRecord {
    /// Not a runnable image: its config is not an image config.
    pub fn is_artifact(&self) -> bool {
        !is_image_config(&self.config_media_type)
    }

    /// The config blob's digest.
    pub fn config(&self) -> &str {
        self.config_digest.as_deref().unwrap_or(&self.id)
    }

    /// Every blob this image keeps alive.
    pub fn blobs(&self) -> impl Iterator<Item = &str> {
        [self.manifest_digest.as_str(), self.config()]
            .into_iter()
            .chain(self.index_digest.as_deref())
            .chain(self.layers.iter().map(|l| l.digest.as_str()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("image database: {0}")]
    Sled(#[from] sled::Error),
    #[error("image database record {key}: {message}")]
    Corrupt { key: String, message: String },
}

impl From<TransactionError<DbError>> for DbError {
    fn from(e: TransactionError<DbError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => DbError::Sled(e),
        }
    }
}

pub struct Db {
    db: sled::Db,
    images: sled::Tree,
    tags: sled::Tree,
    digests: sled::Tree,
}

fn decode(key: &[u8], v: &[u8]) -> Result<ImageRecord, DbError> {
    serde_json::from_slice(v).map_err(|e| DbError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message: e.to_string(),
    })
}

fn encode(r: &ImageRecord) -> Vec<u8> {
    // Serialising strings, numbers and maps cannot fail.
    serde_json::to_vec(r).unwrap_or_default()
}

/// Opens a sled database as crius keeps them: a page cache of a few MiB
/// (sled's default is 1 GiB; these hold a few thousand small records).
///
/// sled's lock on the database is held for up to two seconds more before
/// giving up: the caller holds the root's lock, so no other daemon uses
/// the database, but a process a daemon that just exited was spawning can
/// still hold a copy of its descriptor until it execs (posix_spawn's
/// vfork suspends only the spawning thread; the others may exit the
/// process meanwhile).
pub fn open_sled(path: &Path) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(8 << 20)
            .open()
        {
            // sled reports its lock as an `Other` error naming it.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl Db {
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let db = open_sled(path)?;
        Ok(Db {
            images: db.open_tree("images")?,
            tags: db.open_tree("tags")?,
            digests: db.open_tree("digests")?,
            db,
        })
    }

    pub fn get(&self, id: &str) -> Result<Option<ImageRecord>, DbError> {
        self.images
            .get(id)?
            .map(|v| decode(id.as_bytes(), &v))
            .transpose()
    }

    pub fn by_tag(&self, tag: &str) -> Result<Option<ImageRecord>, DbError> {
        match self.tags.get(tag)? {
            Some(id) => self.get(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    pub fn by_repo_digest(&self, d: &str) -> Result<Option<ImageRecord>, DbError> {
        match self.digests.get(d)? {
            Some(id) => self.get(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, DbError> {
        self.images
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    /// Stores `record` and points each of its repo tags and digests at it.
    /// A tag held by another image moves here (that image loses it), in the
    /// same transaction. Returns the records that lost tags.
    pub fn put(&self, record: &ImageRecord) -> Result<Vec<ImageRecord>, DbError> {
        let losers =
            (&self.images, &self.tags, &self.digests).transaction(|(images, tags, digests)| {
                let mut merged = match images.get(&record.id)? {
                    Some(v) => decode(record.id.as_bytes(), &v)
                        .map_err(ConflictableTransactionError::Abort)?,
                    None => record.clone(),
                };
                for t in &record.repo_tags {
                    if !merged.repo_tags.contains(t) {
                        merged.repo_tags.push(t.clone());
                    }
                }
                for d in &record.repo_digests {
                    if !merged.repo_digests.contains(d) {
                        merged.repo_digests.push(d.clone());
                    }
                }
                merged.pinned |= record.pinned;
                let mut losers: BTreeMap<String, ImageRecord> = BTreeMap::new();
                for t in &record.repo_tags {
                    if let Some(prev) = tags.insert(t.as_bytes(), record.id.as_bytes())? {
                        let prev = String::from_utf8_lossy(&prev).into_owned();
                        if prev != record.id {
                            let loser = match losers.remove(&prev) {
                                Some(l) => Some(l),
                                None => images
                                    .get(&prev)?
                                    .map(|v| decode(prev.as_bytes(), &v))
                                    .transpose()
                                    .map_err(ConflictableTransactionError::Abort)?,
                            };
                            if let Some(mut l) = loser {
                                l.repo_tags.retain(|x| x != t);
                                losers.insert(prev, l);
                            }
                        }
                    }
                }
                for d in &record.repo_digests {
                    digests.insert(d.as_bytes(), record.id.as_bytes())?;
                }
                for l in losers.values() {
                    images.insert(l.id.as_bytes(), encode(l))?;
                }
                images.insert(merged.id.as_bytes(), encode(&merged))?;
                Ok(losers.into_values().collect::<Vec<_>>())
            })?;
        self.db.flush()?;
        Ok(losers)
    }

    /// Removes one tag from its image; the image stays (untagged).
    pub fn untag(&self, tag: &str) -> Result<Option<ImageRecord>, DbError> {
        let r = (&self.images, &self.tags).transaction(|(images, tags)| {
            let Some(id) = tags.remove(tag.as_bytes())? else {
                return Ok(None);
            };
            let id = String::from_utf8_lossy(&id).into_owned();
            let Some(v) = images.get(&id)? else {
                return Ok(None);
            };
            let mut r = decode(id.as_bytes(), &v).map_err(ConflictableTransactionError::Abort)?;
            r.repo_tags.retain(|t| t != tag);
            images.insert(id.as_bytes(), encode(&r))?;
            Ok(Some(r))
        })?;
        self.db.flush()?;
        Ok(r)
    }

    /// Removes the image with every tag and digest pointing at it.
    pub fn remove(&self, id: &str) -> Result<Option<ImageRecord>, DbError> {
        let r =
            (&self.images, &self.tags, &self.digests).transaction(|(images, tags, digests)| {
                let Some(v) = images.remove(id.as_bytes())? else {
                    return Ok(None);
                };
                let r = decode(id.as_bytes(), &v).map_err(ConflictableTransactionError::Abort)?;
                for t in &r.repo_tags {
                    // Only if it still points here (a concurrent pull may have moved it).
                    if tags.get(t.as_bytes())?.as_deref() == Some(id.as_bytes()) {
                        tags.remove(t.as_bytes())?;
                    }
                }
                for d in &r.repo_digests {
                    if digests.get(d.as_bytes())?.as_deref() == Some(id.as_bytes()) {
                        digests.remove(d.as_bytes())?;
                    }
                }
                Ok(Some(r))
            })?;
        self.db.flush()?;
        Ok(r)
    }

    /// Bytes sled uses on disk (for ImageFsInfo).
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, tags: &[&str]) -> ImageRecord {
        ImageRecord {
            version: RECORD_VERSION,
            id: id.into(),
            config_digest: None,
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: vec![format!("r/x@{id}")],
            manifest_digest: format!("m-{id}"),
            manifest_media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            manifest_size: 1,
            index_digest: None,
            config_media_type: "application/vnd.oci.image.config.v1+json".into(),
            config_size: 1,
            artifact_type: None,
            layers: vec![],
            size: 2,
            user: None,
            pinned: false,
            annotations: BTreeMap::new(),
            created_at: 0,
        }
    }

    #[test]
    fn tags_move_atomically_and_survive_reopen() {
        let d = tempfile::tempdir().unwrap();
        {
            let db = Db::open(d.path()).unwrap();
            assert!(db
                .put(&rec("a", &["r/x:1", "r/x:latest"]))
                .unwrap()
                .is_empty());
            let losers = db.put(&rec("b", &["r/x:latest"])).unwrap();
            assert_eq!(losers.len(), 1);
            assert_eq!(losers[0].repo_tags, vec!["r/x:1"]);
            assert_eq!(db.by_tag("r/x:latest").unwrap().unwrap().id, "b");
            assert_eq!(db.get("a").unwrap().unwrap().repo_tags, vec!["r/x:1"]);
        }
        let db = Db::open(d.path()).unwrap();
        assert_eq!(db.by_tag("r/x:latest").unwrap().unwrap().id, "b");
        assert_eq!(db.by_repo_digest("r/x@a").unwrap().unwrap().id, "a");
        assert_eq!(db.list().unwrap().len(), 2);
    }

    #[test]
    fn repull_merges_tags_and_remove_clears_indexes() {
        let d = tempfile::tempdir().unwrap();
        let db = Db::open(d.path()).unwrap();
        db.put(&rec("a", &["r/x:1"])).unwrap();
        db.put(&rec("a", &["r/x:2"])).unwrap();
        let r = db.get("a").unwrap().unwrap();
        assert_eq!(r.repo_tags, vec!["r/x:1", "r/x:2"]);
        let r = db.untag("r/x:1").unwrap().unwrap();
        assert_eq!(r.repo_tags, vec!["r/x:2"]);
        assert!(db.by_tag("r/x:1").unwrap().is_none());
        db.remove("a").unwrap().unwrap();
        assert!(db.by_tag("r/x:2").unwrap().is_none());
        assert!(db.by_repo_digest("r/x@a").unwrap().is_none());
        assert!(db.remove("a").unwrap().is_none());
    }
}
