//! Test images and OCI artifacts, built in memory and pushed to a registry.
//!
//! Images are made from Debian's `busybox-static` (`/bin/busybox` plus one
//! symlink per applet, `/etc/passwd`, `/etc/group`), with every image-config
//! field the CRI cares about settable. Artifacts carry an `artifactType`, an
//! empty or custom config, and layers of any media type, each titled with
//! `org.opencontainers.image.title`. Layers are ordinary tar archives built
//! from a list of entries, so later tests can add whiteouts, hardlinks and
//! deliberately hostile entries.

use crate::registry::{Credentials, Registry};
use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
pub const BUSYBOX: &str = "/bin/busybox";

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Incompressible bytes, quickly (xorshift64), deterministic per `seed`: file
/// contents with real size for pull and unpack tests and benchmarks.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The OCI name of this machine's architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// One content-addressed blob: a config, a layer, or an artifact file.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: String,
    pub data: Vec<u8>,
    pub digest: String,
    pub annotations: BTreeMap<String, String>,
}

impl Blob {
    /// The blob with one more annotation.
    pub fn annotated(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    pub fn new(media_type: &str, data: Vec<u8>) -> Self {
        Blob {
            media_type: media_type.into(),
            digest: sha256_digest(&data),
            data,
            annotations: BTreeMap::new(),
        }
    }

    pub fn descriptor(&self) -> Value {
        let mut d = json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.data.len(),
        });
        if !self.annotations.is_empty() {
            d["annotations"] = json!(self.annotations);
        }
        d
    }
}

#[derive(Debug, Clone)]
enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
        uid: u64,
        gid: u64,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
    /// Written byte for byte, bypassing the tar crate's path checks: for
    /// hostile layers (`..`, absolute paths, escaping links).
    Raw {
        name: Vec<u8>,
        kind: tar::EntryType,
        link: Vec<u8>,
        data: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

/// A filesystem layer as a list of tar entries, in order.
#[derive(Debug, Clone)]
pub struct LayerBuilder {
    entries: Vec<Entry>,
    compression: Compression,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        LayerBuilder {
            entries: Vec::new(),
            compression: Compression::Gzip,
        }
    }
    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        self.entries.push(Entry::Dir {
            path: path.into(),
            mode,
        });
        self
    }
    pub fn file(self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.file_owned(path, data, mode, 0, 0)
    }
    pub fn file_owned(
        mut self,
        path: &str,
        data: impl Into<Vec<u8>>,
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> Self {
        self.entries.push(Entry::File {
            path: path.into(),
            data: data.into(),
            mode,
            uid,
            gid,
        });
        self
    }
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.entries.push(Entry::Symlink {
            path: path.into(),
            target: target.into(),
        });
        self
    }
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        self.entries.push(Entry::Hardlink {
            path: path.into(),
            target: target.into(),
        });
        self
    }
    /// A hostile or unusual entry: `name` and `link` go into the header
    /// verbatim (at most 100 bytes each), nothing is validated.
    pub fn raw(
        mut self,
        name: &str,
        kind: tar::EntryType,
        link: &str,
        data: impl Into<Vec<u8>>,
    ) -> Self {
        self.entries.push(Entry::Raw {
            name: name.as_bytes().to_vec(),
            kind,
            link: link.as_bytes().to_vec(),
            data: data.into(),
        });
        self
    }
    /// An OCI whiteout: deletes `path` from the layers below.
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        self.file(&format!("{dir}.wh.{name}"), Vec::new(), 0o644)
    }
    /// An OCI opaque whiteout: hides everything below `dir` in lower layers.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(
            &format!("{}/.wh..wh..opq", dir.trim_end_matches('/')),
            Vec::new(),
            0o644,
        )
    }

    /// The uncompressed tar archive.
    pub fn tar(&self) -> Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        for e in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1_700_000_000);
            // Every numeric field filled, as real tar writers do.
            h.set_uid(0);
            h.set_gid(0);
            match e {
                Entry::Dir { path, mode } => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    b.append_data(
                        &mut h,
                        format!("{}/", path.trim_end_matches('/')),
                        std::io::empty(),
                    )?;
                }
                Entry::File {
                    path,
                    data,
                    mode,
                    uid,
                    gid,
                } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_uid(*uid);
                    h.set_gid(*gid);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_slice())?;
                }
                Entry::Symlink { path, target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, path, target)?;
                }
                Entry::Hardlink { path, target } => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_mode(0o644);
                    h.set_size(0);
                    b.append_link(&mut h, path, target)?;
                }
                Entry::Raw {
                    name,
                    kind,
                    link,
                    data,
                } => {
                    h.set_entry_type(*kind);
                    h.set_mode(0o644);
                    h.set_size(data.len() as u64);
                    let old = h.as_old_mut();
                    anyhow::ensure!(
                        name.len() <= 100 && link.len() <= 100,
                        "raw tar names are limited to 100 bytes"
                    );
                    old.name[..name.len()].copy_from_slice(name);
                    old.linkname[..link.len()].copy_from_slice(link);
                    h.set_cksum();
                    b.append(&h, data.as_slice())?;
                }
            }
        }
        Ok(b.into_inner()?)
    }

    /// The layer blob (compressed as configured) and its diff ID (the digest
    /// of the uncompressed tar, which image configs list).
    pub fn build(&self) -> Result<(Blob, String)> {
        let tar = self.tar()?;
        let diff_id = sha256_digest(&tar);
        let blob = match self.compression {
            Compression::None => Blob::new(MEDIA_LAYER_TAR, tar),
            Compression::Gzip => {
                let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&tar)?;
                Blob::new(MEDIA_LAYER_GZIP, gz.finish()?)
            }
        };
        Ok((blob, diff_id))
    }
}

