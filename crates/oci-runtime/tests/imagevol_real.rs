//! Image volume views and sub paths with real mounts (root only).
#![allow(clippy::unwrap_used)]

use crius_oci_runtime::imagevol::{self, SubPathKind};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mounts_under(dir: &Path) -> usize {
    let d = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&d))
        .count()
}

fn write(p: &Path, data: &str, mode: u32) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn layered_view_is_read_only_executable_and_sub_paths_stay_inside() {
    crius_test_support::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (bottom, top) = (tmp.path().join("l1"), tmp.path().join("l2"));
    write(&bottom.join("dir/file"), "1", 0o644);
    write(&bottom.join("file"), "2", 0o644);
    write(&bottom.join("secret.txt"), "hidden", 0o644);
    write(&bottom.join("bin/tool"), "#!/bin/sh\necho ran\n", 0o755);
    write(&top.join("dir/new"), "3", 0o644);
    // A whiteout hides secret.txt from the view, as in the image.
    nix::sys::stat::mknod(
        &top.join("secret.txt"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", top.join("escape")).unwrap();
    std::os::unix::fs::symlink("../../../../../../dir", top.join("up")).unwrap();

    let view = tmp.path().join("view");
    imagevol::mount_view(&[top.clone(), bottom.clone()], &view, false).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&view)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["bin", "dir", "escape", "file", "up"]);
    assert_eq!(std::fs::read_to_string(view.join("dir/file")).unwrap(), "1");
    let e = std::fs::write(view.join("dir/x"), "w").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    // No noexec (KEP-4639 since 2025): a binary in the image runs.
    let out = std::process::Command::new(view.join("bin/tool"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");

    // A directory sub path.
    let (fd, kind) = imagevol::resolve_sub_path(&view, "dir").unwrap();
    assert_eq!(kind, SubPathKind::Dir);
    let sub = tmp.path().join("sub-dir");
    imagevol::bind_sub_path(&fd, kind, &sub, false).unwrap();
    assert_eq!(std::fs::read_to_string(sub.join("new")).unwrap(), "3");
    assert_eq!(
        std::fs::write(sub.join("y"), "w")
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
    // A file sub path mounts a file.
    let (fd, kind) = imagevol::resolve_sub_path(&view, "/file").unwrap();
    assert_eq!(kind, SubPathKind::File);
    let subf = tmp.path().join("sub-file");
    imagevol::bind_sub_path(&fd, kind, &subf, true).unwrap();
    assert_eq!(std::fs::read_to_string(&subf).unwrap(), "2");
    // `..` and symlinks resolve inside the image, never on the host.
    let (_, kind) = imagevol::resolve_sub_path(&view, "../../../dir").unwrap();
    assert_eq!(kind, SubPathKind::Dir);
    let (_, kind) = imagevol::resolve_sub_path(&view, "up").unwrap();
    assert_eq!(
        kind,
        SubPathKind::Dir,
        "a relative escape lands on <root>/dir"
    );
    let e = imagevol::resolve_sub_path(&view, "escape").unwrap_err();
    assert!(
        e.to_string().contains("\"escape\"") && e.to_string().contains("does not exist"),
        "{e}"
    );
    let e = imagevol::resolve_sub_path(&view, "secret.txt").unwrap_err();
    assert!(e.to_string().contains("does not exist"), "whited out: {e}");
    let e = imagevol::resolve_sub_path(&view, "nope/deeper").unwrap_err();
    assert!(e.to_string().contains("\"nope/deeper\""), "{e}");

    for p in [&subf, &sub, &view] {
        imagevol::unmount(p).unwrap();
        imagevol::unmount(p).unwrap();
    }
    assert_eq!(mounts_under(tmp.path()), 0);
}

#[test]
fn single_dir_view_is_a_read_only_bind() {
    crius_test_support::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let content = tmp.path().join("artifact");
    write(&content.join("dir/file"), "1", 0o644);
    write(&content.join("file"), "2", 0o755);
    let view = tmp.path().join("view");
    assert!(!imagevol::is_mount_point(&view));
    // With the operator's noexec.
    imagevol::mount_view(std::slice::from_ref(&content), &view, true).unwrap();
    // A bind from the same file system keeps its parent's device number;
    // it is a mount point all the same (the shared-view bookkeeping
    // remounted it under running creates when it looked unmounted).
    assert!(imagevol::is_mount_point(&view));
    assert!(!imagevol::is_mount_point(&content));
    assert_eq!(std::fs::read_to_string(view.join("dir/file")).unwrap(), "1");
    assert_eq!(
        std::fs::write(view.join("x"), "w")
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
    let e = std::process::Command::new(view.join("file"))
        .output()
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
    // The source itself stays writable: only the view is read-only.
    std::fs::write(content.join("x"), "w").unwrap();
    imagevol::unmount(&view).unwrap();
    assert!(!imagevol::is_mount_point(&view));
    assert_eq!(mounts_under(tmp.path()), 0);
    assert!(matches!(
        imagevol::mount_view(&[], &view, false),
        Err(imagevol::VolumeError::NoLayers)
    ));
}
