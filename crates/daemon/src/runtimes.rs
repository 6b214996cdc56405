//! The runtime handlers as the daemon sees them: resolved from the config,
//! probed at start and again on SIGHUP, read by `Status` (and, later, by
//! pod and container creation).

use crate::config::Config;
use crius_oci_runtime::probe::{probe_handler, HostFacts};
use crius_oci_runtime::{Probe, RuntimeHandlers};
use std::sync::{Arc, RwLock};

/// One probe of every handler and of the host.
#[derive(Debug)]
pub struct RuntimeInfo {
    pub host: HostFacts,
    pub handlers: RuntimeHandlers,
    pub probes: Vec<Probe>,
}

impl RuntimeInfo {
    /// Resolves and probes the configured handlers (runs the runtimes:
    /// call off the async runtime).
    pub fn probe(config: &Config) -> Result<Self, String> {
        let path = std::env::var("PATH").unwrap_or_else(|_| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        let handlers = RuntimeHandlers::resolve(
            &config.runtimes,
            &config.default_runtime,
            &config.runroot,
            &path,
        )
        .map_err(|e| e.to_string())?;
        let host = HostFacts::read();
        let probes: Vec<Probe> = handlers
            .handlers
            .values()
            .map(|h| probe_handler(h, &host))
            .collect();
        for p in &probes {
            tracing::info!(
                handler = %p.name,
                binary = ?p.binary,
                version = p.version.as_deref().unwrap_or("unknown"),
                ready = p.status.ready,
                reason = %p.status.reason,
                recursive_read_only_mounts = p.status.recursive_read_only_mounts,
                user_namespaces = p.status.user_namespaces,
                features = p.features_unknown.as_deref().unwrap_or("known"),
                "runtime handler probed"
            );
            if !p.status.ready {
                tracing::warn!(handler = %p.name, reason = %p.status.reason, "{}", p.status.message);
            }
        }
        Ok(RuntimeInfo {
            host,
            handlers,
            probes,
        })
    }

    /// The probe of a CRI handler name ("" is the default).
    pub fn get(&self, name: &str) -> Option<&Probe> {
        let name = if name.is_empty() {
            &self.handlers.default
        } else {
            name
        };
        self.probes.iter().find(|p| p.name == name)
    }
}

/// The current probe, swapped whole on re-probe.
pub struct Runtimes {
    config: Arc<Config>,
    current: RwLock<Arc<RuntimeInfo>>,
}

impl Runtimes {
    pub fn new(config: Arc<Config>, info: RuntimeInfo) -> Self {
        Runtimes {
            config,
            current: RwLock::new(Arc::new(info)),
        }
    }

    pub fn current(&self) -> Arc<RuntimeInfo> {
        crate::sync::read(&self.current).clone()
    }

    /// Probes again (SIGHUP): a runtime upgraded or a cgroup layout changed
    /// shows up without a restart. A failed re-probe keeps the old result.
    pub async fn reprobe(self: &Arc<Self>) {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || RuntimeInfo::probe(&this.config)).await {
            Ok(Ok(info)) => {
                *crate::sync::write(&self.current) = Arc::new(info);
                tracing::info!("runtime handlers re-probed");
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "re-probing runtime handlers; keeping the previous result")
            }
            Err(e) => tracing::error!(error = %e, "re-probe task failed"),
        }
    }
}
