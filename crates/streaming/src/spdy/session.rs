//! A SPDY/3.1 session over any byte stream (a TCP or TLS connection after
//! an HTTP upgrade, or a WebSocket tunnel): a reader task that decodes
//! frames and routes data to streams, a writer task that owns the
//! outgoing header compressor. Both ends are here: the server (peer opens
//! streams, each is answered with an empty SYN_REPLY at once, as
//! Kubernetes' httpstream does) and the client (tests, benchmarks).
//!
//! No flow control is enforced: spdystream, the Go library every
//! Kubernetes client uses, neither sends nor honours WINDOW_UPDATE, so a
//! window would stall a transfer at 64 KiB. Back-pressure is TCP's: a
//! stream whose consumer is slow stops the reader (bounded channels).

use super::frame::{self, Frame, HeaderCodec, Headers, FLAG_FIN};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// Data frames written are at most this long. spdystream writes 32 KiB
/// and reads up to 16 MiB; larger frames cost fewer headers, copies and
/// wake-ups per byte.
pub const MAX_DATA: usize = 128 * 1024;
/// Streams open at once in one session; more are refused.
pub const MAX_STREAMS: usize = 1024;

enum Out {
    Frame(Frame),
    /// Flush what is queued, close the write side, stop.
    Shutdown(oneshot::Sender<()>),
}

struct Entry {
    data: Option<mpsc::Sender<Bytes>>,
    reply: Option<oneshot::Sender<()>>,
}

type Streams = Arc<Mutex<HashMap<u32, Entry>>>;

/// Sends on one stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Out>,
}

impl StreamWriter {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Writes `data` in frames of at most [`MAX_DATA`] bytes.
    pub async fn write(&self, mut data: Bytes) -> std::io::Result<()> {
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_DATA));
            self.send(Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: chunk,
            })
            .await?;
        }
        Ok(())
    }

    /// Half-closes the stream: an empty data frame with FIN.
    pub async fn close(&self) -> std::io::Result<()> {
        self.send(Frame::Data {
            stream_id: self.id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        })
        .await
    }

    pub async fn reset(&self, status: u32) -> std::io::Result<()> {
        self.send(Frame::RstStream {
            stream_id: self.id,
            status,
        })
        .await
    }

    async fn send(&self, f: Frame) -> std::io::Result<()> {
        self.out
            .send(Out::Frame(f))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "SPDY session closed"))
    }
}

/// One stream: the headers it was opened with, what the peer sends on
/// it (the channel ends at the peer's FIN or reset), and its writer.
pub struct Stream {
    pub headers: Headers,
    pub data: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

impl Stream {
    pub fn header(&self, name: &str) -> Option<&str> {
        frame::header(&self.headers, name)
    }
}

/// A running session. Dropping it (or [`Session::shutdown`]) ends it.
pub struct Session {
    /// Streams the peer opens.
    pub incoming: mpsc::Receiver<Stream>,
    out: mpsc::Sender<Out>,
    streams: Streams,
    next_id: Arc<AtomicU32>,
    reader: tokio::task::JoinHandle<()>,
    writer: Option<tokio::task::JoinHandle<()>>,
    closed: tokio::sync::watch::Receiver<bool>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Server,
    Client,
}

impl Session {
    /// Serves streams the peer (a Kubernetes client) opens.
    pub fn server<S>(io: S) -> Session
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        Self::start(io, Role::Server)
    }

