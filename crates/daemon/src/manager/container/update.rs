//! UpdateContainerResources: through the runtime for a running
//! container, into the bundle's spec for one not yet started; the record's
//! config keeps the resources in force.
use super::files_of;
use super::status::phase_name;
use crate::manager::{blocking, Manager, ManagerError, Result};
use crate::state::{encode_config, ContainerPhase};
use crius_cri_api::v1::{ContainerConfig, LinuxContainerResources};
use crius_oci_runtime::spec;

impl Manager {
    pub async fn update_resources(
        &self,
        query: &str,
        linux: Option<LinuxContainerResources>,
    ) -> Result<()> {
        let c = self.ctr(query)?;
        let _op = c.op.lock().await;
        let rec = self.refresh(&c).await;
        if !matches!(rec.phase, ContainerPhase::Created | ContainerPhase::Running) {
            return Err(ManagerError::FailedPrecondition(format!(
                "container {} is {}; only created or running containers can be updated",
                c.id,
                phase_name(rec.phase)
            )));
        }
        let Some(linux) = linux else {
            return Ok(());
        };
        let res = spec::resources(Some(&linux))?;
        let json = serde_json::to_vec(&res)
            .map_err(|e| ManagerError::Internal(format!("encoding resources: {e}")))?;
        if rec.phase == ContainerPhase::Created {
            // Not run yet (kubelet's CPU manager updates between create and
            // start): the bundle's spec takes the update, so the container
            // starts with it.
            let bundle = files_of(&rec).bundle.join("config.json");
            blocking(move || {
                let mut spec: serde_json::Value = std::fs::read(&bundle)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .ok_or_else(|| {
                        ManagerError::Internal(format!("reading {}", bundle.display()))
                    })?;
                let update = serde_json::from_slice(&json)
                    .map_err(|e| ManagerError::Internal(format!("resources: {e}")))?;
                spec::merge_resources(&mut spec, &update);
                let out = serde_json::to_vec_pretty(&spec)
                    .map_err(|e| ManagerError::Internal(format!("encoding config.json: {e}")))?;
                // Whole or not at all: a new file renamed over the old.
                let tmp = bundle.with_extension("json.tmp");
                std::fs::write(&tmp, &out)
                    .and_then(|_| std::fs::rename(&tmp, &bundle))
                    .map_err(|e| {
                        ManagerError::Internal(format!("writing {}: {e}", bundle.display()))
                    })
            })
            .await?;
        } else {
            let runtime = self.runtime_any(&rec.runtime_handler)?;
            let id = c.id.clone();
            blocking(move || {
                runtime
                    .update(&id, &json)
                    .map_err(|e| ManagerError::FailedPrecondition(e.to_string()))
            })
            .await?;
        }
        // Keep the record's config in step, so ContainerStatus reports the
        // resources in force: what the update sets, over what it leaves.
        let mut cfg: ContainerConfig = crate::state::decode_config(&c.id, &c.record().config)
            .unwrap_or_else(|_| c.config.clone());
        let l = cfg.linux.get_or_insert_with(Default::default);
        let merged = merge_cri_resources(l.resources.take().unwrap_or_default(), linux);
        l.resources = Some(merged);
        let mut r = c.record();
        r.config = encode_config(&cfg);
        let db = self.db.clone();
        let r2 = r.clone();
        blocking(move || Ok(db.put_container(&r2)?)).await?;
        c.set(r);
        Ok(())
    }
}

/// The resources in force after an update: every field the update sets
/// (non-zero, non-empty) replaces the old one, the rest stay, as the
/// runtime's `update` treats the cgroup (kubelet's CPU manager sends only
/// `cpuset_cpus`).
pub fn merge_cri_resources(
    mut old: LinuxContainerResources,
    new: LinuxContainerResources,
) -> LinuxContainerResources {
    fn set<T: PartialEq + Default>(old: &mut T, new: T) {
        if new != T::default() {
            *old = new;
        }
    }
    set(&mut old.cpu_period, new.cpu_period);
    set(&mut old.cpu_quota, new.cpu_quota);
    set(&mut old.cpu_shares, new.cpu_shares);
    set(&mut old.memory_limit_in_bytes, new.memory_limit_in_bytes);
    set(&mut old.oom_score_adj, new.oom_score_adj);
    set(&mut old.cpuset_cpus, new.cpuset_cpus);
    set(&mut old.cpuset_mems, new.cpuset_mems);
    set(&mut old.hugepage_limits, new.hugepage_limits);
    set(
        &mut old.memory_swap_limit_in_bytes,
        new.memory_swap_limit_in_bytes,
    );
    old.unified.extend(new.unified);
    old
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_updates_keep_what_they_leave_unset() {
        let r = |shares: i64, mem: i64, cpus: &str| LinuxContainerResources {
            cpu_shares: shares,
            memory_limit_in_bytes: mem,
            cpuset_cpus: cpus.into(),
            ..Default::default()
        };
        // (in force, update, in force after)
        let cases = [
            (r(512, 64 << 20, ""), r(0, 0, "1"), r(512, 64 << 20, "1")),
            (r(512, 64 << 20, "0"), r(256, 0, ""), r(256, 64 << 20, "0")),
            (r(0, 0, ""), r(2, 3, "0-1"), r(2, 3, "0-1")),
            (r(1, 2, "0"), r(0, 0, ""), r(1, 2, "0")),
        ];
        for (old, update, want) in cases {
            assert_eq!(
                merge_cri_resources(old.clone(), update.clone()),
                want,
                "{old:?} + {update:?}"
            );
        }
        let mut old = r(1, 0, "");
        old.unified.insert("memory.high".into(), "1".into());
        old.unified.insert("pids.max".into(), "5".into());
        let mut update = r(0, 0, "");
        update.unified.insert("memory.high".into(), "2".into());
        let got = merge_cri_resources(old, update);
        assert_eq!(got.unified["memory.high"], "2");
        assert_eq!(got.unified["pids.max"], "5");
        assert_eq!(got.cpu_shares, 1);
    }
}
