//! A real Docker distribution registry (Debian's `docker-registry`) on a free
//! loopback port with its own temporary storage, optionally behind htpasswd
//! basic auth.

use crate::daemon::wait_timeout;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGISTRY_BIN: &str = "docker-registry";
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

#[derive(Debug)]
pub struct Registry {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    credentials: Option<Credentials>,
    auth_kind: AuthKind,
    token: Option<crate::token::TokenServer>,
    child: Option<Child>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthKind {
    None,
    Htpasswd,
    Token,
}

impl std::fmt::Debug for crate::token::TokenServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServer")
            .field("realm", &self.realm())
            .finish()
    }
}

impl Registry {
    /// An anonymous registry.
    pub async fn start() -> Result<Self> {
        Self::launch(None, AuthKind::None).await
    }

    /// A registry using the bearer-token flow: a token server (see
    /// `token.rs`) issues JWTs to these credentials.
    pub async fn start_with_token(username: &str, password: &str) -> Result<Self> {
        Self::launch(
            Some(Credentials {
                username: username.into(),
                password: password.into(),
            }),
            AuthKind::Token,
        )
        .await
    }

    /// The token server of a `start_with_token` registry.
    pub fn token_server(&self) -> Option<&crate::token::TokenServer> {
        self.token.as_ref()
    }

    /// A registry that requires basic auth with these credentials.
    pub async fn start_with_auth(username: &str, password: &str) -> Result<Self> {
        Self::launch(
            Some(Credentials {
                username: username.into(),
                password: password.into(),
            }),
            AuthKind::Htpasswd,
        )
        .await
    }

    async fn launch(credentials: Option<Credentials>, auth_kind: AuthKind) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("crius-registry-")
            .tempdir()?;
        let addr = free_loopback_port()?;
        let token = match (&credentials, auth_kind) {
            (Some(c), AuthKind::Token) => Some(crate::token::TokenServer::start(
                dir.path(),
                &c.username,
                &c.password,
            )?),
            _ => None,
        };
        let mut r = Registry {
            dir,
            addr,
            credentials,
            auth_kind,
            token,
            child: None,
        };
        r.write_config()?;
        r.restart().await?;
        Ok(r)
    }

    fn write_config(&self) -> Result<()> {
        let storage = self.storage_dir();
        std::fs::create_dir_all(&storage)?;
        let auth = match (&self.credentials, &self.token) {
            (Some(_), Some(t)) if self.auth_kind == AuthKind::Token => format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                t.realm(),
                crate::token::SERVICE,
                crate::token::ISSUER,
                t.cert_path().display()
            ),
            (Some(c), _) => {
                // The registry only accepts bcrypt entries in its htpasswd file.
                let hash = bcrypt::hash(&c.password, 5)?;
                let htpasswd = self.dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{}:{}\n", c.username, hash))?;
                format!(
                    "auth:\n  htpasswd:\n    realm: crius-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            (None, _) => String::new(),
        };
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n  secret: crius-test-secret\n\
             {auth}",
            storage = storage.display(),
            addr = self.addr,
        );
        std::fs::write(self.config_path(), config)?;
        Ok(())
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// Where the registry keeps blobs (tests corrupt them to test digests).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// `host/name`, for building references.
    pub fn reference(&self, name_and_tag: &str) -> String {
        format!("{}/{}", self.host(), name_and_tag)
    }

    /// Starts (or starts again, same port and storage) and waits until
    /// `GET /v2/` answers.
    pub async fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("registry already running");
        }
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("spawning {REGISTRY_BIN} (apt-get install docker-registry)")
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!("{REGISTRY_BIN} exited with {status}: {}", self.log());
            }
            match self.v2_status() {
                Ok(200 | 401) => return Ok(()),
                _ if Instant::now() > deadline => {
                    bail!(
                        "{REGISTRY_BIN} not ready after {START_TIMEOUT:?}: {}",
                        self.log()
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// SIGKILL; `restart` brings it back on the same port with the same data.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            wait_timeout(&mut c, Duration::from_secs(10))?;
        }
        Ok(())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The HTTP status of an unauthenticated `GET /v2/` (200, or 401 with auth).
    pub fn v2_status(&self) -> Result<u16> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr)?;
        let mut head = [0u8; 64];
        let n = s.read(&mut head)?;
        let line = String::from_utf8_lossy(&head[..n]);
        line.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("bad HTTP answer {line:?}"))
    }

    /// How many `GET` requests for blob `digest` the registry has served
    /// (from its access log): proves de-duplicated downloads.
    pub fn blob_gets(&self, digest: &str) -> usize {
        let needle = format!("/blobs/{digest} ");
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET ") && l.contains(&needle))
            .count()
    }

    /// The path of a stored blob's data file, for corruption tests.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// A loopback port that was free a moment ago. The registry binds it right
/// after; tests are not racing other processes for ports on this machine.
pub fn free_loopback_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}
