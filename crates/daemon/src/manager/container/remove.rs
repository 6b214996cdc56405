//! RemoveContainer: stopped if need be, the runtime's state deleted,
//! image volumes released, the rootfs and directory removed, the record
//! deleted and the name released.
use super::container_key;
use crate::manager::events::EventKind;
use crate::manager::host::cleanup_dir;
use crate::manager::{blocking, Ctr, Manager, ManagerError, Result};
use std::sync::Arc;

impl Manager {
    pub async fn remove_container(self: &Arc<Self>, query: &str) -> Result<()> {
        let c = match self.ctr(query) {
            Ok(c) => c,
            Err(ManagerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.remove_container_inner(&c).await
    }

    pub(crate) async fn remove_container_inner(self: &Arc<Self>, c: &Arc<Ctr>) -> Result<()> {
        let _op = c.op.lock().await;
        if !crate::sync::read(&self.containers).contains_key(&c.id) {
            return Ok(());
        }
        self.stop_container_inner(c, 0).await?;
        let rec = c.record();
        let runtime = self.runtime_any(&rec.runtime_handler).ok();
        let db = self.db.clone();
        let me = self.clone();
        let mounts = c.config.mounts.len();
        blocking(move || {
            if let Some(rt) = runtime {
                if let Err(e) = rt.delete(&rec.id, true) {
                    tracing::debug!(container = %rec.id, error = %e, "runtime delete");
                }
            }
            me.release_image_volumes(&rec.dir, &rec.image_volumes, mounts);
            crius_oci_runtime::rootfs::remove_rootfs(&rec.dir.join("fs"))?;
            cleanup_dir(&rec.dir);
            let _ = std::fs::remove_file(&rec.exit_file);
            db.delete_container(&rec.id)?;
            Ok(())
        })
        .await?;
        crate::sync::write(&self.containers).remove(&c.id);
        self.forget_stats(&c.id);
        if let Ok(key) = container_key(&c.pod_id, &c.config) {
            self.release(&key, &c.id);
        }
        tracing::info!(container = %c.id, "container removed");
        self.publish(EventKind::Deleted, &c.id, &c.pod_id);
        Ok(())
    }
}
