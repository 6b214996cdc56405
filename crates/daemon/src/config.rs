//! The daemon's configuration: embedded defaults, a TOML file, command-line
//! overrides, in that order of precedence (lowest first).
//!
//! Everything here is pure: parsing, merging and validation take values and
//! return values, so they are unit-tested without touching the filesystem.
//! `conf/crius.toml` documents every key; a test proves it equals the defaults.

use crius_oci_runtime::HandlerConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The effective configuration of one crius daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Unix socket the CRI gRPC services listen on.
    pub listen: PathBuf,
    /// Persistent state: image store, metadata database, the daemon lock.
    pub root: PathBuf,
    /// Volatile state (tmpfs): per-pod and per-container runtime state.
    pub runroot: PathBuf,
    /// Minimum level of log records; `RUST_LOG` directives refine it.
    pub log_level: LogLevel,
    /// Log record format on stderr.
    pub log_format: LogFormat,
    /// How long in-flight RPCs may run after SIGTERM/SIGINT before the
    /// daemon exits anyway. Containers are never stopped by a shutdown.
    pub shutdown_timeout_seconds: u64,
    /// containers-registries.conf(5) v2 file: search registries, mirrors,
    /// insecure and blocked registries. Missing is fine only at the default path.
    pub registries_conf: PathBuf,
    /// Global pull credentials (docker config.json / containers auth.json
    /// form), used when a pull carries no pull secret. kubelet's
    /// `/var/lib/kubelet/config.json` is also consulted when present.
    pub auth_file: PathBuf,
    /// Total time one registry operation may spend retrying transient
    /// failures (connect errors, timeouts, 5xx, 429) before the pull fails.
    pub pull_retry_budget_seconds: u64,
    /// After a pull of a reference fails, pulls of it fail fast for this long.
    pub pull_failure_backoff_seconds: u64,
    /// Layers of one image downloaded in parallel.
    pub max_concurrent_downloads: usize,
    /// Images kubelet's image garbage collection must keep: exact names
    /// (`registry/repo:tag`, `registry/repo@digest`), or a prefix ending in
    /// `*`. Reported as `pinned` in ListImages and ImageStatus.
    pub pinned_images: Vec<String>,
    /// The runtime handler used when a pod names none (CRI `runtime_handler` "").
    pub default_runtime: String,
    /// Runtime handlers by name (`[runtimes.<name>]`: `path`, `root`,
    /// `extra_args`). Empty: runc and crun, each if its binary is in PATH.
    pub runtimes: BTreeMap<String, HandlerConfig>,
    /// cgroup manager; only `cgroupfs` (on cgroup v1 and v2) is supported.
    pub cgroup_manager: String,
    /// Parent cgroup of containers whose pod names none (kubelet always
    /// names one: `/kubepods/...`).
    pub cgroup_parent: String,
    /// Maximum processes per container (pids cgroup); 0: unlimited. CRI
    /// carries no per-container pids limit (kubelet's podPidsLimit applies
    /// at the pod cgroup).
    pub pids_limit: i64,
    /// Clamp container oom_score_adj to the daemon's own value: `auto`
    /// (when the daemon lacks CAP_SYS_RESOURCE, which lowering needs),
    /// `always`, or `never`.
    pub restrict_oom_score_adj: OomClamp,
    /// AppArmor profile that RuntimeDefault means (hosts with AppArmor).
    pub apparmor_default_profile: String,
    /// Size of a pod's /dev/shm tmpfs in bytes.
    pub shm_size: u64,
    /// StopPodSandbox sends each container still running its stop signal
    /// and waits this long before SIGKILL.
    pub stop_pod_grace_seconds: u64,
    /// Network/IPC/UTS namespace sets made ahead of RunPodSandbox (0: make
    /// each pod's when it is run).
    pub namespace_pool_size: usize,
    /// crius-monitor processes started ahead of StartContainer (0: start
    /// each container's when it is started).
    pub monitor_pool_size: usize,
    /// Mount image volumes noexec too. KEP-4639 dropped noexec in 2025 (a
    /// binary in an image volume must run); a cluster that wants the old
    /// hardening turns it back on.
    pub image_volume_noexec: bool,
    /// Caps on what a pull unpacks (a gzip or zstd bomb, a layer of
    /// millions of files): uncompressed bytes and tar entries, per layer and
    /// per image. Past one, the pull fails and nothing of it is visible.
    pub max_layer_bytes: u64,
    pub max_layer_entries: u64,
    pub max_image_bytes: u64,
    pub max_image_entries: u64,
    /// Send kubelet's pull secret for a registry to its mirrors too. Off: a
    /// mirror gets only its own auth-file entry (or anonymous access), so a
    /// secret never reaches a host it was not issued for.
    pub mirror_pull_secrets: bool,
    /// CNI network configurations (`.conflist`, `.conf`, `.json`), watched:
    /// a network written after the daemon started is used without a restart.
    pub cni_config_dir: PathBuf,
    /// Directories searched, in order, for CNI plugin binaries (`CNI_PATH`).
    pub cni_plugin_dirs: Vec<PathBuf>,
    /// The network pods join, by name; empty: the first valid file in the
    /// config directory in lexical order.
    pub cni_default_network: String,
    /// How long one CNI plugin call may take before it is killed.
    pub cni_plugin_timeout_seconds: u64,
    /// With no CNI network configured, run pods that do not share the
    /// host's network with loopback only. Off (as containerd and CRI-O
    /// behave): RunPodSandbox fails with FAILED_PRECONDITION until a network
    /// is configured, and kubelet retries — a pod started while a network
    /// daemonset is being replaced never comes up Ready without a network.
    pub allow_pods_without_network: bool,
    /// The streaming server (the URLs Exec, Attach and PortForward return):
    /// the address it listens on, and its port (0: an ephemeral port).
    /// kubelet proxies every stream, so loopback is enough on a node.
    pub stream_address: String,
    pub stream_port: u16,
    /// TLS for the streaming server: a certificate and key (PEM); with a
    /// CA, clients must present a certificate it signed. Empty: plain HTTP.
    pub stream_tls_cert: PathBuf,
    pub stream_tls_key: PathBuf,
    pub stream_tls_ca: PathBuf,
    /// How long a streaming URL may wait to be used (it is good once).
    pub stream_token_ttl_seconds: u64,
    /// A session with nothing moving either way for this long is closed
    /// (0: never), as kubelet's `--streaming-connection-idle-timeout`.
    pub stream_idle_timeout_seconds: u64,
    /// GetContainerEvents: events kept for a subscriber that is behind;
    /// one further behind loses the oldest (kubelet relists on a gap).
    pub container_events_buffer: usize,
    /// The Prometheus endpoint (`/metrics`), off by default as CRI-O's:
    /// the address and port it listens on (0: an ephemeral port).
    pub enable_metrics: bool,
    pub metrics_address: String,
    pub metrics_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OomClamp {
    Auto,
    Always,
    Never,
}

