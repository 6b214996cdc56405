//! The image store: pulls (short-name resolution, mirrors, credentials,
//! de-duplicated blob downloads, fail-fast after failures), lookups, removal
//! with garbage collection, and disk usage.

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

    /// Pulls `image` with explicit credentials (a CRI pull secret), falling
    /// back to the auth files, then anonymous.
    pub async fn pull(&self, image: &str, auth: Option<Auth>) -> Result<ImageRecord, StoreError> {
        let candidates = self.candidates(&reference::parse(image)?)?;
        // Fail-fast and single-flight are per reference *and* credentials: a
        // pull with a corrected secret is not held back by a wrong one.
        let key = format!("{}#{}", image.trim(), auth_fingerprint(auth.as_ref()));
        self.check_backoff(&key, image.trim())?;

        // Single flight per reference: concurrent pulls of one image wait for
        // the first and take its result rather than asking the registry again.
        let arrived = Instant::now();
        let slot = lock(&self.ref_locks)
            .entry(key.clone())
            .or_default()
            .clone();
        let mut guard = slot.lock().await;
        if let Some((done, record)) = guard.as_ref() {
            if *done >= arrived {
                return Ok(record.clone());
            }
        }
        let result = self.pull_candidates(&candidates, auth).await;
        match &result {
            Ok(record) => {
                *guard = Some((Instant::now(), record.clone()));
                lock(&self.failures).remove(&key);
            }
            Err(e) => {
                if !self.cfg.failure_backoff.is_zero() {
                    lock(&self.failures).insert(key.clone(), (Instant::now(), e.to_string()));
                }
                // Whatever the failed pull stored is unreferenced: collect it.
                if let Err(gc) = self.gc() {
                    tracing::warn!(error = %gc, "garbage collection after a failed pull");
                }
            }
        }
        drop(guard);
        // Drop the slot when nobody else holds it, so the map stays small.
        let mut map = lock(&self.ref_locks);
        if map.get(&key).is_some_and(|s| Arc::strong_count(s) <= 2) {
            map.remove(&key);
        }
        result
    }

    /// The references a name may mean: itself when qualified, else one per
    /// search registry (or its alias).
    fn candidates(&self, parsed: &ParsedRef) -> Result<Vec<ImageRef>, StoreError> {
        Ok(match parsed {
            ParsedRef::Qualified(r) => vec![r.clone()],
            ParsedRef::Short { .. } => self.cfg.registries.candidates(parsed)?,
        })
    }

    fn check_backoff(&self, key: &str, image: &str) -> Result<(), StoreError> {
        let failures = lock(&self.failures);
        if let Some((at, reason)) = failures.get(key) {
            let ago = at.elapsed();
            if ago < self.cfg.failure_backoff {
                return Err(StoreError::BackingOff {
                    reference: image.to_string(),
                    ago,
                    remaining: self.cfg.failure_backoff - ago,
                    reason: reason.clone(),
                });
            }
        }
        Ok(())
    }

    fn credentials_for(
        &self,
        registry: &str,
        repository: &str,
    ) -> Result<Option<Auth>, StoreError> {
        for f in &self.cfg.auth_files {
            if let Some(why) = crate::auth::loose_permissions(f) {
                warn_once(f, &why);
            }
            if let Some(file) = AuthFile::load(f)? {
                if let Some(a) = file.lookup(registry, repository) {
                    return Ok(Some(a.clone()));
                }
            }
        }
        Ok(None)
    }

    async fn pull_candidates(
        &self,
        candidates: &[ImageRef],
        auth: Option<Auth>,
    ) -> Result<ImageRecord, StoreError> {
        let mut last = None;
        for (i, cand) in candidates.iter().enumerate() {
            match self.pull_one(cand, auth.clone()).await {
                Ok(r) => return Ok(r),
                // A short name not found on one search registry: try the next.
                Err(StoreError::Registry {
                    source: RegistryError::NotFound { .. },
                    ..
                }) if i + 1 < candidates.len() => {
                    tracing::debug!(candidate = %cand, "not found, trying next search registry");
                }
                Err(e) => return Err(e),
            }
            last = Some(cand);
        }
        // Unreachable with at least one candidate; registries.candidates never returns none.
        Err(StoreError::Registry {
            reference: last.map(|c| c.to_string()).unwrap_or_default(),
            source: RegistryError::NotFound {
                registry: String::new(),
                what: "any candidate".into(),
            },
        })
    }

    async fn pull_one(&self, r: &ImageRef, auth: Option<Auth>) -> Result<ImageRecord, StoreError> {
        let endpoints = self.cfg.registries.endpoints(r)?;
        let mut errors = Vec::new();
        for (i, ep) in endpoints.iter().enumerate() {
            let last = i + 1 == endpoints.len();
            // A pull secret belongs to the registry it was issued for: a
            // mirror gets its own auth-file entry, or anonymous access, unless
            // the operator trusts mirrors with pull secrets.
            let creds = match (ep.mirror, &auth) {
                (false, Some(a)) => a.clone(),
                (false, None) => self
                    .credentials_for(&ep.registry, &ep.repository)?
                    .unwrap_or(Auth::Anonymous),
                (true, _) => self
                    .credentials_for(&ep.registry, &ep.repository)?
                    .or_else(|| auth.clone().filter(|_| self.cfg.mirror_pull_secrets))
                    .unwrap_or(Auth::Anonymous),
            };
            tracing::info!(reference = %r, registry = %ep.registry, mirror = ep.mirror, auth = creds.kind(), "pulling");
            let remote = Remote::new(ep.clone(), creds, self.cfg.retry.clone());
            match self.pull_from(r, &remote).await {
                Ok(rec) => return Ok(rec),
                Err(e) if !last && ep.mirror => {
                    tracing::warn!(reference = %r, mirror = %ep.registry, error = %e, "mirror failed, trying next endpoint");
                    errors.push(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(errors.pop().unwrap_or_else(|| {
            StoreError::registry(
                r,
                RegistryError::NotFound {
                    registry: r.registry.clone(),
                    what: "endpoint".into(),
                },
            )
        }))
    }

    async fn pull_from(&self, r: &ImageRef, remote: &Remote) -> Result<ImageRecord, StoreError> {
        let started = Instant::now();
        let err = |e| StoreError::registry(r, e);
        let top = remote
            .manifest(r.tag.as_deref(), r.digest.as_deref())
            .await
            .map_err(err)?;
        let (manifest, index) = match top.media_type.as_str() {
            pull::MEDIA_OCI_INDEX | pull::MEDIA_DOCKER_LIST => {
                let (os, arch, variant) = pull::host_platform();
                let (digest, _, _) =
                    pull::select_platform(&top.json, &os, &arch, variant.as_deref()).map_err(
                        |available| {
                            err(RegistryError::NoPlatform {
                                reference: r.to_string(),
                                wanted: format!(
                                    "{os}/{arch}{}",
                                    variant.map(|v| format!("/{v}")).unwrap_or_default()
                                ),
                                available,
                            })
                        },
                    )?;
                let m = remote.manifest(None, Some(&digest)).await.map_err(err)?;
                (m, Some(top))
            }
            pull::MEDIA_OCI_MANIFEST | pull::MEDIA_DOCKER_MANIFEST => (top, None),
            other => {
                return Err(StoreError::Unsupported {
                    reference: r.to_string(),
                    media_type: other.to_string(),
                })
            }
        };
        if !matches!(
            manifest.media_type.as_str(),
            pull::MEDIA_OCI_MANIFEST | pull::MEDIA_DOCKER_MANIFEST
        ) {
            return Err(StoreError::Unsupported {
                reference: r.to_string(),
                media_type: manifest.media_type,
            });
        }

        let parsed = crate::oci::manifest(&manifest.json).map_err(|what| bad_manifest(r, what))?;
        let config =
            Desc::of(parsed.config()).ok_or_else(|| bad_manifest(r, "config descriptor"))?;
        let layers: Vec<_> = parsed
            .layers()
            .iter()
            .map(Desc::of)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad_manifest(r, "layer descriptor"))?;

        let _pins = self.pin(
            std::iter::once(&config)
                .chain(&layers)
                .map(|d| d.digest.clone())
                .chain([manifest.digest.clone()])
                .chain(index.as_ref().map(|i| i.digest.clone())),
        );
        // Config first (small, and it gives the diff IDs), then layers in parallel.
        let progress = std::sync::atomic::AtomicU64::new(0);
        self.fetch_blob(remote, &config, &progress)
            .await
            .map_err(err)?;
        let (user, diff_ids) = self.user_and_diff_ids(r, &config, &layers)?;
        let _unpack_pins = self.pin(diff_ids.iter().cloned());
        let limits = self.limits();
        let total: u64 = layers.iter().map(|l| l.size).sum();
        // Each layer is unpacked as soon as it is stored, overlapping with the
        // other downloads, so a pull costs little more than its download.
        let downloads =
            futures_util::stream::iter(layers.iter().cloned().enumerate().map(|(i, l)| {
                let progress = &progress;
                let diff_id = diff_ids.get(i).cloned();
                let limits = &limits;
                async move {
                    let fetched = self.fetch_blob(remote, &l, progress).await.map_err(err)?;
                    if let Some(diff_id) = diff_id {
                        self.ensure_layer(r, &l.digest, &diff_id, limits).await?;
                    }
                    Ok::<u64, StoreError>(fetched)
                }
            }))
            .buffer_unordered(self.cfg.max_concurrent_downloads.max(1))
            // Collect every result, not just up to the first error: cancelling
            // sibling downloads mid-commit would race the cleanup that follows.
            .collect::<Vec<Result<u64, StoreError>>>();
        tokio::pin!(downloads);
        // Long pulls report progress every few seconds at info level.
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        let fetched = loop {
            tokio::select! {
                r = &mut downloads => break r.into_iter().collect::<Result<Vec<u64>, _>>()?,
                _ = ticker.tick() => tracing::info!(
                    reference = %r,
                    downloaded = progress.load(std::sync::atomic::Ordering::Relaxed),
                    total,
                    layers = layers.len(),
                    elapsed_s = started.elapsed().as_secs(),
                    "pull in progress"
                ),
            }
        };
        let downloaded: u64 = fetched.iter().sum();
        tracing::info!(
            reference = %r,
            layers = layers.len(),
            bytes = total,
            downloaded,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "pulled"
        );

        // Manifests last: an image is visible only once everything it names is stored.
        self.layout.put_blob(&manifest.digest, &manifest.bytes)?;
        if let Some(ix) = &index {
            self.layout.put_blob(&ix.digest, &ix.bytes)?;
        }
        let record = self.record(
            r,
            (&manifest, &parsed),
            index.as_ref(),
            &config,
            &layers,
            user,
            &diff_ids,
        )?;
        // Unpacked content next, so a container or image volume never waits
        // for it; the record (what makes the image visible) goes last.
        self.materialize(r, &record).await?;
        self.db.put(&record)?;
        self.write_index()?;
        Ok(self.db.get(&record.id)?.unwrap_or(record))
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

    /// Materialises an artifact's content directory once, off the async runtime.
    async fn materialize(&self, r: &ImageRef, record: &ImageRecord) -> Result<(), StoreError> {
        let unpack_err = |layer: &str| {
            let reference = r.to_string();
            let layer = layer.to_string();
            move |source| StoreError::Unpack {
                reference,
                layer,
                source,
            }
        };
        if record.is_artifact() {
            let target = self.artifact_dir(record);
            if target.exists() {
                return Ok(());
            }
            let _lock = self
                .key_lock(format!("artifact:{}", record.manifest_digest))
                .await;
            if target.exists() {
                return Ok(());
            }
            let layers: Vec<(PathBuf, LayerRecord)> = record
                .layers
                .iter()
                .map(|l| Ok((self.layout.blob_path(&l.digest)?, l.clone())))
                .collect::<Result<_, LayoutError>>()?;
            let digest = record.manifest_digest.clone();
            let limits = self.limits();
            return tokio::task::spawn_blocking(move || {
                crate::artifact::materialize(&layers, &target, &limits)
            })
            .await
            .map_err(task_failed("artifact task"))?
            .map_err(unpack_err(&digest));
        }
        // Image layers were unpacked as they arrived (ensure_layer).
        Ok(())
    }

    /// Unpacks the layer blob `digest` into its diff ID's directory unless
    /// it is there already; one unpack per diff ID at a time, off the async
    /// runtime.
    async fn ensure_layer(
        &self,
        r: &ImageRef,
        digest: &str,
        diff_id: &str,
        limits: &crate::unpack::Limits,
    ) -> Result<(), StoreError> {
        let target = self
            .layer_dir(diff_id)
            .ok_or_else(|| StoreError::InvalidDiffId {
                image: r.to_string(),
                diff_id: diff_id.to_string(),
            })?;
        let source = self.layer_source(digest)?;
        let known =
            |source: &Path| std::fs::read_to_string(source).is_ok_and(|d| d.trim() == diff_id);
        if target.exists() && known(&source) {
            return Ok(());
        }
        let _lock = self.key_lock(format!("unpack:{diff_id}")).await;
        let unpack_err = |source| StoreError::Unpack {
            reference: r.to_string(),
            layer: digest.to_string(),
            source,
        };
        let blob = self.layout.blob_path(digest)?;
        if target.exists() {
            if known(&source) {
                return Ok(());
            }
            // Unpacked from another blob (or before crius noted sources):
            // reuse it only if this blob really produces the diff ID.
            let (b, want) = (blob.clone(), diff_id.to_string());
            let got = tokio::task::spawn_blocking(move || {
                let f = std::fs::File::open(&b)?;
                crate::unpack::diff_id_of(std::io::BufReader::with_capacity(1 << 20, f))
            })
            .await
            .map_err(task_failed("diff ID task"))?
            .map_err(|e| unpack_err(e.into()))?;
            if got != want {
                return Err(unpack_err(crate::unpack::UnpackError::DiffIdMismatch {
                    target: target.clone(),
                    expected: want,
                    actual: got,
                }));
            }
            return self.note_layer_source(&source, diff_id);
        }
        std::fs::create_dir_all(self.cfg.root.join("layers")).map_err(|e| LayoutError::Io {
            what: "creating layers dir".into(),
            source: e,
        })?;
        let started = Instant::now();
        let id = diff_id.to_string();
        let limits = limits.clone();
        let stats = tokio::task::spawn_blocking(move || {
            let f = std::fs::File::open(&blob).map_err(crate::unpack::UnpackError::from)?;
            crate::unpack::unpack_layer_with(
                std::io::BufReader::with_capacity(1 << 20, f),
                &id,
                &target,
                &limits,
            )
        })
        .await
        .map_err(task_failed("unpack task"))?
        .map_err(unpack_err)?;
        self.note_layer_source(&source, diff_id)?;
        tracing::info!(
            diff_id,
            entries = stats.entries,
            bytes = stats.bytes,
            whiteouts = stats.whiteouts,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "unpacked layer"
        );
        Ok(())
    }

    /// The unpack caps of one pull: per layer, and a budget its layers share.
    fn limits(&self) -> crate::unpack::Limits {
        crate::unpack::Limits {
            layer_bytes: self.cfg.max_layer_bytes,
            layer_entries: self.cfg.max_layer_entries,
            image: Some(Arc::new(crate::unpack::ImageBudget::new(
                self.cfg.max_image_bytes,
                self.cfg.max_image_entries,
            ))),
        }
    }

    /// Notes that the blob behind `source` produces `diff_id` (write,
    /// fsync, rename: a torn note would only cost a re-verification).
    fn note_layer_source(&self, source: &Path, diff_id: &str) -> Result<(), StoreError> {
        let io = |e| {
            StoreError::Layout(LayoutError::Io {
                what: format!("noting the source of layer {diff_id}"),
                source: e,
            })
        };
        let dir = source.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = source.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        std::io::Write::write_all(&mut f, diff_id.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, source).map_err(io)?;
        Ok(())
    }

    /// Exclusive access to one key (a blob download, an unpack, a
    /// materialisation); the map entry goes when the last user does.
    async fn key_lock(&self, key: String) -> KeyLock<'_> {
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

    fn pin(&self, digests: impl Iterator<Item = String>) -> Pins<'_> {
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

    /// Downloads a blob unless stored; one download per digest at a time.
    /// Returns the bytes fetched from the network (0 when already present).
    async fn fetch_blob(
        &self,
        remote: &Remote,
        d: &Desc,
        progress: &std::sync::atomic::AtomicU64,
    ) -> Result<u64, RegistryError> {
        let _lock = self.key_lock(d.digest.clone()).await;
        if self.layout.has_blob(&d.digest, d.size) {
            return Ok(0);
        }
        remote
            .blob(&self.layout, &d.digest, d.size, &d.media_type, progress)
            .await
    }

    /// The image config's user and diff IDs (none for artifacts).
    fn user_and_diff_ids(
        &self,
        r: &ImageRef,
        config: &Desc,
        layers: &[Desc],
    ) -> Result<(Option<String>, Vec<String>), StoreError> {
        if !crate::db::is_image_config(&config.media_type) {
            return Ok((None, Vec::new()));
        }
        let cfg = crate::oci::image_config(&self.layout.read_blob(&config.digest)?)
            .map_err(|e| bad_manifest(r, &e))?;
        let user = cfg
            .config()
            .as_ref()
            .and_then(|c| c.user().clone())
            .filter(|u| !u.is_empty());
        let diff_ids = cfg.rootfs().diff_ids().clone();
        // Checked before any path is built from them.
        if let Some((i, bad)) = diff_ids
            .iter()
            .enumerate()
            .find(|(_, d)| !crate::unpack::valid_diff_id(d))
        {
            return Err(bad_manifest(
                r,
                &format!("image config rootfs.diff_ids[{i}] {bad:?} is not sha256: and 64 lowercase hex digits"),
            ));
        }
        if diff_ids.len() != layers.len() {
            return Err(bad_manifest(
                r,
                &format!(
                    "{} layers but {} diff_ids in the config",
                    layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        Ok((user, diff_ids))
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

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        r: &ImageRef,
        (manifest, parsed): (&FetchedManifest, &ImageManifest),
        index: Option<&FetchedManifest>,
        config: &Desc,
        layers: &[Desc],
        user: Option<String>,
        diff_ids: &[String],
    ) -> Result<ImageRecord, StoreError> {
        let repo_digest = format!(
            "{}@{}",
            r.name(),
            index.map(|i| &i.digest).unwrap_or(&manifest.digest)
        );
        let annotations: BTreeMap<String, String> = parsed
            .annotations()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (id, config_digest) = if !crate::db::is_image_config(&config.media_type) {
            (manifest.digest.clone(), Some(config.digest.clone()))
        } else {
            (config.digest.clone(), None)
        };
        Ok(ImageRecord {
            version: RECORD_VERSION,
            id,
            config_digest,
            repo_tags: r
                .tag
                .as_ref()
                .map(|t| vec![format!("{}:{t}", r.name())])
                .unwrap_or_default(),
            repo_digests: vec![repo_digest],
            manifest_digest: manifest.digest.clone(),
            manifest_media_type: manifest.media_type.clone(),
            manifest_size: manifest.bytes.len() as u64,
            index_digest: index.map(|i| i.digest.clone()),
            config_media_type: config.media_type.clone(),
            config_size: config.size,
            artifact_type: parsed.artifact_type().as_ref().map(|t| t.to_string()),
            layers: layers
                .iter()
                .enumerate()
                .map(|(i, l)| LayerRecord {
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                    size: l.size,
                    diff_id: diff_ids.get(i).cloned(),
                    title: l.title.clone(),
                    unpack: l.unpack,
                    filepath: l.filepath.clone(),
                })
                .collect(),
            size: config.size + layers.iter().map(|l| l.size).sum::<u64>(),
            user,
            pinned: false,
            annotations,
            created_at: now_nanos(),
        })
    }

    /// Rewrites index.json from the records.
    fn write_index(&self) -> Result<(), StoreError> {
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

    /// Removes an image by id, tag or digest. Removing one tag of an image
    /// with several only untags it. `in_use(id)` names a container using
    /// the image, which refuses the removal. A missing image is not an error
    /// (CRI semantics): returns false.
    pub fn remove(
        &self,
        image: &str,
        in_use: impl Fn(&str) -> Option<String>,
    ) -> Result<bool, StoreError> {
        let Some(record) = self.resolve(image)? else {
            return Ok(false);
        };
        // A tag of a multi-tag image: just untag.
        if record.repo_tags.len() > 1 {
            if let Some(tag) = self.matching_tag(image, &record)? {
                self.db.untag(&tag)?;
                self.write_index()?;
                return Ok(true);
            }
        }
        if let Some(container) = in_use(&record.id) {
            return Err(StoreError::InUse {
                image: image.to_string(),
                container,
            });
        }
        self.db.remove(&record.id)?;
        self.write_index()?;
        self.gc()?;
        Ok(true)
    }

    fn matching_tag(
        &self,
        image: &str,
        record: &ImageRecord,
    ) -> Result<Option<String>, StoreError> {
        let Ok(parsed) = reference::parse(image) else {
            return Ok(None);
        };
        Ok(self.candidates(&parsed)?.into_iter().find_map(|mut c| {
            if c.digest.is_some() {
                return None;
            }
            if c.tag.is_none() {
                c.tag = Some("latest".into());
            }
            let t = c.to_string();
            record.repo_tags.contains(&t).then_some(t)
        }))
    }

    /// Deletes blobs no record references. Runs under the blob locks' view:
    /// a blob being downloaded lives in `ingest/`, not `blobs/`, so it is
    /// never collected half-way.
    pub fn gc(&self) -> Result<usize, StoreError> {
        let live: HashSet<String> = self
            .db
            .list()?
            .iter()
            .flat_map(|r| r.blobs().map(str::to_string).collect::<Vec<_>>())
            .collect();
        let mut busy: HashSet<String> = lock(&self.blob_locks).keys().cloned().collect();
        busy.extend(lock(&self.pinned).keys().cloned());
        let mut removed = 0;
        for d in self.layout.blob_digests()? {
            if !live.contains(&d) && !busy.contains(&d) {
                self.layout.remove_blob(&d)?;
                if let Ok(source) = self.layer_source(&d) {
                    let _ = std::fs::remove_file(source);
                }
                removed += 1;
            }
        }
        // Unpacked layers and artifact directories nobody names any more.
        // Names starting with '.' are unpacks in progress.
        let records = self.db.list()?;
        let live_dirs: HashSet<PathBuf> = records
            .iter()
            .flat_map(|r| {
                let mut v = self.lower_dirs(r).unwrap_or_default();
                if r.is_artifact() {
                    v.push(self.artifact_dir(r));
                }
                v
            })
            .collect();
        let busy_dirs: HashSet<String> = busy
            .iter()
            .filter_map(|k| k.split_once(':').map(|(_, d)| d.to_string()))
            .collect();
        for sub in ["layers", "artifacts"] {
            let dir = self.cfg.root.join(sub);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.')
                    || live_dirs.contains(&path)
                    || busy_dirs.iter().any(|b| b.ends_with(&name))
                {
                    continue;
                }
                if let Err(err) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(path = %path.display(), error = %err, "removing unreferenced content");
                } else {
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "garbage-collected unreferenced blobs and content");
        }
        Ok(removed)
    }

    /// Bytes and inodes used under the store's root.
    pub fn usage(&self) -> Result<FsUsage, StoreError> {
        crate::usage::usage(&self.cfg.root).map_err(|e| {
            LayoutError::Io {
                what: format!("measuring {}", self.cfg.root.display()),
                source: e,
            }
            .into()
        })
    }
}

struct KeyLock<'a> {
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
struct Pins<'a> {
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
fn warn_once(path: &Path, why: &str) {
    static SEEN: std::sync::OnceLock<Mutex<HashSet<String>>> = std::sync::OnceLock::new();
    let key = format!("{}\0{why}", path.display());
    if lock(SEEN.get_or_init(Default::default)).insert(key) {
        tracing::warn!(path = %path.display(), "auth file {why}: credentials may be readable by others");
    }
}

/// Identifies credentials without revealing them (hash of their contents).
fn auth_fingerprint(a: Option<&Auth>) -> String {
    use sha2::Digest;
    let Some(a) = a else { return "none".into() };
    let material = match a {
        Auth::Anonymous => "anonymous".to_string(),
        Auth::Basic { username, password } => format!("basic\0{username}\0{password}"),
        Auth::Bearer(t) => format!("bearer\0{t}"),
        Auth::IdentityToken(t) => format!("identity\0{t}"),
    };
    hex::encode(&sha2::Sha256::digest(material.as_bytes())[..8])
}

/// A blocking task that panicked or was cancelled.
fn task_failed(what: &'static str) -> impl FnOnce(tokio::task::JoinError) -> StoreError {
    move |e| {
        StoreError::Layout(LayoutError::Io {
            what: what.into(),
            source: std::io::Error::other(e.to_string()),
        })
    }
}

/// A content descriptor from a manifest.
#[derive(Debug, Clone)]
struct Desc {
    digest: String,
    size: u64,
    media_type: String,
    title: Option<String>,
    unpack: bool,
    filepath: Option<String>,
}

impl Desc {
    /// The parts of a descriptor the store uses; None unless its digest is
    /// a sha256 digest (it becomes a file name).
    fn of(d: &Descriptor) -> Option<Self> {
        let digest = d.digest().to_string();
        crate::layout::sha256_hex(&digest).ok()?;
        let annotation = |k: &str| d.annotations().as_ref().and_then(|a| a.get(k));
        Some(Desc {
            size: d.size(),
            media_type: d.media_type().to_string(),
            title: annotation("org.opencontainers.image.title").cloned(),
            unpack: annotation(crate::artifact::ORAS_UNPACK).map(String::as_str) == Some("true"),
            filepath: annotation(crate::artifact::MODEL_FILEPATH).cloned(),
            digest,
        })
    }
}

fn bad_manifest(r: &ImageRef, what: &str) -> StoreError {
    StoreError::registry(
        r,
        RegistryError::Protocol {
            registry: r.registry.clone(),
            message: format!("invalid manifest: {what}"),
        },
    )
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
