//! containers-registries.conf(5) version 2: short-name resolution, mirrors,
//! location rewrites, blocking and insecure registries.
//!
//! Unknown keys are ignored, as containers' own tools do, so a file shared
//! with podman/CRI-O (which may carry `credential-helpers` etc.) still loads.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::Deserialize;

use crate::reference::{self, normalize_registry_host, qualify, ImageRef, ParsedRef, DOCKER_HUB};

/// What to do when a short name could come from several registries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShortNameMode {
    /// Refuse to guess between several registries; there is no TTY to prompt on under CRI.
    Enforcing,
    /// Try every search registry in order.
    #[default]
    Permissive,
    /// Same as permissive for resolution.
    Disabled,
}

/// Which pulls a mirror may serve; tags from a mirror are not content
/// addressed, so operators may restrict mirrors to digest pulls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullFromMirror {
    #[default]
    All,
    DigestOnly,
    TagOnly,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RegistriesConf {
    #[serde(rename = "unqualified-search-registries", default)]
    pub unqualified_search_registries: Vec<String>,
    #[serde(rename = "short-name-mode", default)]
    pub short_name_mode: ShortNameMode,
    #[serde(rename = "registry", default)]
    pub registries: Vec<RegistryEntry>,
    /// Short name -> fully-qualified name without tag or digest.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RegistryEntry {
    /// Which references the entry applies to; defaults to `location` after parsing.
    #[serde(default)]
    pub prefix: String,
    /// Where matching references are really fetched from; may be empty only for a wildcard prefix.
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub blocked: bool,
    /// Use the mirrors only for pulls by digest.
    #[serde(rename = "mirror-by-digest-only", default)]
    pub mirror_by_digest_only: bool,
    #[serde(rename = "mirror", default)]
    pub mirrors: Vec<Mirror>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Mirror {
    pub location: String,
    #[serde(default)]
    pub insecure: bool,
    #[serde(rename = "pull-from-mirror", default)]
    pub pull_from_mirror: PullFromMirror,
}

/// One place to fetch from: host (with port) and the repository path at that host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub registry: String,
    pub repository: String,
    pub insecure: bool,
    pub mirror: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistriesError {
    #[error("reading registries config {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// toml's message carries the line, column and key.
    #[error("parsing registries config {origin}: {message}")]
    Toml { origin: String, message: String },
    #[error("invalid registries config {origin}: {reason}")]
    Invalid { origin: String, reason: String },
    #[error("short name {short:?} is ambiguous: it could be on {} (short-name-mode = enforcing)", .registries.join(", "))]
    Ambiguous {
        short: String,
        registries: Vec<String>,
    },
    #[error(
        "registry {registry:?} is blocked by {prefix:?} in registries.conf (pulling {reference:?})"
    )]
    Blocked {
        registry: String,
        prefix: String,
        reference: String,
    },
    #[error("registries.conf entry {prefix:?} rewrites {reference:?} to {rewritten:?}, which is not a valid image name: {reason}")]
    Rewrite {
        prefix: String,
        reference: String,
        rewritten: String,
        reason: String,
    },
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
}

const INLINE_ORIGIN: &str = "registries.conf";

impl RegistriesConf {
    /// Parses and validates registries.conf text.
    pub fn parse(text: &str) -> Result<Self, RegistriesError> {
        Self::parse_named(text, INLINE_ORIGIN)
    }