    /// Opens streams on a server (tests and benchmarks).
    pub fn client<S>(io: S) -> Session
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        Self::start(io, Role::Client)
    }

    fn start<S>(io: S, role: Role) -> Session
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(256);
        let (in_tx, in_rx) = mpsc::channel(64);
        let streams: Streams = Arc::default();
        let (streams_r, out_r) = (streams.clone(), out_tx.clone());
        let (closed_tx, closed) = tokio::sync::watch::channel(false);
        let writer = tokio::spawn(write_loop(wr, out_rx));
        let reader = tokio::spawn(async move {
            read_loop(rd, role, streams_r, out_r, in_tx).await;
            let _ = closed_tx.send(true);
        });
        Session {
            incoming: in_rx,
            out: out_tx,
            streams,
            // Clients open odd ids, servers even.
            next_id: Arc::new(AtomicU32::new(if role == Role::Client { 1 } else { 2 })),
            reader,
            writer: Some(writer),
            closed,
        }
    }

    /// Resolves when the peer has closed the connection (or it broke).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut c = self.closed.clone();
        async move {
            let _ = c.wait_for(|v| *v).await;
        }
    }

    /// Opens a stream and waits (up to `timeout`) for the peer's reply.
    pub async fn open(&self, headers: Headers, timeout: Duration) -> std::io::Result<Stream> {
        let id = self.next_id.fetch_add(2, Ordering::Relaxed);
        let (data_tx, data_rx) = mpsc::channel(64);
        let (reply_tx, reply_rx) = oneshot::channel();
        if let Ok(mut s) = self.streams.lock() {
            s.insert(
                id,
                Entry {
                    data: Some(data_tx),
                    reply: Some(reply_tx),
                },
            );
        }
        let writer = StreamWriter {
            id,
            out: self.out.clone(),
        };
        writer
            .send(Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: headers.clone(),
            })
            .await?;
        match tokio::time::timeout(timeout, reply_rx).await {
            Ok(Ok(())) => Ok(Stream {
                headers,
                data: data_rx,
                writer,
            }),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no SYN_REPLY for the stream",
            )),
        }
    }

    /// Sends everything queued, closes the write side, then gives the
    /// peer up to `linger` to close its side, so that data it is still
    /// sending (stdin) does not make the kernel reset the connection
    /// before it has read ours.
    pub async fn shutdown(mut self, linger: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.out.send(Out::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        if let Some(w) = self.writer.take() {
            let _ = w.await;
        }
        let _ = tokio::time::timeout(linger, &mut self.reader).await;
        self.reader.abort();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(w) = &self.writer {
            w.abort();
        }
    }
}

