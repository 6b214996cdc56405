//! The exit file: written atomically (temp, fsync, rename) when the
//! container's process ends, read by the daemon — also a daemon that
//! restarted meanwhile. One line: `<exit code> <RFC3339Nano time>`; a
//! process killed by signal N has exit code 128+N, as shells report it.

use std::io::Write;
use std::path::Path;

pub fn encode(code: i32, at: &str) -> String {
    format!("{code} {at}\n")
}

pub fn decode(text: &str) -> Option<(i32, String)> {
    let mut it = text.split_whitespace();
    let code = it.next()?.parse().ok()?;
    let at = it.next()?.to_string();
    Some((code, at))
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

pub fn read(path: &Path) -> std::io::Result<Option<(i32, String)>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(decode(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("exit");
        assert_eq!(super::read(&p).unwrap(), None);
        super::write(&p, 137, "2026-11-26T10:38:15.000000001Z").unwrap();
        assert_eq!(
            super::read(&p).unwrap(),
            Some((137, "2026-11-26T10:38:15.000000001Z".into()))
        );
        assert_eq!(super::decode("garbage"), None);
    }
}
