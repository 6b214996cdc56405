//! Port forwarding: each forwarded connection is a pair of streams (data
//! and error) the client opens, and a connection to `localhost:<port>` in
//! the pod's network namespace that the backend dials.
//!
//! Over SPDY (`portforward.k8s.io`, also tunnelled over WebSocket) the
//! pair shares a `requestID` header and names its `port`; many pairs,
//! ports and connections share one session. Over kubelet's WebSocket
//! protocol, the `port` query parameters name the ports, one connection
//! each, on channels 2i (data) and 2i+1 (error).

use crate::remotecommand::Activity;
use crate::spdy::{Session, Stream};
use crate::ws::{self, Framing};
use crate::{Backend, PortForwardParams};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub const SPDY_PROTOCOL: &str = "portforward.k8s.io";

/// A port the client named, checked: a number in 1..=65535 and, when the
/// request listed ports, one of them.
pub fn check_port(p: &PortForwardParams, raw: &str) -> Result<u16, String> {
    let port: u16 = raw
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port {raw:?}: want 1-65535"))?;
    if !p.ports.is_empty() && !p.ports.contains(&port) {
        return Err(format!(
            "port {port} was not among the ports of the PortForward request {:?}",
            p.ports
        ));
    }
    Ok(port)
}

/// Port-forwarding over a SPDY session, until the client closes it.
pub async fn serve_spdy(
    mut session: Session,
    params: PortForwardParams,
    backend: Arc<dyn Backend>,
    idle: Duration,
) {
    let act = Activity::default();
    act.touch();
    // Streams wait here for their partner, by request id.
    let mut pending: HashMap<String, Stream> = HashMap::new();
    // Dropped at the end of the session: every forward is aborted.
    let mut forwards = tokio::task::JoinSet::new();
    loop {
        let s = tokio::select! {
            s = session.incoming.recv() => match s { Some(s) => s, None => break },
            _ = act.idle(idle) => break,
        };
        act.touch();
        let Some(id) = s.header("requestid").map(str::to_string) else {
            let _ = s.writer.reset(crate::spdy::frame::RST_PROTOCOL_ERROR).await;
            continue;
        };
        let Some(other) = pending.remove(&id) else {
            if pending.len() >= 512 {
                let _ = s.writer.reset(crate::spdy::frame::RST_REFUSED_STREAM).await;
                continue;
            }
            pending.insert(id, s);
            continue;
        };
        let (data, error) = match (s.header("streamtype"), other.header("streamtype")) {
            (Some("data"), Some("error")) => (s, other),
            (Some("error"), Some("data")) => (other, s),
            _ => {
                let _ = s.writer.reset(crate::spdy::frame::RST_PROTOCOL_ERROR).await;
                let _ = other
                    .writer
                    .reset(crate::spdy::frame::RST_PROTOCOL_ERROR)
                    .await;
                continue;
            }
        };
        let params = params.clone();
        let backend = backend.clone();
        let act = act.clone();
        while forwards.try_join_next().is_some() {}
        forwards.spawn(async move {
            let port = match data.header("port").map(|p| check_port(&params, p)) {
                Some(Ok(p)) => p,
                Some(Err(e)) => return fail(&data, &error, &params, 0, &e).await,
                None => return fail(&data, &error, &params, 0, "no port header").await,
            };
            let conn = match backend.connect(params.pod_id.clone(), port).await {
                Ok(c) => c,
                Err(e) => return fail(&data, &error, &params, port, &e.to_string()).await,
            };
            splice(conn, data, act).await;
            let _ = error.writer.close().await;
        });
    }
    drop(forwards);
    session.shutdown(Duration::from_millis(500)).await;
}

/// Reports a connection that could not be made on its error stream, and
/// ends its data stream: a client waiting on it would wait forever.
async fn fail(data: &Stream, error: &Stream, params: &PortForwardParams, port: u16, msg: &str) {
    let text = format!(
        "error forwarding port {port} to pod {}: {msg}",
        params.pod_id
    );
    tracing::debug!("{text}");
    let _ = error.writer.write(Bytes::from(text)).await;
    let _ = error.writer.close().await;
    let _ = data.writer.close().await;
}