    /// Reads `path`; a missing file yields the defaults when `missing_ok`.
    pub fn load(path: &Path, missing_ok: bool) -> Result<Self, RegistriesError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse_named(&text, &path.display().to_string()),
            Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(RegistriesError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    fn parse_named(text: &str, origin: &str) -> Result<Self, RegistriesError> {
        let toml_err = |e: toml::de::Error| RegistriesError::Toml {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        };
        let mut conf: RegistriesConf = toml::from_str(text).map_err(toml_err)?;
        // The v1 format ([registries.search] etc.) would otherwise be silently
        // ignored as unknown keys, quietly dropping the operator's policy.
        let table: toml::Table = toml::from_str(text).map_err(toml_err)?;
        if table.contains_key("registries") {
            return Err(RegistriesError::Invalid {
                origin: origin.to_string(),
                reason: "the v1 format ([registries.search], [registries.insecure], [registries.block]) is not supported; use unqualified-search-registries and [[registry]] tables".to_string(),
            });
        }
        conf.validate().map_err(|reason| RegistriesError::Invalid {
            origin: origin.to_string(),
            reason,
        })?;
        Ok(conf)
    }

    /// Checks every field and normalises prefixes/locations in place (trailing
    /// '/' removed, docker hub host aliases folded into docker.io, empty prefix
    /// set to the location).
    fn validate(&mut self) -> Result<(), String> {
        for registry in &self.unqualified_search_registries {
            if registry.contains("://") {
                return Err(format!(
                    "unqualified-search-registries entry {registry:?}: URL schemes are not supported; give host[:port]"
                ));
            }
            reference::validate_host(registry)
                .map_err(|e| format!("unqualified-search-registries entry {registry:?}: {e}"))?;
        }
        for (short, full) in &self.aliases {
            validate_alias(short, full)?;
        }
        let mut seen = BTreeSet::new();
        for entry in &mut self.registries {
            entry.location = normalize_location(&entry.location);
            entry.prefix = normalize_location(&entry.prefix);
            if entry.prefix.is_empty() {
                if entry.location.is_empty() {
                    return Err("[[registry]] entry has neither prefix nor location".to_string());
                }
                entry.prefix = entry.location.clone();
            }
            let prefix = entry.prefix.clone();
            let ctx =
                |field: &str, value: &str| format!("[[registry]] {prefix:?}: {field} {value:?}");
            if let Some(domain) = prefix.strip_prefix("*.") {
                reference::validate_domain(domain).map_err(|e| {
                    format!(
                        "{}: wildcard prefixes must look like *.example.com, this one {e}",
                        ctx("prefix", &prefix)
                    )
                })?;
            } else {
                validate_location(&prefix)
                    .map_err(|e| format!("{}: {e}", ctx("prefix", &prefix)))?;
            }
            if entry.location.is_empty() {
                if !prefix.starts_with("*.") {
                    return Err(format!(
                        "{}: location may only be empty for a wildcard prefix like *.example.com",
                        ctx("location", "")
                    ));
                }
            } else {
                validate_location(&entry.location)
                    .map_err(|e| format!("{}: {e}", ctx("location", &entry.location)))?;
            }
            for mirror in &mut entry.mirrors {
                mirror.location = normalize_location(&mirror.location);
                if mirror.location.is_empty() {
                    return Err(format!("{}: mirror location is empty", ctx("mirror", "")));
                }
                validate_location(&mirror.location)
                    .map_err(|e| format!("{}: {e}", ctx("mirror location", &mirror.location)))?;
                // containers rejects the combination because the two settings conflict.
                if entry.mirror_by_digest_only && mirror.pull_from_mirror != PullFromMirror::All {
                    return Err(format!(
                        "{}: pull-from-mirror cannot be combined with mirror-by-digest-only",
                        ctx("mirror location", &mirror.location)
                    ));
                }
            }
            if !seen.insert(prefix.clone()) {
                return Err(format!(
                    "[[registry]] prefix {prefix:?} is defined more than once"
                ));
            }
        }
        Ok(())
    }

    /// Short name -> candidate fully-qualified refs, in order. A qualified
    /// reference returns just itself (with the default tag applied).
    pub fn candidates(&self, r: &ParsedRef) -> Result<Vec<ImageRef>, RegistriesError> {
        let ParsedRef::Short {
            repository,
            tag,
            digest,
        } = r
        else {
            return Ok(vec![qualify(r, DOCKER_HUB)]);
        };

        // An alias is the operator's explicit answer, so it wins over searching.
        if let Some(full) = self.aliases.get(repository) {
            let target = match reference::parse(full)? {
                ParsedRef::Qualified(target) => target,
                // Rejected by validate(); kept as an error rather than a panic
                // for configs built in code.
                short @ ParsedRef::Short { .. } => {
                    return Err(RegistriesError::Invalid {
                        origin: INLINE_ORIGIN.to_string(),
                        reason: format!("alias {repository:?} points at short name {short}"),
                    })
                }
            };
            let aliased = ImageRef {
                tag: tag.clone(),
                digest: digest.clone(),
                ..target
            };
            return Ok(vec![qualify(&ParsedRef::Qualified(aliased), DOCKER_HUB)]);
        }

        if self.unqualified_search_registries.is_empty() {
            return Ok(vec![qualify(r, DOCKER_HUB)]);
        }
        let mut out: Vec<ImageRef> = Vec::new();
        for registry in &self.unqualified_search_registries {
            let candidate = qualify(r, registry);
            // "docker.io" and "index.docker.io" are the same place; try it once.
            if !out.contains(&candidate) {
                out.push(candidate);
            }
        }
        if out.len() > 1 && self.short_name_mode == ShortNameMode::Enforcing {
            return Err(RegistriesError::Ambiguous {
                short: r.to_string(),
                registries: out.into_iter().map(|c| c.registry).collect(),
            });
        }
        Ok(out)
    }

    /// Where to fetch `r` from: the matching entry's mirrors in order, then the
    /// origin, with location rewrites applied.
    pub fn endpoints(&self, r: &ImageRef) -> Result<Vec<Endpoint>, RegistriesError> {
        let name = r.name();
        let Some((entry, matched)) = self.matching_entry(r) else {
            return Ok(vec![Endpoint {
                insecure: is_default_insecure(&r.registry),
                registry: r.registry.clone(),
                repository: r.repository.clone(),
                mirror: false,
            }]);
        };
        if entry.blocked {
            return Err(RegistriesError::Blocked {
                registry: r.registry.clone(),
                prefix: entry.prefix.clone(),
                reference: r.to_string(),
            });
        }
        // Everything after the matched prefix is carried over to the new location.
        let rest = &name[matched..];
        let rewrite = |location: &str| -> Result<(String, String), RegistriesError> {
            let rewritten = format!("{location}{rest}");
            split_location(&rewritten).ok_or_else(|| RegistriesError::Rewrite {
                prefix: entry.prefix.clone(),
                reference: r.to_string(),
                rewritten: rewritten.clone(),
                reason: "it has no repository path".to_string(),
            })
        };

        // Pulls by digest are content-addressed even when a tag is present.
        let by_digest = r.digest.is_some();
        let mut out = Vec::new();
        for m in &entry.mirrors {
            let allowed = match (entry.mirror_by_digest_only, m.pull_from_mirror) {
                (true, _) | (false, PullFromMirror::DigestOnly) => by_digest,
                (false, PullFromMirror::TagOnly) => !by_digest,
                (false, PullFromMirror::All) => true,
            };
            if !allowed {
                continue;
            }
            let (registry, repository) = rewrite(&m.location)?;
            out.push(Endpoint {
                insecure: m.insecure || is_default_insecure(&registry),
                registry,
                repository,
                mirror: true,
            });
        }
        let (registry, repository) = if entry.location.is_empty() {
            // Wildcard entry without location: fetch from where the name says.
            (r.registry.clone(), r.repository.clone())
        } else {
            rewrite(&entry.location)?
        };
        out.push(Endpoint {
            insecure: entry.insecure || is_default_insecure(&registry),
            registry,
            repository,
            mirror: false,
        });
        Ok(out)
    }

    /// The entry with the longest prefix matching `r`, and how many bytes of
    /// `r.name()` that prefix covers.
    fn matching_entry(&self, r: &ImageRef) -> Option<(&RegistryEntry, usize)> {
        let name = r.name();
        let mut best: Option<(&RegistryEntry, usize)> = None;
        for entry in &self.registries {
            let Some(matched) = prefix_match(&entry.prefix, &name, &r.registry) else {
                continue;
            };
            // Longest prefix string wins; on a tie the first entry is kept.
            if best.is_none_or(|(b, _)| entry.prefix.len() > b.prefix.len()) {
                best = Some((entry, matched));
            }
        }
        best
    }
}

/// How many bytes of `name` the prefix covers, if it matches at a path
/// component boundary ("example.com/foo" covers "example.com/foo/bar" but not
/// "example.com/foobar"). A wildcard "*.example.com" covers the whole host of
/// any subdomain, port included.
fn prefix_match(prefix: &str, name: &str, registry: &str) -> Option<usize> {
    if let Some(domain) = prefix.strip_prefix('*') {
        // `domain` keeps its leading '.', so "example.com" itself does not match.
        let host = host_without_port(registry);
        let matches = host.len() > domain.len()
            && host
                .get(host.len() - domain.len()..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case(domain));
        return matches.then_some(registry.len());
    }
    let rest = name.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(prefix.len())
}

/// Splits "host[:port]/path" into its parts; None when there is no path.
fn split_location(location: &str) -> Option<(String, String)> {
    let (host, path) = location.split_once('/')?;
    if host.is_empty() || path.is_empty() {
        return None;
    }
    Some((host.to_string(), path.to_string()))
}

fn normalize_location(s: &str) -> String {
    let trimmed = s.trim().trim_end_matches('/');
    let (host, path) = match trimmed.split_once('/') {
        Some((host, path)) => (host, Some(path)),
        None => (trimmed, None),
    };
    let host = normalize_registry_host(host);
    match path {
        Some(path) => format!("{host}/{path}"),
        None => host.to_string(),
    }
}

/// A prefix or location: "host[:port][/path]" with no URL scheme.
fn validate_location(location: &str) -> Result<(), String> {
    if location.contains("://") {
        return Err("URL schemes are not supported; give host[:port][/path]".to_string());
    }
    let (host, path) = match location.split_once('/') {
        Some((host, path)) => (host, Some(path)),
        None => (location, None),
    };
    reference::validate_host(host)?;
    if let Some(path) = path {
        reference::validate_repository(path)?;
    }
    Ok(())
}

fn validate_alias(short: &str, full: &str) -> Result<(), String> {
    let ctx = format!("[aliases] {short:?}");
    match reference::parse(short) {
        Ok(ParsedRef::Short {
            tag: None,
            digest: None,
            ..
        }) => {}
        Ok(_) => {
            return Err(format!(
                "{ctx}: the key must be a short name without registry, tag or digest"
            ))
        }
        Err(e) => return Err(format!("{ctx}: {e}")),
    }
    match reference::parse(full) {
        Ok(ParsedRef::Qualified(ImageRef {
            tag: None,
            digest: None,
            ..
        })) => Ok(()),
        Ok(_) => Err(format!(
            "{ctx}: the value {full:?} must be a fully-qualified name without tag or digest"
        )),
        Err(e) => Err(format!("{ctx}: {e}")),
    }
}

fn host_without_port(host_with_port: &str) -> &str {
    if host_with_port.starts_with('[') {
        return match host_with_port.find(']') {
            Some(end) => &host_with_port[..=end],
            None => host_with_port,
        };
    }
    host_with_port
        .split_once(':')
        .map_or(host_with_port, |(host, _)| host)
}

/// Hosts that are reachable only from this machine, where TLS buys nothing and
/// local development registries rarely have it: "localhost", 127.0.0.0/8 and
/// "[::1]", with any port.
pub fn is_default_insecure(host_with_port: &str) -> bool {
    let host = host_without_port(host_with_port);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback());
    }
    host.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D256: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn ep(registry: &str, repository: &str, insecure: bool, mirror: bool) -> Endpoint {
        Endpoint {
            registry: registry.into(),
            repository: repository.into(),
            insecure,
            mirror,
        }
    }

    fn refs(v: &[ImageRef]) -> Vec<String> {
        v.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn parse_full_example_and_ignore_unknown_keys() {
        let conf = RegistriesConf::parse(
            r#"
            unqualified-search-registries = ["quay.io", "docker.io"]
            short-name-mode = "enforcing"
            credential-helpers = ["containers-auth.json"]

            [aliases]
            "busybox" = "docker.io/library/busybox"

            [[registry]]
            location = "registry.example.com/"

            [[registry]]
            prefix = "index.docker.io"
            location = "docker.io"
            mirror-by-digest-only = false
            [[registry.mirror]]
            location = "mirror.local:5000/hub"
            insecure = true
            pull-from-mirror = "digest-only"
            "#,
        )
        .unwrap();
        assert_eq!(conf.short_name_mode, ShortNameMode::Enforcing);
        assert_eq!(conf.unqualified_search_registries, ["quay.io", "docker.io"]);
        assert_eq!(conf.aliases["busybox"], "docker.io/library/busybox");
        // Prefix defaults to the location, trailing '/' dropped.
        assert_eq!(conf.registries[0].prefix, "registry.example.com");
        assert_eq!(conf.registries[1].prefix, "docker.io");
        assert_eq!(
            conf.registries[1].mirrors[0].pull_from_mirror,
            PullFromMirror::DigestOnly
        );
        assert_eq!(
            RegistriesConf::parse("").unwrap(),
            RegistriesConf::default()
        );
        assert_eq!(
            RegistriesConf::default().short_name_mode,
            ShortNameMode::Permissive
        );
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let cases = [
            ("short-name-mode = \"strict\"", "short-name-mode"),
            ("[[registry]]\nlocation = \"x.io\"\ninsecure = \"yes\"", "line 3"),
            ("unqualified-search-registries = [\"https://quay.io\"]", "\"https://quay.io\""),
            ("[[registry]]\nprefix = \"https://x.io\"\nlocation = \"x.io\"", "URL schemes"),
            ("[[registry]]\nlocation = \"http://x.io\"", "URL schemes"),
            ("[[registry]]\ninsecure = true", "neither prefix nor location"),
            ("[[registry]]\nprefix = \"x.io/foo\"", "location may only be empty"),
            ("[[registry]]\nprefix = \"*.\"\n", "wildcard"),
            ("[[registry]]\nprefix = \"*.x.io/foo\"\n", "wildcard"),
            ("[[registry]]\nprefix = \"x.io/Foo\"\nlocation = \"y.io\"", "lowercase"),
            ("[[registry]]\nlocation = \"x.io\"\n[[registry.mirror]]\nlocation = \"\"", "mirror location is empty"),
            ("[[registry]]\nlocation = \"x.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"tag-only\"", "cannot be combined"),
            ("[[registry]]\nlocation = \"x.io\"\n[[registry]]\nlocation = \"x.io/\"", "more than once"),
            ("[aliases]\n\"quay.io/busybox\" = \"quay.io/busybox\"", "[aliases] \"quay.io/busybox\""),
            ("[aliases]\n\"busybox\" = \"busybox\"", "fully-qualified"),
            ("[aliases]\n\"busybox\" = \"docker.io/busybox:1\"", "without tag"),
            ("[registries.search]\nregistries = [\"quay.io\"]", "v1 format"),
            ("this is not toml", "line 1"),
        ];
        for (text, want) in cases {
            let err = RegistriesConf::parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn load_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("registries.conf");
        assert_eq!(
            RegistriesConf::load(&missing, true).unwrap(),
            RegistriesConf::default()
        );
        let err = RegistriesConf::load(&missing, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("registries.conf"), "{err}");
        std::fs::write(&missing, "short-name-mode = 3").unwrap();
        let err = RegistriesConf::load(&missing, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }

    #[test]
    fn candidates_table() {
        let conf = |text: &str| RegistriesConf::parse(text).unwrap();
        let none = conf("");
        let two =
            "unqualified-search-registries = [\"quay.io\", \"docker.io\", \"index.docker.io\"]";
        let permissive = conf(two);
        let disabled = conf(&format!("{two}\nshort-name-mode = \"disabled\""));
        let enforcing_one =
            conf("unqualified-search-registries = [\"quay.io\"]\nshort-name-mode = \"enforcing\"");
        let aliased = conf(&format!(
            "{two}\nshort-name-mode = \"enforcing\"\n[aliases]\n\"busybox\" = \"docker.io/library/busybox\"\n\"tools/dig\" = \"quay.io/net/dig\""
        ));
        let digest_ref = format!("busybox@{D256}");
        let cases: Vec<(&RegistriesConf, &str, Vec<String>)> = vec![
            (
                &none,
                "busybox",
                vec!["docker.io/library/busybox:latest".into()],
            ),
            (&none, "org/app:1", vec!["docker.io/org/app:1".into()]),
            (
                &permissive,
                "app",
                vec![
                    "quay.io/app:latest".into(),
                    "docker.io/library/app:latest".into(),
                ],
            ),
            (
                &disabled,
                "app:2",
                vec!["quay.io/app:2".into(), "docker.io/library/app:2".into()],
            ),
            (&enforcing_one, "app", vec!["quay.io/app:latest".into()]),
            (
                &aliased,
                "busybox:1.36",
                vec!["docker.io/library/busybox:1.36".into()],
            ),
            (
                &aliased,
                digest_ref.as_str(),
                vec![format!("docker.io/library/busybox@{D256}")],
            ),
            (&aliased, "tools/dig", vec!["quay.io/net/dig:latest".into()]),
            (&aliased, "ghcr.io/x/y:z", vec!["ghcr.io/x/y:z".into()]),
        ];
        for (conf, input, want) in cases {
            let parsed = reference::parse(input).unwrap();
            assert_eq!(refs(&conf.candidates(&parsed).unwrap()), want, "{input}");
        }

        let err = aliased
            .candidates(&reference::parse("app").unwrap())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "short name \"app\" is ambiguous: it could be on quay.io, docker.io (short-name-mode = enforcing)"
        );
    }

    #[test]
    fn endpoints_table() {
        let conf = RegistriesConf::parse(
            r#"
            [[registry]]
            prefix = "example.com/foo"
            location = "internal:5000/bar"
            [[registry.mirror]]
            location = "mirror.local/cache"

            [[registry]]
            location = "example.com"
            insecure = true

            [[registry]]
            prefix = "docker.io"
            location = "docker.io"
            [[registry.mirror]]
            location = "mirror.gcr.io"
            [[registry.mirror]]
            location = "localhost:5001/hub"
            pull-from-mirror = "digest-only"
            [[registry.mirror]]
            location = "tags.local"
            pull-from-mirror = "tag-only"

            [[registry]]
            prefix = "*.corp.io"
            [[registry.mirror]]
            location = "cache.corp.io:443"

            [[registry]]
            prefix = "*.wild.io"
            location = "one.wild.io/all"

            [[registry]]
            location = "evil.io/bad"
            blocked = true

            [[registry]]
            prefix = "quay.io/only"
            location = "quay.io"

            [[registry]]
            prefix = "digests.io"
            location = "digests.io"
            mirror-by-digest-only = true
            [[registry.mirror]]
            location = "dm.io"
            "#,
        )
        .unwrap();
        let digest_ref = format!("docker.io/library/busybox@{D256}");
        let tag_digest_ref = format!("digests.io/a:1@{D256}");
        let cases: Vec<(&str, Vec<Endpoint>)> = vec![
            (
                "example.com/foo/img:1",
                vec![
                    ep("mirror.local", "cache/img", false, true),
                    ep("internal:5000", "bar/img", false, false),
                ],
            ),
            (
                "example.com/foo/a/b",
                vec![
                    ep("mirror.local", "cache/a/b", false, true),
                    ep("internal:5000", "bar/a/b", false, false),
                ],
            ),
            // Not a component boundary: falls back to the shorter "example.com" entry.
            (
                "example.com/foobar",
                vec![ep("example.com", "foobar", true, false)],
            ),
            (
                "busybox",
                vec![
                    ep("mirror.gcr.io", "library/busybox", false, true),
                    ep("tags.local", "library/busybox", false, true),
                    ep("docker.io", "library/busybox", false, false),
                ],
            ),
            (
                digest_ref.as_str(),
                vec![
                    ep("mirror.gcr.io", "library/busybox", false, true),
                    ep("localhost:5001", "hub/library/busybox", true, true),
                    ep("docker.io", "library/busybox", false, false),
                ],
            ),
            (
                "a.corp.io/x/y",
                vec![
                    ep("cache.corp.io:443", "x/y", false, true),
                    ep("a.corp.io", "x/y", false, false),
                ],
            ),
            (
                "a.b.corp.io:8443/x",
                vec![
                    ep("cache.corp.io:443", "x", false, true),
                    ep("a.b.corp.io:8443", "x", false, false),
                ],
            ),
            // The bare domain is not a subdomain of itself.
            ("corp.io/x", vec![ep("corp.io", "x", false, false)]),
            (
                "two.wild.io/app",
                vec![ep("one.wild.io", "all/app", false, false)],
            ),
            ("evil.io/good", vec![ep("evil.io", "good", false, false)]),
            ("quay.io/only/x", vec![ep("quay.io", "x", false, false)]),
            ("digests.io/a:1", vec![ep("digests.io", "a", false, false)]),
            (
                tag_digest_ref.as_str(),
                vec![
                    ep("dm.io", "a", false, true),
                    ep("digests.io", "a", false, false),
                ],
            ),
            (
                "localhost:5000/app",
                vec![ep("localhost:5000", "app", true, false)],
            ),
            (
                "127.1.2.3:5000/app",
                vec![ep("127.1.2.3:5000", "app", true, false)],
            ),
            ("[::1]:5000/app", vec![ep("[::1]:5000", "app", true, false)]),
            ("quay.io/other", vec![ep("quay.io", "other", false, false)]),
        ];
        for (input, want) in cases {
            let r = reference::normalize(input).unwrap();
            assert_eq!(conf.endpoints(&r).unwrap(), want, "{input}");
        }

        let blocked = reference::normalize("evil.io/bad/x:1").unwrap();
        let err = conf.endpoints(&blocked).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "registry \"evil.io\" is blocked by \"evil.io/bad\" in registries.conf"
            ),
            "{err}"
        );

        // Rewriting a name equal to the prefix onto a bare host leaves no repository.
        let exact = RegistriesConf::parse("[[registry]]\nprefix = \"a.io/x\"\nlocation = \"b.io\"")
            .unwrap();
        let err = exact
            .endpoints(&reference::normalize("a.io/x").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no repository path"), "{err}");
    }

    #[test]
    fn default_insecure_hosts() {
        let cases = [
            ("localhost", true),
            ("localhost:5000", true),
            ("LOCALHOST:1", true),
            ("127.0.0.1", true),
            ("127.255.0.9:5000", true),
            ("[::1]", true),
            ("[::1]:5000", true),
            ("[0:0:0:0:0:0:0:1]:80", true),
            ("128.0.0.1", false),
            ("10.0.0.1:5000", false),
            ("[::2]:5000", false),
            ("localhost.example.com", false),
            ("docker.io", false),
            ("127.0.0.1.nip.io", false),
            ("", false),
        ];
        for (host, want) in cases {
            assert_eq!(is_default_insecure(host), want, "{host}");
        }
    }
}
