//! Runtime handler configuration, CRI-O style: a table of named handlers,
//! each an OCI runtime binary with its own state root, and a default.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One runtime handler as configured (`[runtimes.<name>]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// The runtime binary: an absolute path, or a name looked up in PATH.
    pub path: PathBuf,
    /// The runtime's state directory (`--root`). Empty: `<runroot>/runtimes/<name>`.
    #[serde(default, skip_serializing_if = "is_empty_path")]
    pub root: PathBuf,
    /// Extra global arguments passed before the command (e.g. `--debug`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
}

fn is_empty_path(p: &Path) -> bool {
    p.as_os_str().is_empty()
}

/// The effective set of handlers, after defaults and PATH lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeHandlers {
    pub default: String,
    /// Name → config with `path` resolved (absolute when found) and `root` set.
    pub handlers: BTreeMap<String, ResolvedHandler>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedHandler {
    pub name: String,
    pub config: HandlerConfig,
    /// The binary, resolved; `None` when it cannot be found.
    pub binary: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    #[error("default_runtime {0:?} is not a configured runtime handler (configured: {1})")]
    UnknownDefault(String, String),
    #[error("runtime handler name {0:?} is invalid: use letters, digits, '-', '_' or '.'")]
    BadName(String),
}

/// Finds `name` in `path_var` (a PATH value) unless it is a path already.
pub fn which(name: &Path, path_var: &str) -> Option<PathBuf> {
    let is_file = |p: &Path| p.is_file();
    if name.components().count() > 1 || name.is_absolute() {
        return is_file(name).then(|| name.to_path_buf());
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| is_file(p))
}

impl RuntimeHandlers {
    /// Resolves the configured handlers. An empty table means "auto": runc
    /// and crun, each only if its binary is found. Explicitly configured
    /// handlers are kept even when their binary is missing (reported as not
    /// ready, never fatal).
    pub fn resolve(
        configured: &BTreeMap<String, HandlerConfig>,
        default: &str,
        runroot: &Path,
        path_var: &str,
    ) -> Result<Self, HandlerError> {
        let auto = configured.is_empty();
        let mut table = configured.clone();
        if auto {
            for name in ["runc", "crun"] {
                table.insert(
                    name.into(),
                    HandlerConfig {
                        path: PathBuf::from(name),
                        root: PathBuf::new(),
                        extra_args: Vec::new(),
                    },
                );
            }
        }
        let mut handlers = BTreeMap::new();
        for (name, mut config) in table {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(HandlerError::BadName(name));
            }
            let binary = which(&config.path, path_var);
            if auto && binary.is_none() {
                continue;
            }
            if config.root.as_os_str().is_empty() {
                config.root = runroot.join("runtimes").join(&name);
            }
            handlers.insert(
                name.clone(),
                ResolvedHandler {
                    name,
                    config,
                    binary,
                },
            );
        }
        // Auto-detection that found nothing leaves no default to check:
        // Status then lists no handlers, which is the truth.
        let nothing_found = auto && handlers.is_empty();
        if !handlers.contains_key(default) && !nothing_found {
            let names: Vec<_> = handlers.keys().cloned().collect();
            return Err(HandlerError::UnknownDefault(
                default.into(),
                names.join(", "),
            ));
        }
        Ok(RuntimeHandlers {
            default: default.into(),
            handlers,
        })
    }

    /// The handler for a CRI `runtime_handler` ("" is the default).
    pub fn get(&self, name: &str) -> Option<&ResolvedHandler> {
        let name = if name.is_empty() { &self.default } else { name };
        self.handlers.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin_dir() -> (tempfile::TempDir, String) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("runc"), "").unwrap();
        let p = d.path().display().to_string();
        (d, p)
    }

    #[test]
    fn auto_detects_present_runtimes_only() {
        let (_d, path) = bin_dir();
        let h = RuntimeHandlers::resolve(&BTreeMap::new(), "runc", Path::new("/run/crius"), &path)
            .unwrap();
        assert_eq!(h.handlers.keys().collect::<Vec<_>>(), ["runc"]);
        let runc = h.get("").unwrap();
        assert_eq!(runc.name, "runc");
        assert_eq!(runc.config.root, PathBuf::from("/run/crius/runtimes/runc"));
        assert!(runc.binary.as_ref().unwrap().ends_with("runc"));
        assert!(h.get("crun").is_none());
    }

    #[test]
    fn explicit_handlers_are_kept_even_when_missing() {
        let (_d, path) = bin_dir();
        let mut c = BTreeMap::new();
        c.insert(
            "fast".to_string(),
            HandlerConfig {
                path: "crun".into(),
                root: "/run/fast".into(),
                extra_args: vec![],
            },
        );
        c.insert(
            "runc".to_string(),
            HandlerConfig {
                path: "runc".into(),
                root: PathBuf::new(),
                extra_args: vec![],
            },
        );
        let h = RuntimeHandlers::resolve(&c, "fast", Path::new("/run/crius"), &path).unwrap();
        let fast = h.get("").unwrap();
        assert_eq!(fast.name, "fast");
        assert_eq!(fast.binary, None, "missing binary is reported, not fatal");
        assert_eq!(fast.config.root, PathBuf::from("/run/fast"));
    }

    #[test]
    fn bad_default_and_names_are_errors() {
        let (_d, path) = bin_dir();
        let mut c = BTreeMap::new();
        c.insert(
            "runc".to_string(),
            HandlerConfig {
                path: "runc".into(),
                root: PathBuf::new(),
                extra_args: vec![],
            },
        );
        let e = RuntimeHandlers::resolve(&c, "kata", Path::new("/r"), &path).unwrap_err();
        assert!(
            e.to_string().contains("\"kata\"") && e.to_string().contains("runc"),
            "{e}"
        );
        c.insert("bad name".to_string(), c["runc"].clone());
        assert!(matches!(
            RuntimeHandlers::resolve(&c, "runc", Path::new("/r"), &path),
            Err(HandlerError::BadName(_))
        ));
    }

    #[test]
    fn which_table() {
        let (d, path) = bin_dir();
        assert_eq!(which(Path::new("runc"), &path), Some(d.path().join("runc")));
        assert_eq!(which(Path::new("nope"), &path), None);
        assert_eq!(
            which(&d.path().join("runc"), ""),
            Some(d.path().join("runc"))
        );
        assert_eq!(which(Path::new("/nonexistent/runc"), &path), None);
    }
}
