//! Tar headers as crius reads them. The archive is read in raw mode, so
//! extension headers (GNU long names and links, PAX local and global
//! headers) arrive here as entries of their own: each is read under
//! [`MAX_EXTENSION_HEADER`] and held in [`Pending`] until the entry it
//! describes, whose path, link target, kind and metadata are then resolved
//! from both.
//!
//! PAX records are split by their length prefix, as POSIX frames them, not
//! with `tar::PaxExtensions`, which reads them differently (tar 0.4.46,
//! checked by hand when this module was split out; tar-rs issues 428 and
//! 452): it splits the header at every newline before reading lengths, so
//! a value holding a newline (a binary `security.capability` or ACL often
//! does) fails, and the rest of such a value can come back as a record of
//! its own (`"\n22 linkpath=/etc/evil\n"` yields a `linkpath`); it also
//! accepts a record missing its final newline and refuses the NUL padding
//! some writers leave. Using it would refuse layers crius extracts today
//! and frame records unlike Go's `archive/tar` (docker, containerd) does
//! (the test `pax_values_with_newlines` holds crius to the length prefix).

use std::io::Read;

use nix::sys::time::TimeSpec;
use tracing::warn;

use super::{xattr_allowed, UnpackError, MAX_EXTENSION_HEADER};

/// One PAX record: (key, value).
pub(super) type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// Parses PAX extended header records (`"<len> <key>=<value>\n"`).
pub(super) fn parse_pax(data: &[u8]) -> Result<Vec<PaxRecord<'_>>, &'static str> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break; // tolerate NUL padding
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("PAX record without a length")?;
        let len_digits = &rest[..sp];
        if len_digits.is_empty()
            || len_digits.len() > 10
            || !len_digits.iter().all(u8::is_ascii_digit)
        {
            return Err("PAX record with a malformed length");
        }
        let len: usize = std::str::from_utf8(len_digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("PAX record with a malformed length")?;
        if len <= sp + 1 || len > rest.len() {
            return Err("PAX record length out of range");
        }
        let record = &rest[sp + 1..len];
        let kv = record
            .strip_suffix(b"\n")
            .ok_or("PAX record not terminated by a newline")?;
        let eq = kv
            .iter()
            .position(|&b| b == b'=')
            .ok_or("PAX record without '='")?;
        if eq == 0 {
            return Err("PAX record with an empty key");
        }
        out.push((&kv[..eq], &kv[eq + 1..]));
        rest = &rest[len..];
    }
    Ok(out)
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parses a PAX time (`"[-]<secs>[.<fraction>]"`) into (seconds, nanoseconds),
/// nanoseconds always in 0..1e9.
pub(super) fn parse_pax_time(v: &[u8]) -> Option<(i64, i64)> {
    let (neg, v) = match v.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &b""[..]),
    };
    let secs = i64::try_from(parse_decimal(int)?).ok()?;
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nsec: i64 = 0;
    for i in 0..9 {
        nsec = nsec * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
    }
    Some(match (neg, nsec) {
        (false, _) => (secs, nsec),
        (true, 0) => (-secs, 0),
        (true, _) => (-secs - 1, 1_000_000_000 - nsec),
    })
}

/// Metadata applied to a created entry.
pub(super) struct Meta {
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mode: u32,
    pub(super) mtime: TimeSpec,
    pub(super) xattrs: Vec<(std::ffi::CString, Vec<u8>)>,
}

/// What an entry's type flag makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Fifo,
    Device,
}

/// Extension headers read since the last entry, for the next one.
#[derive(Default)]
pub(super) struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
    /// Name of the last extension header seen, for error messages.
    header_path: Option<String>,
}

/// The path and link target of one entry, extension headers applied.
pub(super) struct Names {
    pub(super) path: Vec<u8>,
    pub(super) link: Option<Vec<u8>>,
}

/// Reads an extension header's data, at most [`MAX_EXTENSION_HEADER`] bytes.
fn read_extension<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &str,
    kind: &'static str,
) -> Result<Vec<u8>, UnpackError> {
    let size = entry.size();
    if size > MAX_EXTENSION_HEADER {
        return Err(UnpackError::OversizedHeader {
            path: path.to_string(),
            kind,
            size,
        });
    }
    let mut data = Vec::with_capacity(size as usize);
    entry
        .take(size)
        .read_to_end(&mut data)
        .map_err(|source| UnpackError::Io {
            path: path.to_string(),
            op: "reading extension header",
            source,
        })?;
    if data.len() as u64 != size {
        return Err(UnpackError::Truncated {
            path: path.to_string(),
            expected: size,
            actual: data.len() as u64,
        });
    }
    Ok(data)
}

impl Pending {
    /// Takes in `entry` if it is an extension header (type `ty`, named
    /// `header_path`) and returns true; false for any other entry.
    pub(super) fn absorb<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        ty: u8,
        header_path: &str,
    ) -> Result<bool, UnpackError> {
        let duplicate = |what: &str| UnpackError::InvalidHeader {
            path: header_path.to_string(),
            reason: format!("two {what} headers for one entry"),
        };
        let (previous, what) = match ty {
            b'L' => {
                let mut data = read_extension(entry, header_path, "GNU long name header")?;
                while data.last() == Some(&0) {
                    data.pop();
                }
                (self.long_name.replace(data), "GNU long name")
            }
            b'K' => {
                let mut data = read_extension(entry, header_path, "GNU long link header")?;
                while data.last() == Some(&0) {
                    data.pop();
                }
                (self.long_link.replace(data), "GNU long link")
            }
            b'x' => {
                let data = read_extension(entry, header_path, "PAX header")?;
                (self.pax.replace(data), "PAX")
            }
            b'g' => {
                // Global PAX headers are read (bounded) and ignored.
                read_extension(entry, header_path, "PAX global header")?;
                return Ok(true);
            }
            _ => return Ok(false),
        };
        if previous.is_some() {
            return Err(duplicate(what));
        }
        self.header_path = Some(header_path.to_string());
        Ok(true)
    }

    /// The name of an extension header still waiting for its entry.
    pub(super) fn unfinished(&mut self) -> Option<String> {
        self.header_path.take()
    }

    /// Hands the pending headers over to `header`'s entry: the PAX data,
    /// and its names with GNU long names over the header's own.
    pub(super) fn finish(self, header: &tar::Header) -> (Option<Vec<u8>>, Names) {
        let path = self
            .long_name
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let link = self
            .long_link
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        (self.pax, Names { path, link })
    }
}

