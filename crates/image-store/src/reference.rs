//! Image reference parsing with docker / containers semantics.
//!
//! The grammar follows `distribution/reference`: `[host[:port]/]path[:tag][@digest]`.
//! Parsing is split from qualification on purpose: a short name such as
//! `busybox` may resolve to several registries (see `registries.rs`), so
//! [`parse`] reports it as [`ParsedRef::Short`] and leaves the choice of
//! registry to the caller; [`normalize`] applies the plain docker default.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// The registry docker-style short names resolve to.
pub const DOCKER_HUB: &str = "docker.io";
/// The tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

/// distribution/reference's limit on the length of the name (host + path).
const NAME_TOTAL_LENGTH_MAX: usize = 255;
/// A tag is one word character followed by at most 127 more.
const TAG_MAX: usize = 128;

/// A reference that failed to parse; `reason` says which rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: String,
}

impl ReferenceError {
    fn new(reference: &str, reason: impl Into<String>) -> Self {
        ReferenceError {
            reference: reference.to_string(),
            reason: reason.into(),
        }
    }
}

/// A fully-qualified reference: registry host (with optional port), repository path, tag and/or digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// "registry/repository", the key used for registries.conf prefixes and auth lookups.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same image with `tag`; an existing digest is kept because it still
    /// pins the content (docker's `WithTag` behaves the same way).
    pub fn with_tag(&self, tag: &str) -> ImageRef {
        ImageRef {
            tag: Some(tag.to_string()),
            ..self.clone()
        }
    }

    /// The same image pinned to `digest`; the tag is kept for display.
    pub fn with_digest(&self, digest: &str) -> ImageRef {
        ImageRef {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }
}

/// Canonical string: "registry/repo:tag", "registry/repo@sha256:..", or "registry/repo:tag@sha256:..".
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        write_tag_digest(f, self.tag.as_deref(), self.digest.as_deref())
    }
}

/// Parses a string that must be fully qualified or normalisable the docker
/// way (see [`normalize`]): short names go to docker.io.
impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        normalize(s)
    }
}

/// The result of [`parse`]: either the reference names its registry, or it is
/// a short name whose registry is still to be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedRef {
    Qualified(ImageRef),
    Short {
        repository: String,
        tag: Option<String>,
        digest: Option<String>,
    },
}

/// Renders the reference as written (after host normalisation), without
/// adding a default tag; used in messages about short names.
impl fmt::Display for ParsedRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParsedRef::Qualified(r) => write!(f, "{r}"),
            ParsedRef::Short {
                repository,
                tag,
                digest,
            } => {
                write!(f, "{repository}")?;
                write_tag_digest(f, tag.as_deref(), digest.as_deref())
            }
        }
    }
}

fn write_tag_digest(
    f: &mut fmt::Formatter<'_>,
    tag: Option<&str>,
    digest: Option<&str>,
) -> fmt::Result {
    if let Some(tag) = tag {
        write!(f, ":{tag}")?;
    }
    if let Some(digest) = digest {
        write!(f, "@{digest}")?;
    }
    Ok(())
}

/// Parses `s` per the distribution/reference grammar without applying any
/// default registry or tag.
pub fn parse(s: &str) -> Result<ParsedRef, ReferenceError> {
    let err = |reason: &str| ReferenceError::new(s, reason);
    if s.is_empty() {
        return Err(err("reference is empty"));
    }

    // Neither the name nor the tag may contain '@', so the first one starts the digest.
    let (name_tag, digest) = match s.split_once('@') {
        Some((name_tag, digest)) => {
            validate_digest(digest).map_err(|reason| err(&reason))?;
            (name_tag, Some(digest.to_string()))
        }
        None => (s, None),
    };

    // A ':' after the last '/' introduces the tag; earlier ones belong to a host:port.
    let last_slash = name_tag.rfind('/');
    let (name, tag) = match name_tag.rfind(':') {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
            let tag = &name_tag[colon + 1..];
            validate_tag(tag).map_err(|reason| err(&reason))?;
            (&name_tag[..colon], Some(tag.to_string()))
        }
        _ => (name_tag, None),
    };

    if name.is_empty() {
        return Err(err("repository name is missing"));
    }
    if name.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(err(&format!(
            "repository name is {} characters long, the limit is {NAME_TOTAL_LENGTH_MAX}",
            name.len()
        )));
    }

    // docker's rule: the first component is a host only if it cannot be a
    // repository component (has '.' or ':') or is "localhost", and only when
    // something follows it.
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            validate_host(first).map_err(|reason| err(&reason))?;
            (Some(first), rest)
        }
        _ => (None, name),
    };
    validate_repository(repository).map_err(|reason| err(&reason))?;

    let tag = tag.map(|t| t.to_string());
    Ok(match registry {
        Some(registry) => {
            let (registry, repository) = docker_normalize(registry, repository);
            ParsedRef::Qualified(ImageRef {
                registry,
                repository,
                tag,
                digest,
            })
        }
        None => ParsedRef::Short {
            repository: repository.to_string(),
            tag,
            digest,
        },
    })
}