/// A user a test image knows by name: `crius-user` (1000:1000) in groups
/// `crius-group` (1000) and `users` (100).
pub const TEST_USER: (&str, u32, u32) = ("crius-user", 1000, 1000);

/// The busybox root filesystem: `/bin/busybox` from the host, a symlink per
/// applet at the path busybox itself reports, and the usual directories.
pub fn busybox_rootfs() -> Result<LayerBuilder> {
    let busybox = std::fs::read(BUSYBOX)
        .with_context(|| format!("reading {BUSYBOX} (apt-get install busybox-static)"))?;
    let list = std::process::Command::new(BUSYBOX)
        .arg("--list-full")
        .output()
        .context("busybox --list-full")?;
    let mut layer = LayerBuilder::new();
    for (dir, mode) in [
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("etc", 0o755),
        ("root", 0o700),
        ("home", 0o755),
        ("home/crius-user", 0o755),
        ("tmp", 0o1777),
        ("var", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
    ] {
        layer = layer.dir(dir, mode);
    }
    layer = layer.file("bin/busybox", busybox, 0o755);
    for applet in String::from_utf8_lossy(&list.stdout).lines().map(str::trim) {
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        layer = layer.symlink(applet, "/bin/busybox");
    }
    let (user, uid, gid) = TEST_USER;
    layer = layer
        .file(
            "etc/passwd",
            format!(
                "root:x:0:0:root:/root:/bin/sh\n\
                 {user}:x:{uid}:{gid}:crius test user:/home/{user}:/bin/sh\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
            ),
            0o644,
        )
        .file(
            "etc/group",
            format!("root:x:0:\nusers:x:100:{user}\ncrius-group:x:{gid}:\nnogroup:x:65534:\n"),
            0o644,
        );
    Ok(layer)
}

/// A runnable image: layers plus an image config.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    layers: Vec<LayerBuilder>,
    /// Diff IDs written into the config instead of the real ones (hostile
    /// images).
    diff_id_overrides: BTreeMap<usize, String>,
    config: Map<String, Value>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    architecture: String,
}

impl ImageBuilder {
    /// An image with no layers yet.
    pub fn scratch() -> Self {
        ImageBuilder {
            layers: Vec::new(),
            diff_id_overrides: BTreeMap::new(),
            config: Map::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            architecture: host_arch().into(),
        }
    }

    /// busybox with `Cmd ["sh"]` and a PATH, like the upstream image.
    pub fn busybox() -> Result<Self> {
        Ok(Self::scratch()
            .layer(busybox_rootfs()?)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .cmd(&["sh"]))
    }

