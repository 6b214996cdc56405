//! Talking to registries: one endpoint (a mirror or the origin) at a time,
//! with retries and backoff for transient failures, manifests and indexes
//! resolved to this host's platform, blobs streamed into the layout.

use crate::auth::Auth;
use crate::layout::{sha256_digest, Layout, LayoutError};
use crate::registries::Endpoint;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde_json::Value;
use std::time::{Duration, Instant};

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPTED: &[&str] = &[
    MEDIA_OCI_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_DOCKER_LIST,
];
/// Manifests larger than this are refused (containerd uses the same bound).
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// How transient failures are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max_delay: Duration,
    /// Total time a single operation may spend retrying.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            budget: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with "full jitter" (a uniformly random delay up
    /// to the exponential bound), so many nodes do not retry in lockstep.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = self.initial.saturating_mul(1u32 << attempt.min(16));
        let cap = exp.min(self.max_delay);
        cap.mul_f64(jitter.clamp(0.0, 1.0))
            .max(Duration::from_millis(10))
    }
}

/// Why talking to a registry failed, as far as the caller needs to know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("unauthorized: {registry} refused the credentials ({auth}) for {repository}")]
    Unauthorized {
        registry: String,
        repository: String,
        auth: &'static str,
    },
    #[error("denied: {registry} does not allow pulling {repository}")]
    Forbidden {
        registry: String,
        repository: String,
    },
    #[error("not found: {what} on {registry}")]
    NotFound { registry: String, what: String },
    #[error("{registry} unavailable after {attempts} attempts in {elapsed:?}: {message}")]
    Unavailable {
        registry: String,
        attempts: u32,
        elapsed: Duration,
        message: String,
    },
    #[error("{registry}: {message}")]
    Protocol { registry: String, message: String },
    #[error("integrity: {0}")]
    Integrity(String),
    #[error("no manifest for platform {wanted} in {reference}; available: {available}")]
    NoPlatform {
        reference: String,
        wanted: String,
        available: String,
    },
    #[error("storing: {0}")]
    Store(String),
}

enum Class {
    Transient,
    Fatal(RegistryError),
}

fn classify(e: &OciDistributionError, ep: &Endpoint, auth: &Auth, what: &str) -> Class {
    let unauthorized = || {
        Class::Fatal(RegistryError::Unauthorized {
            registry: ep.registry.clone(),
            repository: ep.repository.clone(),
            auth: auth.kind(),
        })
    };
    let not_found = || {
        Class::Fatal(RegistryError::NotFound {
            registry: ep.registry.clone(),
            what: what.to_string(),
        })
    };
    let forbidden = || {
        Class::Fatal(RegistryError::Forbidden {
            registry: ep.registry.clone(),
            repository: ep.repository.clone(),
        })
    };
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => unauthorized(),
        OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
        OciDistributionError::RequestError(r) => {
            if r.status().is_some_and(|s| s.as_u16() == 401) {
                unauthorized()
            } else {
                // connect errors, timeouts, resets, bodies cut short
                Class::Transient
            }
        }
        OciDistributionError::IoError(_) => Class::Transient,
        OciDistributionError::ServerError { code, message, .. } => match code {
            401 => unauthorized(),
            403 => forbidden(),
            404 => not_found(),
            408 | 429 | 500..=599 => Class::Transient,
            _ => Class::Fatal(RegistryError::Protocol {
                registry: ep.registry.clone(),
                message: format!(
                    "HTTP {code}: {}",
                    message.chars().take(200).collect::<String>()
                ),
            }),
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<_> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized))
            {
                unauthorized()
            } else if codes.iter().any(|c| matches!(c, OciErrorCode::Denied)) {
                forbidden()
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                not_found()
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
            {
                Class::Transient
            } else {
                Class::Fatal(RegistryError::Protocol {
                    registry: ep.registry.clone(),
                    message: envelope.to_string(),
                })
            }
        }
        other => Class::Fatal(RegistryError::Protocol {
            registry: ep.registry.clone(),
            message: other.to_string(),
        }),
    }
}

/// A connection to one endpoint with one set of credentials.
pub struct Remote {
    client: Client,
    ep: Endpoint,
    auth: Auth,
    oci_auth: RegistryAuth,
    retry: RetryPolicy,
    authenticated: tokio::sync::OnceCell<()>,
}

fn to_oci_auth(a: &Auth) -> RegistryAuth {
    match a {
        Auth::Anonymous => RegistryAuth::Anonymous,
        Auth::Basic { username, password } => {
            RegistryAuth::Basic(username.clone(), password.clone())
        }
        Auth::Bearer(t) => RegistryAuth::Bearer(t.clone()),
        // The docker convention for identity tokens: the token as password
        // of the placeholder user, exchanged at the token endpoint.
        Auth::IdentityToken(t) => RegistryAuth::Basic("<token>".into(), t.clone()),
    }
}

