//! Tests of layer extraction: entry types, compressions, hostile input,
//! and that a refused layer leaves nothing behind.

use super::headers::{parse_pax, parse_pax_time};
use super::paths::{normalize_path, PathError};
use super::stream::{detect_compression, Compression};
use super::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap as Map;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};

const MTIME: u64 = 1_600_000_000;

/// Builds layers entry by entry with raw headers, so hostile names are possible.
struct Layer {
    b: tar::Builder<Vec<u8>>,
}

fn header(name: &[u8], ty: EntryType, size: u64, mode: u32, owner: u64) -> Header {
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(ty);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(owner);
    h.set_gid(owner);
    h.set_mtime(MTIME);
    h
}

impl Layer {
    fn new() -> Self {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }
    fn raw(&mut self, mut h: Header, data: impl Read) -> &mut Self {
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }
    fn entry(
        &mut self,
        name: &str,
        ty: EntryType,
        mode: u32,
        owner: u64,
        data: &[u8],
    ) -> &mut Self {
        let h = header(name.as_bytes(), ty, data.len() as u64, mode, owner);
        self.raw(h, data)
    }
    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name, EntryType::Regular, 0o644, 0, data)
    }
    fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(name, EntryType::Directory, 0o755, 0, b"")
    }
    fn link(&mut self, name: &str, ty: EntryType, target: &[u8]) -> &mut Self {
        let mut h = header(name.as_bytes(), ty, 0, 0o777, 0);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target);
        self.raw(h, &b""[..])
    }
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.b
            .append_pax_extensions(records.iter().copied())
            .unwrap();
        self
    }
    fn bytes(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

fn diff_id(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

struct Fx {
    _tmp: tempfile::TempDir,
    parent: PathBuf,
    outside: PathBuf,
}

fn fx() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("layers");
    let outside = tmp.path().join("outside");
    fs::create_dir(&parent).unwrap();
    fs::create_dir(&outside).unwrap();
    Fx {
        _tmp: tmp,
        parent,
        outside,
    }
}

impl Fx {
    fn target(&self) -> PathBuf {
        self.parent.join("layer")
    }
    fn unpack(&self, data: &[u8]) -> Result<UnpackStats, UnpackError> {
        unpack_layer(data, &diff_id(data), &self.target())
    }
    /// Asserts the error case left nothing: no target, no temp dir.
    fn assert_clean(&self) {
        assert!(
            fs::symlink_metadata(self.target()).is_err(),
            "target exists"
        );
        let left: Vec<_> = fs::read_dir(&self.parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left behind in parent: {left:?}");
    }
    fn assert_outside_empty(&self) {
        let left: Vec<_> = fs::read_dir(&self.outside).unwrap().collect();
        assert!(left.is_empty(), "written outside: {left:?}");
    }
}

fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and buffer.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return None;
    }
    buf.truncate(rc as usize);
    Some(buf)
}

/// Everything observable about a tree, for comparing extractions.
/// `implicit`: directories created implicitly, whose mtime is "now".
fn snapshot(root: &Path, implicit: &[&str]) -> Map<String, String> {
    fn walk(root: &Path, dir: &Path, implicit: &[&str], out: &mut Map<String, String>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let content = if m.file_type().is_file() {
                hex::encode(Sha256::digest(fs::read(&p).unwrap()))
            } else if m.file_type().is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else {
                String::new()
            };
            let xattr = if m.file_type().is_symlink() {
                None
            } else {
                lgetxattr(&p, "user.crius")
            };
            let masked = implicit.contains(&rel.as_str());
            out.insert(
                rel,
                format!(
                    "mode={:o} uid={} gid={} mtime={}.{} nlink={} rdev={} {content} {xattr:?}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    if masked { 0 } else { m.mtime() },
                    if masked { 0 } else { m.mtime_nsec() },
                    m.nlink(),
                    m.rdev()
                ),
            );
            if m.is_dir() {
                walk(root, &p, implicit, out);
            }
        }
    }
    let mut out = Map::new();
    walk(root, root, implicit, &mut out);
    out
}

