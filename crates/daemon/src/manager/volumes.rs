//! Image volumes (`Mount.image`, KEP-4639): an image's layers or an
//! artifact's content mounted once per image as a read-only view
//! under `<runroot>/image-volumes/`, shared by every container that mounts
//! it (reference counted from the container records, so a restarted daemon
//! counts the same), unmounted when the last of them is removed.
//! `image_sub_path` is resolved inside the view and bound onto a path in the
//! container's directory; the runtime only ever sees paths crius owns.

use super::{Manager, ManagerError, Result};
use crius_cri_api::v1::{ContainerConfig, MountPropagation};
use crius_oci_runtime::imagevol;
use std::path::{Path, PathBuf};

/// The view of image `id` (`sha256:…`).
pub fn view_path(runroot: &Path, image_id: &str) -> PathBuf {
    runroot
        .join("image-volumes")
        .join(image_id.trim_start_matches("sha256:"))
}

/// Where container `dir` binds the sub path of its mount `i`.
pub fn sub_path_target(dir: &Path, i: usize) -> PathBuf {
    dir.join("volumes").join(i.to_string())
}

/// What an image mount asks for that crius refuses before anything is
/// mounted: a writable image volume (the KEP makes them read-only; a
/// silent downgrade would hide the pod author's mistake), and a sub path
/// that climbs (`..`) or is absolute (Kubernetes refuses both in sub paths).
pub fn check_image_mount(at: &str, readonly: bool, sub_path: &str) -> Result<()> {
    if !readonly {
        return Err(ManagerError::InvalidArgument(format!(
            "{at}: image volumes are read-only; readonly must be true"
        )));
    }
    if sub_path.contains('\0') {
        return Err(ManagerError::InvalidArgument(format!(
            "{at}: image_sub_path contains NUL"
        )));
    }
    if sub_path.starts_with('/') {
        return Err(ManagerError::InvalidArgument(format!(
            "{at}: image_sub_path {sub_path:?} must be relative"
        )));
    }
    if sub_path.split('/').any(|c| c == "..") {
        return Err(ManagerError::InvalidArgument(format!(
            "{at}: image_sub_path {sub_path:?} must not contain \"..\""
        )));
    }
    Ok(())
}

