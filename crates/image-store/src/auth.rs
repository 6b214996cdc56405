//! Pull secrets: CRI `AuthConfig` fields and docker `config.json` /
//! containers `auth.json` files.
//!
//! Secrets must never reach logs, so `Auth` and `AuthFile` have hand-written
//! Debug/Display impls, and no error message ever quotes a secret field's value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde_json::Value;

use crate::reference::normalize_registry_host;

/// Credentials for one registry. Debug/Display redact secrets.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// A registry token used as-is.
    Bearer(String),
    /// An OAuth2 refresh token, exchanged for an access token at the registry's token endpoint.
    IdentityToken(String),
}

impl Auth {
    /// A short name for logs: "anonymous", "basic", "bearer" or "identity-token".
    pub fn kind(&self) -> &'static str {
        match self {
            Auth::Anonymous => "anonymous",
            Auth::Basic { .. } => "basic",
            Auth::Bearer(_) => "bearer",
            Auth::IdentityToken(_) => "identity-token",
        }
    }
}

const REDACTED: &str = "<redacted>";

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Anonymous => f.write_str("Anonymous"),
            Auth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &format_args!("{REDACTED}"))
                .finish(),
            Auth::Bearer(_) => f
                .debug_tuple("Bearer")
                .field(&format_args!("{REDACTED}"))
                .finish(),
            Auth::IdentityToken(_) => f
                .debug_tuple("IdentityToken")
                .field(&format_args!("{REDACTED}"))
                .finish(),
        }
    }
}

impl fmt::Display for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Basic { username, .. } => write!(f, "basic auth as {username:?}"),
            other => f.write_str(other.kind()),
        }
    }
}

/// Errors name the field or file entry at fault, never a secret value.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid CRI auth config: field `{field}` {reason}")]
    Cri { field: &'static str, reason: String },
    #[error("reading auth file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid auth file {origin}: {reason}")]
    File { origin: String, reason: String },
}

/// The credential fields shared by CRI AuthConfig and auth-file entries.
#[derive(Default)]
struct Fields<'a> {
    username: &'a str,
    password: &'a str,
    auth: &'a str,
    identity_token: &'a str,
    registry_token: &'a str,
}

/// Applies the precedence registry token > identity token > username/password
/// > `auth`. Errors are (field name, reason) and never include values.
fn resolve(f: &Fields<'_>) -> Result<Option<Auth>, (&'static str, String)> {
    if !f.registry_token.is_empty() {
        return Ok(Some(Auth::Bearer(f.registry_token.to_string())));
    }
    if !f.identity_token.is_empty() {
        return Ok(Some(Auth::IdentityToken(f.identity_token.to_string())));
    }
    // A username signals the intent to authenticate (as in CRI-O); the password may be empty.
    if !f.username.is_empty() {
        return Ok(Some(Auth::Basic {
            username: f.username.to_string(),
            password: f.password.to_string(),
        }));
    }
    if !f.auth.is_empty() {
        let (username, password) = decode_basic(f.auth).map_err(|reason| ("auth", reason))?;
        return Ok(Some(Auth::Basic { username, password }));
    }
    // Silently pulling anonymously would hide a half-filled secret.
    if !f.password.is_empty() {
        return Err(("password", "is set but `username` is empty".to_string()));
    }
    Ok(None)
}

/// Decodes `base64("user:password")`. Padding is optional because some tools
/// strip it. The reason never contains decoded bytes.
fn decode_basic(auth: &str) -> Result<(String, String), String> {
    let engine = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = engine
        .decode(auth.trim())
        .map_err(|_| "is not valid base64".to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "does not decode to UTF-8 text".to_string())?;
    let Some((username, password)) = text.split_once(':') else {
        return Err("does not decode to \"username:password\" (no ':')".to_string());
    };
    if username.is_empty() {
        return Err("decodes to an empty username".to_string());
    }
    // docker pads some stored passwords with NULs and strips them the same way.
    Ok((
        username.to_string(),
        password.trim_matches('\0').to_string(),
    ))
}

/// Credentials from CRI AuthConfig fields (plain strings, so this module does
/// not depend on the gRPC types). `Ok(None)` means no credentials were given.
pub fn from_cri(
    username: &str,
    password: &str,
    auth: &str,
    server_address: &str,
    identity_token: &str,
    registry_token: &str,
) -> Result<Option<Auth>, AuthError> {
    // The kubelet already picked these credentials for the image's registry;
    // server_address is its informational echo of the matching key (often a
    // legacy URL), so it is not used to filter.
    let _ = server_address;
    resolve(&Fields {
        username,
        password,
        auth,
        identity_token,
        registry_token,
    })
    .map_err(|(field, reason)| AuthError::Cri { field, reason })
}

