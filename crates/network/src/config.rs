//! CNI network configuration, as libcni loads it and CRI-O picks it.
//!
//! A config directory holds `.conflist` files (a network: a name, a
//! `cniVersion` and a chain of plugins) and `.conf`/`.json` files (a single
//! plugin's config, which is wrapped into a one-plugin list under its own
//! name and version). The network crius uses is the one named by
//! `cni_default_network`, or, when that is empty, the first valid file in
//! lexical order of file name. A file that does not parse, names no
//! network or has no plugins is skipped, and the reason kept so the daemon
//! can log it by name. Plugins keep their JSON as written: a plugin is
//! handed its own config with the list's name and version (and, later,
//! `prevResult` and `runtimeConfig`) added.

use serde_json::{Map, Value};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The extensions libcni reads, in the order CRI-O lists them.
pub const EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

/// Largest config file read: a network config is a few kilobytes; a huge
/// file in the directory is a mistake, not a network.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("not a JSON object")]
    NotObject,
    #[error("no network name")]
    NoName,
    #[error("network name {0:?} is not a valid CNI network name")]
    BadName(String),
    #[error("no plugins")]
    NoPlugins,
    #[error("plugins[{0}] has no type")]
    NoType(usize),
    #[error("plugins[{index}] type {kind:?} is not a plugin file name")]
    BadType { index: usize, kind: String },
    #[error("{field} must be {want}")]
    Field {
        field: &'static str,
        want: &'static str,
    },
    #[error("larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge,
    /// A dangling symlink, a file that vanished, no permission: this file
    /// is skipped, the rest of the directory still counts.
    #[error("unreadable: {0}")]
    Unreadable(String),
}

/// One network: a chain of plugins, as a `.conflist` describes it (or a
/// `.conf` wrapped into one).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    pub cni_version: String,
    /// CNI 1.1: skip CHECK for this network.
    pub disable_check: bool,
    /// CNI 1.1: skip GC for this network.
    pub disable_gc: bool,
    pub plugins: Vec<PluginConfig>,
    /// The file it came from.
    pub source: PathBuf,
}

/// One plugin of a network, its JSON kept as written.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// The plugin's binary name (`type`).
    pub kind: String,
    pub raw: Map<String, Value>,
}

impl PluginConfig {
    /// The capabilities the plugin asks the runtime for
    /// (`"capabilities": {"portMappings": true, ...}`).
    pub fn capabilities(&self) -> Vec<String> {
        self.raw
            .get("capabilities")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| v.as_bool() == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A CNI network name (the spec's `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`): it
/// names cache files and IPAM directories.
pub fn valid_name(name: &str) -> bool {
    let mut b = name.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn string(o: &Map<String, Value>, field: &'static str) -> Result<String, ConfigError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ConfigError::Field {
            field,
            want: "a string",
        }),
    }
}

fn flag(o: &Map<String, Value>, field: &'static str) -> Result<bool, ConfigError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ConfigError::Field {
            field,
            want: "true or false",
        }),
    }
}

fn plugin(index: usize, v: &Value) -> Result<PluginConfig, ConfigError> {
    let raw = v.as_object().ok_or(ConfigError::NoType(index))?.clone();
    let kind = match raw.get("type") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(ConfigError::NoType(index)),
    };
    // The type becomes a file name looked up in the plugin directories.
    if kind.contains('/') || kind == "." || kind == ".." || kind.contains('\0') {
        return Err(ConfigError::BadType { index, kind });
    }
    Ok(PluginConfig { kind, raw })
}

