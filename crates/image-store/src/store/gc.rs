//! Removing images (a tag, or the image with all its tags) and garbage
//! collection of what no record names; disk usage for ImageFsInfo.

use super::*;

impl ImageStore {
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
