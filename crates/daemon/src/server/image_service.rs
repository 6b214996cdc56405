//! The CRI ImageService, served from the image store.

use super::error::{image_error, missing};
use super::unimplemented::cri_service;
use crius_cri_api::v1::image_service_server::ImageService;
use crius_cri_api::v1::*;
use crius_image_store::auth::{self, Auth};
use crius_image_store::{ImageRecord, ImageStore};
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// Which container uses an image (by image id), if any.
pub type InUse = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

pub struct ImageServiceImpl {
    store: Arc<ImageStore>,
    pinned: Arc<Vec<String>>,
    in_use: InUse,
}

impl ImageServiceImpl {
    pub fn new(store: Arc<ImageStore>, pinned: Vec<String>, in_use: InUse) -> Self {
        Self {
            store,
            pinned: Arc::new(pinned),
            in_use,
        }
    }

    fn to_cri(&self, r: &ImageRecord) -> Image {
        let mut i = to_cri_image(r);
        i.pinned |= is_pinned(&self.pinned, r);
        i
    }
}

/// Whether any repo tag or digest of `r` matches a pinned pattern: an exact
/// name, or a prefix ending in `*`.
pub fn is_pinned(patterns: &[String], r: &ImageRecord) -> bool {
    r.repo_tags.iter().chain(&r.repo_digests).any(|name| {
        patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == p,
        })
    })
}

/// The CRI view of a stored image or artifact.
pub fn to_cri_image(r: &ImageRecord) -> Image {
    // The config's User may be "uid", "uid:gid", "name" or "name:group".
    let user = r.user.as_deref().unwrap_or("");
    let user = user.split(':').next().unwrap_or("");
    let (uid, username) = match user.parse::<i64>() {
        Ok(n) => (Some(Int64Value { value: n }), String::new()),
        Err(_) if user.is_empty() => (None, String::new()),
        Err(_) => (None, user.to_string()),
    };
    Image {
        id: r.id.clone(),
        repo_tags: r.repo_tags.clone(),
        repo_digests: r.repo_digests.clone(),
        size: r.size,
        uid,
        username,
        spec: Some(ImageSpec {
            image: r.id.clone(),
            annotations: r.annotations.clone().into_iter().collect(),
            ..Default::default()
        }),
        pinned: r.pinned,
    }
}

fn image_name(spec: Option<&ImageSpec>, field: &str) -> Result<String, Status> {
    match spec.map(|s| s.image.trim()) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(missing(field)),
    }
}

fn cri_auth(a: Option<&AuthConfig>) -> Result<Option<Auth>, Status> {
    let Some(a) = a else { return Ok(None) };
    auth::from_cri(
        &a.username,
        &a.password,
        &a.auth,
        &a.server_address,
        &a.identity_token,
        &a.registry_token,
    )
    .map_err(|e| Status::invalid_argument(format!("auth: {e}")))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("image store task: {e}")))?
}

