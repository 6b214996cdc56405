//! The daemon's side of the streaming server: its configuration, and the
//! [`Backend`] that runs execs, attaches and port connections through the
//! manager. The protocols are `crius-streaming`'s.

use crate::config::Config;
use crate::manager::Manager;
use crius_streaming::server::{self, Server, TlsFiles};
use crius_streaming::{AttachParams, Backend, BoxFuture, ExecParams, Io, Outcome};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The streaming server's settings from the daemon's configuration.
pub fn server_config(c: &Config) -> server::Config {
    let path = |p: &PathBuf| (!p.as_os_str().is_empty()).then(|| p.clone());
    let tls = path(&c.stream_tls_cert).map(|cert| TlsFiles {
        cert,
        key: c.stream_tls_key.clone(),
        ca: path(&c.stream_tls_ca),
    });
    server::Config {
        // Validated when the configuration was read.
        address: c
            .stream_address
            .parse()
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1])),
        port: c.stream_port,
        tls,
        token_ttl: Duration::from_secs(c.stream_token_ttl_seconds),
        idle_timeout: Duration::from_secs(c.stream_idle_timeout_seconds),
        stream_creation_timeout: Duration::from_secs(30),
    }
}

/// Starts the streaming server over `manager`.
pub async fn start(c: &Config, manager: Arc<Manager>) -> Result<Server, server::ServerError> {
    let s = Server::start(server_config(c), Arc::new(ManagerBackend(manager))).await?;
    tracing::info!(address = %s.local_addr(), "streaming server listening");
    Ok(s)
}

struct ManagerBackend(Arc<Manager>);

impl Backend for ManagerBackend {
    fn exec(&self, p: ExecParams, io: Io) -> BoxFuture<Outcome> {
        let m = self.0.clone();
        Box::pin(async move {
            let span = tracing::info_span!("exec-stream", container = %p.container_id);
            let _e = span.enter();
            m.exec_stream(p, io).await
        })
    }

    fn attach(&self, p: AttachParams, io: Io) -> BoxFuture<Outcome> {
        let m = self.0.clone();
        Box::pin(async move { m.attach_stream(p, io).await })
    }

    fn connect(
        &self,
        pod_id: String,
        port: u16,
    ) -> BoxFuture<std::io::Result<tokio::net::TcpStream>> {
        let m = self.0.clone();
        Box::pin(async move { m.connect_in_pod(&pod_id, port).await })
    }
}