fn jitter() -> f64 {
    // Spreads retries; no cryptographic quality needed.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let x = (nanos ^ SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A manifest ready to store: the exact bytes and their digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub digest: String,
    pub media_type: String,
    /// The document as JSON. It stays a `Value` here: whether it is an index
    /// or a manifest is known only from its media type (or, without one,
    /// from a `manifests` key), an index is only read for its platforms
    /// ([`select_platform`]), and a manifest is parsed into oci-spec's
    /// `ImageManifest` by the store, once the media type says it is one.
    pub json: Value,
}

impl Remote {
    pub fn new(ep: Endpoint, auth: Auth, retry: RetryPolicy) -> Self {
        let protocol = if ep.insecure {
            ClientProtocol::HttpsExcept(vec![ep.registry.clone()])
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        });
        Remote {
            client,
            oci_auth: to_oci_auth(&auth),
            auth,
            ep,
            retry,
            authenticated: tokio::sync::OnceCell::new(),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    fn reference(&self, tag: Option<&str>, digest: Option<&str>) -> Reference {
        let (r, repo) = (self.ep.registry.clone(), self.ep.repository.clone());
        match (tag, digest) {
            (_, Some(d)) => Reference::with_digest(r, repo, d.to_string()),
            (Some(t), None) => Reference::with_tag(r, repo, t.to_string()),
            (None, None) => Reference::with_tag(r, repo, "latest".into()),
        }
    }

    /// Runs `op` until it succeeds, fails for good, or the budget is spent.
    async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
    {
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            let err = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            attempt += 1;
            match classify(&err, &self.ep, &self.auth, what) {
                Class::Fatal(e) => return Err(e),
                Class::Transient => {
                    let delay = self.backoff(start, attempt, err.to_string())?;
                    tracing::warn!(registry = %self.ep.registry, what, attempt, delay_ms = delay.as_millis() as u64, error = %err, "transient registry error, retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// The delay before retry number `attempt`, or `Unavailable` when it
    /// would overrun the retry budget counted from `start`.
    fn backoff(
        &self,
        start: Instant,
        attempt: u32,
        message: String,
    ) -> Result<Duration, RegistryError> {
        let delay = self.retry.delay(attempt - 1, jitter());
        if start.elapsed() + delay > self.retry.budget {
            return Err(RegistryError::Unavailable {
                registry: self.ep.registry.clone(),
                attempts: attempt,
                elapsed: start.elapsed(),
                message,
            });
        }
        Ok(delay)
    }

    async fn authenticate(&self) -> Result<(), RegistryError> {
        self.authenticated
            .get_or_try_init(|| async {
                let r = self.reference(Some("latest"), None);
                self.retrying("authentication", || {
                    self.client
                        .auth(&r, &self.oci_auth, RegistryOperation::Pull)
                })
                .await
                .map(|_| ())
            })
            .await
            .map(|_| ())
    }

    /// Fetches a manifest or index by tag or digest and verifies it.
    pub async fn manifest(
        &self,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> Result<FetchedManifest, RegistryError> {
        self.authenticate().await?;
        let r = self.reference(tag, digest);
        let what = format!("manifest {}", r.whole());
        let (bytes, _) = self
            .retrying(&what, || {
                self.client.pull_manifest_raw(&r, &self.oci_auth, ACCEPTED)
            })
            .await?;
        if bytes.len() > MAX_MANIFEST {
            return Err(RegistryError::Protocol {
                registry: self.ep.registry.clone(),
                message: format!(
                    "{what} is {} bytes, more than the {MAX_MANIFEST} allowed",
                    bytes.len()
                ),
            });
        }
        // Never trust the registry's digest header: hash what we got.
        let computed = sha256_digest(&bytes);
        if let Some(d) = digest {
            if d != computed {
                return Err(RegistryError::Integrity(format!(
                    "{what}: content hashes to {computed}"
                )));
            }
        }
        let json: Value = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
            registry: self.ep.registry.clone(),
            message: format!("{what} is not JSON: {e}"),
        })?;
        let media_type = json["mediaType"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                if json.get("manifests").is_some() {
                    MEDIA_OCI_INDEX.into()
                } else {
                    MEDIA_OCI_MANIFEST.into()
                }
            });
        Ok(FetchedManifest {
            bytes: bytes.to_vec(),
            digest: computed,
            media_type,
            json,
        })
    }

    /// Streams a blob into the layout; restarts it from scratch on transient
    /// failures (a partial blob is never kept).
    pub async fn blob(
        &self,
        layout: &Layout,
        digest: &str,
        size: u64,
        media_type: &str,
        progress: &std::sync::atomic::AtomicU64,
    ) -> Result<u64, RegistryError> {
        self.authenticate().await?;
        let r = self.reference(None, Some(digest));
        let desc = OciDescriptor {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size: size as i64,
            ..Default::default()
        };
        let what = format!("blob {digest}");
        let store_err = |e: LayoutError| match e {
            LayoutError::DigestMismatch { .. } | LayoutError::SizeMismatch { .. } => {
                RegistryError::Integrity(e.to_string())
            }
            other => RegistryError::Store(other.to_string()),
        };
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            let stream = self
                .retrying(&what, || self.client.pull_blob_stream(&r, &desc))
                .await?;
            let mut ingest = layout.ingest(digest, size).map_err(store_err)?;
            let mut stream = stream.stream;
            let mut failure: Option<String> = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(bytes) => {
                        progress
                            .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        ingest.write(bytes).await.map_err(store_err)?
                    }
                    // oci-client verifies digests itself and reports a mismatch
                    // as a stream error: that is corruption, not a network blip.
                    Err(e)
                        if e.get_ref()
                            .is_some_and(|i| i.is::<oci_client::errors::DigestError>()) =>
                    {
                        return Err(RegistryError::Integrity(format!("blob {digest}: {e}")));
                    }
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
            match failure {
                None => {
                    ingest.commit().await.map_err(store_err)?;
                    return Ok(size);
                }
                Some(message) => {
                    drop(ingest);
                    attempt += 1;
                    let delay = self.backoff(start, attempt, message.clone())?;
                    tracing::warn!(registry = %self.ep.registry, digest, attempt, error = %message, "blob download interrupted, restarting");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// This host's platform as OCI names it.
pub fn host_platform() -> (String, String, Option<String>) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    let variant = match arch {
        "arm64" => Some("v8".to_string()),
        "arm" => Some("v7".to_string()),
        _ => None,
    };
    ("linux".into(), arch.into(), variant)
}

/// Picks the manifest for (os, arch, variant) from an index. A variant only
/// has to match when both sides name one (arm64 images often omit "v8").
///
/// Read from the JSON, not as oci-spec's `ImageIndex`: that requires
/// `schemaVersion`, a `mediaType` on every descriptor and an `os` and
/// `architecture` in every platform, so one odd entry (a descriptor without
/// a media type, a platform without an `os`) would make the whole index
/// unusable, where crius passes over just that entry.
pub fn select_platform(
    index: &Value,
    os: &str,
    arch: &str,
    variant: Option<&str>,
) -> Result<(String, u64, String), String> {
    let mut available = Vec::new();
    for m in index["manifests"].as_array().into_iter().flatten() {
        let p = &m["platform"];
        let (mos, march, mvar) = (
            p["os"].as_str().unwrap_or(""),
            p["architecture"].as_str().unwrap_or(""),
            p["variant"].as_str(),
        );
        available.push(match mvar {
            Some(v) => format!("{mos}/{march}/{v}"),
            None => format!("{mos}/{march}"),
        });
        let variant_ok = match (variant, mvar) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        };
        if mos == os && march == arch && variant_ok {
            let digest = m["digest"].as_str().unwrap_or_default().to_string();
            let size = m["size"].as_u64().unwrap_or(0);
            let mt = m["mediaType"]
                .as_str()
                .unwrap_or(MEDIA_OCI_MANIFEST)
                .to_string();
            return Ok((digest, size, mt));
        }
    }
    if available.is_empty() {
        available.push("none".into());
    }
    Err(available.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(0, 1.0), Duration::from_millis(200));
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(400));
        assert_eq!(p.delay(10, 1.0), Duration::from_secs(5));
        assert_eq!(p.delay(40, 1.0), Duration::from_secs(5));
        assert_eq!(p.delay(3, 0.5), Duration::from_millis(800));
        assert_eq!(
            p.delay(3, 0.0),
            Duration::from_millis(10),
            "never a zero delay"
        );
    }

    #[test]
    fn platform_selection() {
        let index = json!({"manifests": [
            {"digest": "sha256:a", "size": 1, "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
            {"digest": "sha256:b", "size": 2, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            {"digest": "sha256:c", "size": 3, "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": "sha256:d", "size": 4, "platform": {"os": "linux", "architecture": "arm64"}},
            {"digest": "sha256:e", "size": 5, "platform": {"os": "windows", "architecture": "amd64"}},
        ]});
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, Result<&'a str, &'a str>);
        let cases: &[Case] = &[
            ("linux", "amd64", None, Ok("sha256:c")),
            ("linux", "arm", Some("v7"), Ok("sha256:b")),
            ("linux", "arm64", Some("v8"), Ok("sha256:d")),
            (
                "linux",
                "s390x",
                None,
                Err("linux/arm/v6, linux/arm/v7, linux/amd64, linux/arm64, windows/amd64"),
            ),
        ];
        for (os, arch, var, want) in cases {
            let got = select_platform(&index, os, arch, *var).map(|(d, _, _)| d);
            assert_eq!(
                got.as_deref().map_err(|e| e.as_str()),
                *want,
                "{os}/{arch}/{var:?}"
            );
        }
        assert_eq!(
            select_platform(&json!({}), "linux", "amd64", None).unwrap_err(),
            "none"
        );
    }
}