cri_service! {
    impl ImageService as "runtime.v1.ImageService" for ImageServiceImpl {
        async fn pull_image(&self, request: Request<PullImageRequest>) -> Result<Response<PullImageResponse>, Status> {
            let req = request.into_inner();
            let image = image_name(req.image.as_ref(), "image.image")?;
            let auth = cri_auth(req.auth.as_ref())?;
            let started = std::time::Instant::now();
            let pulled = self
                .store
                .pull(&image, auth)
                .instrument(tracing::info_span!("pull", image = %image))
                .await
                .map_err(image_error);
            crate::metrics::observe_pull(
                pulled.as_ref().map(|r| r.size).map_err(|s| s.code()),
                started.elapsed().as_secs_f64(),
            );
            let record = pulled?;
            Ok(Response::new(PullImageResponse { image_ref: record.id }))
        }

        async fn list_images(&self, request: Request<ListImagesRequest>) -> Result<Response<ListImagesResponse>, Status> {
            let filter = request.into_inner().filter.and_then(|f| f.image).map(|s| s.image).filter(|s| !s.is_empty());
            let store = self.store.clone();
            let records = blocking(move || match filter {
                Some(f) => Ok(store.resolve(&f).map_err(image_error)?.into_iter().collect::<Vec<_>>()),
                None => store.list().map_err(image_error),
            })
            .await?;
            let images = records.iter().map(|r| self.to_cri(r)).collect();
            Ok(Response::new(ListImagesResponse { images }))
        }

        async fn image_status(&self, request: Request<ImageStatusRequest>) -> Result<Response<ImageStatusResponse>, Status> {
            let req = request.into_inner();
            let image = image_name(req.image.as_ref(), "image.image")?;
            let store = self.store.clone();
            let record = blocking(move || store.resolve(&image).map_err(image_error)).await?;
            let Some(record) = record else {
                // CRI: a missing image is an empty status, not an error.
                return Ok(Response::new(ImageStatusResponse::default()));
            };
            let mut info = HashMap::new();
            if req.verbose {
                let store = self.store.clone();
                let r = record.clone();
                let manifest = blocking(move || {
                    let read = |d: &str| -> Result<serde_json::Value, Status> {
                        let bytes = store.layout().read_blob(d).map_err(|e| Status::internal(e.to_string()))?;
                        serde_json::from_slice(&bytes).map_err(|e| Status::internal(format!("blob {d}: {e}")))
                    };
                    let config = if r.is_artifact() && r.config_size > 64 * 1024 {
                        serde_json::Value::Null
                    } else {
                        read(r.config()).unwrap_or(serde_json::Value::Null)
                    };
                    Ok((read(&r.manifest_digest)?, config))
                })
                .await?;
                let v = serde_json::json!({
                    "artifact": record.is_artifact(),
                    "artifactType": record.artifact_type,
                    "mediaType": record.manifest_media_type,
                    "manifestDigest": record.manifest_digest,
                    "indexDigest": record.index_digest,
                    "manifest": manifest.0,
                    "config": manifest.1,
                });
                info.insert("info".to_string(), v.to_string());
            }
            Ok(Response::new(ImageStatusResponse { image: Some(self.to_cri(&record)), info }))
        }

        async fn remove_image(&self, request: Request<RemoveImageRequest>) -> Result<Response<RemoveImageResponse>, Status> {
            let image = image_name(request.into_inner().image.as_ref(), "image.image")?;
            let store = self.store.clone();
            let in_use = self.in_use.clone();
            blocking(move || store.remove(&image, |id| in_use(id)).map_err(image_error)).await?;
            Ok(Response::new(RemoveImageResponse {}))
        }

        async fn image_fs_info(&self, _request: Request<ImageFsInfoRequest>) -> Result<Response<ImageFsInfoResponse>, Status> {
            let store = self.store.clone();
            let (usage, mountpoint) = blocking(move || {
                Ok((store.usage().map_err(image_error)?, store.root().display().to_string()))
            })
            .await?;
            let timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0);
            Ok(Response::new(ImageFsInfoResponse {
                image_filesystems: vec![FilesystemUsage {
                    timestamp,
                    fs_id: Some(FilesystemIdentifier { mountpoint }),
                    used_bytes: Some(UInt64Value { value: usage.bytes }),
                    inodes_used: Some(UInt64Value { value: usage.inodes }),
                }],
                container_filesystems: Vec::new(),
            }))
        }
    }
    not_built {}
    not_built_streams {
        StreamImages => stream_images(StreamImagesRequest) -> StreamImagesStream<StreamImagesResponse>;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_user_maps_to_uid_or_username() {
        let base: ImageRecord = serde_json::from_value(serde_json::json!({
            "version": 1, "id": "sha256:x", "repo_tags": [], "repo_digests": [],
            "manifest_digest": "sha256:m", "manifest_media_type": "m", "manifest_size": 1,
            "config_media_type": "c", "config_size": 1, "layers": [], "size": 1,
            "pinned": false, "annotations": {}, "created_at": 0
        }))
        .unwrap();
        for (user, uid, name) in [
            (None, None, ""),
            (Some("1000"), Some(1000), ""),
            (Some("1000:100"), Some(1000), ""),
            (Some("nobody"), None, "nobody"),
            (Some("app:app"), None, "app"),
        ] {
            let mut r = base.clone();
            r.user = user.map(str::to_string);
            let i = to_cri_image(&r);
            assert_eq!(i.uid.map(|u| u.value), uid, "{user:?}");
            assert_eq!(i.username, name, "{user:?}");
        }
    }

    #[test]
    fn pinned_patterns() {
        let mut r: ImageRecord = serde_json::from_value(serde_json::json!({
            "version": 1, "id": "sha256:x", "repo_tags": ["registry.k8s.io/pause:3.10"],
            "repo_digests": ["registry.k8s.io/pause@sha256:abc"],
            "manifest_digest": "sha256:m", "manifest_media_type": "m", "manifest_size": 1,
            "config_media_type": "c", "config_size": 1, "layers": [], "size": 1,
            "pinned": false, "annotations": {}, "created_at": 0
        }))
        .unwrap();
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(is_pinned(&p(&["registry.k8s.io/pause:3.10"]), &r));
        assert!(is_pinned(&p(&["registry.k8s.io/pause*"]), &r));
        assert!(is_pinned(&p(&["registry.k8s.io/pause@sha256:abc"]), &r));
        assert!(!is_pinned(&p(&["registry.k8s.io/pause:3.9"]), &r));
        assert!(!is_pinned(&p(&[]), &r));
        r.repo_tags.clear();
        assert!(!is_pinned(&p(&["registry.k8s.io/pause:3.10"]), &r));
    }
}
