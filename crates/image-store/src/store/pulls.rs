//! Pulling an image or artifact: the references a name may mean, the
//! credentials for each, fail-fast back-off after failures, the manifest
//! (an index resolved to this platform), de-duplicated blob downloads,
//! layers unpacked and artifacts placed, and the record written.

use super::*;

impl ImageStore {
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
    pub(super) fn candidates(&self, parsed: &ParsedRef) -> Result<Vec<ImageRef>, StoreError> {
        Ok(match parsed {
            ParsedRef::Qualified(r) => vec![r.clone()],
            ParsedRef::Short { .. } => self.cfg.registries.candidates(parsed)?,
        })
    }

    pub(super) fn check_backoff(&self, key: &str, image: &str) -> Result<(), StoreError> {
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

    pub(super) fn credentials_for(
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

    pub(super) async fn pull_candidates(
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

    pub(super) async fn pull_one(
        &self,
        r: &ImageRef,
        auth: Option<Auth>,
    ) -> Result<ImageRecord, StoreError> {
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

    pub(super) async fn pull_from(
        &self,
        r: &ImageRef,
        remote: &Remote,
    ) -> Result<ImageRecord, StoreError> {
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

    /// Materialises an artifact's content directory once, off the async runtime.
    pub(super) async fn materialize(
        &self,
        r: &ImageRef,
        record: &ImageRecord,
    ) -> Result<(), StoreError> {
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
    pub(super) async fn ensure_layer(
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
    pub(super) fn limits(&self) -> crate::unpack::Limits {
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
    pub(super) fn note_layer_source(&self, source: &Path, diff_id: &str) -> Result<(), StoreError> {
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

    /// Downloads a blob unless stored; one download per digest at a time.
    /// Returns the bytes fetched from the network (0 when already present).
    pub(super) async fn fetch_blob(
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
    pub(super) fn user_and_diff_ids(
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

    #[allow(clippy::too_many_arguments)]
    pub(super) fn record(
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

/// A content descriptor from a manifest.
#[derive(Debug, Clone)]
pub(super) struct Desc {
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
    pub(super) fn of(d: &Descriptor) -> Option<Self> {
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
