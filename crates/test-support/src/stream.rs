//! Streaming clients for tests and benchmarks: what kubectl and crictl do
//! with the URL Exec, Attach and PortForward return, over SPDY/3.1 (the
//! SPDY session is crius-streaming's own, in client mode; the HTTP upgrade
//! is written here by hand) and over WebSocket (tokio-tungstenite).

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use crius_streaming::spdy::{Session, Stream};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Spdy,
    WebSocket,
}

/// Which streams a remote command opens (as client-go's StreamOptions).
#[derive(Debug, Clone, Copy, Default)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// What came back, in full.
#[derive(Debug, Default, Clone)]
pub struct Finished {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The error stream's content (a metav1.Status as JSON for v4/v5).
    pub error: Vec<u8>,
}

impl Finished {
    /// The exit code as client-go reads it from the status: 0 for
    /// Success, the ExitCode cause for NonZeroExitCode; None otherwise.
    pub fn exit_code(&self) -> Option<i32> {
        if self.error.is_empty() {
            return Some(0);
        }
        let v: serde_json::Value = serde_json::from_slice(&self.error).ok()?;
        match v["status"].as_str()? {
            "Success" => Some(0),
            _ if v["reason"] == "NonZeroExitCode" => v["details"]["causes"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "ExitCode")?["message"]
                .as_str()?
                .parse()
                .ok(),
            _ => None,
        }
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Output as it arrives: (1 stdout, 2 stderr, 3 error) and its bytes.
type Out = mpsc::Receiver<(u8, Bytes)>;

/// An open exec or attach session.
pub struct Remote {
    stdin: Option<mpsc::Sender<Option<Bytes>>>,
    resize: Option<mpsc::Sender<(u16, u16)>>,
    out: Out,
    got: Finished,
    _keep: Vec<tokio::task::JoinHandle<()>>,
    _session: Option<Session>,
}

/// An open TCP connection to `host:port` of a `http://` or `https://` URL
/// (TLS trusting anything, as critest's clients do).
async fn dial(url: &str) -> Result<(Box<dyn Io>, String, String)> {
    let (scheme, rest) = url.split_once("://").context("URL without a scheme")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let tcp = TcpStream::connect(hostport)
        .await
        .with_context(|| format!("connecting to {hostport}"))?;
    tcp.set_nodelay(true)?;
    let io: Box<dyn Io> = match scheme {
        "http" => Box::new(tcp),
        "https" => Box::new(crate::stream::tls::connect(tcp, None).await?),
        s => bail!("unknown scheme {s}"),
    };
    Ok((io, hostport.to_string(), path.to_string()))
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Sends an HTTP/1.1 upgrade request and reads the response head.
/// Returns the status code and the response headers (lower-case names).
pub async fn upgrade_request<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, Vec<(String, String)>)> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    io.write_all(req.as_bytes()).await?;
    // Byte by byte: nothing beyond the head may be consumed here.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if io.read(&mut b).await? == 0 {
            bail!("connection closed in the response head");
        }
        head.push(b[0]);
        if head.len() > 64 * 1024 {
            bail!("response head too long");
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let hs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, hs))
}

fn h(pairs: &[(&str, &str)]) -> crius_streaming::spdy::Headers {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The HTTP status a failed upgrade answered (404 for a used or expired
/// token), or the error of a connection that did not get that far.
#[derive(Debug)]
pub struct Refused(pub u16);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upgrade refused with HTTP {}", self.0)
    }
}

impl std::error::Error for Refused {}

/// Opens an exec or attach session on `url`.
pub async fn connect(url: &str, t: Transport, s: Streams) -> Result<Remote> {
    match t {
        Transport::Spdy => connect_spdy(url, s).await,
        Transport::WebSocket => connect_ws(url, s).await,
    }
}