impl Manager {
    /// Resolves every image mount of `config`, mounts (or shares) the views
    /// and sub paths, and rewrites the mounts to bind those paths read-only,
    /// nosuid, nodev (recursively read-only where the handler can; noexec
    /// only where the operator asks, `image_volume_noexec`).
    /// Returns the image ids acquired, which the caller records; on error
    /// nothing stays acquired. Blocking.
    pub(crate) fn acquire_image_volumes(
        &self,
        config: &mut ContainerConfig,
        dir: &Path,
        rro: bool,
    ) -> Result<Vec<String>> {
        let mut acquired: Vec<String> = Vec::new();
        let mut subs: Vec<PathBuf> = Vec::new();
        let result = (|| {
            for (i, m) in config.mounts.iter_mut().enumerate() {
                let Some(spec) = m.image.as_mut() else {
                    continue;
                };
                let at = format!("mounts[{i}] (container_path {:?})", m.container_path);
                if !m.host_path.is_empty() {
                    return Err(ManagerError::InvalidArgument(format!(
                        "{at}: host_path and image are mutually exclusive"
                    )));
                }
                if spec.image.is_empty() {
                    return Err(ManagerError::InvalidArgument(format!(
                        "{at}: image.image is required"
                    )));
                }
                check_image_mount(&at, m.readonly, &m.image_sub_path)?;
                let rec = self
                    .images
                    .resolve(&spec.image)
                    .map_err(|e| ManagerError::InvalidArgument(format!("{at}: image.image: {e}")))?
                    .ok_or_else(|| {
                        ManagerError::NotFound(format!(
                            "{at}: image {:?} not found; kubelet pulls image volumes before creating the container",
                            spec.image
                        ))
                    })?;
                // The identifier PullImage returned for it, as every other
                // API reports the image (critest compares them).
                spec.image_ref = rec.id.clone();
                let view = self.acquire_view(&rec)?;
                acquired.push(rec.id.clone());
                let source = if m.image_sub_path.is_empty() {
                    view
                } else {
                    let (fd, kind) = imagevol::resolve_sub_path(&view, &m.image_sub_path)
                        .map_err(|e| ManagerError::InvalidArgument(format!("{at}: {e}")))?;
                    let target = sub_path_target(dir, i);
                    imagevol::bind_sub_path(&fd, kind, &target, self.cfg.image_volume_noexec)
                        .map_err(|e| ManagerError::Internal(format!("{at}: {e}")))?;
                    subs.push(target.clone());
                    target
                };
                m.host_path = source.display().to_string();
                m.readonly = true;
                m.propagation = MountPropagation::PropagationPrivate as i32;
                m.recursive_read_only = rro;
                let noexec = self.cfg.image_volume_noexec.then_some("noexec");
                for o in ["nosuid", "nodev"].into_iter().chain(noexec) {
                    if !m.mount_options.iter().any(|x| x == o) {
                        m.mount_options.push(o.to_string());
                    }
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(acquired),
            Err(e) => {
                for s in subs {
                    let _ = imagevol::unmount(&s);
                }
                for id in &acquired {
                    self.release_view(id);
                }
                Err(e)
            }
        }
    }

    /// Mounts the view of an image on first use; counts a user.
    fn acquire_view(&self, rec: &crius_image_store::db::ImageRecord) -> Result<PathBuf> {
        let view = view_path(&self.cfg.runroot, &rec.id);
        let mut users = crate::sync::lock(&self.volume_users);
        let n = users.entry(rec.id.clone()).or_insert(0);
        // Mounted on first use — or again after a reboot emptied runroot
        // while exited containers still counted as users.
        if *n == 0 || !imagevol::is_mount_point(&view) {
            let lower = if rec.is_artifact() {
                vec![self.images.artifact_dir(rec)]
            } else {
                self.images
                    .lower_dirs(rec)
                    .map_err(|e| ManagerError::FailedPrecondition(e.to_string()))?
            };
            // A view left mounted by a crashed daemon is replaced.
            let _ = imagevol::unmount(&view);
            imagevol::mount_view(&lower, &view, self.cfg.image_volume_noexec)
                .map_err(|e| ManagerError::Internal(format!("image volume {}: {e}", rec.id)))?;
        }
        *n += 1;
        Ok(view)
    }

    /// Drops one user of an image's view; the last one unmounts it.
    pub(crate) fn release_view(&self, image_id: &str) {
        let mut users = crate::sync::lock(&self.volume_users);
        let Some(n) = users.get_mut(image_id) else {
            return;
        };
        *n = n.saturating_sub(1);
        if *n == 0 {
            users.remove(image_id);
            let view = view_path(&self.cfg.runroot, image_id);
            if let Err(e) = imagevol::unmount(&view) {
                tracing::warn!(image = %image_id, error = %e, "unmounting image volume");
            }
        }
    }

    /// Releases what a container's image mounts hold (blocking).
    pub(crate) fn release_image_volumes(&self, dir: &Path, image_ids: &[String], mounts: usize) {
        for i in 0..mounts {
            let t = sub_path_target(dir, i);
            if t.exists() {
                let _ = imagevol::unmount(&t);
            }
        }
        for id in image_ids {
            self.release_view(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_mount_checks() {
        // (readonly, sub path, ok)
        for (ro, sub, ok) in [
            (true, "", true),
            (true, "etc", true),
            (true, "dir/file", true),
            (true, "a..b/c", true),
            (false, "", false),
            (true, "..", false),
            (true, "../../..", false),
            (true, "dir/../..", false),
            (true, "/etc", false),
            (true, "a\0b", false),
        ] {
            let r = check_image_mount("mounts[0]", ro, sub);
            assert_eq!(r.is_ok(), ok, "{ro} {sub:?}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().starts_with("mounts[0]: "), "{e}");
            }
        }
    }
}
