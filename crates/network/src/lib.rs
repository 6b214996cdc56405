//! Pod networking through CNI (issue 16).
//!
//! - `config`: network configuration as libcni and CRI-O read it (pure but
//!   for `config::load_dir`).
//! - `runtime`: what plugins are told about a pod — `CNI_ARGS`, the
//!   `runtimeConfig` capabilities, each plugin's stdin (pure).
//! - `result`: the pod's addresses in a result of any version, plugin
//!   error objects (pure).
//! - `version`: which protocol features a `cniVersion` allows (pure).
//! - `exec`: running one plugin, bounded in output and time.
//! - `cache`: the on-disk attachment records that make DEL and crash
//!   recovery use what ADD used.
//! - `watch`: the config directory's inotify watcher.
//!
//! [`Cni`] ties them together: ADD, DEL, CHECK, STATUS and GC over the
//! network currently selected. It holds no lock across a plugin call, so
//! pods set up at once run their plugins at once (the plugins serialise
//! what they must themselves, e.g. host-local's IPAM lock).

pub mod cache;
pub mod config;
pub mod exec;
pub mod result;
pub mod runtime;
pub mod stats;
pub mod version;
pub mod watch;

use cache::{Attachment, Cache, CachedNetwork};
use config::{NetworkConfigList, Selection};
use result::PodIp;
use runtime::{ArgError, PodNetwork, IFNAME};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use version::Version;

