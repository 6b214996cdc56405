//! Exec and attach sessions over SPDY or WebSocket: gather the streams
//! the client opens, hand the process's side ([`Io`]) to the backend,
//! copy both ways, and end with the status on the error stream.

use crate::spdy::{Session, Stream};
use crate::ws::{self, Framing};
use crate::{AttachParams, Backend, ExecParams, Io, Outcome, TermSize};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// SPDY protocol versions (`X-Stream-Protocol-Version`), newest first.
pub const SPDY_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// Time limits of a session.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For the client to open the streams it asked for.
    pub stream_creation: Duration,
    /// With nothing moving either way, the session is closed (zero: never).
    pub idle: Duration,
}

/// An exec or an attach.
#[derive(Debug, Clone)]
pub enum Command {
    Exec(ExecParams),
    Attach(AttachParams),
}

impl Command {
    fn wants(&self) -> (bool, bool, bool, bool) {
        match self {
            Command::Exec(p) => (p.stdin, p.stdout, p.stderr && !p.tty, p.tty),
            Command::Attach(p) => (p.stdin, p.stdout, p.stderr && !p.tty, p.tty),
        }
    }

    fn argv(&self) -> Vec<String> {
        match self {
            Command::Exec(p) => p.cmd.clone(),
            Command::Attach(_) => Vec::new(),
        }
    }

    async fn run(self, backend: Arc<dyn Backend>, io: Io) -> Outcome {
        match self {
            Command::Exec(p) => backend.exec(p, io).await,
            Command::Attach(p) => backend.attach(p, io).await,
        }
    }
}

/// When data last moved, for the idle timeout.
#[derive(Clone)]
pub struct Activity {
    start: Instant,
    last: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Activity {
    pub fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `limit` (never for zero).
    pub async fn idle(&self, limit: Duration) {
        if limit.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
            let quiet = self.start.elapsed().saturating_sub(last);
            if quiet >= limit {
                return;
            }
            tokio::time::sleep(limit - quiet).await;
        }
    }
}

/// Parses the JSON objects a resize stream carries, one after another,
/// keeping an incomplete tail for the next chunk.
pub fn parse_resizes(buf: &mut Vec<u8>) -> Vec<TermSize> {
    let mut out = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<TermSize>();
    let mut used = 0;
    loop {
        match it.next() {
            Some(Ok(s)) => {
                out.push(s);
                used = it.byte_offset();
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(_)) => {
                // Garbage: drop all of it rather than stall on it.
                used = buf.len();
                break;
            }
            None => {
                used = buf.len();
                break;
            }
        }
    }
    buf.drain(..used);
    out
}

/// Copies what a stream's peer sends into `tx` until it ends.
fn pump_in(mut s: mpsc::Receiver<Bytes>, tx: mpsc::Sender<Bytes>, act: Activity) {
    tokio::spawn(async move {
        while let Some(d) = s.recv().await {
            act.touch();
            if tx.send(d).await.is_err() {
                break;
            }
        }
    });
}

fn pump_resize(mut s: mpsc::Receiver<Bytes>, tx: mpsc::Sender<TermSize>) {
    tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(d) = s.recv().await {
            buf.extend_from_slice(&d);
            if buf.len() > 64 * 1024 {
                buf.clear();
            }
            for size in parse_resizes(&mut buf) {
                if tx.send(size).await.is_err() {
                    return;
                }
            }
        }
    });
}