/// Parses one config file's bytes; `conflist` says whether it is a list
/// (`.conflist`) or a single plugin (`.conf`, `.json`), as libcni decides
/// by extension.
pub fn parse(
    source: &Path,
    bytes: &[u8],
    conflist: bool,
) -> Result<NetworkConfigList, ConfigError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
    let o = v.as_object().ok_or(ConfigError::NotObject)?;
    let name = string(o, "name")?;
    if name.is_empty() {
        return Err(ConfigError::NoName);
    }
    if !valid_name(&name) {
        return Err(ConfigError::BadName(name));
    }
    let cni_version = string(o, "cniVersion")?;
    let plugins = if conflist {
        let list = match o.get("plugins") {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) => return Err(ConfigError::NoPlugins),
            Some(_) => {
                return Err(ConfigError::Field {
                    field: "plugins",
                    want: "a list",
                })
            }
        };
        if list.is_empty() {
            return Err(ConfigError::NoPlugins);
        }
        list.iter()
            .enumerate()
            .map(|(i, p)| plugin(i, p))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        vec![plugin(0, &v)?]
    };
    Ok(NetworkConfigList {
        name,
        cni_version,
        disable_check: flag(o, "disableCheck")?,
        disable_gc: flag(o, "disableGC")?,
        plugins,
        source: source.to_path_buf(),
    })
}

/// What a config directory offers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selection {
    /// The network crius uses; None if there is none (not ready).
    pub network: Option<NetworkConfigList>,
    /// Files skipped, with why (to log by name).
    pub skipped: Vec<(PathBuf, ConfigError)>,
    /// Valid networks not chosen (their names), for the status message.
    pub others: Vec<String>,
}

/// Chooses the network from a directory's files (path and contents, in
/// any order): `default_network` by name, else the first valid file in
/// lexical order of file name. Files with other extensions are ignored.
pub fn select(files: &[(PathBuf, Vec<u8>)], default_network: &str) -> Selection {
    let mut files: Vec<&(PathBuf, Vec<u8>)> = files
        .iter()
        .filter(|(p, _)| extension(p).is_some())
        .collect();
    files.sort_by(|a, b| a.0.file_name().cmp(&b.0.file_name()));
    let mut out = Selection::default();
    for (path, bytes) in files {
        let conflist = extension(path) == Some("conflist");
        match parse(path, bytes, conflist) {
            Err(e) => out.skipped.push((path.clone(), e)),
            Ok(net) => {
                let wanted = if default_network.is_empty() {
                    out.network.is_none()
                } else {
                    net.name == default_network && out.network.is_none()
                };
                if wanted {
                    out.network = Some(net);
                } else {
                    out.others.push(net.name);
                }
            }
        }
    }
    out
}

fn extension(p: &Path) -> Option<&str> {
    let e = p.extension()?.to_str()?;
    EXTENSIONS.contains(&e).then_some(e)
}

/// Reads a config directory's candidate files (at most
/// [`MAX_CONFIG_BYTES`] each; a larger one is skipped as
/// [`ConfigError::TooLarge`]) and selects the network. A missing directory
/// offers nothing.
pub fn load_dir(dir: &Path, default_network: &str) -> std::io::Result<Selection> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Selection::default()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    let mut unusable = Vec::new();
    for e in entries {
        let path = e?.path();
        if extension(&path).is_none() {
            continue;
        }
        // Symlinks are followed, as libcni does (the directory is the
        // operator's); anything but a regular file is passed over.
        let read = || -> std::io::Result<Option<Vec<u8>>> {
            if !std::fs::metadata(&path)?.is_file() {
                return Ok(None);
            }
            // Bounded by the read itself, not by an earlier size: the file
            // may grow in between.
            let mut bytes = Vec::new();
            std::fs::File::open(&path)?
                .take(MAX_CONFIG_BYTES + 1)
                .read_to_end(&mut bytes)?;
            Ok(Some(bytes))
        };
        match read() {
            Ok(None) => {}
            Ok(Some(b)) if b.len() as u64 > MAX_CONFIG_BYTES => {
                unusable.push((path, ConfigError::TooLarge))
            }
            Ok(Some(b)) => files.push((path, b)),
            Err(e) => unusable.push((path, ConfigError::Unreadable(e.to_string()))),
        }
    }
    let mut s = select(&files, default_network);
    s.skipped.extend(unusable);
    Ok(s)
}

