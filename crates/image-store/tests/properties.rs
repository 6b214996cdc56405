//! Property tests over what registries and image authors control: the tar
//! reader, reference parsing, registries.conf and auth files. On any input:
//! no panic, and nothing outside the target. `make test` runs a short
//! sample; `make fuzz` sets PROPTEST_CASES high.
#![allow(clippy::unwrap_used)]

use crius_image_store::auth::AuthFile;
use crius_image_store::reference;
use crius_image_store::registries::RegistriesConf;
use crius_image_store::unpack::{unpack_tar_into, Limits, Mode};
use proptest::prelude::*;
use std::path::Path;

fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Path components an attacker would try, and some plain ones.
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just("".to_string()),
        Just("etc".to_string()),
        Just("a".to_string()),
        Just("b".to_string()),
        Just(".wh.a".to_string()),
        Just(".wh..wh..opq".to_string()),
        "[a-z]{1,8}",
        "[ -~]{1,12}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(component(), 1..5)).prop_map(|(abs, c)| {
        let p = c.join("/");
        if abs {
            format!("/{p}")
        } else {
            p
        }
    })
}

#[derive(Debug, Clone)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Hardlink(String),
    Fifo,
    CharDevice,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Kind::File),
        Just(Kind::Dir),
        path().prop_map(Kind::Symlink),
        path().prop_map(Kind::Hardlink),
        Just(Kind::Fifo),
        Just(Kind::CharDevice),
    ]
}

/// A tar written byte for byte (the tar crate's own path checks bypassed,
/// as an attacker's tool would).
fn raw_tar(entries: &[(String, Kind)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, k) in entries {
        let mut h = tar::Header::new_gnu();
        let n = name.as_bytes();
        let old = h.as_old_mut();
        let len = n.len().min(old.name.len());
        old.name[..len].copy_from_slice(&n[..len]);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let data: &[u8] = match k {
            Kind::File(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                d
            }
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                &[]
            }
            Kind::Symlink(t) | Kind::Hardlink(t) => {
                h.set_entry_type(if matches!(k, Kind::Symlink(_)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                let old = h.as_old_mut();
                let t = t.as_bytes();
                let len = t.len().min(old.linkname.len());
                old.linkname[..len].copy_from_slice(&t[..len]);
                &[]
            }
            Kind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                &[]
            }
            Kind::CharDevice => {
                h.set_entry_type(tar::EntryType::Char);
                &[]
            }
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// Everything beneath `dir` (relative paths), symlinks not followed.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(cases(64))]

    /// Hostile tars: whatever they hold, unpacking never panics and never
    /// writes beside the target (a sibling canary and the parent stay as
    /// they were), in both modes.
    #[test]
    fn tar_reader_stays_in_its_target(
        entries in prop::collection::vec((path(), kind()), 0..12),
        overlay in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let canary = tmp.path().join("canary");
        std::fs::create_dir(&canary).unwrap();
        std::fs::write(canary.join("f"), "x").unwrap();
        let target = tmp.path().join("target");
        let tar = raw_tar(&entries);
        let mode = if overlay { Mode::OverlayLayer } else { Mode::Plain };
        let r = unpack_tar_into(&tar[..], None, &target, mode, &Limits::default());
        let mut beside: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        beside.sort();
        let want: Vec<&str> = if r.is_ok() { vec!["canary", "target"] } else { vec!["canary"] };
        prop_assert_eq!(beside, want, "{:?}", r.err());
        prop_assert_eq!(listing(&canary), vec!["f".to_string()]);
        // The canary's file was never hardlinked into the layer.
        use std::os::unix::fs::MetadataExt;
        prop_assert_eq!(std::fs::metadata(canary.join("f")).unwrap().nlink(), 1);
    }

    /// Arbitrary bytes as a layer: an error or an empty layer, never a panic.
    #[test]
    fn tar_reader_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let tmp = tempfile::tempdir().unwrap();
        let _ = unpack_tar_into(&bytes[..], None, &tmp.path().join("t"), Mode::OverlayLayer, &Limits::default());
    }

    #[test]
    fn references_parse_or_fail(s in "\\PC{0,80}") {
        let _ = reference::parse(&s);
        let _ = reference::normalize(&s);
    }

    #[test]
    fn registries_conf_parses_or_fails(s in "\\PC{0,300}") {
        let _ = RegistriesConf::parse(&s);
    }

    #[test]
    fn registries_conf_shaped_input(
        prefix in "[a-z0-9.:/*-]{0,20}",
        location in "[a-z0-9.:/@-]{0,20}",
        mirror in "[a-z0-9.:/-]{0,20}",
        blocked in any::<bool>(),
    ) {
        let text = format!(
            "unqualified-search-registries = [\"{location}\"]\n[[registry]]\nprefix = \"{prefix}\"\nlocation = \"{location}\"\nblocked = {blocked}\n[[registry.mirror]]\nlocation = \"{mirror}\"\n"
        );
        if let Ok(conf) = RegistriesConf::parse(&text) {
            if let Ok(r) = reference::normalize("busybox:1") {
                let _ = conf.endpoints(&r);
            }
        }
    }

    #[test]
    fn auth_files_parse_or_fail(s in "\\PC{0,200}") {
        let _ = AuthFile::parse(&s);
    }

    #[test]
    fn auth_file_shaped_input(
        key in "\\PC{0,40}",
        auth in "[A-Za-z0-9+/=:]{0,40}",
        user in "\\PC{0,10}",
    ) {
        let v = serde_json::json!({"auths": {key.clone(): {"auth": auth, "username": user}}});
        if let Ok(f) = AuthFile::parse(&v.to_string()) {
            let _ = f.lookup("docker.io", "library/busybox");
            let _ = f.lookup(&key, "x");
        }
    }
}
