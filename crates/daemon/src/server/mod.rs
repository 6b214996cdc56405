//! The gRPC server: the root lock, the unix socket, both CRI services, the
//! per-RPC tracing layer and graceful shutdown.

pub mod error;
pub mod image_service;
mod listener;
mod lock;
pub mod runtime_service;
mod trace;
pub(crate) mod unimplemented;

use crate::config::Config;
use crius_cri_api::v1::image_service_server::ImageServiceServer;
use crius_cri_api::v1::runtime_service_server::RuntimeServiceServer;
use crius_cri_api::MAX_MESSAGE;
use crius_image_store::pull::RetryPolicy;
use crius_image_store::registries::RegistriesConf;
use crius_image_store::{ImageStore, StoreConfig};
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

pub use listener::SOCKET_MODE;
pub use lock::{RootLock, LOCK_FILE};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("another crius{} holds root {root}; only one daemon may use a root", holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    RootInUse { root: PathBuf, holder: Option<u32> },
    #[error("socket {0} is in use by a running process; stop it or choose another --listen")]
    SocketInUse(PathBuf),
    #[error("listen path {0} exists and is not a socket; refusing to remove it")]
    ListenPathNotSocket(PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("image store: {0}")]
    Images(String),
    #[error("runtime handlers: {0}")]
    Runtimes(String),
    #[error("pod and container state: {0}")]
    State(String),
    #[error("serving gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A daemon that holds its root and its socket, ready to serve.
pub struct Server {
    config: Arc<Config>,
    images: Arc<ImageStore>,
    runtimes: Arc<crate::runtimes::Runtimes>,
    manager: Arc<crate::manager::Manager>,
    listener: UnixListener,
    socket_ino: (u64, u64),
    _lock: RootLock,
}

fn create_dir(path: &Path, mode: u32) -> Result<(), ServerError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| ServerError::Io {
            what: format!("creating {}", path.display()),
            source: e,
        })
}

impl Server {
    /// Creates the state directories, takes the root lock and binds the
    /// socket. Fails without side effects on the socket if the root is held.
    pub fn bind(config: Config) -> Result<Self, ServerError> {
        create_dir(&config.root, 0o700)?;
        let lock = RootLock::acquire(&config.root)?;
        // 0711: the default socket lives here, and group members of the
        // 0660 socket must be able to reach it.
        create_dir(&config.runroot, 0o711)?;
        let images = Arc::new(open_image_store(&config)?);
        let info = crate::runtimes::RuntimeInfo::probe(&config).map_err(ServerError::Runtimes)?;
        let config = Arc::new(config);
        let runtimes = Arc::new(crate::runtimes::Runtimes::new(config.clone(), info));
        // Recovers pods and containers before the socket exists, so no RPC
        // sees half-reconciled state.
        let manager =
            crate::manager::Manager::open(config.clone(), images.clone(), runtimes.clone())
                .map_err(ServerError::State)?;
        let listener = listener::bind(&config.listen)?;
        let meta = std::fs::symlink_metadata(&config.listen).map_err(|e| ServerError::Io {
            what: format!("stat {}", config.listen.display()),
            source: e,
        })?;
        tracing::info!(
            listen = %config.listen.display(),
            root = %config.root.display(),
            runroot = %config.runroot.display(),
            lock = %lock.path().display(),
            "crius {} serving CRI v1",
            env!("CARGO_PKG_VERSION"),
        );
        Ok(Self {
            config,
            images,
            runtimes,
            manager,
            listener,
            socket_ino: (meta.dev(), meta.ino()),
            _lock: lock,
        })
    }