/// Credentials from a docker `config.json` or containers `auth.json`, keyed by
/// normalised "registry[/namespace[/repo]]".
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthFile {
    entries: BTreeMap<String, Auth>,
}

/// Shows keys and credential kinds only.
impl fmt::Debug for AuthFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthFile ")?;
        f.debug_map()
            .entries(self.entries.iter().map(|(k, a)| (k, a.kind())))
            .finish()
    }
}

const INLINE_ORIGIN: &str = "auth.json";

/// Why an auth file's ownership or mode lets others read (or replace) its
/// credentials: group/other permission bits, or an owner other than root.
/// None when it is fine or cannot be read.
pub fn loose_permissions(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    if m.mode() & 0o077 != 0 {
        return Some(format!(
            "is mode {:04o} (group/other may read it)",
            m.mode() & 0o7777
        ));
    }
    if m.uid() != 0 {
        return Some(format!("is owned by uid {}, not root", m.uid()));
    }
    None
}

impl AuthFile {
    /// Parses auth-file JSON. Keys other than "auths" (credHelpers, credsStore, ...) are ignored.
    pub fn parse(json: &str) -> Result<Self, AuthError> {
        Self::parse_named(json, INLINE_ORIGIN)
    }

    /// Reads `path`; a missing file is `Ok(None)` because having no auth file is normal.
    pub fn load(path: &Path) -> Result<Option<Self>, AuthError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse_named(&text, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(AuthError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    fn parse_named(json: &str, origin: &str) -> Result<Self, AuthError> {
        let fail = |reason: String| AuthError::File {
            origin: origin.to_string(),
            reason,
        };
        // Only the position is reported: serde_json messages may quote input,
        // and the input is full of secrets.
        let root: Value = serde_json::from_str(json).map_err(|e| {
            fail(format!(
                "not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let Value::Object(root) = root else {
            return Err(fail("the top level is not a JSON object".to_string()));
        };
        let auths = match root.get("auths") {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(Value::Object(auths)) => auths,
            Some(_) => return Err(fail("\"auths\" is not an object".to_string())),
        };

        // (auth, key was already in normalised form). A key written in
        // normalised form beats a legacy URL key that normalises to the same
        // thing, as in containers/image.
        let mut entries: BTreeMap<String, (Auth, bool)> = BTreeMap::new();
        for (raw_key, value) in auths {
            let (key, exact) = normalize_key(raw_key);
            if key.is_empty() {
                return Err(fail(format!("key {raw_key:?} names no registry")));
            }
            let Value::Object(obj) = value else {
                return Err(fail(format!("entry {raw_key:?} is not an object")));
            };
            let field = |name: &'static str| -> Result<&str, AuthError> {
                match obj.get(name) {
                    None | Some(Value::Null) => Ok(""),
                    Some(Value::String(s)) => Ok(s),
                    Some(_) => Err(fail(format!(
                        "entry {raw_key:?}: field \"{name}\" is not a string"
                    ))),
                }
            };
            let fields = Fields {
                username: field("username")?,
                password: field("password")?,
                auth: field("auth")?,
                identity_token: field("identitytoken")?,
                registry_token: field("registrytoken")?,
            };
            let auth = resolve(&fields).map_err(|(name, reason)| {
                fail(format!(
                    "entry {raw_key:?}: field \"{}\" {reason}",
                    file_field_name(name)
                ))
            })?;
            // Entries without credentials (left behind by credsStore) are skipped
            // so lookup falls through to a shorter key.
            let Some(auth) = auth else { continue };
            match entries.get(&key) {
                Some((_, true)) => {}
                Some((_, false)) if !exact => {}
                _ => {
                    entries.insert(key, (auth, exact));
                }
            }
        }
        Ok(AuthFile {
            entries: entries.into_iter().map(|(k, (a, _))| (k, a)).collect(),
        })
    }

    /// Longest matching key wins: for registry "r:5000", repository "ns/app",
    /// try "r:5000/ns/app", then "r:5000/ns", then "r:5000".
    pub fn lookup(&self, registry: &str, repository: &str) -> Option<&Auth> {
        let registry = normalize_registry_host(registry);
        let mut key = if repository.is_empty() {
            registry.to_string()
        } else {
            format!("{registry}/{repository}")
        };
        loop {
            if let Some(auth) = self.entries.get(&key) {
                return Some(auth);
            }
            match key.rfind('/') {
                Some(i) if i >= registry.len() => key.truncate(i),
                _ => return None,
            }
        }
    }

    /// Several files in priority order: the first file wins on equal keys;
    /// a longer key still wins across files because lookup prefers it.
    pub fn merge(files: Vec<AuthFile>) -> AuthFile {
        let mut entries = BTreeMap::new();
        for file in files {
            for (key, auth) in file.entries {
                entries.entry(key).or_insert(auth);
            }
        }
        AuthFile { entries }
    }

    /// The normalised keys, for diagnostics.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Auth files spell the token fields without the underscore.
fn file_field_name(field: &'static str) -> &'static str {
    match field {
        "identity_token" => "identitytoken",
        "registry_token" => "registrytoken",
        other => other,
    }
}

/// Normalises an auth-file key; the flag is true when the key was already in
/// normalised form. URL keys ("https://index.docker.io/v1/") keep only their
/// host, like containers/image does for docker's legacy keys.
fn normalize_key(raw: &str) -> (String, bool) {
    let raw = raw.trim();
    let (key, mut exact) = match raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
    {
        Some(rest) => (rest.split('/').next().unwrap_or_default(), false),
        None => (raw.trim_end_matches('/'), true),
    };
    let (host, path) = match key.split_once('/') {
        Some((host, path)) => (host, Some(path)),
        None => (key, None),
    };
    let normalized_host = normalize_registry_host(host);
    if normalized_host != host {
        exact = false;
    }
    let key = match path {
        Some(path) => format!("{normalized_host}/{path}"),
        None => normalized_host.to_string(),
    };
    (key, exact)
}

#[cfg(test)]
mod tests {

    #[test]
    fn loose_auth_file_permissions_are_named() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("auth.json");
        std::fs::write(&f, "{}").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        // Tests run as root: a 0600 root-owned file is fine.
        assert_eq!(loose_permissions(&f), None);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            loose_permissions(&f).unwrap(),
            "is mode 0644 (group/other may read it)"
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        nix::unistd::chown(&f, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
        assert_eq!(
            loose_permissions(&f).unwrap(),
            "is owned by uid 1000, not root"
        );
        assert_eq!(loose_permissions(&d.path().join("missing")), None);
    }

    use super::*;

    const PASSWORD: &str = "hunter2:with:colons";
    const TOKEN: &str = "tok-SECRET-abc";
    const IDTOKEN: &str = "idt-SECRET-xyz";

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn basic(u: &str, p: &str) -> Auth {
        Auth::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    fn assert_no_secret(text: &str) {
        for secret in [PASSWORD, "hunter2", TOKEN, IDTOKEN, "SECRET"] {
            assert!(!text.contains(secret), "{text:?} leaks {secret:?}");
        }
    }

    #[test]
    fn from_cri_precedence() {
        let encoded = b64(&format!("alice:{PASSWORD}"));
        let unpadded = b64("bob:pw1").trim_end_matches('=').to_string();
        let nul_padded = b64("carol:pw\0\0");
        // (username, password, auth, identity_token, registry_token) -> result
        let cases: Vec<([&str; 5], Option<Auth>)> = vec![
            (["", "", "", "", ""], None),
            (
                ["alice", PASSWORD, encoded.as_str(), IDTOKEN, TOKEN],
                Some(Auth::Bearer(TOKEN.into())),
            ),
            (
                ["alice", PASSWORD, encoded.as_str(), IDTOKEN, ""],
                Some(Auth::IdentityToken(IDTOKEN.into())),
            ),
            (
                ["dave", "pw", encoded.as_str(), "", ""],
                Some(basic("dave", "pw")),
            ),
            (["dave", "", "", "", ""], Some(basic("dave", ""))),
            (
                ["", "", encoded.as_str(), "", ""],
                Some(basic("alice", PASSWORD)),
            ),
            (
                ["", "", unpadded.as_str(), "", ""],
                Some(basic("bob", "pw1")),
            ),
            (
                ["", "", nul_padded.as_str(), "", ""],
                Some(basic("carol", "pw")),
            ),
        ];
        for ([u, p, a, id, rt], want) in cases {
            let got = from_cri(u, p, a, "https://index.docker.io/v1/", id, rt).unwrap();
            assert_eq!(got, want, "{u:?} {a:?}");
        }
    }

    #[test]
    fn from_cri_errors_name_field_not_value() {
        let no_colon = b64("SECRETnocolon");
        let empty_user = b64(":hunter2");
        let not_utf8 = base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe, b':', b'x']);
        let cases: Vec<(&str, &str, &str)> = vec![
            ("", "hunter2-SECRET!!", "field `auth` is not valid base64"),
            (
                "",
                no_colon.as_str(),
                "field `auth` does not decode to \"username:password\"",
            ),
            (
                "",
                empty_user.as_str(),
                "field `auth` decodes to an empty username",
            ),
            (
                "",
                not_utf8.as_str(),
                "field `auth` does not decode to UTF-8",
            ),
            (
                PASSWORD,
                "",
                "field `password` is set but `username` is empty",
            ),
        ];
        for (password, auth, want) in cases {
            let err = from_cri("", password, auth, "", "", "")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
            assert_no_secret(&err);
        }
    }

    #[test]
    fn debug_and_display_redact() {
        let file = AuthFile::parse(&format!(
            r#"{{"auths": {{"quay.io": {{"auth": "{}"}}, "ghcr.io": {{"registrytoken": "{TOKEN}"}}}}}}"#,
            b64(&format!("alice:{PASSWORD}"))
        ))
        .unwrap();
        let values = [
            basic("alice", PASSWORD),
            Auth::Bearer(TOKEN.into()),
            Auth::IdentityToken(IDTOKEN.into()),
            Auth::Anonymous,
        ];
        for a in &values {
            assert_no_secret(&format!("{a:?}"));
            assert_no_secret(&format!("{a:#?}"));
            assert_no_secret(&format!("{a}"));
        }
        assert_eq!(
            format!("{:?}", values[0]),
            "Basic { username: \"alice\", password: <redacted> }"
        );
        assert_eq!(format!("{}", values[0]), "basic auth as \"alice\"");
        assert_eq!(format!("{:?}", values[1]), "Bearer(<redacted>)");
        assert_no_secret(&format!("{file:?}"));
        assert_eq!(
            format!("{file:?}"),
            "AuthFile {\"ghcr.io\": \"bearer\", \"quay.io\": \"basic\"}"
        );
        let kinds: Vec<&str> = values.iter().map(Auth::kind).collect();
        assert_eq!(kinds, ["basic", "bearer", "identity-token", "anonymous"]);
    }

    #[test]
    fn auth_file_keys_and_lookup() {
        let json = format!(
            r#"{{
              "auths": {{
                "https://index.docker.io/v1/": {{"auth": "{hub}"}},
                "docker.io/myorg": {{"username": "org", "password": "p-org"}},
                "http://localhost:5000/v2/": {{"identitytoken": "{IDTOKEN}"}},
                "r:5000": {{"auth": "{r}"}},
                "r:5000/ns/": {{"registrytoken": "{TOKEN}"}},
                "quay.io": {{}},
                "[::1]:5000": {{"auth": "{r}", "email": "x@example.com"}}
              }},
              "credHelpers": {{"gcr.io": "gcloud"}},
              "credsStore": "desktop"
            }}"#,
            hub = b64("hubuser:hubpass"),
            r = b64("ruser:rpass"),
        );
        let file = AuthFile::parse(&json).unwrap();
        let cases: Vec<(&str, &str, Option<Auth>)> = vec![
            (
                "docker.io",
                "library/busybox",
                Some(basic("hubuser", "hubpass")),
            ),
            (
                "index.docker.io",
                "library/busybox",
                Some(basic("hubuser", "hubpass")),
            ),
            ("docker.io", "myorg/app", Some(basic("org", "p-org"))),
            ("docker.io", "myorgx/app", Some(basic("hubuser", "hubpass"))),
            (
                "localhost:5000",
                "a",
                Some(Auth::IdentityToken(IDTOKEN.into())),
            ),
            ("r:5000", "ns/app", Some(Auth::Bearer(TOKEN.into()))),
            ("r:5000", "ns", Some(Auth::Bearer(TOKEN.into()))),
            ("r:5000", "other/app", Some(basic("ruser", "rpass"))),
            ("r:5000", "", Some(basic("ruser", "rpass"))),
            ("[::1]:5000", "x/y", Some(basic("ruser", "rpass"))),
            ("r", "ns/app", None),
            ("quay.io", "a/b", None),
        ];
        for (registry, repository, want) in cases {
            assert_eq!(
                file.lookup(registry, repository),
                want.as_ref(),
                "{registry} {repository}"
            );
        }
        let keys: Vec<&str> = file.keys().collect();
        assert_eq!(
            keys,
            [
                "[::1]:5000",
                "docker.io",
                "docker.io/myorg",
                "localhost:5000",
                "r:5000",
                "r:5000/ns"
            ]
        );
        assert!(AuthFile::parse("{}").unwrap().is_empty());
        assert!(AuthFile::parse(r#"{"credsStore": "x"}"#)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn normalised_key_beats_legacy_url_key() {
        let json = format!(
            r#"{{"auths": {{"docker.io": {{"auth": "{a}"}}, "https://index.docker.io/v1/": {{"auth": "{b}"}}}}}}"#,
            a = b64("new:1"),
            b = b64("old:2"),
        );
        let file = AuthFile::parse(&json).unwrap();
        assert_eq!(file.lookup("docker.io", "x/y"), Some(&basic("new", "1")));
    }

    #[test]
    fn auth_file_errors_never_leak() {
        let cases: Vec<(String, &str)> = vec![
            (
                format!("{{\"auths\": {{\"quay.io\": {{\"auth\": \"{PASSWORD}\""),
                "not valid JSON (line 1",
            ),
            ("[]".into(), "top level is not a JSON object"),
            (
                format!("{{\"auths\": \"{TOKEN}\"}}"),
                "\"auths\" is not an object",
            ),
            (
                format!("{{\"auths\": {{\"quay.io\": \"{TOKEN}\"}}}}"),
                "entry \"quay.io\" is not an object",
            ),
            (
                format!("{{\"auths\": {{\"quay.io\": {{\"auth\": \"{PASSWORD}\"}}}}}}"),
                "entry \"quay.io\": field \"auth\" is not valid base64",
            ),
            (
                format!(
                    "{{\"auths\": {{\"quay.io\": {{\"auth\": \"{}\"}}}}}}",
                    b64("SECRET")
                ),
                "field \"auth\" does not decode",
            ),
            (
                format!("{{\"auths\": {{\"quay.io\": {{\"password\": \"{PASSWORD}\"}}}}}}"),
                "field \"password\" is set but",
            ),
            (
                "{\"auths\": {\"quay.io\": {\"identitytoken\": 5}}}".into(),
                "field \"identitytoken\" is not a string",
            ),
            (
                "{\"auths\": {\"https://\": {}}}".into(),
                "key \"https://\" names no registry",
            ),
        ];
        for (json, want) in cases {
            let err = AuthFile::parse(&json).unwrap_err().to_string();
            assert!(err.starts_with("invalid auth file auth.json: "), "{err}");
            assert!(err.contains(want), "{err:?} lacks {want:?}");
            assert_no_secret(&err);
        }
    }

    #[test]
    fn load_and_merge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        assert_eq!(AuthFile::load(&path).unwrap(), None);
        std::fs::write(
            &path,
            format!("{{\"auths\": {{\"q.io\": {{\"registrytoken\": \"{TOKEN}\"}}}}}}"),
        )
        .unwrap();
        let loaded = AuthFile::load(&path).unwrap().unwrap();
        assert_eq!(
            loaded.lookup("q.io", "a"),
            Some(&Auth::Bearer(TOKEN.into()))
        );
        std::fs::write(&path, "nope").unwrap();
        let err = AuthFile::load(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");

        let file = |pairs: &[(&str, &str)]| {
            let auths: Vec<String> = pairs
                .iter()
                .map(|(k, user)| {
                    format!("\"{k}\": {{\"username\": \"{user}\", \"password\": \"p\"}}")
                })
                .collect();
            AuthFile::parse(&format!("{{\"auths\": {{{}}}}}", auths.join(","))).unwrap()
        };
        let merged = AuthFile::merge(vec![
            file(&[("q.io", "first"), ("z.io", "first")]),
            file(&[
                ("q.io", "second"),
                ("q.io/ns", "second"),
                ("y.io", "second"),
            ]),
        ]);
        let cases = [
            ("q.io", "app", Some("first")),
            ("q.io", "ns/app", Some("second")),
            ("y.io", "app", Some("second")),
            ("z.io", "app", Some("first")),
            ("x.io", "app", None),
        ];
        for (registry, repository, want) in cases {
            let got = merged.lookup(registry, repository).map(|a| match a {
                Auth::Basic { username, .. } => username.as_str(),
                _ => "other",
            });
            assert_eq!(got, want, "{registry} {repository}");
        }
        assert_eq!(AuthFile::merge(vec![]), AuthFile::default());
    }
}