fn normal_layer() -> Vec<u8> {
    let mut l = Layer::new();
    l.entry("./", EntryType::Directory, 0o755, 0, b"")
        .entry("d/", EntryType::Directory, 0o700, 1000, b"")
        .entry(
            "d/exec",
            EntryType::Regular,
            0o755,
            1000,
            b"#!/bin/sh\necho hi\n",
        )
        .entry("d/plain", EntryType::Regular, 0o644, 1000, b"plain data")
        .entry("suid", EntryType::Regular, 0o4755, 0, b"suid binary")
        .link("abs", EntryType::Symlink, b"/etc/passwd")
        .link("dangling", EntryType::Symlink, b"no/such/target")
        .link("d/hard", EntryType::Link, b"d/plain")
        .entry("fifo", EntryType::Fifo, 0o640, 1000, b"")
        .pax(&[
            ("SCHILY.xattr.user.crius", b"v"),
            ("mtime", b"1700000000.123456789"),
        ])
        .file("x", b"with xattr")
        .entry("deep/", EntryType::Directory, 0o750, 0, b"")
        .file("deep/er/file", &vec![7u8; 300_000]);
    l.bytes()
}

#[test]
fn normal_layer_all_compressions_identical() {
    let tar = normal_layer();
    let id = diff_id(&tar);
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&tar).unwrap();
        e.finish().unwrap()
    };
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    let f = fx();
    let mut snaps = Vec::new();
    for (i, data) in [&tar, &gz, &zst].into_iter().enumerate() {
        let target = f.parent.join(format!("l{i}"));
        let stats = unpack_layer(&data[..], &id, &target).unwrap();
        assert_eq!(
            stats,
            UnpackStats {
                entries: 12,
                bytes: 18 + 10 + 11 + 10 + 300_000,
                whiteouts: 0,
                skipped_devices: 0
            }
        );
        snaps.push(snapshot(&target, &["deep/er"]));
    }
    assert_eq!(snaps[0], snaps[1]);
    assert_eq!(snaps[0], snaps[2]);
    // Only the three targets, no temp dirs.
    assert_eq!(fs::read_dir(&f.parent).unwrap().count(), 3);

    let t = f.parent.join("l0");
    let meta = |p: &str| fs::symlink_metadata(t.join(p)).unwrap();
    assert_eq!(meta("").mode() & 0o7777, 0o755);
    assert_eq!(meta("d").mode() & 0o7777, 0o700);
    assert_eq!((meta("d").uid(), meta("d").gid()), (1000, 1000));
    assert_eq!(
        meta("d").mtime(),
        MTIME as i64,
        "dir mtime set after children"
    );
    assert_eq!(meta("d/exec").mode() & 0o7777, 0o755);
    assert_eq!(meta("d/plain").mode() & 0o7777, 0o644);
    assert_eq!((meta("d/plain").uid(), meta("d/plain").gid()), (1000, 1000));
    assert_eq!(meta("suid").mode() & 0o7777, 0o4755);
    assert_eq!(fs::read(t.join("d/exec")).unwrap(), b"#!/bin/sh\necho hi\n");
    assert_eq!(
        fs::read_link(t.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::read_link(t.join("dangling")).unwrap(),
        Path::new("no/such/target")
    );
    assert_eq!(meta("d/hard").ino(), meta("d/plain").ino());
    assert_eq!(meta("d/plain").nlink(), 2);
    assert!(meta("fifo").file_type().is_fifo());
    assert_eq!(meta("fifo").mode() & 0o7777, 0o640);
    assert_eq!(
        lgetxattr(&t.join("x"), "user.crius").as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(
        (meta("x").mtime(), meta("x").mtime_nsec()),
        (1_700_000_000, 123_456_789)
    );
    assert_eq!(meta("d/plain").mtime(), MTIME as i64);
    assert_eq!(meta("abs").mtime(), MTIME as i64);
    assert_eq!(
        meta("deep/er").mode() & 0o7777,
        0o755,
        "implicit parents are 0755"
    );
}

#[test]
fn whiteouts_become_overlay_format() {
    let f = fx();
    let mut l = Layer::new();
    l.dir("a/")
        .file("a/.wh.b", b"")
        .file("c/.wh..wh..opq", b"")
        .file("a/kept", b"k");
    let stats = f.unpack(&l.bytes()).unwrap();
    assert_eq!(stats.whiteouts, 2);
    let t = f.target();
    let wh = fs::symlink_metadata(t.join("a/b")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(fs::symlink_metadata(t.join("a/.wh.b")).is_err());
    assert!(fs::symlink_metadata(t.join("c/.wh..wh..opq")).is_err());
    assert!(
        fs::symlink_metadata(t.join("c")).unwrap().is_dir(),
        "opaque creates the dir"
    );
    assert_eq!(
        lgetxattr(&t.join("c"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(lgetxattr(&t.join("a"), "trusted.overlay.opaque"), None);
}

#[test]
fn invalid_whiteouts_rejected() {
    for (name, want) in [
        ("a/.wh.", "empty name"),
        ("a/.wh..wh.plnk", "unknown"),
        ("a/.wh...", "whiteout of"),
        (".wh.x/y", "parent directory"),
    ] {
        let f = fx();
        let mut l = Layer::new();
        l.file(name, b"");
        let err = f.unpack(&l.bytes()).unwrap_err();
        assert!(
            matches!(err, UnpackError::InvalidWhiteout { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(want), "{name}: {err}");
        f.assert_clean();
    }
}

#[test]
fn whiteout_in_plain_mode_is_an_error() {
    let f = fx();
    let mut l = Layer::new();
    l.file("ok", b"x").file("a/.wh.b", b"");
    let err = unpack_tar_into(
        &l.bytes()[..],
        None,
        &f.target(),
        Mode::Plain,
        &Limits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, UnpackError::WhiteoutNotAllowed { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("\"a/.wh.b\""), "{err}");
    f.assert_clean();
    // Without whiteouts, Plain works with no diff_id.
    let mut l = Layer::new();
    l.file("ok", b"x");
    unpack_tar_into(
        &l.bytes()[..],
        None,
        &f.target(),
        Mode::Plain,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(fs::read(f.target().join("ok")).unwrap(), b"x");
}

struct Umount(PathBuf);
impl Drop for Umount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn overlay_mount_honours_whiteouts() {
    let f = fx();
    let mut l1 = Layer::new();
    l1.dir("a/")
        .file("a/b", b"b")
        .file("a/c", b"c")
        .dir("o/")
        .file("o/old", b"old");
    let mut l2 = Layer::new();
    l2.file("a/.wh.b", b"")
        .dir("o/")
        .file("o/.wh..wh..opq", b"")
        .file("o/new", b"new");
    let (p1, p2) = (f.parent.join("l1"), f.parent.join("l2"));
    let d1 = l1.bytes();
    let d2 = l2.bytes();
    unpack_layer(&d1[..], &diff_id(&d1), &p1).unwrap();
    unpack_layer(&d2[..], &diff_id(&d2), &p2).unwrap();
    let mnt = f.outside.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let opts = format!("lowerdir={}:{}", p2.display(), p1.display());
    nix::mount::mount(
        Some("overlay"),
        &mnt,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )
    .expect("mount overlay");
    let guard = Umount(mnt.clone());
    assert!(
        fs::symlink_metadata(mnt.join("a/b")).is_err(),
        "whiteout hides a/b"
    );
    assert_eq!(fs::read(mnt.join("a/c")).unwrap(), b"c");
    assert!(
        fs::symlink_metadata(mnt.join("o/old")).is_err(),
        "opaque dir hides o/old"
    );
    assert_eq!(fs::read(mnt.join("o/new")).unwrap(), b"new");
    drop(guard);
}

#[test]
fn hostile_paths_rejected() {
    for (name, want) in [
        ("../escape", "path escapes the layer root (\"..\")"),
        ("/abs/file", "path escapes the layer root (absolute path)"),
        ("a/../../x", "path escapes the layer root (\"..\")"),
    ] {
        let f = fx();
        let mut l = Layer::new();
        l.file("fine", b"x").file(name, b"pwned");
        let err = f.unpack(&l.bytes()).unwrap_err();
        assert!(
            matches!(err, UnpackError::PathEscape { .. }),
            "{name}: {err}"
        );
        assert_eq!(err.to_string(), format!("layer entry {name:?}: {want}"));
        f.assert_clean();
        assert!(fs::symlink_metadata(f.parent.parent().unwrap().join("escape")).is_err());
        assert!(fs::symlink_metadata(f.parent.join("escape")).is_err());
        assert!(fs::symlink_metadata("/abs").is_err());
        assert!(fs::symlink_metadata(f.parent.parent().unwrap().join("x")).is_err());
    }
}

#[test]
fn symlinked_parent_cannot_escape() {
    let f = fx();
    let outside = f.outside.as_os_str().as_bytes().to_vec();
    for (link_target, victim) in [(&outside[..], "link/pwned"), (&b".."[..], "link/x")] {
        let mut l = Layer::new();
        l.link("link", EntryType::Symlink, link_target)
            .file(victim, b"pwned");
        let err = f.unpack(&l.bytes()).unwrap_err();
        assert!(
            matches!(err, UnpackError::PassesThroughSymlink { .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!("layer entry {victim:?}: path passes through a symlink")
        );
        f.assert_clean();
        f.assert_outside_empty();
        assert!(fs::symlink_metadata(f.parent.join("x")).is_err());
    }
    // Same through a deeper path and for a directory entry.
    let mut l = Layer::new();
    l.dir("d/")
        .link("d/l", EntryType::Symlink, &outside)
        .dir("d/l/sub/");
    let err = f.unpack(&l.bytes()).unwrap_err();
    assert!(
        matches!(err, UnpackError::PassesThroughSymlink { .. }),
        "{err}"
    );
    f.assert_clean();
    f.assert_outside_empty();
}

#[test]
fn hostile_hardlinks_rejected() {
    let f = fx();
    let passwd_links = fs::metadata("/etc/passwd").unwrap().nlink();
    let mut l = Layer::new();
    l.link("h", EntryType::Link, b"../../etc/passwd");
    let err = f.unpack(&l.bytes()).unwrap_err();
    assert!(matches!(err, UnpackError::LinkTargetEscape { .. }), "{err}");
    assert!(err.to_string().contains("\"../../etc/passwd\""), "{err}");
    f.assert_clean();

    let mut l = Layer::new();
    l.link("h", EntryType::Link, b"/etc/passwd");
    let err = f.unpack(&l.bytes()).unwrap_err();
    assert!(matches!(err, UnpackError::LinkTargetEscape { .. }), "{err}");
    f.assert_clean();
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), passwd_links);

    // Through a symlinked parent to a file outside.
    fs::write(f.outside.join("secret"), b"s").unwrap();
    let mut l = Layer::new();
    l.link("s", EntryType::Symlink, f.outside.as_os_str().as_bytes())
        .link("h", EntryType::Link, b"s/secret");
    let err = f.unpack(&l.bytes()).unwrap_err();
    assert!(
        matches!(err, UnpackError::LinkTargetThroughSymlink { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("path passes through a symlink"),
        "{err}"
    );
    f.assert_clean();
    assert_eq!(fs::metadata(f.outside.join("secret")).unwrap().nlink(), 1);

    // Target not in this layer; target a directory.
    let mut l = Layer::new();
    l.link("h", EntryType::Link, b"usr/bin/sh");
    let err = f.unpack(&l.bytes()).unwrap_err();
    assert!(
        matches!(err, UnpackError::HardlinkTargetMissing { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("hardlink target \"usr/bin/sh\" not in layer"),
        "{err}"
    );
    f.assert_clean();
    let mut l = Layer::new();
    l.dir("d/").link("h", EntryType::Link, b"d");
    let err = f.unpack(&l.bytes()).unwrap_err();
    assert!(
        matches!(err, UnpackError::HardlinkToDirectory { .. }),
        "{err}"
    );
    f.assert_clean();
}

#[test]
fn hardlink_to_symlink_links_the_symlink() {
    let f = fx();
    let mut l = Layer::new();
    l.link("s", EntryType::Symlink, f.outside.as_os_str().as_bytes())
        .link("h", EntryType::Link, b"s");
    f.unpack(&l.bytes()).unwrap();
    let t = f.target();
    let (s, h) = (
        fs::symlink_metadata(t.join("s")).unwrap(),
        fs::symlink_metadata(t.join("h")).unwrap(),
    );
    assert!(h.file_type().is_symlink());
    assert_eq!(s.ino(), h.ino());
    f.assert_outside_empty();
}

#[test]
fn oversized_extension_headers_rejected() {
    let big = 2u64 << 20;
    for (ty, kind) in [
        (EntryType::GNULongName, "GNU long name"),
        (EntryType::XHeader, "PAX header"),
    ] {
        let f = fx();
        let mut l = Layer::new();
        l.raw(
            header(b"././@LongLink", ty, big, 0o644, 0),
            io::repeat(b'a').take(big),
        )
        .file("victim", b"x");
        let err = f.unpack(&l.bytes()).unwrap_err();
        assert!(matches!(err, UnpackError::OversizedHeader { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("oversized header") && msg.contains(kind),
            "{msg}"
        );
        f.assert_clean();
    }
}

#[test]
fn long_names_and_pax_paths_work() {
    let f = fx();
    let long = format!("{}/{}", "d".repeat(150), "f".repeat(120));
    let mut l = Layer::new();
    l.raw(
        header(
            b"././@LongLink",
            EntryType::GNULongName,
            long.len() as u64 + 1,
            0o644,
            0,
        ),
        format!("{long}\0").as_bytes(),
    )
    .file("short-name-ignored", b"via gnu");
    l.pax(&[("path", b"p/pax-name"), ("uid", b"4242"), ("gid", b"4343")])
        .file("ignored-too", b"via pax");
    l.raw(
        header(b"././@LongLink", EntryType::GNULongLink, 11, 0o644, 0),
        &b"p/pax-name\0"[..],
    )
    .link("hl", EntryType::Link, b"wrong");
    f.unpack(&l.bytes()).unwrap();
    let t = f.target();
    assert_eq!(fs::read(t.join(&long)).unwrap(), b"via gnu");
    let m = fs::metadata(t.join("p/pax-name")).unwrap();
    assert_eq!((m.uid(), m.gid()), (4242, 4343));
    assert_eq!(fs::metadata(t.join("hl")).unwrap().ino(), m.ino());
    assert!(fs::symlink_metadata(t.join("short-name-ignored")).is_err());
}

#[test]
fn wrong_diff_id_cleans_up() {
    let f = fx();
    let mut l = Layer::new();
    l.dir("ro/").file("ro/f", b"x");
    let mut data = l.bytes();
    // A read-only directory inside must not prevent cleanup.
    let mut ro = Layer::new();
    ro.entry("ro/", EntryType::Directory, 0o500, 0, b"");
    data.truncate(data.len() - 1024);
    data.extend_from_slice(&ro.bytes());
    let wrong = diff_id(b"something else");
    let err = unpack_layer(&data[..], &wrong, &f.target()).unwrap_err();
    assert!(matches!(err, UnpackError::DiffIdMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&diff_id(&data)), "{err}");
    f.assert_clean();
    let err = unpack_layer(&data[..], "sha256:abc", &f.target()).unwrap_err();
    assert!(matches!(err, UnpackError::InvalidDiffId { .. }), "{err}");
    f.assert_clean();
    unpack_layer(&data[..], &diff_id(&data), &f.target()).unwrap();
    assert_eq!(
        fs::metadata(f.target().join("ro")).unwrap().mode() & 0o7777,
        0o500
    );
}

#[test]
fn truncated_archive_cleans_up() {
    let f = fx();
    let mut l = Layer::new();
    l.dir("d/")
        .file("d/ok", b"fine")
        .file("d/big", &vec![1u8; 10_000]);
    let data = l.bytes();
    let cut = &data[..512 * 4 + 3000];
    let err = f.unpack(cut).unwrap_err();
    assert!(matches!(err, UnpackError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("\"d/big\""), "{err}");
    f.assert_clean();
    // Cut inside a header block.
    let err = f.unpack(&data[..512 * 3 + 100]).unwrap_err();
    assert!(matches!(err, UnpackError::Stream { .. }), "{err}");
    assert!(err.to_string().contains("after entry \"d/ok\""), "{err}");
    f.assert_clean();
    // Truncated gzip stream.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&data).unwrap();
    let gz = e.finish().unwrap();
    let err = unpack_layer(&gz[..gz.len() / 2], &diff_id(&data), &f.target()).unwrap_err();
    assert!(err.to_string().contains("layer "), "{err}");
    f.assert_clean();
}

#[test]
fn devices_skipped() {
    let f = fx();
    let mut h = header(b"dev/null", EntryType::Char, 0, 0o666, 0);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    let mut b = header(b"dev/sda", EntryType::Block, 0, 0o660, 0);
    b.set_device_major(8).unwrap();
    let mut l = Layer::new();
    l.raw(h, &b""[..]).raw(b, &b""[..]).file("f", b"x");
    let stats = f.unpack(&l.bytes()).unwrap();
    assert_eq!(stats.skipped_devices, 2);
    assert_eq!(stats.entries, 3);
    assert!(fs::symlink_metadata(f.target().join("dev/null")).is_err());
    assert!(fs::symlink_metadata(f.target().join("dev/sda")).is_err());
}

#[test]
fn target_exists_untouched() {
    let f = fx();
    fs::create_dir(f.target()).unwrap();
    fs::write(f.target().join("keep"), b"old").unwrap();
    let mut l = Layer::new();
    l.file("keep", b"new");
    let err = f.unpack(&l.bytes()).unwrap_err();
    assert!(matches!(err, UnpackError::TargetExists { .. }), "{err}");
    assert_eq!(fs::read(f.target().join("keep")).unwrap(), b"old");
    let names: Vec<_> = fs::read_dir(&f.parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("layer")]);
    // A dangling symlink counts as existing too.
    let t2 = f.parent.join("l2");
    std::os::unix::fs::symlink("nowhere", &t2).unwrap();
    let d = l.bytes();
    let err = unpack_layer(&d[..], &diff_id(&d), &t2).unwrap_err();
    assert!(matches!(err, UnpackError::TargetExists { .. }), "{err}");
}

#[test]
fn replacement_semantics() {
    let f = fx();
    let mut l = Layer::new();
    l.file("a", b"file")
        .dir("a/") // file replaced by dir
        .file("a/x", b"x")
        .dir("b/")
        .file("b/y", b"y")
        .file("b", b"now a file") // dir replaced recursively by file
        .dir("c/")
        .file("c/z", b"z")
        .entry("c/", EntryType::Directory, 0o711, 7, b"") // merge, metadata updated
        .file("s", b"1")
        .link("s", EntryType::Symlink, b"target") // file replaced by symlink
        .file("s", b"2"); // symlink replaced by file (not written through)
    f.unpack(&l.bytes()).unwrap();
    let t = f.target();
    assert_eq!(fs::read(t.join("a/x")).unwrap(), b"x");
    assert_eq!(fs::read(t.join("b")).unwrap(), b"now a file");
    let c = fs::metadata(t.join("c")).unwrap();
    assert_eq!((c.mode() & 0o7777, c.uid()), (0o711, 7));
    assert_eq!(fs::read(t.join("c/z")).unwrap(), b"z");
    assert!(fs::symlink_metadata(t.join("s")).unwrap().is_file());
    assert_eq!(fs::read(t.join("s")).unwrap(), b"2");
    assert!(fs::symlink_metadata(t.join("target")).is_err());
}

#[test]
fn file_in_place_of_parent_is_an_error() {
    let f = fx();
    let mut l = Layer::new();
    l.file("a", b"x").file("a/b", b"y");
    let err = f.unpack(&l.bytes()).unwrap_err();
    assert!(
        matches!(err, UnpackError::ParentNotDirectory { .. }),
        "{err}"
    );
    f.assert_clean();
}

#[test]
fn xattr_allowlist() {
    for (name, ok) in [
        (&b"security.capability"[..], true),
        (b"user.mime_type", true),
        (b"system.posix_acl_access", true),
        (b"system.posix_acl_default", true),
        (b"user.overlay.opaque", false),
        (b"trusted.overlay.opaque", false),
        (b"trusted.anything", false),
        (b"security.selinux", false),
        (b"security.ima", false),
        (b"system.nfs4_acl", false),
        (b"", false),
    ] {
        assert_eq!(xattr_allowed(name), ok, "{}", String::from_utf8_lossy(name));
    }
}

#[test]
fn overlay_private_xattrs_ignored() {
    let f = fx();
    let mut l = Layer::new();
    l.pax(&[
        ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ("SCHILY.xattr.user.crius", b"ok"),
    ])
    .dir("d/");
    f.unpack(&l.bytes()).unwrap();
    let d = f.target().join("d");
    assert_eq!(lgetxattr(&d, "trusted.overlay.redirect"), None);
    assert_eq!(lgetxattr(&d, "user.crius").as_deref(), Some(&b"ok"[..]));
}

#[test]
fn path_normalization_table() {
    let ok: &[(&str, &[&str])] = &[
        ("a", &["a"]),
        ("./a", &["a"]),
        ("././a/b/", &["a", "b"]),
        ("a//b/./c", &["a", "b", "c"]),
        (".", &[]),
        ("./", &[]),
        ("./.", &[]),
        ("..a/b..", &["..a", "b.."]),
        (".wh.x", &[".wh.x"]),
    ];
    for (raw, want) in ok {
        let got = normalize_path(raw.as_bytes()).unwrap();
        let want: Vec<&[u8]> = want.iter().map(|s| s.as_bytes()).collect();
        assert_eq!(got, want, "{raw}");
    }
    let long = "a/".repeat(2100);
    let bad: &[(&[u8], PathError)] = &[
        (b"", PathError::Empty),
        (b"/", PathError::Absolute),
        (b"/etc/passwd", PathError::Absolute),
        (b"//x", PathError::Absolute),
        (b"..", PathError::DotDot),
        (b"../x", PathError::DotDot),
        (b"a/../b", PathError::DotDot),
        (b"a/..", PathError::DotDot),
        (b"./../x", PathError::DotDot),
        (b"a\0b", PathError::Nul),
        (long.as_bytes(), PathError::TooLong),
    ];
    for (raw, want) in bad {
        assert_eq!(
            normalize_path(raw),
            Err(*want),
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn pax_and_time_parsing() {
    let recs = parse_pax(b"12 path=a/b\n20 SCHILY.xattr.k=v\n").unwrap();
    assert_eq!(
        recs,
        vec![
            (&b"path"[..], &b"a/b"[..]),
            (&b"SCHILY.xattr.k"[..], &b"v"[..])
        ]
    );
    assert_eq!(
        parse_pax(b"13 k=with=eq\n").unwrap(),
        vec![(&b"k"[..], &b"with=eq"[..])]
    );
    for bad in [
        &b"5 path=a/b\n"[..],
        b"x path=a\n",
        b"13 path=a/bX",
        b"99 k=v\n",
        b"6 =v\n\n",
    ] {
        assert!(parse_pax(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
    assert_eq!(parse_pax_time(b"1700000000"), Some((1_700_000_000, 0)));
    assert_eq!(
        parse_pax_time(b"1700000000.5"),
        Some((1_700_000_000, 500_000_000))
    );
    assert_eq!(parse_pax_time(b"1.1234567891"), Some((1, 123_456_789)));
    assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
    assert_eq!(parse_pax_time(b"-3"), Some((-3, 0)));
    assert_eq!(parse_pax_time(b"1.x"), None);
    assert_eq!(parse_pax_time(b""), None);
    assert_eq!(detect_compression(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
    assert_eq!(
        detect_compression(&[0x28, 0xb5, 0x2f, 0xfd]),
        Compression::Zstd
    );
    assert_eq!(
        detect_compression(&[0x50, 0x2a, 0x4d, 0x18]),
        Compression::Zstd
    );
    assert_eq!(detect_compression(b"etc/"), Compression::None);
    assert_eq!(detect_compression(b""), Compression::None);
}

/// A PAX record as a writer frames it: its length counts its own digits.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// PAX values may hold newlines (binary xattrs such as file capabilities
/// often do): records are split by their length prefix, so such a value is
/// kept whole, and a newline inside it never starts a record of its own.
#[test]
fn pax_values_with_newlines() {
    let smuggled = b"AAA\n22 linkpath=/etc/evil\n";
    let mut data = pax_record("SCHILY.xattr.user.a", smuggled);
    data.extend(pax_record("path", b"p"));
    assert_eq!(
        parse_pax(&data).unwrap(),
        vec![
            (&b"SCHILY.xattr.user.a"[..], &smuggled[..]),
            (&b"path"[..], &b"p"[..])
        ]
    );

    let f = fx();
    let cap = b"\x01\x00\x00\x02\x02\x00\x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let mut l = Layer::new();
    l.pax(&[("SCHILY.xattr.user.crius", &cap[..])])
        .file("capable", b"x")
        .pax(&[("SCHILY.xattr.user.a", &smuggled[..])])
        .link("l", EntryType::Symlink, b"harmless");
    f.unpack(&l.bytes()).unwrap();
    let t = f.target();
    assert_eq!(
        lgetxattr(&t.join("capable"), "user.crius").as_deref(),
        Some(&cap[..])
    );
    assert_eq!(fs::read_link(t.join("l")).unwrap(), Path::new("harmless"));
}

#[test]
fn pax_size_mismatch_and_sparse_rejected() {
    let f = fx();
    let mut l = Layer::new();
    l.pax(&[("size", b"99999")]).file("f", b"abc");
    let err = f.unpack(&l.bytes()).unwrap_err();
    assert!(matches!(err, UnpackError::Unsupported { .. }), "{err}");
    f.assert_clean();
    let mut l = Layer::new();
    l.entry("sp", EntryType::GNUSparse, 0o644, 0, b"");
    let err = f.unpack(&l.bytes()).unwrap_err();
    assert!(err.to_string().contains("sparse"), "{err}");
    f.assert_clean();
}

#[test]
fn root_entry_and_empty_layer() {
    let f = fx();
    let mut l = Layer::new();
    l.entry(".", EntryType::Directory, 0o750, 0, b"");
    f.unpack(&l.bytes()).unwrap();
    assert_eq!(fs::metadata(f.target()).unwrap().mode() & 0o7777, 0o750);
    let t2 = f.parent.join("empty");
    let stats = unpack_layer(&b""[..], &diff_id(b""), &t2).unwrap();
    assert_eq!(stats, UnpackStats::default());
    assert_eq!(fs::metadata(&t2).unwrap().mode() & 0o7777, 0o755);
    // The root can't become a file.
    let f = fx();
    let mut l = Layer::new();
    l.file("./", b"");
    assert!(f.unpack(&l.bytes()).is_err());
    f.assert_clean();
}