impl Names {
    /// PAX `path` and `linkpath` take precedence over every other name.
    pub(super) fn apply_pax(&mut self, pax: &[PaxRecord<'_>]) {
        for (k, v) in pax {
            match *k {
                b"path" => self.path = v.to_vec(),
                b"linkpath" => self.link = Some(v.to_vec()),
                _ => {}
            }
        }
    }
}

/// Parses the PAX records of `data` (named `header_path` in errors).
pub(super) fn pax_records<'a>(
    data: Option<&'a [u8]>,
    header_path: &str,
) -> Result<Vec<PaxRecord<'a>>, UnpackError> {
    match data {
        Some(data) => parse_pax(data).map_err(|reason| UnpackError::InvalidHeader {
            path: header_path.to_string(),
            reason: reason.to_string(),
        }),
        None => Ok(Vec::new()),
    }
}

/// The entry's ownership, mode, mtime and allowed xattrs, from its header
/// and PAX records; `path` names it in errors.
pub(super) fn meta(
    header: &tar::Header,
    size: u64,
    pax: &[PaxRecord<'_>],
    path: &str,
) -> Result<Meta, UnpackError> {
    let bad = |reason: String| UnpackError::InvalidHeader {
        path: path.to_string(),
        reason,
    };
    let mut uid = header.uid().map_err(|e| bad(format!("uid: {e}")))?;
    let mut gid = header.gid().map_err(|e| bad(format!("gid: {e}")))?;
    let mode = header.mode().map_err(|e| bad(format!("mode: {e}")))? & 0o7777;
    let header_mtime = header.mtime().map_err(|e| bad(format!("mtime: {e}")))?;
    let mut mtime = (
        i64::try_from(header_mtime).map_err(|_| bad("mtime out of range".to_string()))?,
        0,
    );
    let mut xattrs = Vec::new();
    for (k, v) in pax {
        match *k {
            b"size" => {
                let s = parse_decimal(v).ok_or_else(|| bad("malformed PAX size".to_string()))?;
                if s != size {
                    return Err(UnpackError::Unsupported {
                        path: path.to_string(),
                        reason: format!("PAX size {s} differs from header size {size}"),
                    });
                }
            }
            b"uid" => uid = parse_decimal(v).ok_or_else(|| bad("malformed PAX uid".to_string()))?,
            b"gid" => gid = parse_decimal(v).ok_or_else(|| bad("malformed PAX gid".to_string()))?,
            b"mtime" => {
                mtime = parse_pax_time(v).ok_or_else(|| bad("malformed PAX mtime".to_string()))?
            }
            k if k.starts_with(b"GNU.sparse.") => {
                return Err(UnpackError::Unsupported {
                    path: path.to_string(),
                    reason: "GNU sparse file (PAX)".to_string(),
                })
            }
            k if k.starts_with(b"SCHILY.xattr.") => {
                let name = &k[b"SCHILY.xattr.".len()..];
                if !xattr_allowed(name) {
                    // Only this module decides what overlayfs sees, and
                    // an image never sets trusted.* or security.* labels
                    // (SELinux, IMA, SMACK) on the host.
                    warn!(path = %path, xattr = %String::from_utf8_lossy(name), "ignoring an xattr outside the allowlist in layer");
                    continue;
                }
                let name = std::ffi::CString::new(name)
                    .ok()
                    .filter(|n| !n.as_bytes().is_empty())
                    .ok_or_else(|| bad("malformed xattr name".to_string()))?;
                xattrs.push((name, v.to_vec()));
            }
            _ => {}
        }
    }
    let id = |v: u64, what: &str| {
        u32::try_from(v)
            .ok()
            .filter(|&v| v != u32::MAX)
            .ok_or_else(|| bad(format!("{what} {v} out of range")))
    };
    Ok(Meta {
        uid: id(uid, "uid")?,
        gid: id(gid, "gid")?,
        mode,
        mtime: TimeSpec::new(mtime.0, mtime.1),
        xattrs,
    })
}

/// What the type flag `ty` makes of an entry at `raw_path` (`path` in
/// errors): sparse files and unknown types are refused.
pub(super) fn kind(ty: u8, raw_path: &[u8], path: &str) -> Result<Kind, UnpackError> {
    Ok(match ty {
        b'0' | b'7' => Kind::File,
        b'\0' if raw_path.ends_with(b"/") => Kind::Dir,
        b'\0' => Kind::File,
        b'1' => Kind::Hardlink,
        b'2' => Kind::Symlink,
        b'3' | b'4' => Kind::Device,
        b'5' => Kind::Dir,
        b'6' => Kind::Fifo,
        b'S' => {
            return Err(UnpackError::Unsupported {
                path: path.to_string(),
                reason: "GNU sparse file".to_string(),
            })
        }
        other => {
            return Err(UnpackError::Unsupported {
                path: path.to_string(),
                reason: format!("entry type {:?}", other as char),
            })
        }
    })
}
