//! Entry paths and hardlink targets: what a layer may name. A path is
//! relative, free of `..` and NUL, at most PATH_MAX - 1 bytes; it is split
//! into components here once, and every later filesystem call walks those
//! components through directory fds (see `dirs` and `extract`). Hardlink
//! targets follow the same rules and name entries of this layer only.

use super::UnpackError;

/// Longest accepted entry path (bytes, before normalization); PATH_MAX - 1.
const MAX_PATH_LEN: usize = 4095;

/// Why an entry path (or hardlink target) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PathError {
    Empty,
    Absolute,
    DotDot,
    Nul,
    TooLong,
}

impl PathError {
    /// Whether the path would leave the layer root, and why it is refused.
    fn describe(self) -> (bool, &'static str) {
        match self {
            PathError::Absolute => (true, "absolute path"),
            PathError::DotDot => (true, "\"..\""),
            PathError::Empty => (false, "empty path"),
            PathError::Nul => (false, "NUL byte in path"),
            PathError::TooLong => (false, "path longer than PATH_MAX"),
        }
    }
}

/// Validates and normalizes a tar entry path into its components: leading
/// `./`, `.` and empty components and a trailing `/` are dropped. An empty
/// result is the layer root (from `.` or `./`).
pub(super) fn normalize_path(raw: &[u8]) -> Result<Vec<&[u8]>, PathError> {
    if raw.is_empty() {
        return Err(PathError::Empty);
    }
    if raw.contains(&0) {
        return Err(PathError::Nul);
    }
    if raw[0] == b'/' {
        return Err(PathError::Absolute);
    }
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(PathError::DotDot),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The error for an entry whose own path is refused.
pub(super) fn path_error(e: PathError, path: &str) -> UnpackError {
    let path = path.to_string();
    match e.describe() {
        (true, reason) => UnpackError::PathEscape { path, reason },
        (false, reason) => UnpackError::InvalidPath { path, reason },
    }
}

/// The error for a hardlink at `path` whose target is refused.
pub(super) fn link_target_error(e: PathError, path: &str, target: &str) -> UnpackError {
    let (path, target) = (path.to_string(), target.to_string());
    match e.describe() {
        (true, reason) => UnpackError::LinkTargetEscape {
            path,
            target,
            reason,
        },
        (false, reason) => UnpackError::InvalidLinkTarget {
            path,
            target,
            reason,
        },
    }
}