async fn write_loop<W: AsyncWrite>(wr: W, mut rx: mpsc::Receiver<Out>) {
    let mut wr = std::pin::pin!(wr);
    let mut codec = HeaderCodec::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut done = None;
        // Batch what is already queued into one write.
        while let Some(o) = next.take() {
            match o {
                Out::Frame(f) => {
                    if frame::encode(&f, &mut codec, &mut buf).is_err() {
                        return;
                    }
                }
                Out::Shutdown(ack) => {
                    done = Some(ack);
                    break;
                }
            }
            if buf.len() < 256 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            if wr.write_all(&buf).await.is_err() {
                return;
            }
            buf.clear();
        }
        if wr.flush().await.is_err() {
            return;
        }
        if let Some(ack) = done {
            let _ = wr.shutdown().await;
            let _ = ack.send(());
            return;
        }
    }
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead>(
    rd: R,
    role: Role,
    streams: Streams,
    out: mpsc::Sender<Out>,
    incoming: mpsc::Sender<Stream>,
) {
    let mut rd = std::pin::pin!(rd);
    let mut codec = HeaderCodec::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let f = match frame::decode(&mut buf, &mut codec) {
            Ok(Some(f)) => f,
            Ok(None) => {
                if buf.capacity() - buf.len() < 16 * 1024 {
                    buf.reserve(64 * 1024);
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
            Err(e) => {
                tracing::debug!("SPDY: {e}; ending the session");
                let _ = out
                    .send(Out::Frame(Frame::GoAway {
                        last_good: 0,
                        status: 1,
                    }))
                    .await;
                break;
            }
        };
        match f {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                let peer_opens_odd = role == Role::Server;
                let full = streams.lock().map(|s| s.len()).unwrap_or(MAX_STREAMS) >= MAX_STREAMS;
                let dup = streams
                    .lock()
                    .map(|s| s.contains_key(&stream_id))
                    .unwrap_or(true);
                if stream_id == 0 || (stream_id % 2 == 1) != peer_opens_odd || dup || full {
                    let _ = out
                        .send(Out::Frame(Frame::RstStream {
                            stream_id,
                            status: if full {
                                frame::RST_REFUSED_STREAM
                            } else {
                                frame::RST_PROTOCOL_ERROR
                            },
                        }))
                        .await;
                    continue;
                }
                let (data_tx, data_rx) = mpsc::channel(64);
                if let Ok(mut s) = streams.lock() {
                    s.insert(
                        stream_id,
                        Entry {
                            // Opened half-closed: nothing will come.
                            data: (flags & FLAG_FIN == 0).then_some(data_tx),
                            reply: None,
                        },
                    );
                }
                let writer = StreamWriter {
                    id: stream_id,
                    out: out.clone(),
                };
                let _ = out
                    .send(Out::Frame(Frame::SynReply {
                        stream_id,
                        flags: 0,
                        headers: Vec::new(),
                    }))
                    .await;
                if incoming
                    .send(Stream {
                        headers,
                        data: data_rx,
                        writer,
                    })
                    .await
                    .is_err()
                {
                    // Nobody takes streams any more: keep reading so
                    // pings and data still flow for the open ones.
                }
            }
            Frame::SynReply { stream_id, .. } => {
                if let Ok(mut s) = streams.lock() {
                    if let Some(r) = s.get_mut(&stream_id).and_then(|e| e.reply.take()) {
                        let _ = r.send(());
                    }
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let tx = streams
                    .lock()
                    .ok()
                    .and_then(|s| s.get(&stream_id).and_then(|e| e.data.clone()));
                if let Some(tx) = tx {
                    if !data.is_empty() {
                        // The consumer went away: drop the data.
                        let _ = tx.send(data).await;
                    }
                }
                if flags & FLAG_FIN != 0 {
                    if let Ok(mut s) = streams.lock() {
                        if let Some(e) = s.get_mut(&stream_id) {
                            e.data = None;
                        }
                    }
                }
            }
            Frame::RstStream { stream_id, .. } => {
                if let Ok(mut s) = streams.lock() {
                    s.remove(&stream_id);
                }
            }
            Frame::Ping { id } => {
                let _ = out.send(Out::Frame(Frame::Ping { id })).await;
            }
            Frame::GoAway { .. } => break,
            Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Headers { .. }
            | Frame::Unknown { .. } => {}
        }
    }
    // End of the connection: every stream's reader sees its end.
    if let Ok(mut s) = streams.lock() {
        s.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn client_and_server_exchange_streams() {
        let (a, b) = tokio::io::duplex(8 * 1024);
        let client = Session::client(a);
        let mut server = Session::server(b);
        let t = Duration::from_secs(5);
        let opened = tokio::spawn(async move {
            let s1 = client.open(h(&[("streamtype", "stdin")]), t).await.unwrap();
            let mut s2 = client
                .open(h(&[("streamtype", "stdout")]), t)
                .await
                .unwrap();
            // 1 MiB, more than any window, through a small pipe.
            let big = Bytes::from(vec![5u8; 1 << 20]);
            s1.writer.write(big).await.unwrap();
            s1.writer.close().await.unwrap();
            let mut got = Vec::new();
            while let Some(d) = s2.data.recv().await {
                got.extend_from_slice(&d);
            }
            (client, got)
        });
        let mut stdin = server.incoming.recv().await.unwrap();
        assert_eq!(stdin.header("streamtype"), Some("stdin"));
        let stdout = server.incoming.recv().await.unwrap();
        assert_eq!(stdout.header("StreamType"), Some("stdout"));
        let mut n = 0;
        while let Some(d) = stdin.data.recv().await {
            assert!(d.iter().all(|b| *b == 5));
            n += d.len();
        }
        assert_eq!(n, 1 << 20);
        stdout
            .writer
            .write(Bytes::from_static(b"done"))
            .await
            .unwrap();
        stdout.writer.close().await.unwrap();
        let (_client, got) = opened.await.unwrap();
        assert_eq!(got, b"done");
        server.shutdown(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn refuses_streams_with_the_wrong_parity() {
        let (a, b) = tokio::io::duplex(8 * 1024);
        // Two servers: each opens even ids the other must refuse.
        let s1 = Session::server(a);
        let _s2 = Session::server(b);
        let r = s1
            .open(h(&[("streamtype", "x")]), Duration::from_millis(300))
            .await;
        assert!(r.is_err());
    }
}