    /// Serves until `shutdown` resolves, then stops accepting connections and
    /// lets in-flight RPCs finish for at most `shutdown_timeout_seconds`.
    /// Containers are not touched: they outlive the daemon.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
        notifier: &crate::notify::Notifier,
    ) -> Result<(), ServerError> {
        let Server {
            config,
            images,
            runtimes,
            manager,
            listener,
            socket_ino,
            _lock,
        } = self;
        // Exits are observed (recorded, published) as they happen.
        manager.watch_exits();
        let metrics = if config.enable_metrics {
            Some(start_metrics(&config, manager.clone(), images.clone()).await?)
        } else {
            None
        };
        // SIGHUP re-probes the runtime handlers.
        let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut sig) => {
                let runtimes = runtimes.clone();
                Some(tokio::spawn(async move {
                    while sig.recv().await.is_some() {
                        tracing::info!("SIGHUP: re-probing runtime handlers");
                        runtimes.reprobe().await;
                    }
                }))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; runtime handlers are probed only at start");
                None
            }
        };
        let streams = Arc::new(
            crate::streaming::start(&config, manager.clone())
                .await
                .map_err(|e| ServerError::Io {
                    what: "starting the streaming server".into(),
                    source: std::io::Error::other(e.to_string()),
                })?,
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .layer(trace::RpcTraceLayer)
            .add_service(
                RuntimeServiceServer::new(runtime_service::RuntimeServiceImpl::new(
                    config.clone(),
                    runtimes.clone(),
                    manager.clone(),
                    streams,
                ))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            )
            .add_service(
                ImageServiceServer::new(image_service::ImageServiceImpl::new(
                    images,
                    config.pinned_images.clone(),
                    {
                        let m = manager.clone();
                        Arc::new(move |id: &str| m.container_using_image(id))
                    },
                ))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            );
        let mut serve = tokio::spawn(router.serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            async {
                let _ = stop_rx.await;
            },
        ));

        // Recovered (in `bind`), bound, and now serving: systemd may start
        // what waits for crius.
        notifier.notify(&format!(
            "READY=1\nSTATUS=serving CRI on {}",
            config.listen.display()
        ));
        let early = tokio::select! {
            () = shutdown => None,
            result = &mut serve => Some(result),
        };
        let result = match early {
            Some(result) => result,
            None => {
                notifier.notify("STOPPING=1\nSTATUS=shutting down");
                let grace = Duration::from_secs(config.shutdown_timeout_seconds);
                tracing::info!(
                    grace_seconds = grace.as_secs(),
                    "shutting down: no new connections, waiting for in-flight RPCs"
                );
                let _ = stop_tx.send(());
                match tokio::time::timeout(grace, &mut serve).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(
                            grace_seconds = grace.as_secs(),
                            "in-flight RPCs did not finish in time; exiting anyway"
                        );
                        serve.abort();
                        Ok(Ok(()))
                    }
                }
            }
        };
        if let Some(h) = hup {
            h.abort();
        }
        if let Some(h) = metrics {
            h.abort();
        }
        remove_socket_if_ours(&config.listen, socket_ino);
        let m = manager.clone();
        let _ = tokio::task::spawn_blocking(move || m.shutdown()).await;
        match result {
            Ok(r) => r.map_err(ServerError::from),
            Err(join) => Err(ServerError::Io {
                what: "gRPC server task".into(),
                source: std::io::Error::other(join.to_string()),
            }),
        }
    }
}

/// Binds the metrics endpoint and serves it on a task of its own.
async fn start_metrics(
    config: &Config,
    manager: Arc<crate::manager::Manager>,
    images: Arc<ImageStore>,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let ip: std::net::IpAddr = config
        .metrics_address
        .parse()
        .map_err(|_| ServerError::Io {
            what: format!("metrics_address {:?}", config.metrics_address),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
    let addr = std::net::SocketAddr::new(ip, config.metrics_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError::Io {
            what: format!("binding the metrics endpoint on {addr}"),
            source: e,
        })?;
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(address = %bound, "serving Prometheus metrics at http://{bound}/metrics");
    let registry = Arc::new(crate::metrics::registry(manager, images));
    Ok(tokio::spawn(crate::metrics::serve(listener, registry)))
}

/// The image store under `<root>/images`, with the registries.conf and auth
/// files the config names.
fn open_image_store(config: &Config) -> Result<ImageStore, ServerError> {
    let err = |e: &dyn std::fmt::Display| ServerError::Images(e.to_string());
    let default_path = config.registries_conf == Path::new(crate::config::DEFAULT_REGISTRIES_CONF);
    let registries =
        RegistriesConf::load(&config.registries_conf, default_path).map_err(|e| err(&e))?;
    let mut cfg = StoreConfig::new(config.root.join("images"));
    cfg.registries = registries;
    cfg.auth_files = vec![
        config.auth_file.clone(),
        PathBuf::from(crate::config::KUBELET_AUTH_FILE),
    ];
    cfg.retry = RetryPolicy {
        budget: Duration::from_secs(config.pull_retry_budget_seconds),
        ..RetryPolicy::default()
    };
    cfg.failure_backoff = Duration::from_secs(config.pull_failure_backoff_seconds);
    cfg.max_layer_bytes = config.max_layer_bytes;
    cfg.max_layer_entries = config.max_layer_entries;
    cfg.max_image_bytes = config.max_image_bytes;
    cfg.max_image_entries = config.max_image_entries;
    cfg.mirror_pull_secrets = config.mirror_pull_secrets;
    cfg.max_concurrent_downloads = config.max_concurrent_downloads;
    ImageStore::open(cfg).map_err(|e| err(&e))
}

/// Removes the socket unless another process has replaced it meanwhile.
fn remove_socket_if_ours(path: &Path, ino: (u64, u64)) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if (m.dev(), m.ino()) == ino => {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), error = %e, "removing socket");
            }
        }
        _ => {}
    }
}
