//! Blobs in an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/`), so operators can inspect the store with skopeo or
//! umoci (`oci:<root>/images/oci`).
//!
//! ocidir creates and opens the layout, and blobs are read, listed and
//! removed through its `blobs/sha256` directory handle (cap-std: a name
//! resolves beneath that directory; no symlink leads out of it);
//! a read by descriptor also checks the blob's size (`OciRead::read_blob`).
//!
//! Writes are ours: ocidir's blob writer neither fsyncs nor bounds a blob by
//! its declared size, and a blob must never become visible unless it is
//! complete, verified and durable. Each blob is streamed into `ingest/`,
//! hashed and size-checked on the way, fsynced, then renamed into
//! `blobs/sha256/` and the directory fsynced. `ingest/` is emptied at open:
//! an interrupted pull leaves nothing behind that a later pull would trust.
//!
//! `index.json` is ours too, built as an oci-spec `ImageIndex`: ocidir's
//! index writer is private, and its public `insert_manifest` and
//! `replace_with_single_manifest` re-serialise the manifest itself through
//! that blob writer, which would change the manifest's bytes and so its
//! digest. crius stores the registry's exact bytes.

use bytes::Bytes;
use oci_spec::image::{Descriptor, ImageIndexBuilder, MediaType};
use ocidir::{OciDir, OciRead};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening OCI layout {path}: {message}")]
    Layout { path: PathBuf, message: String },
    #[error("invalid digest {0:?}: only sha256 digests are stored")]
    BadDigest(String),
    #[error("blob {digest}: digest mismatch, content hashes to {actual}")]
    DigestMismatch { digest: String, actual: String },
    #[error("blob {digest}: size mismatch, declared {declared} bytes, got {actual}")]
    SizeMismatch {
        digest: String,
        declared: u64,
        actual: u64,
    },
    #[error("blob {0}: download abandoned before it completed")]
    Abandoned(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LayoutError {
    let what = what.into();
    move |source| LayoutError::Io { what, source }
}

/// The hex part of `"sha256:"` and 64 lowercase hex digits, nothing else:
/// the one digest format crius stores under (blobs) or unpacks to (diff
/// IDs), since either becomes a file name.
pub(crate) fn sha256_hex_part(digest: &str) -> Option<&str> {
    digest.strip_prefix("sha256:").filter(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The hex part of a `sha256:<hex>` digest, validated (it becomes a file name).
pub fn sha256_hex(digest: &str) -> Result<&str, LayoutError> {
    sha256_hex_part(digest).ok_or_else(|| LayoutError::BadDigest(digest.to_string()))
}

/// A descriptor of a stored blob: a sha256 digest only (see [`sha256_hex`]).
pub(crate) fn descriptor(
    media_type: &str,
    digest: &str,
    size: u64,
) -> Result<Descriptor, LayoutError> {
    sha256_hex(digest)?;
    let parsed: oci_spec::image::Digest = digest
        .parse()
        .map_err(|_| LayoutError::BadDigest(digest.to_string()))?;
    Ok(Descriptor::new(MediaType::from(media_type), size, parsed))
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[derive(Debug)]
pub struct Layout {
    root: PathBuf,
    oci: OciDir,
}

impl Layout {
    /// Opens (creating if needed) the layout at `root` and discards any
    /// partial downloads left by a crash.
    pub fn open(root: &Path) -> Result<Self, LayoutError> {
        std::fs::create_dir_all(root).map_err(io(format!("creating {}", root.display())))?;
        let dir =
            ocidir::cap_std::fs::Dir::open_ambient_dir(root, ocidir::cap_std::ambient_authority())
                .map_err(io(format!("opening {}", root.display())))?;
        let oci = OciDir::ensure(dir).map_err(|e| LayoutError::Layout {
            path: root.to_path_buf(),
            message: e.to_string(),
        })?;
        let ingest = root.join("ingest");
        if ingest.exists() {
            std::fs::remove_dir_all(&ingest)
                .map_err(io(format!("clearing {}", ingest.display())))?;
        }
        std::fs::create_dir_all(&ingest).map_err(io(format!("creating {}", ingest.display())))?;
        Ok(Layout {
            root: root.to_path_buf(),
            oci,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn oci(&self) -> &OciDir {
        &self.oci
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, LayoutError> {
        Ok(self.blobs_dir().join(sha256_hex(digest)?))
    }

    /// Whether a complete blob of this digest and size is stored. Blobs only
    /// appear by rename after verification, so presence with the right size
    /// means complete.
    pub fn has_blob(&self, digest: &str, size: u64) -> bool {
        sha256_hex(digest)
            .ok()
            .and_then(|hex| self.oci.blobs_dir().metadata(hex).ok())
            .is_some_and(|m| m.len() == size)
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, LayoutError> {
        let hex = sha256_hex(digest)?;
        self.oci
            .blobs_dir()
            .read(hex)
            .map_err(io(format!("reading blob {digest}")))
    }

    /// Reads the blob `desc` names, refusing one whose size differs from
    /// the descriptor's.
    pub fn read_descriptor(&self, desc: &Descriptor) -> Result<Vec<u8>, LayoutError> {
        let digest = desc.digest().to_string();
        sha256_hex(&digest)?;
        let what = format!("reading blob {digest}");
        let mut f = self.oci.read_blob(desc).map_err(|e| match e {
            ocidir::Error::Io(e) => io(what.clone())(e),
            other => io(what.clone())(std::io::Error::other(other.to_string())),
        })?;
        let mut data = Vec::with_capacity(desc.size() as usize);
        std::io::Read::read_to_end(&mut f, &mut data).map_err(io(what))?;
        Ok(data)
    }

    pub fn remove_blob(&self, digest: &str) -> Result<(), LayoutError> {
        let hex = sha256_hex(digest)?;
        match self.oci.blobs_dir().remove_file(hex) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(format!("removing blob {digest}"))(e))
            }
            _ => Ok(()),
        }
    }

    /// Every stored blob digest (for garbage collection and fsck).
    pub fn blob_digests(&self) -> Result<Vec<String>, LayoutError> {
        let mut out = Vec::new();
        let what = || format!("listing {}", self.blobs_dir().display());
        for e in self.oci.blobs_dir().entries().map_err(io(what()))? {
            let e = e.map_err(io(what()))?;
            if let Some(name) = e.file_name().to_str() {
                out.push(format!("sha256:{name}"));
            }
        }
        Ok(out)
    }

    /// Stores a small in-memory blob (a manifest or config) durably.
    pub fn put_blob(&self, digest: &str, data: &[u8]) -> Result<(), LayoutError> {
        let mut w = BlobWriter::create(self, digest, data.len() as u64)?;
        w.write(data)?;
        w.commit()
    }

    /// Starts streaming a blob in. Bytes are hashed and written on a blocking
    /// thread, so the async runtime only moves buffers.
    pub fn ingest(&self, digest: &str, size: u64) -> Result<Ingest, LayoutError> {
        let writer = BlobWriter::create(self, digest, size)?;
        let (tx, mut rx) = mpsc::channel::<Chunk>(16);
        let digest_owned = digest.to_string();
        let handle = tokio::task::spawn_blocking(move || {
            let mut writer = writer;
            while let Some(chunk) = rx.blocking_recv() {
                match chunk {
                    Chunk::Data(b) => writer.write(&b)?,
                    Chunk::Commit => return writer.commit(),
                }
            }
            // Sender dropped without Commit: the pull was cancelled or failed.
            Err(LayoutError::Abandoned(digest_owned))
        });
        Ok(Ingest { tx, handle })
    }

    /// Writes `index.json` (one descriptor per stored manifest, tagged with
    /// `org.opencontainers.image.ref.name`) atomically, so OCI tools see the
    /// same images crius does.
    pub fn write_index(&self, manifests: Vec<Descriptor>) -> Result<(), LayoutError> {
        let encoding = |e: &dyn std::fmt::Display| LayoutError::Io {
            what: "encoding index.json".into(),
            source: std::io::Error::other(e.to_string()),
        };
        let index = ImageIndexBuilder::default()
            .schema_version(oci_spec::image::SCHEMA_VERSION)
            .media_type(MediaType::ImageIndex)
            .manifests(manifests)
            .build()
            .map_err(|e| encoding(&e))?;
        let data = serde_json::to_vec(&index).map_err(|e| encoding(&e))?;
        atomic_write(&self.root, "index.json", &data)
    }
}

/// write to a temp file, fsync, rename, fsync the directory.
pub fn atomic_write(dir: &Path, name: &str, data: &[u8]) -> Result<(), LayoutError> {
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let target = dir.join(name);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io(format!("writing {}", target.display())))
}

enum Chunk {
    Data(Bytes),
    Commit,
}

/// An in-progress blob download. Dropping it without `commit` discards the
/// partial file.
pub struct Ingest {
    tx: mpsc::Sender<Chunk>,
    handle: tokio::task::JoinHandle<Result<(), LayoutError>>,
}

impl Ingest {
    pub async fn write(&mut self, data: Bytes) -> Result<(), LayoutError> {
        if self.tx.send(Chunk::Data(data)).await.is_err() {
            // The writer stopped early (size exceeded, I/O error): report why.
            return Err(self
                .finish()
                .await
                .err()
                .unwrap_or_else(|| LayoutError::Io {
                    what: "blob writer".into(),
                    source: std::io::Error::other("stopped unexpectedly"),
                }));
        }
        Ok(())
    }

    /// Verifies digest and size, makes the blob durable and visible.
    pub async fn commit(mut self) -> Result<(), LayoutError> {
        let _ = self.tx.send(Chunk::Commit).await;
        self.finish().await
    }

    async fn finish(&mut self) -> Result<(), LayoutError> {
        match (&mut self.handle).await {
            Ok(r) => r,
            Err(e) => Err(LayoutError::Io {
                what: "blob writer task".into(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

struct BlobWriter {
    digest: String,
    declared: u64,
    written: u64,
    hasher: Sha256,
    file: Option<File>,
    tmp: PathBuf,
    target: PathBuf,
    blobs_dir: PathBuf,
}

impl BlobWriter {
    fn create(layout: &Layout, digest: &str, declared: u64) -> Result<Self, LayoutError> {
        let hex = sha256_hex(digest)?;
        // Unique per writer: two pulls of one blob never share a temp file
        // (the store also deduplicates them before they get here).
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = layout
            .root
            .join("ingest")
            .join(format!("{hex}.{}.{seq}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io(format!("creating {}", tmp.display())))?;
        Ok(BlobWriter {
            digest: digest.to_string(),
            declared,
            written: 0,
            hasher: Sha256::new(),
            file: Some(file),
            target: layout.blobs_dir().join(hex),
            blobs_dir: layout.blobs_dir(),
            tmp,
        })
    }

    fn write(&mut self, data: &[u8]) -> Result<(), LayoutError> {
        // Refuse more than declared at once: a lying registry cannot fill the disk.
        if self.written + data.len() as u64 > self.declared {
            return Err(LayoutError::SizeMismatch {
                digest: self.digest.clone(),
                declared: self.declared,
                actual: self.written + data.len() as u64,
            });
        }
        self.hasher.update(data);
        self.written += data.len() as u64;
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| LayoutError::Abandoned(self.digest.clone()))?;
        file.write_all(data)
            .map_err(io(format!("writing blob {}", self.digest)))
    }

    fn commit(mut self) -> Result<(), LayoutError> {
        if self.written != self.declared {
            return Err(LayoutError::SizeMismatch {
                digest: self.digest.clone(),
                declared: self.declared,
                actual: self.written,
            });
        }
        let actual = format!(
            "sha256:{}",
            hex::encode(std::mem::take(&mut self.hasher).finalize())
        );
        if actual != self.digest {
            return Err(LayoutError::DigestMismatch {
                digest: self.digest.clone(),
                actual,
            });
        }
        let file = self
            .file
            .take()
            .ok_or_else(|| LayoutError::Abandoned(self.digest.clone()))?;
        let what = format!("storing blob {}", self.digest);
        file.sync_all().map_err(io(what.clone()))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.target).map_err(io(what.clone()))?;
        File::open(&self.blobs_dir)
            .and_then(|d| d.sync_all())
            .map_err(io(what))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Not committed (error or abandonment): the partial file goes.
        if self.file.is_some() || self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> (tempfile::TempDir, Layout) {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::open(&d.path().join("oci")).unwrap();
        (d, l)
    }

    #[test]
    fn put_blob_verifies_and_is_visible_only_when_complete() {
        let (_d, l) = layout();
        let data = b"hello world";
        let digest = sha256_digest(data);
        l.put_blob(&digest, data).unwrap();
        assert!(l.has_blob(&digest, data.len() as u64));
        assert_eq!(l.read_blob(&digest).unwrap(), data);
        assert!(l.root().join("oci-layout").exists());

        let wrong = sha256_digest(b"other");
        let e = l.put_blob(&wrong, data).unwrap_err();
        assert!(matches!(e, LayoutError::DigestMismatch { .. }), "{e}");
        assert!(!l.has_blob(&wrong, data.len() as u64));
        assert_eq!(
            std::fs::read_dir(l.root().join("ingest")).unwrap().count(),
            0
        );
    }

    #[test]
    fn index_and_blobs_read_back_through_ocidir() {
        let (_d, l) = layout();
        let data = b"{}";
        let digest = sha256_digest(data);
        l.put_blob(&digest, data).unwrap();
        let mut d = descriptor(
            "application/vnd.docker.distribution.manifest.v2+json",
            &digest,
            2,
        )
        .unwrap();
        d.set_annotations(Some(
            [(
                "org.opencontainers.image.ref.name".to_string(),
                "r/x:1".to_string(),
            )]
            .into(),
        ));
        l.write_index(vec![d.clone()]).unwrap();
        let index = l.oci().read_index().unwrap();
        assert_eq!(index.manifests(), &vec![d.clone()]);
        assert_eq!(l.read_descriptor(&d).unwrap(), data);
        let short = descriptor("application/json", &digest, 3).unwrap();
        assert!(l.read_descriptor(&short).is_err(), "size not checked");
        assert_eq!(l.blob_digests().unwrap(), vec![digest.clone()]);
        l.remove_blob(&digest).unwrap();
        assert!(!l.has_blob(&digest, 2));
        assert!(descriptor("application/json", "sha256:../x", 1).is_err());
    }

    #[test]
    fn size_is_bounded_by_the_declaration() {
        let (_d, l) = layout();
        let data = vec![1u8; 100];
        let digest = sha256_digest(&data);
        let mut w = BlobWriter::create(&l, &digest, 50).unwrap();
        let e = w.write(&data).unwrap_err();
        assert!(
            matches!(
                e,
                LayoutError::SizeMismatch {
                    declared: 50,
                    actual: 100,
                    ..
                }
            ),
            "{e}"
        );
        drop(w);
        let mut w = BlobWriter::create(&l, &digest, 200).unwrap();
        w.write(&data).unwrap();
        assert!(matches!(
            w.commit().unwrap_err(),
            LayoutError::SizeMismatch { .. }
        ));
        assert_eq!(
            std::fs::read_dir(l.root().join("ingest")).unwrap().count(),
            0
        );
    }

    #[test]
    fn digests_are_validated_before_becoming_paths() {
        let (_d, l) = layout();
        for bad in ["sha256:../../etc/passwd", "md5:abc", "sha256:ABC", ""] {
            assert!(
                matches!(l.blob_path(bad), Err(LayoutError::BadDigest(_))),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn streamed_ingest_commits_or_discards() {
        let (_d, l) = layout();
        let data = vec![9u8; 300_000];
        let digest = sha256_digest(&data);
        let mut ing = l.ingest(&digest, data.len() as u64).unwrap();
        for c in data.chunks(65536) {
            ing.write(Bytes::copy_from_slice(c)).await.unwrap();
        }
        ing.commit().await.unwrap();
        assert!(l.has_blob(&digest, data.len() as u64));

        // Abandoned half way: nothing visible, no partial file.
        let other = vec![3u8; 1000];
        let od = sha256_digest(&other);
        let mut ing = l.ingest(&od, other.len() as u64).unwrap();
        ing.write(Bytes::copy_from_slice(&other[..500]))
            .await
            .unwrap();
        drop(ing);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!l.has_blob(&od, other.len() as u64));
        assert_eq!(
            std::fs::read_dir(l.root().join("ingest")).unwrap().count(),
            0
        );
    }

    #[test]
    fn reopening_clears_partial_downloads() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("oci");
        drop(Layout::open(&root).unwrap());
        std::fs::write(root.join("ingest/deadbeef.1.0"), b"partial").unwrap();
        let l = Layout::open(&root).unwrap();
        assert_eq!(
            std::fs::read_dir(l.root().join("ingest")).unwrap().count(),
            0
        );
    }
}
