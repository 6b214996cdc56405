//! systemd's readiness protocol (sd_notify): with `Type=notify`, systemd
//! waits for `READY=1` before starting what comes after crius (kubelet),
//! so crius sends it only once its state is recovered and its socket
//! serves; `STOPPING=1` when it begins to shut down.
//!
//! The socket's address comes from `NOTIFY_SOCKET`, taken out of the
//! environment at start-up: the runtimes crius runs (runc) would otherwise
//! see it and treat containers as notify services of their own.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// Where to send notifications (None: not started by systemd).
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    addr: Option<PathBuf>,
}

impl Notifier {
    /// Takes `NOTIFY_SOCKET` out of the environment. Call before any thread
    /// starts (the environment is not thread-safe).
    pub fn from_env() -> Self {
        let addr = std::env::var_os("NOTIFY_SOCKET").map(PathBuf::from);
        if addr.is_some() {
            // SAFETY (of the call's contract): single-threaded here, before
            // the async runtime and every other thread exist.
            std::env::remove_var("NOTIFY_SOCKET");
        }
        Notifier { addr }
    }

    /// Sends `state` (`READY=1`, `STOPPING=1`, `STATUS=...` lines). A
    /// failure is logged, never fatal: crius serves either way.
    pub fn notify(&self, state: &str) {
        let Some(addr) = &self.addr else { return };
        if let Err(e) = send(addr, state) {
            tracing::warn!(socket = %addr.display(), error = %e, "sd_notify");
        }
    }
}

fn send(addr: &std::path::Path, state: &str) -> std::io::Result<usize> {
    let sock = UnixDatagram::unbound()?;
    let raw = addr.as_os_str().as_encoded_bytes();
    // `@name`: a socket in the abstract namespace.
    if let Some(name) = raw.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &a)
    } else {
        sock.send_to(state.as_bytes(), addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        Notifier {
            addr: Some(path.clone()),
        }
        .notify("READY=1");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("crius-notify-test-{}", std::process::id());
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&a).unwrap();
        Notifier {
            addr: Some(PathBuf::from(format!("@{name}"))),
        }
        .notify("STOPPING=1");
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        // Nobody listening: logged, not fatal.
        Notifier {
            addr: Some(dir.path().join("none")),
        }
        .notify("READY=1");
        Notifier::default().notify("READY=1");
    }
}