async fn connect_spdy(url: &str, s: Streams) -> Result<Remote> {
    let (mut io, host, path) = dial(url).await?;
    let (code, hs) = upgrade_request(
        &mut io,
        "POST",
        &host,
        &path,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
            ("X-Stream-Protocol-Version", "v3.channel.k8s.io"),
        ],
    )
    .await?;
    if code != 101 {
        return Err(Refused(code).into());
    }
    let proto = hs
        .iter()
        .find(|(k, _)| k == "x-stream-protocol-version")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if proto != "v4.channel.k8s.io" {
        bail!("server chose protocol {proto:?}");
    }
    let session = Session::client(io);
    let t = Duration::from_secs(10);
    // client-go's order: error first, then the rest.
    let error = session.open(h(&[("streamtype", "error")]), t).await?;
    let (out_tx, out) = mpsc::channel(64);
    let mut keep = Vec::new();
    let forward = |mut st: Stream, chan: u8, tx: mpsc::Sender<(u8, Bytes)>| {
        tokio::spawn(async move {
            while let Some(d) = st.data.recv().await {
                if tx.send((chan, d)).await.is_err() {
                    break;
                }
            }
        })
    };
    let mut stdin = None;
    if s.stdin {
        let st = session.open(h(&[("streamtype", "stdin")]), t).await?;
        let (tx, mut rx) = mpsc::channel::<Option<Bytes>>(16);
        keep.push(tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                match m {
                    Some(d) => {
                        if st.writer.write(d).await.is_err() {
                            return;
                        }
                    }
                    None => {
                        let _ = st.writer.close().await;
                        return;
                    }
                }
            }
        }));
        stdin = Some(tx);
    }
    if s.stdout {
        let st = session.open(h(&[("streamtype", "stdout")]), t).await?;
        keep.push(forward(st, 1, out_tx.clone()));
    }
    if s.stderr && !s.tty {
        let st = session.open(h(&[("streamtype", "stderr")]), t).await?;
        keep.push(forward(st, 2, out_tx.clone()));
    }
    let mut resize = None;
    if s.tty {
        let st = session.open(h(&[("streamtype", "resize")]), t).await?;
        let (tx, mut rx) = mpsc::channel::<(u16, u16)>(4);
        keep.push(tokio::spawn(async move {
            while let Some((w, hgt)) = rx.recv().await {
                let j = format!("{{\"Width\":{w},\"Height\":{hgt}}}\n");
                if st.writer.write(Bytes::from(j)).await.is_err() {
                    return;
                }
            }
        }));
        resize = Some(tx);
    }
    keep.push(forward(error, 3, out_tx));
    Ok(Remote {
        stdin,
        resize,
        out,
        got: Finished::default(),
        _keep: keep,
        _session: Some(session),
    })
}

async fn connect_ws(url: &str, s: Streams) -> Result<Remote> {
    let (io, _host, _path) = dial(url).await?;
    let ws_url = url.replacen("http", "ws", 1);
    let mut req = ws_url.into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse()?);
    let (ws, resp) = match tokio_tungstenite::client_async(req, io).await {
        Ok(x) => x,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            return Err(Refused(r.status().as_u16()).into())
        }
        Err(e) => return Err(e.into()),
    };
    let proto = resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if proto != "v5.channel.k8s.io" {
        bail!("server chose protocol {proto:?}");
    }
    let (mut sink, mut stream) = ws.split();
    let (out_tx, out) = mpsc::channel(64);
    let (to_ws, mut to_ws_rx) = mpsc::channel::<Message>(16);
    let mut keep = vec![
        tokio::spawn(async move {
            while let Some(m) = to_ws_rx.recv().await {
                if sink.send(m).await.is_err() {
                    return;
                }
            }
        }),
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                if let Message::Binary(b) = m {
                    if let Some((c, rest)) = b.split_first() {
                        if !rest.is_empty()
                            && out_tx
                                .send((*c, Bytes::copy_from_slice(rest)))
                                .await
                                .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }),
    ];
    let mut stdin = None;
    if s.stdin {
        let (tx, mut rx) = mpsc::channel::<Option<Bytes>>(16);
        let to_ws = to_ws.clone();
        keep.push(tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let msg = match m {
                    Some(d) => [&[0u8][..], &d].concat(),
                    // v5: close the stdin channel.
                    None => vec![255, 0],
                };
                if to_ws.send(Message::binary(msg)).await.is_err() {
                    return;
                }
            }
        }));
        stdin = Some(tx);
    }
    let mut resize = None;
    if s.tty {
        let (tx, mut rx) = mpsc::channel::<(u16, u16)>(4);
        let to_ws = to_ws.clone();
        keep.push(tokio::spawn(async move {
            while let Some((w, hgt)) = rx.recv().await {
                let j = format!("\x04{{\"Width\":{w},\"Height\":{hgt}}}");
                if to_ws.send(Message::binary(j.into_bytes())).await.is_err() {
                    return;
                }
            }
        }));
        resize = Some(tx);
    }
    Ok(Remote {
        stdin,
        resize,
        out,
        got: Finished::default(),
        _keep: keep,
        _session: None,
    })
}