/// The plugin binaries of `net` found in none of `plugin_dirs`, by name,
/// in chain order (`exists` is the file check; the daemon passes one that
/// also wants the execute bit).
pub fn missing_plugins(
    net: &NetworkConfigList,
    plugin_dirs: &[PathBuf],
    exists: impl Fn(&Path) -> bool,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in &net.plugins {
        let found = plugin_dirs.iter().any(|d| exists(&d.join(&p.kind)));
        if !found && !out.contains(&p.kind) {
            out.push(p.kind.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> PathBuf {
        PathBuf::from("/etc/cni/net.d").join(name)
    }

    const BRIDGE_LIST: &str = r#"{"cniVersion":"1.0.0","name":"crius","plugins":[
        {"type":"bridge","bridge":"cni0","ipam":{"type":"host-local","ranges":[[{"subnet":"10.88.0.0/16"}]]}},
        {"type":"portmap","capabilities":{"portMappings":true}},
        {"type":"firewall"}]}"#;

    #[test]
    fn parsing_table() {
        type Case = (
            &'static str,
            bool,
            Result<(&'static str, &'static str, usize), ConfigError>,
        );
        let cases: Vec<Case> = vec![
            (BRIDGE_LIST, true, Ok(("crius", "1.0.0", 3))),
            (
                r#"{"cniVersion":"0.4.0","name":"single","type":"bridge"}"#,
                false,
                Ok(("single", "0.4.0", 1)),
            ),
            (
                r#"{"name":"nover","plugins":[{"type":"loopback"}]}"#,
                true,
                Ok(("nover", "", 1)),
            ),
            ("{", true, Err(ConfigError::Json(String::new()))),
            ("[]", true, Err(ConfigError::NotObject)),
            (
                r#"{"plugins":[{"type":"bridge"}]}"#,
                true,
                Err(ConfigError::NoName),
            ),
            (
                r#"{"name":"../x","plugins":[{"type":"bridge"}]}"#,
                true,
                Err(ConfigError::BadName("../x".into())),
            ),
            (
                r#"{"name":"n","plugins":[]}"#,
                true,
                Err(ConfigError::NoPlugins),
            ),
            (r#"{"name":"n"}"#, true, Err(ConfigError::NoPlugins)),
            (
                r#"{"name":"n","plugins":{}}"#,
                true,
                Err(ConfigError::Field {
                    field: "plugins",
                    want: "a list",
                }),
            ),
            (
                r#"{"name":"n","plugins":[{"type":"bridge"},{}]}"#,
                true,
                Err(ConfigError::NoType(1)),
            ),
            (
                r#"{"name":"n","plugins":[{"type":"../../bin/sh"}]}"#,
                true,
                Err(ConfigError::BadType {
                    index: 0,
                    kind: "../../bin/sh".into(),
                }),
            ),
            (r#"{"name":"n"}"#, false, Err(ConfigError::NoType(0))),
            (
                r#"{"name":5,"type":"bridge"}"#,
                false,
                Err(ConfigError::Field {
                    field: "name",
                    want: "a string",
                }),
            ),
            (
                r#"{"name":"n","disableCheck":"yes","plugins":[{"type":"bridge"}]}"#,
                true,
                Err(ConfigError::Field {
                    field: "disableCheck",
                    want: "true or false",
                }),
            ),
        ];
        for (text, conflist, want) in cases {
            let got = parse(Path::new("/x"), text.as_bytes(), conflist)
                .map(|n| (n.name.clone(), n.cni_version.clone(), n.plugins.len()));
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, (w.0.to_string(), w.1.to_string(), w.2), "{text}"),
                (Err(ConfigError::Json(_)), Err(ConfigError::Json(_))) => {}
                (g, w) => assert_eq!(g.map(|_| ()), w.map(|_| ()), "{text}"),
            }
        }
    }

    #[test]
    fn plugins_keep_their_json_and_capabilities() {
        let n = parse(&p("10-crius.conflist"), BRIDGE_LIST.as_bytes(), true).unwrap();
        assert_eq!(n.plugins[0].kind, "bridge");
        assert_eq!(n.plugins[0].raw["bridge"], "cni0");
        assert_eq!(n.plugins[1].capabilities(), vec!["portMappings"]);
        assert!(n.plugins[2].capabilities().is_empty());
        assert!(!n.disable_check && !n.disable_gc);
        let n = parse(
            &p("x.conflist"),
            br#"{"name":"n","disableCheck":true,"disableGC":true,"plugins":[{"type":"bridge"}]}"#,
            true,
        )
        .unwrap();
        assert!(n.disable_check && n.disable_gc);
    }

    #[test]
    fn names() {
        for ok in ["crius", "a", "k8s-pod-network", "net_1.2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-x", ".x", "a/b", "a b", "ü"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn selection_table() {
        let f = |name: &str, text: &str| (p(name), text.as_bytes().to_vec());
        let files = vec![
            f(
                "99-loopback.conf",
                r#"{"cniVersion":"1.0.0","name":"lo","type":"loopback"}"#,
            ),
            f("10-crius.conflist", BRIDGE_LIST),
            f("05-broken.conflist", "{not json"),
            f("README.md", "not a config"),
            f("20-other.json", r#"{"name":"other","type":"bridge"}"#),
        ];
        // No default: the first valid file by name (05 is broken, skipped).
        let s = select(&files, "");
        assert_eq!(s.network.as_ref().map(|n| n.name.as_str()), Some("crius"));
        assert_eq!(s.skipped.len(), 1);
        assert_eq!(s.skipped[0].0, p("05-broken.conflist"));
        assert_eq!(s.others, vec!["other", "lo"]);
        // A named default, wherever it sorts; a .conf is wrapped.
        let s = select(&files, "lo");
        let n = s.network.unwrap();
        assert_eq!((n.name.as_str(), n.plugins.len()), ("lo", 1));
        assert_eq!(n.source, p("99-loopback.conf"));
        // A default that is not there: nothing (not the first file).
        assert!(select(&files, "absent").network.is_none());
        // Nothing at all.
        assert_eq!(select(&[], ""), Selection::default());
    }

    #[test]
    fn missing_plugin_binaries() {
        let n = parse(&p("x.conflist"), BRIDGE_LIST.as_bytes(), true).unwrap();
        let dirs = vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")];
        let have = |p: &Path| {
            p == Path::new("/usr/lib/cni/bridge") || p == Path::new("/opt/cni/bin/portmap")
        };
        assert_eq!(missing_plugins(&n, &dirs, have), vec!["firewall"]);
        assert!(missing_plugins(&n, &dirs, |_| true).is_empty());
        assert_eq!(
            missing_plugins(&n, &[], |_| true),
            vec!["bridge", "portmap", "firewall"]
        );
    }

    #[test]
    fn loading_a_directory() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            load_dir(&d.path().join("absent"), "").unwrap(),
            Selection::default()
        );
        std::fs::write(d.path().join("10-a.conflist"), BRIDGE_LIST).unwrap();
        std::fs::write(
            d.path().join("00-huge.conf"),
            vec![b' '; MAX_CONFIG_BYTES as usize + 1],
        )
        .unwrap();
        std::fs::create_dir(d.path().join("05-dir.conf")).unwrap();
        let s = load_dir(d.path(), "").unwrap();
        assert_eq!(s.network.unwrap().name, "crius");
        // A symlinked config is read, as libcni reads it.
        let elsewhere = d.path().join("elsewhere");
        std::fs::write(&elsewhere, r#"{"name":"linked","type":"bridge"}"#).unwrap();
        std::os::unix::fs::symlink(&elsewhere, d.path().join("01-linked.conf")).unwrap();
        let s = load_dir(d.path(), "").unwrap();
        assert_eq!(s.network.unwrap().name, "linked");
        assert_eq!(
            s.skipped,
            vec![(d.path().join("00-huge.conf"), ConfigError::TooLarge)]
        );
        // A dangling symlink is skipped; the directory still offers the rest.
        std::os::unix::fs::symlink(d.path().join("gone"), d.path().join("00-dangling.conflist"))
            .unwrap();
        let s = load_dir(d.path(), "").unwrap();
        assert_eq!(s.network.unwrap().name, "linked");
        assert!(
            s.skipped
                .iter()
                .any(|(p, e)| p.ends_with("00-dangling.conflist")
                    && matches!(e, ConfigError::Unreadable(_))),
            "{:?}",
            s.skipped
        );
    }
}