/// Docker normalisation of a short name: registry docker.io, single-component
/// names get "library/". A qualified reference is returned as is. Either way
/// the default tag "latest" is added when there is neither tag nor digest.
pub fn qualify(short: &ParsedRef, registry: &str) -> ImageRef {
    let mut r = match short {
        ParsedRef::Qualified(r) => r.clone(),
        ParsedRef::Short {
            repository,
            tag,
            digest,
        } => {
            let (registry, repository) = docker_normalize(registry, repository);
            ImageRef {
                registry,
                repository,
                tag: tag.clone(),
                digest: digest.clone(),
            }
        }
    };
    if r.tag.is_none() && r.digest.is_none() {
        r.tag = Some(DEFAULT_TAG.to_string());
    }
    r
}

/// The docker default: parse + qualify with docker.io + default tag "latest"
/// when neither tag nor digest.
pub fn normalize(s: &str) -> Result<ImageRef, ReferenceError> {
    Ok(qualify(&parse(s)?, DOCKER_HUB))
}

/// Maps docker hub's alternative host names to "docker.io". Other hosts are
/// returned unchanged; shared with auth-file key normalisation.
pub fn normalize_registry_host(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
        other => other,
    }
}

/// On docker hub, official images live under "library/"; everywhere else the
/// path is used verbatim.
fn docker_normalize(registry: &str, repository: &str) -> (String, String) {
    let registry = normalize_registry_host(registry);
    let repository = if registry == DOCKER_HUB && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository.to_string()
    };
    (registry.to_string(), repository)
}

/// True for a supported digest ("sha256:<64 hex>" or "sha512:<128 hex>"), so
/// lookups can tell a digest from a name.
pub fn is_digest(s: &str) -> bool {
    validate_digest(s).is_ok()
}

/// True for a bare image ID: 64 lowercase hex characters with no algorithm prefix.
pub fn looks_like_image_id(s: &str) -> bool {
    s.len() == 64 && is_lower_hex(s)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `algorithm:hex`; only sha256 and sha512 are accepted because those are the
/// only algorithms the store can verify.
pub(crate) fn validate_digest(digest: &str) -> Result<(), String> {
    if digest.is_empty() {
        return Err("digest after '@' is empty".to_string());
    }
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!(
            "digest {digest:?} must have the form algorithm:hex"
        ));
    };
    let expected_len = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        "" => return Err(format!("digest {digest:?} has no algorithm")),
        other => {
            return Err(format!(
                "digest algorithm {other:?} is not supported (use sha256 or sha512)"
            ))
        }
    };
    if hex.len() != expected_len {
        return Err(format!(
            "{algorithm} digest must have {expected_len} hex characters, got {}",
            hex.len()
        ));
    }
    if !is_lower_hex(hex) {
        return Err(format!("{algorithm} digest must be lowercase hex"));
    }
    Ok(())
}

/// Tag: `[\w][\w.-]{0,127}`.
fn validate_tag(tag: &str) -> Result<(), String> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    match chars.next() {
        None => return Err("tag after ':' is empty".to_string()),
        Some(first) if !is_word(first) => {
            return Err(format!(
                "tag {tag:?} must start with a letter, digit or '_'"
            ))
        }
        Some(_) => {}
    }
    if !chars.all(|c| is_word(c) || c == '.' || c == '-') {
        return Err(format!(
            "tag {tag:?} may only contain letters, digits, '_', '.' and '-'"
        ));
    }
    if tag.len() > TAG_MAX {
        return Err(format!("tag is longer than {TAG_MAX} characters"));
    }
    Ok(())
}

