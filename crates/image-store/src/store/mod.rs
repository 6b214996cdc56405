//! The image store: pulls (short-name resolution, mirrors, credentials,
//! de-duplicated blob downloads, fail-fast after failures), lookups, removal
//! with garbage collection, and disk usage.
//!
//! - `mod.rs`: `ImageStore`, its configuration and errors, lookups, where
//!   layers and artifacts are, image configs, index.json, the locks and
//!   pins that keep concurrent pulls and removals apart.
//! - `pulls.rs`: pulling (candidates, credentials, back-off, manifests,
//!   blobs, unpacking, the record).
//! - `gc.rs`: removal, garbage collection, disk usage.

mod gc;
mod pulls;

use crate::auth::{Auth, AuthFile};
use crate::db::{Db, DbError, ImageRecord, LayerRecord, RECORD_VERSION};
use crate::layout::{Layout, LayoutError};
use crate::pull::{self, FetchedManifest, RegistryError, Remote, RetryPolicy};
use crate::reference::{self, ImageRef, ParsedRef, ReferenceError};
use crate::registries::{RegistriesConf, RegistriesError};
use futures_util::StreamExt;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory of the store: `oci/` (the layout) and `db/` (sled).
    pub root: PathBuf,
    pub registries: RegistriesConf,
    /// Auth files in priority order; missing ones are skipped.
    pub auth_files: Vec<PathBuf>,
    pub retry: RetryPolicy,
    /// Layers of one image downloaded at once.
    pub max_concurrent_downloads: usize,
    /// After a failed pull of a reference, further pulls of it fail fast for
    /// this long.
    pub failure_backoff: Duration,
    /// Caps on unpacked content: (uncompressed bytes, entries) per layer and
    /// per image.
    pub max_layer_bytes: u64,
    pub max_layer_entries: u64,
    pub max_image_bytes: u64,
    pub max_image_entries: u64,
    /// Send a CRI pull secret to mirrors of its registry too (by default a
    /// mirror gets only its own auth-file entry, or anonymous access).
    pub mirror_pull_secrets: bool,
}