/// The streams of one SPDY session, by type.
#[derive(Default)]
struct Slots {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

/// An exec or attach over SPDY: the session is already upgraded.
pub async fn serve_spdy(
    mut session: Session,
    protocol: &str,
    cmd: Command,
    backend: Arc<dyn Backend>,
    limits: Limits,
) {
    let (stdin, stdout, stderr, tty) = cmd.wants();
    let resize_wanted = tty && protocol != "v2.channel.k8s.io" && protocol != "channel.k8s.io";
    let json = protocol == "v4.channel.k8s.io";
    let mut got = Slots::default();
    let deadline = tokio::time::Instant::now() + limits.stream_creation;
    let complete = |g: &Slots| {
        g.error.is_some()
            && (!stdin || g.stdin.is_some())
            && (!stdout || g.stdout.is_some())
            && (!stderr || g.stderr.is_some())
            && (!resize_wanted || g.resize.is_some())
    };
    while !complete(&got) {
        let s = match tokio::time::timeout_at(deadline, session.incoming.recv()).await {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(_) => {
                tracing::debug!("streaming: the client did not open its streams in time");
                if let Some(e) = &got.error {
                    let msg = Outcome::Failed(
                        "timed out waiting for the client to create streams".into(),
                    );
                    let _ = e
                        .writer
                        .write(crate::status::encode(&msg, &[], json).into())
                        .await;
                    let _ = e.writer.close().await;
                }
                session.shutdown(Duration::from_secs(1)).await;
                return;
            }
        };
        let slot = match s.header("streamtype") {
            Some("error") => &mut got.error,
            Some("stdin") if stdin => &mut got.stdin,
            Some("stdout") if stdout => &mut got.stdout,
            Some("stderr") if stderr => &mut got.stderr,
            Some("resize") if tty => &mut got.resize,
            _ => {
                let _ = s.writer.reset(crate::spdy::frame::RST_REFUSED_STREAM).await;
                continue;
            }
        };
        if slot.is_some() {
            let _ = s.writer.reset(crate::spdy::frame::RST_PROTOCOL_ERROR).await;
            continue;
        }
        *slot = Some(s);
    }
    let Slots {
        error: s_err,
        stdin: s_in,
        stdout: s_out,
        stderr: s_errout,
        resize: s_resize,
    } = got;
    let Some(s_err) = s_err else { return };
    let act = Activity::default();
    act.touch();
    let mut io = Io {
        stdin: None,
        stdout: None,
        stderr: None,
        resize: None,
    };
    if let Some(s) = s_in {
        let (tx, rx) = mpsc::channel(16);
        pump_in(s.data, tx, act.clone());
        io.stdin = Some(rx);
    }
    if let Some(s) = s_resize {
        let (tx, rx) = mpsc::channel(16);
        pump_resize(s.data, tx);
        io.resize = Some(rx);
    }
    let mut outs = Vec::new();
    for (s, slot) in [(s_out, &mut io.stdout), (s_errout, &mut io.stderr)] {
        if let Some(s) = s {
            let (tx, mut rx) = mpsc::channel::<Bytes>(16);
            let act = act.clone();
            outs.push(tokio::spawn(async move {
                while let Some(d) = rx.recv().await {
                    act.touch();
                    if s.writer.write(d).await.is_err() {
                        return;
                    }
                }
                let _ = s.writer.close().await;
            }));
            *slot = Some(tx);
        }
    }
    let argv = cmd.argv();
    let closed = session.closed();
    let outcome = tokio::select! {
        o = cmd.run(backend, io) => o,
        _ = act.idle(limits.idle) => Outcome::Failed(format!("the session was idle for {:?}", limits.idle)),
        _ = closed => {
            // The client is gone: dropping the run stops it.
            return;
        }
    };
    // Output first, then the status, as clients read them.
    for o in outs {
        let _ = tokio::time::timeout(Duration::from_secs(10), o).await;
    }
    let status = crate::status::encode(&outcome, &argv, json);
    if !status.is_empty() {
        let _ = s_err.writer.write(status.into()).await;
    }
    let _ = s_err.writer.close().await;
    session.shutdown(Duration::from_secs(2)).await;
}

enum WsOut {
    Data(u8, Bytes),
    Close,
}

/// An exec or attach over a WebSocket channel protocol.
pub async fn serve_ws<S>(
    ws: WebSocketStream<S>,
    protocol: &str,
    cmd: Command,
    backend: Arc<dyn Backend>,
    limits: Limits,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let f: Framing = ws::framing(protocol);
    let (stdin, stdout, stderr, tty) = cmd.wants();
    let (mut sink, mut stream) = ws.split();
    let act = Activity::default();
    act.touch();
    // One writer owns the sink; the channels feed it.
    let (out_tx, mut out_rx) = mpsc::channel::<WsOut>(32);
    let writer = tokio::spawn(async move {
        while let Some(o) = out_rx.recv().await {
            match o {
                WsOut::Data(c, d) => {
                    if sink.send(ws::encode(c, &d, f)).await.is_err() {
                        return;
                    }
                }
                WsOut::Close => {
                    let _ = sink.send(ws::normal_close()).await;
                    let _ = sink.flush().await;
                    return;
                }
            }
        }
    });
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(16);
    let (resize_tx, resize_rx) = mpsc::channel::<TermSize>(16);
    let (gone_tx, gone_rx) = tokio::sync::oneshot::channel::<()>();
    let act_r = act.clone();
    let reader = tokio::spawn(async move {
        let mut stdin_tx = stdin.then_some(stdin_tx);
        let resize_tx = tty.then_some(resize_tx);
        let mut resize_buf = Vec::new();
        while let Some(Ok(m)) = stream.next().await {
            if let Message::Close(_) = m {
                break;
            }
            let Some((c, data)) = ws::decode(&m, f) else {
                continue;
            };
            act_r.touch();
            match c {
                ws::STDIN => {
                    if let Some(tx) = &stdin_tx {
                        if !data.is_empty() && tx.send(Bytes::from(data)).await.is_err() {
                            stdin_tx = None;
                        }
                    }
                }
                ws::RESIZE => {
                    if let Some(tx) = &resize_tx {
                        resize_buf.extend_from_slice(&data);
                        for s in parse_resizes(&mut resize_buf) {
                            let _ = tx.send(s).await;
                        }
                    }
                }
                ws::CLOSE if f.close_signal && data.first() == Some(&ws::STDIN) => {
                    stdin_tx = None;
                }
                _ => {}
            }
        }
        let _ = gone_tx.send(());
    });
    let mut io = Io {
        stdin: stdin.then_some(stdin_rx),
        stdout: None,
        stderr: None,
        resize: tty.then_some(resize_rx),
    };
    let mut outs = Vec::new();
    for (want, chan, slot) in [
        (stdout, ws::STDOUT, &mut io.stdout),
        (stderr, ws::STDERR, &mut io.stderr),
    ] {
        if want {
            let (tx, mut rx) = mpsc::channel::<Bytes>(16);
            let out = out_tx.clone();
            let act = act.clone();
            outs.push(tokio::spawn(async move {
                while let Some(d) = rx.recv().await {
                    act.touch();
                    if out.send(WsOut::Data(chan, d)).await.is_err() {
                        return;
                    }
                }
            }));
            *slot = Some(tx);
        }
    }
    let argv = cmd.argv();
    let outcome = tokio::select! {
        o = cmd.run(backend, io) => o,
        _ = act.idle(limits.idle) => Outcome::Failed(format!("the session was idle for {:?}", limits.idle)),
        _ = gone_rx => {
            reader.abort();
            writer.abort();
            return;
        }
    };
    for o in outs {
        let _ = tokio::time::timeout(Duration::from_secs(10), o).await;
    }
    let status = crate::status::encode(&outcome, &argv, f.status_json);
    if !status.is_empty() {
        let _ = out_tx.send(WsOut::Data(ws::ERROR, status.into())).await;
    }
    let _ = out_tx.send(WsOut::Close).await;
    drop(out_tx);
    let _ = writer.await;
    // The client answers our close; give it a moment, then go.
    let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_events_split_anywhere() {
        let all = br#"{"Width":80,"Height":24}
{"Width":100,"Height":40}{"Width":1,"Height":2}"#;
        for cut in 0..all.len() {
            let mut buf = all[..cut].to_vec();
            let mut got = parse_resizes(&mut buf);
            buf.extend_from_slice(&all[cut..]);
            got.extend(parse_resizes(&mut buf));
            assert_eq!(
                got,
                vec![
                    TermSize {
                        width: 80,
                        height: 24
                    },
                    TermSize {
                        width: 100,
                        height: 40
                    },
                    TermSize {
                        width: 1,
                        height: 2
                    },
                ],
                "cut at {cut}"
            );
            assert!(buf.is_empty());
        }
        let mut junk = b"{nope".to_vec();
        assert!(parse_resizes(&mut junk).is_empty());
        assert!(junk.is_empty());
    }
}