/// Copies between a connection and a data stream, half-closing each side
/// when the other ends.
async fn splice(conn: tokio::net::TcpStream, data: Stream, act: Activity) {
    let (mut rd, mut wr) = conn.into_split();
    let Stream {
        data: mut incoming,
        writer,
        ..
    } = data;
    let act2 = act.clone();
    let to_pod = async move {
        while let Some(d) = incoming.recv().await {
            act2.touch();
            if wr.write_all(&d).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    let from_pod = async move {
        let mut buf = vec![0u8; 128 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    act.touch();
                    if writer
                        .write(Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = writer.close().await;
    };
    tokio::join!(to_pod, from_pod);
}

/// Port-forwarding over kubelet's WebSocket protocol: one connection per
/// port the URL's query names.
pub async fn serve_ws<S>(
    ws: WebSocketStream<S>,
    protocol: &str,
    params: PortForwardParams,
    ports: Vec<String>,
    backend: Arc<dyn Backend>,
    idle: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let f: Framing = ws::framing(protocol);
    let (mut sink, mut stream) = ws.split();
    let act = Activity::default();
    act.touch();
    let (out_tx, mut out_rx) = mpsc::channel::<Option<(u8, Bytes)>>(64);
    let writer = tokio::spawn(async move {
        while let Some(o) = out_rx.recv().await {
            match o {
                Some((c, d)) => {
                    if sink.send(ws::encode(c, &d, f)).await.is_err() {
                        return;
                    }
                }
                None => break,
            }
        }
        let _ = sink.send(ws::normal_close()).await;
        let _ = sink.flush().await;
    });
    // Each port: its data channel's input, then its connection.
    let mut inputs: Vec<Option<mpsc::Sender<Bytes>>> = Vec::new();
    let mut tasks = Vec::new();
    for (i, raw) in ports.iter().take(64).enumerate() {
        let (data_chan, err_chan) = ((2 * i) as u8, (2 * i + 1) as u8);
        let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(16);
        inputs.push(Some(in_tx));
        let out = out_tx.clone();
        let backend = backend.clone();
        let params = params.clone();
        let act = act.clone();
        let raw = raw.clone();
        tasks.push(tokio::spawn(async move {
            let port = check_port(&params, &raw);
            let p = *port.as_ref().unwrap_or(&0);
            // Each channel opens with the port, little-endian.
            for c in [data_chan, err_chan] {
                let _ = out
                    .send(Some((c, Bytes::copy_from_slice(&p.to_le_bytes()))))
                    .await;
            }
            let conn = match port {
                Ok(p) => backend
                    .connect(params.pod_id.clone(), p)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    let msg = format!("error forwarding port {p} to pod {}: {e}", params.pod_id);
                    let _ = out.send(Some((err_chan, Bytes::from(msg)))).await;
                    return;
                }
            };
            let (mut rd, mut wr) = conn.into_split();
            let act2 = act.clone();
            let to_pod = async move {
                while let Some(d) = in_rx.recv().await {
                    act2.touch();
                    if wr.write_all(&d).await.is_err() {
                        return;
                    }
                }
                let _ = wr.shutdown().await;
            };
            let from_pod = async {
                let mut buf = vec![0u8; 128 * 1024];
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            act.touch();
                            let d = Bytes::copy_from_slice(&buf[..n]);
                            if out.send(Some((data_chan, d))).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            };
            // The channel protocol has no half-close from the client: the
            // port is done when the pod's side is.
            tokio::pin!(to_pod);
            tokio::select! {
                _ = from_pod => {}
                _ = &mut to_pod => {}
            }
        }));
    }
    let reader = async {
        while let Some(Ok(m)) = stream.next().await {
            if let Message::Close(_) = m {
                break;
            }
            let Some((c, data)) = ws::decode(&m, f) else {
                continue;
            };
            act.touch();
            // Input on an error channel means nothing; data goes to its
            // port's connection.
            if c.is_multiple_of(2) {
                if let Some(Some(tx)) = inputs.get((c / 2) as usize) {
                    if !data.is_empty() && tx.send(Bytes::from(data)).await.is_err() {
                        inputs[(c / 2) as usize] = None;
                    }
                }
            }
        }
    };
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let all_done = futures_util::future::join_all(tasks);
    tokio::select! {
        _ = reader => {}
        _ = all_done => {}
        _ = act.idle(idle) => {}
    }
    for a in aborts {
        a.abort();
    }
    let _ = out_tx.send(None).await;
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_checked() {
        let any = PortForwardParams {
            pod_id: "p".into(),
            ports: vec![],
        };
        let only = PortForwardParams {
            pod_id: "p".into(),
            ports: vec![80],
        };
        assert_eq!(check_port(&any, "8080"), Ok(8080));
        assert!(check_port(&any, "0").is_err());
        assert!(check_port(&any, "65536").is_err());
        assert!(check_port(&any, "-1").is_err());
        assert!(check_port(&any, "http").is_err());
        assert_eq!(check_port(&only, "80"), Ok(80));
        assert!(check_port(&only, "81").unwrap_err().contains("not among"));
    }
}