pub const DEFAULT_REGISTRIES_CONF: &str = "/etc/containers/registries.conf";
pub const DEFAULT_AUTH_FILE: &str = "/etc/crius/auth.json";
pub const KUBELET_AUTH_FILE: &str = "/var/lib/kubelet/config.json";

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: PathBuf::from("/run/crius/crius.sock"),
            root: PathBuf::from("/var/lib/crius"),
            runroot: PathBuf::from("/run/crius"),
            log_level: LogLevel::Info,
            log_format: LogFormat::Text,
            shutdown_timeout_seconds: 10,
            registries_conf: PathBuf::from(DEFAULT_REGISTRIES_CONF),
            auth_file: PathBuf::from(DEFAULT_AUTH_FILE),
            pull_retry_budget_seconds: 60,
            pull_failure_backoff_seconds: 10,
            max_concurrent_downloads: 6,
            pinned_images: Vec::new(),
            default_runtime: "runc".into(),
            runtimes: BTreeMap::new(),
            cgroup_manager: "cgroupfs".into(),
            cgroup_parent: "/crius".into(),
            pids_limit: 0,
            restrict_oom_score_adj: OomClamp::Auto,
            apparmor_default_profile: "crius-default".into(),
            shm_size: 64 * 1024 * 1024,
            stop_pod_grace_seconds: 10,
            namespace_pool_size: 4,
            monitor_pool_size: 2,
            image_volume_noexec: false,
            max_layer_bytes: crius_image_store::unpack::DEFAULT_MAX_LAYER_BYTES,
            max_layer_entries: crius_image_store::unpack::DEFAULT_MAX_LAYER_ENTRIES,
            max_image_bytes: crius_image_store::unpack::DEFAULT_MAX_IMAGE_BYTES,
            max_image_entries: crius_image_store::unpack::DEFAULT_MAX_IMAGE_ENTRIES,
            mirror_pull_secrets: false,
            cni_config_dir: PathBuf::from("/etc/cni/net.d"),
            cni_plugin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            cni_default_network: String::new(),
            cni_plugin_timeout_seconds: 60,
            allow_pods_without_network: false,
            stream_address: "127.0.0.1".into(),
            stream_port: 0,
            stream_tls_cert: PathBuf::new(),
            stream_tls_key: PathBuf::new(),
            stream_tls_ca: PathBuf::new(),
            stream_token_ttl_seconds: 60,
            stream_idle_timeout_seconds: 4 * 3600,
            container_events_buffer: 1024,
            enable_metrics: false,
            metrics_address: "127.0.0.1".into(),
            metrics_port: 9090,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Values given on the command line; each one set replaces the file's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub listen: Option<PathBuf>,
    pub root: Option<PathBuf>,
    pub runroot: Option<PathBuf>,
    pub log_level: Option<LogLevel>,
    pub log_format: Option<LogFormat>,
    pub registries_conf: Option<PathBuf>,
    pub auth_file: Option<PathBuf>,
    pub cni_config_dir: Option<PathBuf>,
    /// `--allow-pods-without-network` (only turns it on).
    pub allow_pods_without_network: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("reading config file {path}: {message}")]
    Read { path: PathBuf, message: String },
    /// toml's message names the offending key (for unknown keys:
    /// "unknown field `x`, expected one of ...") and its line.
    #[error("invalid config{}: {message}", path.as_ref().map(|p| format!(" file {}", p.display())).unwrap_or_default())]
    Parse {
        path: Option<PathBuf>,
        message: String,
    },
    #[error("invalid config: `{key}` {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Config {
    /// Parses a TOML document; keys it leaves out keep their defaults.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: None,
            message: e.to_string().trim_end().to_string(),
        })?;
        config.normalized()
    }

    /// Reads and parses a config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_toml_str(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: Some(path.to_path_buf()),
                message,
            },
            other => other,
        })
    }

    /// Applies command-line overrides, then validates the result.
    pub fn with_overrides(mut self, o: &Overrides) -> Result<Self, ConfigError> {
        if let Some(v) = &o.listen {
            self.listen = v.clone();
        }
        if let Some(v) = &o.root {
            self.root = v.clone();
        }
        if let Some(v) = &o.runroot {
            self.runroot = v.clone();
        }
        if let Some(v) = o.log_level {
            self.log_level = v;
        }
        if let Some(v) = o.log_format {
            self.log_format = v;
        }
        if let Some(v) = &o.registries_conf {
            self.registries_conf = v.clone();
        }
        if let Some(v) = &o.auth_file {
            self.auth_file = v.clone();
        }
        if let Some(v) = &o.cni_config_dir {
            self.cni_config_dir = v.clone();
        }
        if o.allow_pods_without_network {
            self.allow_pods_without_network = true;
        }
        self.normalized()
    }

    /// The configuration as TOML, as `crius config` prints it.
    pub fn to_toml(&self) -> String {
        // Serialising plain paths, enums and integers cannot fail.
        toml::to_string(self).unwrap_or_default()
    }

    /// Accepts `unix:///path` for `listen` (the form kubelet and crictl use)
    /// and checks that every path is absolute.
    fn normalized(mut self) -> Result<Self, ConfigError> {
        if let Some(p) = self.listen.to_str().and_then(|s| s.strip_prefix("unix://")) {
            self.listen = PathBuf::from(p);
        }
        for (key, path) in [
            ("listen", &self.listen),
            ("root", &self.root),
            ("runroot", &self.runroot),
            ("registries_conf", &self.registries_conf),
            ("auth_file", &self.auth_file),
        ] {
            if !path.is_absolute() {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!(
                        "must be an absolute path, got {:?}",
                        path.display().to_string()
                    ),
                });
            }
        }
        if self.max_concurrent_downloads == 0 {
            return Err(ConfigError::Invalid {
                key: "max_concurrent_downloads",
                reason: "must be at least 1".into(),
            });
        }
        if self.cgroup_manager != "cgroupfs" {
            return Err(ConfigError::Invalid {
                key: "cgroup_manager",
                reason: format!(
                    "{:?} is not supported; crius manages cgroups with \"cgroupfs\"",
                    self.cgroup_manager
                ),
            });
        }
        if !self.cgroup_parent.starts_with('/') {
            return Err(ConfigError::Invalid {
                key: "cgroup_parent",
                reason: format!(
                    "must be an absolute cgroup path, got {:?}",
                    self.cgroup_parent
                ),
            });
        }
        if self.pids_limit < 0 {
            return Err(ConfigError::Invalid {
                key: "pids_limit",
                reason: "must be 0 (unlimited) or positive".into(),
            });
        }
        if self.shm_size == 0 {
            return Err(ConfigError::Invalid {
                key: "shm_size",
                reason: "must be positive".into(),
            });
        }
        if !self.cni_default_network.is_empty()
            && !crius_network::config::valid_name(&self.cni_default_network)
        {
            return Err(ConfigError::Invalid {
                key: "cni_default_network",
                reason: format!("{:?} is not a CNI network name", self.cni_default_network),
            });
        }
        if self.cni_plugin_timeout_seconds == 0 {
            return Err(ConfigError::Invalid {
                key: "cni_plugin_timeout_seconds",
                reason: "must be positive".into(),
            });
        }
        if self.stream_address.parse::<std::net::IpAddr>().is_err() {
            return Err(ConfigError::Invalid {
                key: "stream_address",
                reason: format!("{:?} is not an IP address", self.stream_address),
            });
        }
        let tls = [
            ("stream_tls_cert", &self.stream_tls_cert),
            ("stream_tls_key", &self.stream_tls_key),
            ("stream_tls_ca", &self.stream_tls_ca),
        ];
        for (key, path) in tls {
            if !path.as_os_str().is_empty() && !path.is_absolute() {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!(
                        "must be an absolute path, got {:?}",
                        path.display().to_string()
                    ),
                });
            }
        }
        let (cert, key, ca) = (
            !self.stream_tls_cert.as_os_str().is_empty(),
            !self.stream_tls_key.as_os_str().is_empty(),
            !self.stream_tls_ca.as_os_str().is_empty(),
        );
        if cert != key || (ca && !cert) {
            return Err(ConfigError::Invalid {
                key: if cert { "stream_tls_key" } else { "stream_tls_cert" },
                reason: "TLS needs both stream_tls_cert and stream_tls_key (stream_tls_ca only with them)".into(),
            });
        }
        if self.stream_token_ttl_seconds == 0 {
            return Err(ConfigError::Invalid {
                key: "stream_token_ttl_seconds",
                reason: "must be positive".into(),
            });
        }
        if self.container_events_buffer == 0 || self.container_events_buffer > 1 << 20 {
            return Err(ConfigError::Invalid {
                key: "container_events_buffer",
                reason: "must be between 1 and 1048576".into(),
            });
        }
        if self.metrics_address.parse::<std::net::IpAddr>().is_err() {
            return Err(ConfigError::Invalid {
                key: "metrics_address",
                reason: format!("{:?} is not an IP address", self.metrics_address),
            });
        }
        if self.root == self.runroot {
            return Err(ConfigError::Invalid {
                key: "runroot",
                reason: "must differ from `root`".into(),
            });
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../../conf/crius.toml");

    #[test]
    fn shipped_config_equals_embedded_defaults() {
        assert_eq!(Config::from_toml_str(SHIPPED).unwrap(), Config::default());
    }

    #[test]
    fn shipped_config_documents_every_key() {
        // Every key of the defaults appears, commented, in conf/crius.toml.
        let defaults = Config::default().to_toml();
        for line in defaults.lines().filter(|l| l.contains(" = ")) {
            let key = line.split(" = ").next().unwrap();
            assert!(
                SHIPPED.lines().any(|l| l.starts_with(&format!("{key} = "))),
                "conf/crius.toml lacks `{key}`"
            );
        }
    }

    #[test]
    fn runtime_keys_are_validated() {
        for (doc, key) in [
            ("cgroup_manager = \"systemd\"", "cgroup_manager"),
            ("cgroup_parent = \"kubepods\"", "cgroup_parent"),
            ("pids_limit = -1", "pids_limit"),
            ("shm_size = 0", "shm_size"),
            ("cni_default_network = \"a/b\"", "cni_default_network"),
            (
                "cni_plugin_timeout_seconds = 0",
                "cni_plugin_timeout_seconds",
            ),
            ("stream_address = \"localhost\"", "stream_address"),
            ("stream_tls_cert = \"/c.pem\"", "stream_tls_key"),
            ("stream_tls_key = \"/k.pem\"", "stream_tls_cert"),
            ("stream_tls_ca = \"/ca.pem\"", "stream_tls_cert"),
            (
                "stream_tls_cert = \"c.pem\"\nstream_tls_key = \"/k.pem\"",
                "stream_tls_cert",
            ),
            ("stream_token_ttl_seconds = 0", "stream_token_ttl_seconds"),
            ("container_events_buffer = 0", "container_events_buffer"),
            ("metrics_address = \"localhost\"", "metrics_address"),
        ] {
            let e = Config::from_toml_str(doc).unwrap_err();
            assert!(e.to_string().contains(key), "{doc}: {e}");
        }
        let e = Config::from_toml_str("restrict_oom_score_adj = \"sometimes\"").unwrap_err();
        assert!(e.to_string().contains("restrict_oom_score_adj"), "{e}");
    }

    #[test]
    fn toml_round_trips() {
        let c = Config {
            listen: "/tmp/x.sock".into(),
            root: "/tmp/root".into(),
            runroot: "/tmp/run".into(),
            log_level: LogLevel::Trace,
            log_format: LogFormat::Json,
            shutdown_timeout_seconds: 3,
            registries_conf: "/tmp/reg.conf".into(),
            auth_file: "/tmp/auth.json".into(),
            pull_retry_budget_seconds: 5,
            pull_failure_backoff_seconds: 0,
            max_concurrent_downloads: 8,
            pinned_images: vec!["registry.k8s.io/pause*".into()],
            default_runtime: "fast".into(),
            runtimes: [(
                "fast".to_string(),
                HandlerConfig {
                    path: "/usr/bin/crun".into(),
                    root: "/run/fast".into(),
                    extra_args: vec!["--debug".into()],
                },
            )]
            .into_iter()
            .collect(),
            cgroup_manager: "cgroupfs".into(),
            cgroup_parent: "/kubepods".into(),
            pids_limit: 4096,
            restrict_oom_score_adj: OomClamp::Never,
            apparmor_default_profile: "tight".into(),
            shm_size: 1 << 20,
            stop_pod_grace_seconds: 3,
            namespace_pool_size: 0,
            monitor_pool_size: 7,
            image_volume_noexec: true,
            max_layer_bytes: 1,
            max_layer_entries: 2,
            max_image_bytes: 3,
            max_image_entries: 4,
            mirror_pull_secrets: true,
            cni_config_dir: "/tmp/net.d".into(),
            cni_plugin_dirs: vec!["/tmp/bin".into()],
            cni_default_network: "pods".into(),
            cni_plugin_timeout_seconds: 9,
            allow_pods_without_network: true,
            stream_address: "::1".into(),
            stream_port: 10010,
            stream_tls_cert: "/etc/crius/stream.pem".into(),
            stream_tls_key: "/etc/crius/stream.key".into(),
            stream_tls_ca: "/etc/crius/ca.pem".into(),
            stream_token_ttl_seconds: 30,
            stream_idle_timeout_seconds: 0,
            container_events_buffer: 16,
            enable_metrics: true,
            metrics_address: "::".into(),
            metrics_port: 9537,
        };
        assert_eq!(Config::from_toml_str(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn parse_table() {
        struct Case {
            toml: &'static str,
            want: Result<fn(&mut Config), &'static str>,
        }
        let cases = [
            Case {
                toml: "",
                want: Ok(|_| {}),
            },
            Case {
                toml: "root = \"/srv/crius\"",
                want: Ok(|c| c.root = "/srv/crius".into()),
            },
            Case {
                toml: "listen = \"unix:///tmp/c.sock\"",
                want: Ok(|c| c.listen = "/tmp/c.sock".into()),
            },
            Case {
                toml: "log_level = \"debug\"\nlog_format = \"json\"",
                want: Ok(|c| {
                    c.log_level = LogLevel::Debug;
                    c.log_format = LogFormat::Json
                }),
            },
            Case {
                toml: "bogus_key = 1",
                want: Err("unknown field `bogus_key`"),
            },
            Case {
                toml: "log_level = \"loud\"",
                want: Err("log_level"),
            },
            Case {
                toml: "root = 5",
                want: Err("root"),
            },
            Case {
                toml: "root = \"relative/dir\"",
                want: Err("`root` must be an absolute path"),
            },
            Case {
                toml: "runroot = \"/var/lib/crius\"",
                want: Err("`runroot` must differ"),
            },
            Case {
                toml: "shutdown_timeout_seconds = -1",
                want: Err("shutdown_timeout_seconds"),
            },
            Case {
                toml: "root = ",
                want: Err("invalid config"),
            },
        ];
        for case in cases {
            let got = Config::from_toml_str(case.toml);
            match case.want {
                Ok(edit) => {
                    let mut want = Config::default();
                    edit(&mut want);
                    assert_eq!(got, Ok(want), "toml: {:?}", case.toml);
                }
                Err(fragment) => {
                    let msg = got.expect_err(case.toml).to_string();
                    assert!(
                        msg.contains(fragment),
                        "toml {:?}: {msg:?} lacks {fragment:?}",
                        case.toml
                    );
                }
            }
        }
    }

    #[test]
    fn overrides_replace_file_values() {
        let file = Config::from_toml_str("root = \"/a\"\nlog_level = \"warn\"").unwrap();
        let o = Overrides {
            root: Some("/b".into()),
            listen: Some("unix:///b/c.sock".into()),
            ..Default::default()
        };
        let c = file.with_overrides(&o).unwrap();
        assert_eq!(c.root, PathBuf::from("/b"));
        assert_eq!(c.listen, PathBuf::from("/b/c.sock"));
        assert_eq!(
            c.log_level,
            LogLevel::Warn,
            "unset override keeps the file's value"
        );
        let bad = Config::default().with_overrides(&Overrides {
            runroot: Some("rel".into()),
            ..Default::default()
        });
        assert!(bad.unwrap_err().to_string().contains("`runroot`"));
    }
}
