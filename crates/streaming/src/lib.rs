//! The CRI streaming server: what `Exec`, `Attach` and `PortForward`
//! return a URL to, as kubelet's streaming library defines it.
//!
//! - [`server`]: the HTTP(S) server (hyper, optionally TLS), the routes
//!   `/exec/<token>`, `/attach/<token>`, `/portforward/<token>`, and the
//!   upgrade to SPDY/3.1 or WebSocket.
//! - [`token`]: single-use, expiring tokens naming a validated request.
//! - [`spdy`]: SPDY/3.1 framing and sessions (no Rust crate speaks it).
//! - [`ws`]: the WebSocket channel protocols (`v5.channel.k8s.io` …) and
//!   the tunnel that carries SPDY over WebSocket (port-forward).
//! - [`remotecommand`]: exec and attach over either transport: streams
//!   by type, resize events, the exit status on the error stream.
//! - [`portforward`]: port forwarding over either transport.
//!
//! What runs a command, joins a container's stdio or dials a port in a
//! pod is the daemon's: it implements [`Backend`].

pub mod portforward;
pub mod remotecommand;
pub mod server;
pub mod spdy;
pub mod status;
pub mod token;
pub mod ws;

use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::mpsc;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A validated Exec request, as the token remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecParams {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A validated Attach request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachParams {
    pub container_id: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A validated PortForward request: the ports, when the request named
/// any, are the only ones that may be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardParams {
    pub pod_id: String,
    pub ports: Vec<u16>,
}

/// What a token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Exec(ExecParams),
    Attach(AttachParams),
    PortForward(PortForwardParams),
}

/// A terminal's size, as `resize` events carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The process's side of a session. A `None` stream was not asked for.
/// `stdin` ends when the client closes its stdin; dropping `stdout` or
/// `stderr` ends that stream for the client.
pub struct Io {
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<mpsc::Sender<Bytes>>,
    pub stderr: Option<mpsc::Sender<Bytes>>,
    pub resize: Option<mpsc::Receiver<TermSize>>,
}

/// How an exec or attach ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited with this code (attach: the session ended, 0).
    Exited(i32),
    /// It could not run, or the session failed.
    Failed(String),
}

/// What the daemon provides: running things in containers and pods.
pub trait Backend: Send + Sync + 'static {
    /// Runs `p.cmd` in the container with `io`; resolves when it has
    /// exited and its output has been handed to `io`.
    fn exec(&self, p: ExecParams, io: Io) -> BoxFuture<Outcome>;
    /// Joins the container's stdio until the client detaches (its stdin
    /// ends) or the container exits.
    fn attach(&self, p: AttachParams, io: Io) -> BoxFuture<Outcome>;
    /// A connection to `localhost:port` inside the pod's network
    /// namespace.
    fn connect(
        &self,
        pod_id: String,
        port: u16,
    ) -> BoxFuture<std::io::Result<tokio::net::TcpStream>>;
}