    pub fn layer(mut self, layer: LayerBuilder) -> Self {
        self.layers.push(layer);
        self
    }
    fn set(mut self, key: &str, v: Value) -> Self {
        self.config.insert(key.into(), v);
        self
    }
    pub fn entrypoint(self, args: &[&str]) -> Self {
        self.set("Entrypoint", json!(args))
    }
    pub fn cmd(self, args: &[&str]) -> Self {
        self.set("Cmd", json!(args))
    }
    /// Sets (or replaces) one environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        let mut env: Vec<String> = self
            .config
            .get("Env")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(format!("{key}={value}"));
        self.config.insert("Env".into(), json!(env));
        self
    }
    pub fn user(self, user: &str) -> Self {
        self.set("User", json!(user))
    }
    pub fn working_dir(self, dir: &str) -> Self {
        self.set("WorkingDir", json!(dir))
    }
    /// `port` like `8080/tcp`.
    pub fn exposed_port(mut self, port: &str) -> Self {
        let mut ports = self
            .config
            .get("ExposedPorts")
            .cloned()
            .unwrap_or_else(|| json!({}));
        ports[port] = json!({});
        self.config.insert("ExposedPorts".into(), ports);
        self
    }
    pub fn stop_signal(self, signal: &str) -> Self {
        self.set("StopSignal", json!(signal))
    }
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
    /// A manifest annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }
    pub fn architecture(mut self, arch: &str) -> Self {
        self.architecture = arch.into();
        self
    }
    /// Claims `diff_id` for layer `i` in the config, whatever the layer is.
    pub fn diff_id(mut self, i: usize, diff_id: &str) -> Self {
        self.diff_id_overrides.insert(i, diff_id.into());
        self
    }

    pub fn build(&self) -> Result<Manifest> {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for l in &self.layers {
            let (blob, diff_id) = l.build()?;
            layers.push(blob);
            diff_ids.push(diff_id);
        }
        for (i, d) in &self.diff_id_overrides {
            if let Some(slot) = diff_ids.get_mut(*i) {
                *slot = d.clone();
            }
        }
        let mut config = self.config.clone();
        if !self.labels.is_empty() {
            config.insert("Labels".into(), json!(self.labels));
        }
        let config = json!({
            "created": "2026-01-01T00:00:00Z",
            "architecture": self.architecture,
            "os": "linux",
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": diff_ids.iter().map(|_| json!({"created_by": "crius-test-support"})).collect::<Vec<_>>(),
        });
        let config = Blob::new(MEDIA_CONFIG, serde_json::to_vec(&config)?);
        Ok(Manifest::new(config, layers, None, &self.annotations))
    }
}

/// An OCI artifact: not a runnable image, content only.
#[derive(Debug, Clone)]
pub struct ArtifactBuilder {
    artifact_type: Option<String>,
    config: Option<Blob>,
    layers: Vec<Blob>,
    annotations: BTreeMap<String, String>,
}

impl ArtifactBuilder {
    /// An artifact of `artifact_type` with the empty config (`{}`).
    pub fn new(artifact_type: &str) -> Self {
        ArtifactBuilder {
            artifact_type: Some(artifact_type.into()),
            config: None,
            layers: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }
    /// A custom config blob instead of the empty one.
    pub fn config(mut self, media_type: &str, data: impl Into<Vec<u8>>) -> Self {
        self.config = Some(Blob::new(media_type, data.into()));
        self
    }
    /// A layer of any media type holding `data`, titled `title`.
    pub fn file(mut self, title: &str, media_type: &str, data: impl Into<Vec<u8>>) -> Self {
        let mut b = Blob::new(media_type, data.into());
        b.annotations.insert(ANNOTATION_TITLE.into(), title.into());
        self.layers.push(b);
        self
    }
    /// A tar layer (unpacked when the artifact is materialised).
    pub fn tar_layer(mut self, layer: &LayerBuilder) -> Result<Self> {
        self.layers.push(layer.build()?.0);
        Ok(self)
    }
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }
    /// A layer exactly as given (media type, bytes, annotations).
    pub fn layer(mut self, blob: Blob) -> Self {
        self.layers.push(blob);
        self
    }
    /// No `artifactType` in the manifest: an OCI 1.0-style artifact, whose
    /// type is its config's media type (Helm charts are pushed so).
    pub fn without_artifact_type(mut self) -> Self {
        self.artifact_type = None;
        self
    }

    pub fn build(&self) -> Result<Manifest> {
        let config = self
            .config
            .clone()
            .unwrap_or_else(|| Blob::new(MEDIA_EMPTY, b"{}".to_vec()));
        Ok(Manifest::new(
            config,
            self.layers.clone(),
            self.artifact_type.as_deref(),
            &self.annotations,
        ))
    }
}

/// A built image or artifact manifest with all its blobs, ready to push.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub config: Blob,
    pub layers: Vec<Blob>,
    /// The exact manifest bytes; `digest` is their sha256.
    pub bytes: Vec<u8>,
    pub digest: String,
}