impl Remote {
    pub async fn write(&self, data: impl Into<Bytes>) -> Result<()> {
        self.stdin
            .as_ref()
            .context("no stdin stream")?
            .send(Some(data.into()))
            .await
            .map_err(|_| anyhow::anyhow!("stdin closed"))
    }

    pub async fn close_stdin(&mut self) {
        if let Some(s) = self.stdin.take() {
            let _ = s.send(None).await;
        }
    }

    pub async fn resize(&self, width: u16, height: u16) -> Result<()> {
        self.resize
            .as_ref()
            .context("no resize stream")?
            .send((width, height))
            .await
            .map_err(|_| anyhow::anyhow!("resize closed"))
    }

    /// Reads output until stdout contains `needle` (or `timeout`).
    pub async fn wait_stdout(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.got.stdout_str();
            if s.contains(needle) {
                return Ok(s);
            }
            match tokio::time::timeout_at(deadline, self.out.recv()).await {
                Ok(Some(m)) => self.take(m),
                Ok(None) => bail!("session ended; stdout {s:?}"),
                Err(_) => bail!("timed out waiting for {needle:?}; stdout {s:?}"),
            }
        }
    }

    fn take(&mut self, (c, d): (u8, Bytes)) {
        match c {
            1 => self.got.stdout.extend_from_slice(&d),
            2 => self.got.stderr.extend_from_slice(&d),
            3 => self.got.error.extend_from_slice(&d),
            _ => {}
        }
    }

    /// Reads until the server ends the session (or `timeout`).
    pub async fn finish(mut self, timeout: Duration) -> Result<Finished> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.out.recv()).await {
                Ok(Some(m)) => self.take(m),
                Ok(None) => return Ok(self.got),
                Err(_) => bail!("session did not end in {timeout:?}; so far {:?}", self.got),
            }
        }
    }
}

/// Runs a whole exec: `stdin` (then end of file), everything read back.
pub async fn run(url: &str, t: Transport, s: Streams, stdin: Option<Vec<u8>>) -> Result<Finished> {
    let mut r = connect(url, t, s).await?;
    if let Some(data) = stdin {
        for chunk in data.chunks(64 * 1024) {
            r.write(Bytes::copy_from_slice(chunk)).await?;
        }
        r.close_stdin().await;
    }
    r.finish(Duration::from_secs(60)).await
}

/// A port-forward session over SPDY (or SPDY tunnelled in WebSocket, as
/// client-go's `--transport websocket` does).
pub struct Forward {
    session: Session,
    next: u32,
}

/// One forwarded connection.
pub struct ForwardConn {
    pub data: Stream,
    pub error: Stream,
}

impl Forward {
    pub async fn open(url: &str, t: Transport) -> Result<Forward> {
        let (mut io, host, path) = dial(url).await?;
        let session = match t {
            Transport::Spdy => {
                let (code, _) = upgrade_request(
                    &mut io,
                    "POST",
                    &host,
                    &path,
                    &[
                        ("Connection", "Upgrade"),
                        ("Upgrade", "SPDY/3.1"),
                        ("X-Stream-Protocol-Version", "portforward.k8s.io"),
                    ],
                )
                .await?;
                if code != 101 {
                    return Err(Refused(code).into());
                }
                Session::client(io)
            }
            Transport::WebSocket => {
                let mut req = url.replacen("http", "ws", 1).into_client_request()?;
                req.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    "SPDY/3.1+portforward.k8s.io".parse()?,
                );
                let (ws, _) = match tokio_tungstenite::client_async(req, io).await {
                    Ok(x) => x,
                    Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                        return Err(Refused(r.status().as_u16()).into())
                    }
                    Err(e) => return Err(e.into()),
                };
                Session::client(crius_streaming::ws::tunnel(ws))
            }
        };
        Ok(Forward { session, next: 0 })
    }

    /// Opens a connection to `port` in the pod (error stream first, its
    /// writing side closed at once, as client-go does).
    pub async fn connect(&mut self, port: u16) -> Result<ForwardConn> {
        let id = self.next.to_string();
        self.next += 1;
        let p = port.to_string();
        let t = Duration::from_secs(10);
        let error = self
            .session
            .open(
                h(&[("streamtype", "error"), ("port", &p), ("requestid", &id)]),
                t,
            )
            .await?;
        error.writer.close().await?;
        let data = self
            .session
            .open(
                h(&[("streamtype", "data"), ("port", &p), ("requestid", &id)]),
                t,
            )
            .await?;
        Ok(ForwardConn { data, error })
    }
}