/// Where crius finds networks and plugins, and keeps attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniOptions {
    pub config_dir: PathBuf,
    /// Searched in order for a plugin's binary (`CNI_PATH`).
    pub plugin_dirs: Vec<PathBuf>,
    /// Empty: the first valid config file in lexical order.
    pub default_network: String,
    pub cache_dir: PathBuf,
    /// How long one plugin call may take before it is killed.
    pub plugin_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Arg(#[from] ArgError),
    /// A plugin ran and failed: its own words.
    #[error("CNI network {network:?}: plugin {plugin} failed ({command}): {message}")]
    Plugin {
        network: String,
        plugin: String,
        command: &'static str,
        message: String,
    },
    /// Not ready to set up pods: no network, or plugins missing.
    #[error("{0}")]
    NotReady(String),
    #[error(transparent)]
    Exec(#[from] exec::ExecError),
    #[error("CNI attachment cache: {0}")]
    Cache(#[from] std::io::Error),
}

/// The `NetworkReady` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

pub const NOT_READY_REASON: &str = "NetworkPluginNotReady";

/// What ADD gave the pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Added {
    pub network: String,
    pub ips: Vec<PodIp>,
    pub result: Value,
}

/// The network selected now, and a generation that changes with it.
struct Loaded {
    selection: Selection,
    generation: u64,
}

pub struct Cni {
    opts: CniOptions,
    cache: Cache,
    current: RwLock<Arc<Loaded>>,
    /// STATUS answers of CNI 1.1 plugins, reused for a few seconds
    /// (kubelet asks every few seconds; a plugin exec per ask is waste).
    status_memo: Mutex<Option<(Instant, u64, Readiness)>>,
    /// ADDs hold it shared; the CNI 1.1 GC at start-up holds it alone, so
    /// no attachment is being made while plugins are told which are valid.
    gc_lock: RwLock<()>,
}

const STATUS_MEMO: Duration = Duration::from_secs(5);

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A plugin's environment: the daemon's own (plugins such as portmap run
/// iptables from PATH), without CNI variables of its own, plus the call's.
pub fn plugin_env(
    base: impl Iterator<Item = (OsString, OsString)>,
    call: &[(&str, String)],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = base
        .filter(|(k, _)| !k.as_encoded_bytes().starts_with(b"CNI_"))
        .collect();
    env.extend(
        call.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    env
}

impl Cni {
    /// Creates the config and cache directories (as containerd does: a
    /// directory to watch) and loads the network once.
    pub fn open(opts: CniOptions) -> std::io::Result<Arc<Cni>> {
        std::fs::create_dir_all(&opts.config_dir)?;
        let cache = Cache::open(&opts.cache_dir)?;
        let cni = Arc::new(Cni {
            opts,
            cache,
            current: RwLock::new(Arc::new(Loaded {
                selection: Selection::default(),
                generation: 0,
            })),
            status_memo: Mutex::new(None),
            gc_lock: RwLock::new(()),
        });
        cni.reload();
        Ok(cni)
    }

    pub fn options(&self) -> &CniOptions {
        &self.opts
    }

    /// Rereads the config directory; logs a change of network and each
    /// skipped file when what the directory offers changed.
    pub fn reload(&self) {
        let sel = match config::load_dir(&self.opts.config_dir, &self.opts.default_network) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(dir = %self.opts.config_dir.display(), error = %e, "reading the CNI config directory");
                Selection::default()
            }
        };
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if cur.selection == sel {
            return;
        }
        for (path, why) in &sel.skipped {
            if !cur
                .selection
                .skipped
                .iter()
                .any(|(p, w)| p == path && w == why)
            {
                tracing::warn!(file = %path.display(), reason = %why, "CNI config file skipped");
            }
        }
        match &sel.network {
            Some(n) => tracing::info!(
                network = %n.name,
                file = %n.source.display(),
                cni_version = %n.cni_version,
                plugins = %n.plugins.iter().map(|p| p.kind.as_str()).collect::<Vec<_>>().join(","),
                "CNI network selected"
            ),
            None => {
                tracing::warn!(dir = %self.opts.config_dir.display(), "no CNI network configured")
            }
        }
        *cur = Arc::new(Loaded {
            selection: sel,
            generation: cur.generation + 1,
        });
    }

    /// The network pods are attached to now.
    pub fn network(&self) -> Option<NetworkConfigList> {
        read(&self.current).selection.network.clone()
    }

    fn find_plugin(&self, kind: &str) -> Option<PathBuf> {
        self.opts
            .plugin_dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| is_executable(p))
    }

    fn cni_path(&self) -> String {
        self.opts
            .plugin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// NetworkReady: a network is configured, its plugin binaries are
    /// present, and (CNI 1.1) its plugins answer STATUS with success.
    pub fn status(&self) -> Readiness {
        let loaded = read(&self.current).clone();
        let Some(net) = &loaded.selection.network else {
            let mut message = format!(
                "no CNI network configuration in {}",
                self.opts.config_dir.display()
            );
            if !self.opts.default_network.is_empty() {
                message.push_str(&format!(
                    " names network {:?} (cni_default_network)",
                    self.opts.default_network
                ));
            }
            for (p, why) in &loaded.selection.skipped {
                message.push_str(&format!("; skipped {}: {why}", p.display()));
            }
            return not_ready(message);
        };
        if let Some(m) = self.missing_plugins(net) {
            return not_ready(m);
        }
        if !Version::parse(&net.cni_version).has_status_and_gc() {
            return ready();
        }
        if let Some((at, gen, r)) = self.memo().as_ref() {
            if *gen == loaded.generation && at.elapsed() < STATUS_MEMO {
                return r.clone();
            }
        }
        // No lock across the plugin calls: two Status RPCs at once may both
        // ask, neither waits for the other.
        let r = self.plugin_status(net);
        *self.memo() = Some((Instant::now(), loaded.generation, r.clone()));
        r
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, Option<(Instant, u64, Readiness)>> {
        self.status_memo.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn plugin_status(&self, net: &NetworkConfigList) -> Readiness {
        for p in &net.plugins {
            let Some(bin) = self.find_plugin(&p.kind) else {
                return not_ready(format!("plugin {} not found", p.kind));
            };
            let env = plugin_env(
                std::env::vars_os(),
                &[
                    ("CNI_COMMAND", "STATUS".into()),
                    ("CNI_PATH", self.cni_path()),
                ],
            );
            let stdin = runtime::plugin_stdin(net, p, None, &Map::new());
            match exec::run(&bin, &env, &stdin, self.opts.plugin_timeout) {
                Ok(out) if out.code == Some(0) => {}
                Ok(out) => {
                    return not_ready(format!(
                        "CNI network {:?}: plugin {} is not ready (STATUS): {}",
                        net.name,
                        p.kind,
                        result::plugin_error(&out.stdout, &out.stderr)
                    ))
                }
                Err(e) => return not_ready(format!("CNI network {:?}: {e}", net.name)),
            }
        }
        ready()
    }

    /// Why `net` cannot be used now: the plugin binaries found in none of
    /// the plugin directories, and where they were looked for.
    fn missing_plugins(&self, net: &NetworkConfigList) -> Option<String> {
        let missing = config::missing_plugins(net, &self.opts.plugin_dirs, is_executable);
        (!missing.is_empty()).then(|| {
            format!(
                "CNI network {:?} ({}) needs plugins not found in {}: {}",
                net.name,
                net.source.display(),
                self.cni_path(),
                missing.join(", ")
            )
        })
    }

    /// The network a pod would be attached to now, if its plugin binaries
    /// are present (RunPodSandbox checks before it sets anything up).
    /// Ok(None): no network is configured.
    pub fn usable_network(&self) -> Result<Option<NetworkConfigList>, NetError> {
        let Some(net) = self.network() else {
            return Ok(None);
        };
        match self.missing_plugins(&net) {
            Some(m) => Err(NetError::NotReady(m)),
            None => Ok(Some(net)),
        }
    }

    /// Attaches a pod to the network (ADD through the chain). None when no
    /// network is configured. On failure, what was added is deleted again
    /// and the error carries the plugin's own words.
    pub fn add(&self, pod: &PodNetwork) -> Result<Option<Added>, NetError> {
        let t0 = Instant::now();
        // Shared with other ADDs; only the start-up GC excludes them.
        let _gc = self.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let Some(net) = self.usable_network()? else {
            return Ok(None);
        };
        let cni_args = runtime::cni_args(pod)?;
        let caps = runtime::capability_args(pod);
        let mut att = Attachment {
            kind: cache::KIND.into(),
            container_id: pod.id.clone(),
            if_name: IFNAME.into(),
            netns: pod.netns.clone(),
            network: CachedNetwork::from_list(&net),
            cni_args,
            capability_args: caps,
            result: None,
        };
        // The intent first: a daemon killed inside ADD finds it and DELs.
        self.cache.put(&att, true)?;
        let t_intent = t0.elapsed();
        let mut prev: Option<Value> = None;
        for p in &net.plugins {
            let called = self
                .call(&att, &net, p, "ADD", prev.as_ref())
                .and_then(|out| {
                    serde_json::from_slice::<Value>(&out).map_err(|e| NetError::Plugin {
                        network: net.name.clone(),
                        plugin: p.kind.clone(),
                        command: "ADD",
                        message: format!("result is not JSON: {e}"),
                    })
                });
            match called {
                Ok(v) => prev = Some(v),
                Err(e) => {
                    // Partial results are what DEL is given.
                    att.result = prev;
                    if let Err(de) = self.del_attachment(&att) {
                        tracing::error!(pod = %pod.id, error = %de, "undoing a failed CNI ADD (kept for retry)");
                        let _ = self.cache.put_result(&att);
                    }
                    return Err(e);
                }
            }
        }
        let t_plugins = t0.elapsed();
        att.result = prev.clone();
        if att.result.is_some() {
            self.cache.put_result(&att)?;
        }
        tracing::debug!(
            intent_us = t_intent.as_micros() as u64,
            plugins_us = (t_plugins - t_intent).as_micros() as u64,
            result_us = (t0.elapsed() - t_plugins).as_micros() as u64,
            "CNI ADD"
        );
        let result = prev.unwrap_or(Value::Null);
        Ok(Some(Added {
            network: net.name.clone(),
            ips: result::pod_ips(&result),
            result,
        }))
    }

    /// One plugin call for an attachment; Ok(stdout) on success.
    fn call(
        &self,
        att: &Attachment,
        net: &NetworkConfigList,
        p: &config::PluginConfig,
        command: &'static str,
        prev: Option<&Value>,
    ) -> Result<Vec<u8>, NetError> {
        let bin = self.find_plugin(&p.kind).ok_or_else(|| NetError::Plugin {
            network: net.name.clone(),
            plugin: p.kind.clone(),
            command,
            message: format!("binary not found in {}", self.cni_path()),
        })?;
        // A namespace already gone is passed as none: plugins then release
        // what they hold outside it (IPAM, host rules) and succeed.
        let netns = if command == "DEL" && !att.netns.exists() {
            String::new()
        } else {
            att.netns.display().to_string()
        };
        let env = plugin_env(
            std::env::vars_os(),
            &[
                ("CNI_COMMAND", command.into()),
                ("CNI_CONTAINERID", att.container_id.clone()),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", att.if_name.clone()),
                ("CNI_ARGS", runtime::cni_args_string(&att.cni_args)),
                ("CNI_PATH", self.cni_path()),
            ],
        );
        let stdin = runtime::plugin_stdin(net, p, prev, &att.capability_args);
        let t = Instant::now();
        let out = exec::run(&bin, &env, &stdin, self.opts.plugin_timeout)?;
        let ran = t.elapsed();
        tracing::debug!(plugin = %p.kind, command, us = ran.as_micros() as u64, code = ?out.code, "CNI plugin called");
        if out.code != Some(0) {
            return Err(NetError::Plugin {
                network: net.name.clone(),
                plugin: p.kind.clone(),
                command,
                message: result::plugin_error(&out.stdout, &out.stderr),
            });
        }
        Ok(out.stdout)
    }

    fn del_attachment(&self, att: &Attachment) -> Result<(), NetError> {
        let net = att.network.to_list();
        let prev = if Version::parse(&net.cni_version).del_has_prev_result() {
            att.result.as_ref()
        } else {
            None
        };
        for p in net.plugins.iter().rev() {
            self.call(att, &net, p, "DEL", prev)?;
        }
        self.cache.remove(&att.container_id, &att.if_name)?;
        Ok(())
    }

    /// Detaches a pod (DEL through the chain, in reverse, with the config,
    /// arguments and result ADD used). Nothing cached: nothing to do.
    pub fn del(&self, container_id: &str) -> Result<(), NetError> {
        match self.cache.get(container_id, IFNAME)? {
            Some(att) => self.del_attachment(&att),
            None => Ok(()),
        }
    }

    /// The cached attachment of a pod, if any.
    pub fn attachment(&self, container_id: &str) -> Option<Attachment> {
        self.cache.get(container_id, IFNAME).ok().flatten()
    }

    /// CHECK (0.4.0 on, unless the network disables it): the plugins
    /// confirm the pod's network is as ADD left it.
    pub fn check(&self, container_id: &str) -> Result<(), NetError> {
        let Some(att) = self.cache.get(container_id, IFNAME)? else {
            return Ok(());
        };
        let net = att.network.to_list();
        if !Version::parse(&net.cni_version).has_check() || net.disable_check {
            return Ok(());
        }
        let Some(res) = att.result.clone() else {
            return Ok(());
        };
        for p in &net.plugins {
            self.call(&att, &net, p, "CHECK", Some(&res))?;
        }
        Ok(())
    }

    /// At start-up, before serving: the cached attachments whose pods are
    /// not among `live` (being set up or torn down when the daemon died,
    /// or the host rebooted). Only reads the cache; [`Cni::collect`]
    /// deletes them.
    pub fn stale(&self, live: &HashSet<String>) -> Stale {
        let (all, bad) = self.cache.list();
        for (p, e) in &bad {
            tracing::warn!(file = %p.display(), error = %e, "unreadable CNI attachment record; left in place");
        }
        Stale {
            attachments: all
                .into_iter()
                .filter(|a| !live.contains(&a.container_id))
                .collect(),
            unreadable: bad.len(),
        }
    }

    /// After serving began (plugins may need pods of this node that only
    /// a serving runtime can run): DEL of each stale attachment, then CNI
    /// 1.1 GC with the attachments that remain valid. Returns the ids
    /// detached.
    pub fn collect(&self, stale: Stale) -> Vec<String> {
        let mut detached = Vec::new();
        let gone: HashSet<String> = stale
            .attachments
            .iter()
            .map(|a| a.container_id.clone())
            .collect();
        for att in stale.attachments {
            let killed = exec::kill_leftovers(&att.container_id, Duration::from_secs(5));
            if killed > 0 {
                tracing::warn!(pod = %att.container_id, killed, "CNI plugins a stopped daemon left running killed before DEL");
            }
            match self.del_attachment(&att) {
                Ok(()) => {
                    tracing::info!(pod = %att.container_id, network = %att.network.name, "CNI attachment of a pod that is gone deleted");
                    detached.push(att.container_id.clone());
                }
                Err(e) => {
                    tracing::error!(pod = %att.container_id, error = %e, "deleting a stale CNI attachment (kept for the next start)")
                }
            }
        }
        let Some(net) = self.network() else {
            return detached;
        };
        if !Version::parse(&net.cni_version).has_status_and_gc() || net.disable_gc {
            return detached;
        }
        if stale.unreadable > 0 {
            // An attachment that cannot be read cannot be named valid: GC
            // could free a live pod's address. Skipped until it is fixed.
            tracing::warn!(
                unreadable = stale.unreadable,
                "CNI GC skipped: unreadable attachment records"
            );
            return detached;
        }
        // Alone: no ADD is between writing its record and finishing.
        let _gc = self.gc_lock.write().unwrap_or_else(|p| p.into_inner());
        let (now, _) = self.cache.list();
        let list: Vec<Value> = now
            .iter()
            .filter(|a| a.network.name == net.name && !gone.contains(&a.container_id))
            .map(|a| json!({"containerID": a.container_id, "ifname": a.if_name}))
            .collect();
        for p in &net.plugins {
            let Some(bin) = self.find_plugin(&p.kind) else {
                continue;
            };
            let mut cfg = p.clone();
            cfg.raw.insert(
                "cni.dev/valid-attachments".into(),
                Value::Array(list.clone()),
            );
            let stdin = runtime::plugin_stdin(&net, &cfg, None, &Map::new());
            let env = plugin_env(
                std::env::vars_os(),
                &[("CNI_COMMAND", "GC".into()), ("CNI_PATH", self.cni_path())],
            );
            match exec::run(&bin, &env, &stdin, self.opts.plugin_timeout) {
                Ok(o) if o.code == Some(0) => {}
                Ok(o) => {
                    tracing::warn!(plugin = %p.kind, error = %result::plugin_error(&o.stdout, &o.stderr), "CNI GC")
                }
                Err(e) => tracing::warn!(plugin = %p.kind, error = %e, "CNI GC"),
            }
        }
        detached
    }
}

/// Attachments to delete at start-up (see [`Cni::stale`]).
#[derive(Debug, Default)]
pub struct Stale {
    pub attachments: Vec<Attachment>,
    unreadable: usize,
}

fn ready() -> Readiness {
    Readiness {
        ready: true,
        reason: String::new(),
        message: String::new(),
    }
}

fn not_ready(message: String) -> Readiness {
    Readiness {
        ready: false,
        reason: NOT_READY_REASON.into(),
        message,
    }
}
