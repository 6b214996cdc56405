//! The exit file: written atomically (temp, fsync, rename) by the monitor
//! when the container's process ends, read by the daemon — also a daemon
//! that restarted meanwhile. One line: `<exit code> <RFC3339Nano time>`; a
//! process killed by signal N has exit code 128+N, as shells report it.

use std::io::Write;
use std::path::Path;

/// What the exit file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitRecord {
    pub code: i32,
    /// RFC 3339 with nanoseconds, UTC; empty if the file carried none.
    pub at: String,
}

impl ExitRecord {
    /// The exit time in Unix nanoseconds, if the file carried a valid one.
    pub fn at_ns(&self) -> Option<i64> {
        crate::time::parse_rfc3339_ns(&self.at)
    }
}

pub fn encode(code: i32, at: &str) -> String {
    format!("{code} {at}\n")
}

/// The exit code leads; a missing time is tolerated (the code is what
/// matters), anything without a numeric code is not an exit file.
pub fn decode(text: &str) -> Option<ExitRecord> {
    let mut it = text.split_whitespace();
    let code = it.next()?.parse().ok()?;
    let at = it.next().unwrap_or("").to_string();
    Some(ExitRecord { code, at })
}

pub fn write(path: &Path, code: i32, at: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(encode(code, at).as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// None while the container runs (no file yet), or if the file is not an
/// exit file.
pub fn read(path: &Path) -> std::io::Result<Option<ExitRecord>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(decode(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("exit");
        assert_eq!(read(&p).unwrap(), None);
        write(&p, 137, "2026-11-26T10:38:15.000000001Z").unwrap();
        let rec = read(&p).unwrap().unwrap();
        assert_eq!(
            rec,
            ExitRecord {
                code: 137,
                at: "2026-11-26T10:38:15.000000001Z".into()
            }
        );
        assert_eq!(rec.at_ns(), Some(1_795_689_495_000_000_001));
    }

    #[test]
    fn decoding_table() {
        let cases: &[(&str, Option<(i32, &str)>)] = &[
            (
                "0 2026-11-26T10:38:15.000000001Z\n",
                Some((0, "2026-11-26T10:38:15.000000001Z")),
            ),
            ("137", Some((137, ""))),
            ("-1 t", Some((-1, "t"))),
            ("garbage", None),
            ("", None),
        ];
        for (text, want) in cases {
            let got = decode(text).map(|r| (r.code, r.at));
            assert_eq!(got, want.map(|(c, a)| (c, a.to_string())), "{text:?}");
        }
    }
}