impl ForwardConn {
    /// Sends `req`, closes the sending side, reads to the end. The error
    /// stream's text comes second.
    pub async fn request(mut self, req: &[u8]) -> Result<(Vec<u8>, String)> {
        for chunk in req.chunks(32 * 1024) {
            self.data
                .writer
                .write(Bytes::copy_from_slice(chunk))
                .await?;
        }
        self.data.writer.close().await?;
        let mut got = Vec::new();
        while let Some(d) = self.data.data.recv().await {
            got.extend_from_slice(&d);
        }
        let mut err = Vec::new();
        while let Ok(Some(d)) =
            tokio::time::timeout(Duration::from_secs(2), self.error.data.recv()).await
        {
            err.extend_from_slice(&d);
        }
        Ok((got, String::from_utf8_lossy(&err).into_owned()))
    }
}

/// Port-forwarding over kubelet's own WebSocket protocol: one connection
/// per port in the URL's query, on channels 2i and 2i+1.
pub async fn forward_ws_native(
    url: &str,
    ports: &[u16],
    requests: &[&[u8]],
) -> Result<Vec<(Vec<u8>, String)>> {
    let (io, _, _) = dial(url).await?;
    let q: Vec<String> = ports.iter().map(|p| format!("port={p}")).collect();
    let mut req =
        format!("{}?{}", url.replacen("http", "ws", 1), q.join("&")).into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse()?);
    let (mut ws, _) = tokio_tungstenite::client_async(req, io).await?;
    for (i, r) in requests.iter().enumerate() {
        let mut m = vec![(2 * i) as u8];
        m.extend_from_slice(r);
        ws.send(Message::binary(m)).await?;
    }
    let mut out = vec![(Vec::new(), String::new()); ports.len()];
    let mut opened = vec![0usize; 2 * ports.len()];
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        let Message::Binary(b) = m else {
            if matches!(m, Message::Close(_)) {
                break;
            }
            continue;
        };
        let Some((c, rest)) = b.split_first() else {
            continue;
        };
        let c = *c as usize;
        if c >= opened.len() {
            continue;
        }
        // Each channel opens with its port, two bytes little-endian.
        let rest = if opened[c] == 0 {
            opened[c] = 1;
            if rest.len() < 2 || u16::from_le_bytes([rest[0], rest[1]]) != ports[c / 2] {
                bail!("channel {c} did not open with its port: {rest:?}");
            }
            &rest[2..]
        } else {
            rest
        };
        if c.is_multiple_of(2) {
            out[c / 2].0.extend_from_slice(rest);
        } else {
            out[c / 2].1.push_str(&String::from_utf8_lossy(rest));
        }
    }
    Ok(out)
}

pub mod tls {
    //! A TLS client that trusts any server certificate (critest's clients
    //! run with `Insecure: true`), optionally presenting a certificate.
    use anyhow::Result;
    use std::sync::Arc;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::client::danger::{
        HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
    };
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> std::result::Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// Client certificate and key, DER.
    pub type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

    pub async fn connect(
        tcp: tokio::net::TcpStream,
        identity: Option<Identity>,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
        let cfg = match identity {
            Some((certs, key)) => b.with_client_auth_cert(certs, key)?,
            None => b.with_no_client_auth(),
        };
        let c = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        Ok(
            c.connect(ServerName::try_from("localhost")?.to_owned(), tcp)
                .await?,
        )
    }
}
