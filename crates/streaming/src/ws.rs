//! WebSocket transports, as kubelet's `wsstream` and client-go speak them.
//!
//! Channel protocols: every message is one channel's data, the channel
//! number first: a byte in the binary protocols (`v5.channel.k8s.io`,
//! `v4.channel.k8s.io`, `channel.k8s.io`), an ASCII digit followed by
//! base64 text in the base64 ones. For exec and attach, 0 is stdin, 1
//! stdout, 2 stderr, 3 the error (status), 4 resize; v5 adds 255, "close
//! the channel named by the payload's byte" (the client's stdin ended).
//!
//! Port-forward over WebSocket comes in two forms: kubelet's own (two
//! channels per `port` query parameter, each opened by a message holding
//! the port as two little-endian bytes) and client-go's tunnel, SPDY
//! carried in binary messages (`SPDY/3.1+portforward.k8s.io`), which
//! [`tunnel`] turns back into a byte stream.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";
pub const V4_BASE64: &str = "v4.base64.channel.k8s.io";
pub const V1: &str = "channel.k8s.io";
pub const V1_BASE64: &str = "base64.channel.k8s.io";
/// client-go's port-forward: SPDY tunnelled in binary messages.
pub const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// The exec/attach protocols, in the order this server prefers them.
pub const REMOTECOMMAND: &[&str] = &[V5, V4, V4_BASE64, V1, V1_BASE64];
/// The port-forward protocols.
pub const PORTFORWARD: &[&str] = &[SPDY_TUNNEL, V4, V4_BASE64, V1, V1_BASE64];

/// Which framing a negotiated protocol uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub base64: bool,
    /// The error channel carries a JSON Status (v4 and later).
    pub status_json: bool,
    /// The client may close channels (v5).
    pub close_signal: bool,
}

pub fn framing(protocol: &str) -> Framing {
    Framing {
        base64: protocol.contains("base64"),
        status_json: protocol.starts_with("v4.") || protocol.starts_with("v5."),
        close_signal: protocol == V5,
    }
}

/// Picks the first protocol the client offers that `supported` has
/// (client order, as kubelet does). None when it offered none of them;
/// an empty offer means the oldest protocol.
pub fn negotiate(offered: &[String], supported: &[&'static str]) -> Option<&'static str> {
    if offered.is_empty() {
        return supported.iter().copied().find(|p| *p == V1);
    }
    offered
        .iter()
        .find_map(|o| supported.iter().copied().find(|s| s == o))
}

/// One channel's data as a message.
pub fn encode(channel: u8, data: &[u8], f: Framing) -> Message {
    if f.base64 {
        use base64::Engine;
        let mut s = String::with_capacity(1 + data.len() * 4 / 3 + 4);
        s.push((b'0' + channel.min(9)) as char);
        s.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
        Message::text(s)
    } else {
        let mut v = Vec::with_capacity(1 + data.len());
        v.push(channel);
        v.extend_from_slice(data);
        Message::binary(v)
    }
}

/// A data message's channel and payload; None for a message that is not
/// channel data (or is malformed: the caller ignores it).
pub fn decode(msg: &Message, f: Framing) -> Option<(u8, Vec<u8>)> {
    match msg {
        Message::Binary(b) if !f.base64 => {
            let (c, rest) = b.split_first()?;
            Some((*c, rest.to_vec()))
        }
        Message::Text(t) if f.base64 => {
            use base64::Engine;
            let t = t.as_str();
            let c = t.as_bytes().first()?.checked_sub(b'0')?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(&t[1..])
                .ok()?;
            Some((c, data))
        }
        _ => None,
    }
}

/// A normal closure (1000): what client-go reads as the end of the
/// session, every stream at end of file.
pub fn normal_close() -> Message {
    Message::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    }))
}

/// Turns a WebSocket whose binary messages carry a byte stream (client-go's
/// SPDY tunnel) back into a byte stream. The pumps end with either side.
pub fn tunnel<S>(ws: WebSocketStream<S>) -> tokio::io::DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut rd, mut wr) = tokio::io::split(theirs);
    let (mut sink, mut stream) = ws.split();
    tokio::spawn(async move {
        // Our bytes out as binary messages; a normal close at the end.
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = sink.close().await;
    });
    tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            let stop = match m {
                Message::Binary(b) => wr.write_all(&b).await.is_err(),
                Message::Close(_) => true,
                _ => false,
            };
            if stop {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    ours
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_client() {
        let o = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(negotiate(&o(&[V5]), REMOTECOMMAND), Some(V5));
        assert_eq!(negotiate(&o(&["v9.x", V4, V5]), REMOTECOMMAND), Some(V4));
        assert_eq!(negotiate(&o(&[]), REMOTECOMMAND), Some(V1));
        assert_eq!(negotiate(&o(&["nope"]), REMOTECOMMAND), None);
        assert_eq!(
            negotiate(&o(&[SPDY_TUNNEL]), PORTFORWARD),
            Some(SPDY_TUNNEL)
        );
        assert_eq!(negotiate(&o(&[SPDY_TUNNEL]), REMOTECOMMAND), None);
    }

    #[test]
    fn framings() {
        for (p, b64, json, close) in [
            (V5, false, true, true),
            (V4, false, true, false),
            (V4_BASE64, true, true, false),
            (V1, false, false, false),
            (V1_BASE64, true, false, false),
        ] {
            let f = framing(p);
            assert_eq!(
                (f.base64, f.status_json, f.close_signal),
                (b64, json, close),
                "{p}"
            );
            let m = encode(STDERR, b"\x00hi\xff", f);
            assert_eq!(decode(&m, f), Some((STDERR, b"\x00hi\xff".to_vec())), "{p}");
        }
        let bin = framing(V5);
        assert_eq!(decode(&Message::binary(Vec::<u8>::new()), bin), None);
        assert_eq!(decode(&Message::text("1aGk="), bin), None);
        let b64 = framing(V1_BASE64);
        assert_eq!(
            decode(&Message::text("1aGk="), b64),
            Some((1, b"hi".to_vec()))
        );
        assert_eq!(decode(&Message::text("1!!"), b64), None);
    }
}