impl StoreConfig {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StoreConfig {
            root: root.into(),
            registries: RegistriesConf::default(),
            auth_files: Vec::new(),
            retry: RetryPolicy::default(),
            max_concurrent_downloads: 6,
            failure_backoff: Duration::from_secs(10),
            max_layer_bytes: crate::unpack::DEFAULT_MAX_LAYER_BYTES,
            max_layer_entries: crate::unpack::DEFAULT_MAX_LAYER_ENTRIES,
            max_image_bytes: crate::unpack::DEFAULT_MAX_IMAGE_BYTES,
            max_image_entries: crate::unpack::DEFAULT_MAX_IMAGE_ENTRIES,
            mirror_pull_secrets: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Registries(#[from] RegistriesError),
    #[error("pulling {reference}: {source}")]
    Registry {
        reference: String,
        #[source]
        source: RegistryError,
    },
    #[error("pulling {reference}: {media_type} manifests are not supported")]
    Unsupported {
        reference: String,
        media_type: String,
    },
    #[error("pulling {reference}: failed {ago:?} ago ({reason}); not retrying for another {remaining:?}")]
    BackingOff {
        reference: String,
        ago: Duration,
        remaining: Duration,
        reason: String,
    },
    #[error("pulling {reference}: layer {layer}: {source}")]
    Unpack {
        reference: String,
        layer: String,
        #[source]
        source: crate::unpack::UnpackError,
    },
    #[error(
        "image {image}: invalid diff ID {diff_id:?} (want sha256: and 64 lowercase hex digits)"
    )]
    InvalidDiffId { image: String, diff_id: String },
    #[error("image {image} is in use by container {container}")]
    InUse { image: String, container: String },
    #[error("image store: {0}")]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("auth file: {0}")]
    Auth(#[from] crate::auth::AuthError),
}

impl StoreError {
    fn registry(reference: &ImageRef, source: RegistryError) -> Self {
        StoreError::Registry {
            reference: reference.to_string(),
            source,
        }
    }
}

/// Disk usage of the store, for ImageFsInfo.
pub use crate::usage::FsUsage;

const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The last result of a pull of one reference and when it finished.
type PullSlot = tokio::sync::Mutex<Option<(Instant, ImageRecord)>>;

pub struct ImageStore {
    cfg: StoreConfig,
    layout: Layout,
    db: Db,
    /// One download per blob digest at a time, across all pulls.
    blob_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// One pull per reference at a time; latecomers reuse the result.
    ref_locks: Mutex<HashMap<String, Arc<PullSlot>>>,
    failures: Mutex<HashMap<String, (Instant, String)>>,
    /// Blobs that in-progress pulls have stored or are storing but no
    /// record names yet; garbage collection leaves them alone.
    pinned: Mutex<HashMap<String, usize>>,
    /// Serialises index.json rewrites.
    index_lock: Mutex<()>,
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not wedge the store: the data is still valid.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ImageStore {
    pub fn open(cfg: StoreConfig) -> Result<Self, StoreError> {
        let layout = Layout::open(&cfg.root.join("oci"))?;
        let db = Db::open(&cfg.root.join("db"))?;
        // Unpacks and materialisations a crash interrupted.
        for sub in ["layers", "artifacts"] {
            for e in std::fs::read_dir(cfg.root.join(sub))
                .into_iter()
                .flatten()
                .flatten()
            {
                if e.file_name().to_string_lossy().starts_with('.') {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let store = ImageStore {
            cfg,
            layout,
            db,
            blob_locks: Mutex::default(),
            ref_locks: Mutex::default(),
            failures: Mutex::default(),
            pinned: Mutex::default(),
            index_lock: Mutex::new(()),
        };
        // Blobs and content of pulls a crash interrupted are unreferenced.
        store.gc()?;
        Ok(store)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn root(&self) -> &Path {
        &self.cfg.root
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        Ok(self.db.list()?)
    }

    /// Finds a local image by id (`sha256:…` or bare hex), unique id prefix
    /// (at least 12 hex digits), tag or digest reference, short names
    /// normalised the docker way and through the search registries.
    pub fn resolve(&self, image: &str) -> Result<Option<ImageRecord>, StoreError> {
        let image = image.trim();
        if let Some(r) = self.db.get(image)? {
            return Ok(Some(r));
        }
        let hex = image.strip_prefix("sha256:").unwrap_or(image);
        if hex.len() >= 12 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let matches: Vec<_> = self
                .db
                .list()?
                .into_iter()
                .filter(|r| r.id.trim_start_matches("sha256:").starts_with(hex))
                .collect();
            if matches.len() == 1 {
                return Ok(matches.into_iter().next());
            }
        }
        let candidates = self.candidates(&reference::parse(image)?)?;
        for mut c in candidates {
            if c.tag.is_none() && c.digest.is_none() {
                c.tag = Some("latest".into());
            }
            if let Some(d) = &c.digest {
                if let Some(r) = self.db.by_repo_digest(&format!("{}@{d}", c.name()))? {
                    return Ok(Some(r));
                }
            } else if let Some(r) = self.db.by_tag(&c.to_string())? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Where the unpacked layer with this diff ID lives (an overlayfs lower
    /// dir); None for anything but a well-formed diff ID, which is checked
    /// here again because the path is built from it.
    pub fn layer_dir(&self, diff_id: &str) -> Option<PathBuf> {
        if !crate::unpack::valid_diff_id(diff_id) {
            return None;
        }
        Some(
            self.cfg
                .root
                .join("layers")
                .join(diff_id.trim_start_matches("sha256:")),
        )
    }

    /// Where crius notes that blob `digest` was verified to produce a diff
    /// ID (the file holds it): a layer directory is reused for a blob only
    /// when that blob is known to produce it, so a manifest cannot claim
    /// another image's private layer by naming its diff ID.
    fn layer_source(&self, digest: &str) -> Result<PathBuf, StoreError> {
        let hex = crate::layout::sha256_hex(digest)?;
        Ok(self.cfg.root.join("layer-sources").join(hex))
    }

    /// Where an artifact's content is materialised.
    pub fn artifact_dir(&self, record: &ImageRecord) -> PathBuf {
        self.cfg
            .root
            .join("artifacts")
            .join(record.manifest_digest.trim_start_matches("sha256:"))
    }

    /// The overlayfs lower dirs of an image, top-most first.
    pub fn lower_dirs(&self, record: &ImageRecord) -> Result<Vec<PathBuf>, StoreError> {
        record
            .layers
            .iter()
            .rev()
            .filter_map(|l| l.diff_id.as_deref())
            .map(|d| {
                self.layer_dir(d).ok_or_else(|| StoreError::InvalidDiffId {
                    image: record.id.clone(),
                    diff_id: d.to_string(),
                })
            })
            .collect()
    }

    /// Exclusive access to one key (a blob download, an unpack, a
    /// materialisation); the map entry goes when the last user does.
    pub(super) async fn key_lock(&self, key: String) -> KeyLock<'_> {
        let m = lock(&self.blob_locks)
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = m.lock_owned().await;
        KeyLock {
            store: self,
            key,
            _guard: Some(guard),
        }
    }

    pub(super) fn pin(&self, digests: impl Iterator<Item = String>) -> Pins<'_> {
        let digests: Vec<String> = digests.collect();
        let mut p = lock(&self.pinned);
        for d in &digests {
            *p.entry(d.clone()).or_default() += 1;
        }
        Pins {
            store: self,
            digests,
        }
    }

    /// The image config of an image, parsed: what a container runs
    /// (`Entrypoint`, `Cmd`, `Env`, `WorkingDir`, `User`, `StopSignal`),
    /// what it declares (`Volumes`, `ExposedPorts`, `Labels`) and its
    /// `rootfs`. `None` for an artifact, whose config (often ORAS's empty
    /// `{}`) is not an image config.
    ///
    /// Any config a pull accepted parses: one oci-spec refuses (no
    /// `architecture`, an `Env` of mixed types) is read the way crius has
    /// always read configs, keeping only the strings where strings belong
    /// (see `oci`). The blob's size is checked against the record. For the
    /// config's exact JSON (verbose image status), read the blob itself:
    /// `layout().read_blob(record.config())`.
    ///
    /// Errors are [`StoreError::Layout`]: the blob is missing, its size is
    /// wrong, or it is not JSON (which a pull never stores).
    pub fn image_config(
        &self,
        record: &ImageRecord,
    ) -> Result<Option<ImageConfiguration>, StoreError> {
        if record.is_artifact() {
            return Ok(None);
        }
        let desc = crate::layout::descriptor(
            &record.config_media_type,
            record.config(),
            record.config_size,
        )?;
        let bytes = self.layout.read_descriptor(&desc)?;
        let config = crate::oci::image_config(&bytes).map_err(|e| LayoutError::Io {
            what: format!("image {}: config {}", record.id, record.config()),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        Ok(Some(config))
    }

    /// Rewrites index.json from the records.
    pub(super) fn write_index(&self) -> Result<(), StoreError> {
        let _g = lock(&self.index_lock);
        let mut manifests = Vec::new();
        for r in self.db.list()? {
            let (digest, size, media_type) =
                (&r.manifest_digest, r.manifest_size, &r.manifest_media_type);
            let names: Vec<Option<&String>> = if r.repo_tags.is_empty() {
                vec![None]
            } else {
                r.repo_tags.iter().map(Some).collect()
            };
            for name in names {
                let mut d = crate::layout::descriptor(media_type, digest, size)?;
                if let Some(n) = name {
                    d.set_annotations(Some(HashMap::from([(
                        "org.opencontainers.image.ref.name".to_string(),
                        n.clone(),
                    )])));
                }
                manifests.push(d);
            }
        }
        self.layout.write_index(manifests)?;
        Ok(())
    }
}

pub(super) struct KeyLock<'a> {
    store: &'a ImageStore,
    key: String,
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for KeyLock<'_> {
    fn drop(&mut self) {
        let mut map = lock(&self.store.blob_locks);
        // Ours and the map's: nobody else is waiting for this key.
        if map
            .get(&self.key)
            .is_some_and(|a| Arc::strong_count(a) <= 2)
        {
            map.remove(&self.key);
        }
    }
}

/// Unpins a pull's blobs when it ends, however it ends.
pub(super) struct Pins<'a> {
    store: &'a ImageStore,
    digests: Vec<String>,
}

impl Drop for Pins<'_> {
    fn drop(&mut self) {
        let mut p = lock(&self.store.pinned);
        for d in &self.digests {
            if let Some(n) = p.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    p.remove(d);
                }
            }
        }
    }
}

/// Logs a warning about an auth file once per file and reason.
pub(super) fn warn_once(path: &Path, why: &str) {
    static SEEN: std::sync::OnceLock<Mutex<HashSet<String>>> = std::sync::OnceLock::new();
    let key = format!("{}\0{why}", path.display());
    if lock(SEEN.get_or_init(Default::default)).insert(key) {
        tracing::warn!(path = %path.display(), "auth file {why}: credentials may be readable by others");
    }
}

/// A blocking task that panicked or was cancelled.
pub(super) fn task_failed(what: &'static str) -> impl FnOnce(tokio::task::JoinError) -> StoreError {
    move |e| {
        StoreError::Layout(LayoutError::Io {
            what: what.into(),
            source: std::io::Error::other(e.to_string()),
        })
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn record(config: &[u8], media_type: &str) -> ImageRecord {
        let digest = crate::layout::sha256_digest(config);
        ImageRecord {
            version: RECORD_VERSION,
            id: digest.clone(),
            config_digest: None,
            repo_tags: vec![],
            repo_digests: vec![],
            manifest_digest: digest,
            manifest_media_type: pull::MEDIA_OCI_MANIFEST.into(),
            manifest_size: 1,
            index_digest: None,
            config_media_type: media_type.into(),
            config_size: config.len() as u64,
            artifact_type: None,
            layers: vec![],
            size: 1,
            user: None,
            pinned: false,
            annotations: BTreeMap::new(),
            created_at: 0,
        }
    }

    #[test]
    fn image_config_of_images_not_artifacts() {
        let d = tempfile::tempdir().unwrap();
        let store = ImageStore::open(StoreConfig::new(d.path())).unwrap();
        let oci = br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/sh"],"Env":["A=1"],"User":"1000","WorkingDir":"/w","StopSignal":"SIGINT","Volumes":{"/data":{}},"ExposedPorts":{"80/tcp":{}},"Labels":{"l":"v"}},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        // Docker's config media type, and no architecture: still a config.
        let docker = br#"{"config":{"Cmd":["sh"],"Env":["B=2",3]},"rootfs":{"diff_ids":[]}}"#;
        for blob in [&oci[..], &docker[..]] {
            let digest = crate::layout::sha256_digest(blob);
            store.layout().put_blob(&digest, blob).unwrap();
        }

        let c = store
            .image_config(&record(oci, "application/vnd.oci.image.config.v1+json"))
            .unwrap()
            .unwrap();
        let exec = c.config().clone().unwrap();
        assert_eq!(exec.entrypoint().clone().unwrap(), vec!["/bin/sh"]);
        assert_eq!(exec.env().clone().unwrap(), vec!["A=1"]);
        assert_eq!(exec.user().as_deref(), Some("1000"));
        assert_eq!(exec.working_dir().as_deref(), Some("/w"));
        assert_eq!(exec.stop_signal().as_deref(), Some("SIGINT"));
        assert_eq!(exec.volumes().clone().unwrap(), vec!["/data"]);
        assert_eq!(exec.exposed_ports().clone().unwrap(), vec!["80/tcp"]);
        assert_eq!(exec.labels().clone().unwrap()["l"], "v");

        let docker_record = record(docker, "application/vnd.docker.container.image.v1+json");
        let c = store.image_config(&docker_record).unwrap().unwrap();
        let exec = c.config().clone().unwrap();
        assert_eq!(exec.cmd().clone().unwrap(), vec!["sh"]);
        assert_eq!(exec.env().clone().unwrap(), vec!["B=2"]);

        // An artifact's config is no image config.
        let artifact = record(oci, "application/vnd.oci.empty.v1+json");
        assert!(store.image_config(&artifact).unwrap().is_none());

        // A blob that is missing or not the size recorded is an error.
        let mut wrong = docker_record.clone();
        wrong.config_size += 1;
        let e = store.image_config(&wrong).unwrap_err();
        assert!(matches!(e, StoreError::Layout(_)), "{e}");
        let missing = record(b"{}", "application/vnd.oci.image.config.v1+json");
        let e = store.image_config(&missing).unwrap_err();
        assert!(matches!(e, StoreError::Layout(_)), "{e}");
    }
}