impl Manifest {
    fn new(
        config: Blob,
        layers: Vec<Blob>,
        artifact_type: Option<&str>,
        annotations: &BTreeMap<String, String>,
    ) -> Self {
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        });
        if let Some(t) = artifact_type {
            m["artifactType"] = json!(t);
        }
        if !annotations.is_empty() {
            m["annotations"] = json!(annotations);
        }
        // Serialising a Value of strings and numbers cannot fail.
        let bytes = serde_json::to_vec_pretty(&m).unwrap_or_default();
        Manifest {
            digest: sha256_digest(&bytes),
            config,
            layers,
            bytes,
        }
    }

    /// Total size of config and layers, as a registry stores them.
    pub fn content_size(&self) -> usize {
        self.config.data.len() + self.layers.iter().map(|l| l.data.len()).sum::<usize>()
    }

    /// Writes an OCI image layout (`oci-layout`, `index.json`, `blobs/`) to
    /// `dir`, for tools such as skopeo and umoci.
    pub fn write_oci_layout(&self, dir: &Path, tag: &str) -> Result<()> {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs)?;
        for b in std::iter::once(&self.config).chain(&self.layers) {
            std::fs::write(blobs.join(b.digest.trim_start_matches("sha256:")), &b.data)?;
        }
        std::fs::write(
            blobs.join(self.digest.trim_start_matches("sha256:")),
            &self.bytes,
        )?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": MEDIA_MANIFEST,
                "digest": self.digest,
                "size": self.bytes.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        });
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
        Ok(())
    }

    /// Pushes to `registry` as `name:tag` with the registry's own
    /// credentials (if any). Returns `host/name@digest`.
    pub async fn push(&self, registry: &Registry, name_tag: &str) -> Result<String> {
        self.push_as(registry, name_tag, registry.credentials())
            .await
    }

    /// Pushes with explicit credentials (`None`: anonymous).
    pub async fn push_as(
        &self,
        registry: &Registry,
        name_tag: &str,
        creds: Option<&Credentials>,
    ) -> Result<String> {
        let reference: Reference = registry
            .reference(name_tag)
            .parse()
            .with_context(|| format!("parsing {name_tag}"))?;
        let client = plain_http_client();
        let auth = registry_auth(creds);
        client
            .auth(&reference, &auth, RegistryOperation::Push)
            .await?;
        for blob in std::iter::once(&self.config).chain(&self.layers) {
            client
                .push_blob(&reference, blob.data.clone(), &blob.digest)
                .await
                .with_context(|| format!("pushing blob {} to {reference}", blob.digest))?;
        }
        client
            .push_manifest_raw(&reference, self.bytes.clone(), MEDIA_MANIFEST.parse()?)
            .await
            .with_context(|| format!("pushing manifest to {reference}"))?;
        Ok(format!(
            "{}/{}@{}",
            registry.host(),
            reference.repository(),
            self.digest
        ))
    }
}

/// An oci-client for loopback registries (plain HTTP).
pub fn plain_http_client() -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    })
}

pub fn registry_auth(creds: Option<&Credentials>) -> RegistryAuth {
    match creds {
        Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
        None => RegistryAuth::Anonymous,
    }
}

/// Fetches a manifest's raw bytes and digest back from a registry.
pub async fn fetch_manifest(
    registry: &Registry,
    reference: &str,
    creds: Option<&Credentials>,
) -> Result<(Vec<u8>, String)> {
    let reference: Reference = registry.reference(reference).parse()?;
    let (bytes, digest) = plain_http_client()
        .pull_manifest_raw(&reference, &registry_auth(creds), &[MEDIA_MANIFEST])
        .await?;
    Ok((bytes.to_vec(), digest))
}

/// `(os, architecture, variant)` of an index entry.
pub type Platform<'a> = (&'a str, &'a str, Option<&'a str>);

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Pushes each manifest (by digest) and then an image index over them as
/// `name:tag`; `platforms` are `(os, architecture, variant)`. Returns the
/// index digest.
pub async fn push_index(
    registry: &Registry,
    name_tag: &str,
    manifests: &[(&Manifest, Platform<'_>)],
) -> Result<String> {
    let name = name_tag.split(':').next().unwrap_or(name_tag);
    let mut entries = Vec::new();
    for (m, (os, arch, variant)) in manifests {
        m.push(registry, &format!("{name}@{}", m.digest)).await?;
        let mut platform = json!({"os": os, "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = json!(v);
        }
        entries.push(json!({
            "mediaType": MEDIA_MANIFEST, "digest": m.digest, "size": m.bytes.len(), "platform": platform,
        }));
    }
    let index = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": entries}),
    )?;
    let reference: Reference = registry.reference(name_tag).parse()?;
    let client = plain_http_client();
    client
        .auth(
            &reference,
            &registry_auth(registry.credentials()),
            RegistryOperation::Push,
        )
        .await?;
    client
        .push_manifest_raw(&reference, index.clone(), MEDIA_INDEX.parse()?)
        .await
        .with_context(|| format!("pushing index to {reference}"))?;
    Ok(sha256_digest(&index))
}
