//! The streaming HTTP(S) server: a token in the path names the request,
//! the client upgrades to SPDY/3.1 or WebSocket, and the session runs.

use crate::remotecommand::{self, Command, Limits};
use crate::spdy::Session;
use crate::token::{TokenCache, TokenError};
use crate::{portforward, ws, Backend, Request};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 1024;

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate this CA signed.
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub address: IpAddr,
    /// Zero: an ephemeral port.
    pub port: u16,
    pub tls: Option<TlsFiles>,
    /// How long a URL stays usable.
    pub token_ttl: Duration,
    /// A session with nothing moving for this long is closed (zero: never).
    pub idle_timeout: Duration,
    /// How long a client has to open the streams it asked for.
    pub stream_creation_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            address: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            tls: None,
            token_ttl: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(4 * 3600),
            stream_creation_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("binding the streaming server to {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("streaming TLS: {0}")]
    Tls(String),
}

struct State {
    tokens: TokenCache,
    backend: Arc<dyn Backend>,
    limits: Limits,
}

/// A running server. Dropping it stops accepting connections.
pub struct Server {
    state: Arc<State>,
    base: String,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start(cfg: Config, backend: Arc<dyn Backend>) -> Result<Server, ServerError> {
        let want = SocketAddr::new(cfg.address, cfg.port);
        let tls = match &cfg.tls {
            Some(t) => Some(tls_acceptor(t)?),
            None => None,
        };
        let listener = TcpListener::bind(want)
            .await
            .map_err(|e| ServerError::Bind(want, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ServerError::Bind(want, e))?;
        // An unspecified address serves everywhere; URLs name loopback,
        // where kubelet (which proxies every stream) reaches it.
        let host = match addr.ip() {
            IpAddr::V4(v) if v.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
            IpAddr::V6(v) if v.is_unspecified() => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{}", SocketAddr::new(host, addr.port()));
        let state = Arc::new(State {
            tokens: TokenCache::new(cfg.token_ttl),
            backend,
            limits: Limits {
                stream_creation: cfg.stream_creation_timeout,
                idle: cfg.idle_timeout,
            },
        });
        let st = state.clone();
        let task = tokio::spawn(accept_loop(listener, tls, st));
        Ok(Server {
            state,
            base,
            addr,
            task,
        })
    }

    /// The single-use URL for a validated request.
    pub fn url(&self, req: Request) -> Result<String, TokenError> {
        let kind = match &req {
            Request::Exec(_) => "exec",
            Request::Attach(_) => "attach",
            Request::PortForward(_) => "portforward",
        };
        let token = self.state.tokens.insert(req)?;
        Ok(format!("{}/{kind}/{token}", self.base))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Tokens handed out and not yet used or expired.
    pub fn outstanding(&self) -> usize {
        self.state.tokens.len()
    }
}

fn tls_acceptor(t: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let err = |what: &str, p: &PathBuf, e: &dyn std::fmt::Display| {
        ServerError::Tls(format!("{what} {}: {e}", p.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert)
        .map_err(|e| err("reading certificate", &t.cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err("reading certificate", &t.cert, &e))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "no certificate in {}",
            t.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&t.key).map_err(|e| err("reading key", &t.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let builder = match &t.ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| err("reading CA", ca, &e))? {
                roots
                    .add(c.map_err(|e| err("reading CA", ca, &e))?)
                    .map_err(|e| err("adding CA", ca, &e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| ServerError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(format!("certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("streaming server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(s)) => serve_connection(TokioIo::new(s), state).await,
                        Ok(Err(e)) => tracing::debug!("streaming TLS handshake from {peer}: {e}"),
                        Err(_) => tracing::debug!("streaming TLS handshake from {peer} timed out"),
                    }
                }
                None => serve_connection(TokioIo::new(tcp), state).await,
            }
        });
    }
}

async fn serve_connection<I>(io: I, state: Arc<State>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(route(req, state)) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(io, svc)
        .with_upgrades()
        .await;
}

fn plain(code: StatusCode, msg: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(msg.into() + "\n")));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Every value of a header, comma lists split.
fn values(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn query_ports(uri: &hyper::Uri) -> Vec<String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "port")
        .map(|(_, v)| v.to_string())
        .collect()
}

fn route(req: hyper::Request<Incoming>, state: Arc<State>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !matches!(kind, "exec" | "attach" | "portforward") || token.is_empty() || token.contains('/')
    {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    let upgrade = values(req.headers(), UPGRADE.as_str())
        .join(",")
        .to_ascii_lowercase();
    let websocket = upgrade.contains("websocket");
    let spdy = upgrade.contains("spdy/3.1");
    if !websocket && !spdy {
        return plain(
            StatusCode::BAD_REQUEST,
            "this URL upgrades to SPDY/3.1 or WebSocket; the request asked for neither",
        );
    }
    // The token is used up here, whatever follows: a URL is good once.
    let request = match state.tokens.consume(token) {
        Some(r) => r,
        None => return plain(StatusCode::NOT_FOUND, "unknown or expired streaming token"),
    };
    let matches_kind = matches!(
        (&request, kind),
        (Request::Exec(_), "exec")
            | (Request::Attach(_), "attach")
            | (Request::PortForward(_), "portforward")
    );
    if !matches_kind {
        return plain(StatusCode::NOT_FOUND, "unknown or expired streaming token");
    }
    if websocket {
        upgrade_websocket(req, request, state)
    } else {
        upgrade_spdy(req, request, state)
    }
}

fn upgrade_spdy(
    req: hyper::Request<Incoming>,
    request: Request,
    state: Arc<State>,
) -> Response<Full<Bytes>> {
    let offered = values(req.headers(), "x-stream-protocol-version");
    let supported: &[&'static str] = match request {
        Request::PortForward(_) => &[portforward::SPDY_PROTOCOL],
        _ => remotecommand::SPDY_PROTOCOLS,
    };
    // Client order, as kubelet's handshake; none offered: the oldest.
    let chosen = if offered.is_empty() {
        supported.last().copied()
    } else {
        offered
            .iter()
            .find_map(|o| supported.iter().copied().find(|s| s == o))
    };
    let Some(chosen) = chosen else {
        return plain(
            StatusCode::FORBIDDEN,
            format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"),
        );
    };
    tokio::spawn(async move {
        let io = match hyper::upgrade::on(req).await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!("streaming: SPDY upgrade failed: {e}");
                return;
            }
        };
        let session = Session::server(io);
        let backend = state.backend.clone();
        match request {
            Request::Exec(p) => {
                remotecommand::serve_spdy(session, chosen, Command::Exec(p), backend, state.limits)
                    .await
            }
            Request::Attach(p) => {
                remotecommand::serve_spdy(
                    session,
                    chosen,
                    Command::Attach(p),
                    backend,
                    state.limits,
                )
                .await
            }
            Request::PortForward(p) => {
                portforward::serve_spdy(session, p, backend, state.limits.idle).await
            }
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(
        "X-Stream-Protocol-Version",
        HeaderValue::from_static(chosen),
    );
    r
}

fn upgrade_websocket(
    req: hyper::Request<Incoming>,
    request: Request,
    state: Arc<State>,
) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return plain(
            StatusCode::BAD_REQUEST,
            "WebSocket upgrade without Sec-WebSocket-Key",
        );
    };
    let offered = values(req.headers(), "sec-websocket-protocol");
    let supported = match request {
        Request::PortForward(_) => ws::PORTFORWARD,
        _ => ws::REMOTECOMMAND,
    };
    let Some(chosen) = ws::negotiate(&offered, supported) else {
        return plain(
            StatusCode::BAD_REQUEST,
            format!("unable to negotiate a WebSocket protocol: client offers {offered:?}, server supports {supported:?}"),
        );
    };
    let ports = query_ports(req.uri());
    tokio::spawn(async move {
        let io = match hyper::upgrade::on(req).await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!("streaming: WebSocket upgrade failed: {e}");
                return;
            }
        };
        let mut cfg = WebSocketConfig::default();
        cfg.max_message_size = Some(16 << 20);
        cfg.max_frame_size = Some(16 << 20);
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(cfg)).await;
        let backend = state.backend.clone();
        match request {
            Request::Exec(p) => {
                remotecommand::serve_ws(socket, chosen, Command::Exec(p), backend, state.limits)
                    .await
            }
            Request::Attach(p) => {
                remotecommand::serve_ws(socket, chosen, Command::Attach(p), backend, state.limits)
                    .await
            }
            Request::PortForward(p) if chosen == ws::SPDY_TUNNEL => {
                let session = Session::server(ws::tunnel(socket));
                portforward::serve_spdy(session, p, backend, state.limits.idle).await
            }
            Request::PortForward(p) => {
                portforward::serve_ws(socket, chosen, p, ports, backend, state.limits.idle).await
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("Sec-WebSocket-Accept", v);
    }
    if !offered.is_empty() {
        h.insert("Sec-WebSocket-Protocol", HeaderValue::from_static(chosen));
    }
    r
}
