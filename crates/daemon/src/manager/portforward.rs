//! PortForward: a connection to `localhost:<port>` inside a pod's network
//! namespace. A short-lived thread enters the namespace (setns affects
//! only the calling thread), connects, and exits; the socket stays in the
//! pod's namespace and is handed back to tokio. No daemon thread that
//! serves anything else ever leaves the host's namespace.

use crate::manager::{Manager, ManagerError, Result};
use crius_streaming::PortForwardParams;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// How long a connection to a port in the pod may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Manager {
    /// PortForward: the pod exists and is ready; ports are valid.
    pub fn check_port_forward(&self, pod_id: &str, ports: &[i32]) -> Result<PortForwardParams> {
        let pod = self.pod(pod_id)?;
        if !pod.accepts_containers() {
            return Err(ManagerError::FailedPrecondition(format!(
                "pod sandbox {} is not ready: nothing to forward to",
                pod.id
            )));
        }
        let ports = ports
            .iter()
            .map(|p| {
                u16::try_from(*p).ok().filter(|p| *p > 0).ok_or_else(|| {
                    ManagerError::InvalidArgument(format!(
                        "port: {p} is not a port number (1-65535)"
                    ))
                })
            })
            .collect::<Result<Vec<u16>>>()?;
        Ok(PortForwardParams {
            pod_id: pod.id.clone(),
            ports,
        })
    }

    /// Connects to `localhost:port` in the pod's network namespace.
    pub async fn connect_in_pod(
        &self,
        pod_id: &str,
        port: u16,
    ) -> std::io::Result<tokio::net::TcpStream> {
        let pod = self
            .pod(pod_id)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()))?;
        if !pod.accepts_containers() {
            return Err(std::io::Error::other(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        let netns = pod.record().netns.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("crius-portfwd".into())
            .spawn(move || {
                let _ = tx.send(connect_in(netns, port));
            })?;
        let stream = rx
            .await
            .map_err(|_| std::io::Error::other("port-forward connector thread died"))??;
        stream.set_nonblocking(true)?;
        let _ = stream.set_nodelay(true);
        tokio::net::TcpStream::from_std(stream)
    }
}

/// On a thread of its own: enters `netns` (None: the host's, a
/// host-network pod) and connects to localhost, IPv4 first.
fn connect_in(netns: Option<PathBuf>, port: u16) -> std::io::Result<TcpStream> {
    if let Some(ns) = netns {
        let f = std::fs::File::open(&ns)?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| std::io::Error::other(format!("entering {}: {e}", ns.display())))?;
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(e4) => {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| e4)
        }
    }
}