/// Repository path: '/'-separated components, each
/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`.
pub(crate) fn validate_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("repository path is empty".to_string());
    }
    // Checked up front so "FOO" gets the message users need, not a grammar error.
    if repository.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("repository must be lowercase".to_string());
    }
    for component in repository.split('/') {
        validate_path_component(component)?;
    }
    Ok(())
}

fn validate_path_component(component: &str) -> Result<(), String> {
    if component.is_empty() {
        return Err(
            "repository path has an empty component (leading, trailing or double '/')".to_string(),
        );
    }
    let bad = || {
        Err(format!(
            "repository path component {component:?} must be lowercase letters and digits separated by '.', '_', '__' or dashes"
        ))
    };
    let bytes = component.as_bytes();
    let is_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return bad();
    }
    // Walk separator runs between alphanumeric runs and check each one.
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !ok {
            return bad();
        }
    }
    Ok(())
}

/// Host: a domain name or bracketed IPv6 address, with an optional port.
pub(crate) fn validate_host(host: &str) -> Result<(), String> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return Err(format!("registry host {host:?} has an unterminated '['"));
        };
        let addr = &rest[..end];
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "registry host {host:?} is not a valid IPv6 address"
            ));
        }
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => {
                return Err(format!(
                    "registry host {host:?} has unexpected text after ']'"
                ))
            }
        };
        (None, port)
    } else {
        match host.split_once(':') {
            Some((name, port)) => (Some(name), Some(port)),
            None => (Some(host), None),
        }
    };
    if let Some(name) = name {
        validate_domain(name).map_err(|reason| format!("registry host {host:?} {reason}"))?;
    }
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("registry host {host:?} has an invalid port"));
        }
        if port.parse::<u16>().is_err() {
            return Err(format!("registry host {host:?} has a port out of range"));
        }
    }
    Ok(())
}

/// Domain: '.'-separated labels of letters, digits and inner dashes.
pub(crate) fn validate_domain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("has an empty host name".to_string());
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("has an invalid host name label {label:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D256: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn img(registry: &str, repository: &str, tag: Option<&str>, digest: Option<&str>) -> ImageRef {
        ImageRef {
            registry: registry.into(),
            repository: repository.into(),
            tag: tag.map(Into::into),
            digest: digest.map(Into::into),
        }
    }

    #[test]
    fn normalize_valid_references() {
        let with_digest = format!("busybox@{D256}");
        let tag_and_digest = format!("quay.io/app/web:v1@{D256}");
        let sha512 = format!("sha512:{}", "ab".repeat(64));
        let with_512 = format!("ghcr.io/a/b@{sha512}");
        let cases: Vec<(&str, ImageRef)> = vec![
            (
                "busybox",
                img("docker.io", "library/busybox", Some("latest"), None),
            ),
            (
                "busybox:1.36",
                img("docker.io", "library/busybox", Some("1.36"), None),
            ),
            (
                "library/busybox",
                img("docker.io", "library/busybox", Some("latest"), None),
            ),
            (
                "myorg/app:v2",
                img("docker.io", "myorg/app", Some("v2"), None),
            ),
            (
                "docker.io/busybox",
                img("docker.io", "library/busybox", Some("latest"), None),
            ),
            (
                "index.docker.io/busybox",
                img("docker.io", "library/busybox", Some("latest"), None),
            ),
            (
                "registry-1.docker.io/foo/bar:t",
                img("docker.io", "foo/bar", Some("t"), None),
            ),
            (
                with_digest.as_str(),
                img("docker.io", "library/busybox", None, Some(D256)),
            ),
            (
                tag_and_digest.as_str(),
                img("quay.io", "app/web", Some("v1"), Some(D256)),
            ),
            (
                with_512.as_str(),
                img("ghcr.io", "a/b", None, Some(sha512.as_str())),
            ),
            (
                "localhost/app",
                img("localhost", "app", Some("latest"), None),
            ),
            (
                "localhost:5000/app:1",
                img("localhost:5000", "app", Some("1"), None),
            ),
            (
                "127.0.0.1:5000/a/b/c",
                img("127.0.0.1:5000", "a/b/c", Some("latest"), None),
            ),
            (
                "[::1]:5000/app:x",
                img("[::1]:5000", "app", Some("x"), None),
            ),
            (
                "[fe80::1]/app",
                img("[fe80::1]", "app", Some("latest"), None),
            ),
            (
                "Example.COM/app",
                img("Example.COM", "app", Some("latest"), None),
            ),
            // "localhost" alone is a repository, as in docker.
            (
                "localhost",
                img("docker.io", "library/localhost", Some("latest"), None),
            ),
            // Without a slash "localhost:5000" is name "localhost", tag "5000".
            (
                "localhost:5000",
                img("docker.io", "library/localhost", Some("5000"), None),
            ),
            (
                "quay.io/f-g:_T.a-g",
                img("quay.io", "f-g", Some("_T.a-g"), None),
            ),
            (
                "reg/a.b_c__d---e",
                img("docker.io", "reg/a.b_c__d---e", Some("latest"), None),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_ref(), Ok(&want), "input {input:?}");
            assert_eq!(input.parse::<ImageRef>(), Ok(want), "FromStr {input:?}");
        }
    }

    #[test]
    fn parse_short_and_qualified() {
        let cases: Vec<(&str, ParsedRef)> = vec![
            (
                "busybox",
                ParsedRef::Short {
                    repository: "busybox".into(),
                    tag: None,
                    digest: None,
                },
            ),
            (
                "org/app:1",
                ParsedRef::Short {
                    repository: "org/app".into(),
                    tag: Some("1".into()),
                    digest: None,
                },
            ),
            // No default tag at this stage.
            (
                "quay.io/a",
                ParsedRef::Qualified(img("quay.io", "a", None, None)),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), Ok(want), "input {input:?}");
        }
    }

    #[test]
    fn invalid_references() {
        let long_name = format!("quay.io/{}", "a".repeat(250));
        let long_tag = format!("busybox:{}", "t".repeat(129));
        let short_hex = "busybox@sha256:abc".to_string();
        let upper_hex = format!("busybox@sha256:{}", "AB".repeat(32));
        let md5 = format!("busybox@md5:{}", "a".repeat(32));
        let two_at = format!("busybox@{D256}@{D256}");
        let cases: Vec<(&str, &str)> = vec![
            ("", "empty"),
            ("FOO", "repository must be lowercase"),
            ("quay.io/Foo/bar", "repository must be lowercase"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("/a", "empty component"),
            ("quay.io/", "repository path is empty"),
            (":tag", "repository name is missing"),
            ("@sha256:x", "64 hex"),
            ("name:", "tag after ':' is empty"),
            ("name@", "digest after '@' is empty"),
            ("name:-x", "must start with"),
            ("name:a+b", "may only contain"),
            (long_tag.as_str(), "longer than 128"),
            (long_name.as_str(), "limit is 255"),
            (short_hex.as_str(), "64 hex characters, got 3"),
            (upper_hex.as_str(), "lowercase hex"),
            (md5.as_str(), "\"md5\" is not supported"),
            ("busybox@sha256", "algorithm:hex"),
            (two_at.as_str(), "64 hex characters"),
            ("a-/b", "path component \"a-\""),
            ("a..b", "path component"),
            ("a___b", "path component"),
            ("quay.io:/a", "invalid port"),
            ("quay.io:99999/a", "out of range"),
            ("-bad.io/a", "host name label"),
            ("[::1/a", "unterminated"),
            ("[zz::1]:5000/a", "IPv6"),
            ("[::1]x/a", "after ']'"),
            ("[::1]:5000", "path component \"[::1]\""),
        ];
        for (input, want) in cases {
            let e = parse(input).expect_err(input);
            assert_eq!(e.reference, input);
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("invalid image reference {input:?}: ")),
                "{msg}"
            );
            assert!(
                msg.contains(want),
                "input {input:?}: {msg:?} lacks {want:?}"
            );
        }
    }

    #[test]
    fn display_and_builders() {
        let r = img("quay.io", "a/b", Some("v1"), None);
        assert_eq!(r.to_string(), "quay.io/a/b:v1");
        assert_eq!(r.name(), "quay.io/a/b");
        let pinned = r.with_digest(D256);
        assert_eq!(pinned.to_string(), format!("quay.io/a/b:v1@{D256}"));
        assert_eq!(
            pinned.with_tag("v2").to_string(),
            format!("quay.io/a/b:v2@{D256}")
        );
        let digest_only = img("quay.io", "a/b", None, Some(D256));
        assert_eq!(digest_only.to_string(), format!("quay.io/a/b@{D256}"));
        // Display output parses back to the same reference.
        for r in [r, pinned, digest_only] {
            assert_eq!(normalize(&r.to_string()), Ok(r));
        }
    }

    #[test]
    fn qualify_applies_registry_library_and_default_tag() {
        let short = parse("busybox").unwrap();
        let cases = [
            ("docker.io", "docker.io/library/busybox:latest"),
            ("index.docker.io", "docker.io/library/busybox:latest"),
            ("quay.io", "quay.io/busybox:latest"),
            ("localhost:5000", "localhost:5000/busybox:latest"),
        ];
        for (registry, want) in cases {
            assert_eq!(qualify(&short, registry).to_string(), want, "{registry}");
        }
        let digest = parse(&format!("org/app@{D256}")).unwrap();
        assert_eq!(qualify(&digest, "quay.io").tag, None);
        let qualified = parse("ghcr.io/x/y").unwrap();
        assert_eq!(
            qualify(&qualified, "quay.io").to_string(),
            "ghcr.io/x/y:latest"
        );
        assert_eq!(short.to_string(), "busybox");
    }

    #[test]
    fn digest_and_image_id_predicates() {
        let hex = &D256["sha256:".len()..];
        let cases: Vec<(String, bool, bool)> = vec![
            (D256.to_string(), true, false),
            (hex.to_string(), false, true),
            (format!("sha512:{}", "0".repeat(128)), true, false),
            (hex.to_uppercase(), false, false),
            (hex[..63].to_string(), false, false),
            ("sha256:".to_string(), false, false),
            ("busybox".to_string(), false, false),
            (String::new(), false, false),
        ];
        for (input, digest, id) in cases {
            assert_eq!(is_digest(&input), digest, "is_digest {input:?}");
            assert_eq!(looks_like_image_id(&input), id, "image id {input:?}");
        }
    }
}
