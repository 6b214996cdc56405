//! The standing adversarial suite for image and artifact content: configs
//! whose diff IDs name host directories or another image's layer, artifacts
//! that plant symlinks and climb with titles, layers that reach outside.
//! After each case: the pull is refused with an error naming what was
//! wrong, nothing of the image is listed, a canary directory outside the
//! store is untouched, and the daemon still serves.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use crius_test_support::cri::*;
use crius_test_support::{ArtifactBuilder, Blob, CriClient, ImageBuilder, LayerBuilder};
use std::path::Path;

const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const TITLE: &str = "org.opencontainers.image.title";

async fn listed(c: &mut CriClient) -> Vec<String> {
    c.image
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .collect()
}

/// A directory outside the store with one file, which no case may change
/// or expose.
fn canary() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("host-secret"), "host").unwrap();
    d
}

fn assert_untouched(canary: &Path) {
    let names: Vec<String> = std::fs::read_dir(canary)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["host-secret"], "the canary changed");
    assert_eq!(
        std::fs::read_to_string(canary.join("host-secret")).unwrap(),
        "host"
    );
}

async fn refused(env: &Env, c: &mut CriClient, name: &str, needle: &str) {
    let r = env.registry.reference(name);
    let e = try_pull(c, &r).await.unwrap_err();
    assert!(
        e.message().contains(needle),
        "{name}: {:?} {}",
        e.code(),
        e.message()
    );
    assert!(!listed(c).await.contains(&r), "{name} is listed");
    // Still serving.
    c.runtime.version(VersionRequest::default()).await.unwrap();
}

/// Diff IDs that are paths: refused when the config is read, before any
/// path is built from them.
#[tokio::test]
async fn diff_ids_naming_host_directories_are_refused() {
    let env = env("").await;
    let mut c = env.client().await;
    let canary = canary();
    let cases = [
        canary.path().display().to_string(),
        format!("sha256:../../../../../../../..{}", canary.path().display()),
        format!("sha256:{}", "A".repeat(64)),
        format!("sha256:{}", "a".repeat(63)),
        format!("sha512:{}", "a".repeat(128)),
        String::new(),
    ];
    for (i, bad) in cases.iter().enumerate() {
        let img = ImageBuilder::busybox()
            .unwrap()
            .layer(LayerBuilder::new().file("x", "x", 0o644))
            .diff_id(1, bad)
            .build()
            .unwrap();
        let name = format!("bad-diff-id-{i}:v1");
        img.push(&env.registry, &name).await.unwrap();
        refused(&env, &mut c, &name, "diff_ids[1]").await;
        assert_untouched(canary.path());
    }
}

/// A manifest that claims another image's layer by its diff ID, with a blob
/// of its own, does not get that layer: the blob must produce the diff ID.
#[tokio::test]
async fn a_claimed_diff_id_does_not_borrow_another_images_layer() {
    let env = env("").await;
    let mut c = env.client().await;
    let secret_layer = LayerBuilder::new().file("secret", "s3cret", 0o600);
    let (_, secret_diff_id) = secret_layer.build().unwrap();
    let private = ImageBuilder::busybox()
        .unwrap()
        .layer(secret_layer)
        .build()
        .unwrap();
    private.push(&env.registry, "private:v1").await.unwrap();
    try_pull(&mut c, &env.registry.reference("private:v1"))
        .await
        .unwrap();
    let thief = ImageBuilder::busybox()
        .unwrap()
        .layer(LayerBuilder::new().file("other", "mine", 0o644))
        .diff_id(1, &secret_diff_id)
        .build()
        .unwrap();
    thief.push(&env.registry, "thief:v1").await.unwrap();
    refused(&env, &mut c, "thief:v1", "diff").await;

    // The same layer content under another blob (recompressed) is reused
    // honestly: its blob really produces the diff ID.
    let same = ImageBuilder::busybox()
        .unwrap()
        .layer(
            LayerBuilder::new()
                .compression(crius_test_support::image::Compression::Gzip)
                .file("secret", "s3cret", 0o600),
        )
        .build()
        .unwrap();
    same.push(&env.registry, "same:v1").await.unwrap();
    try_pull(&mut c, &env.registry.reference("same:v1"))
        .await
        .unwrap();
}

/// Artifacts: a symlink planted by one layer is never written through by a
/// later one; titles that climb, are absolute, repeat or nest under a
/// file are refused; nothing lands outside the store.
#[tokio::test]
async fn hostile_artifacts_are_refused() {
    let env = env("").await;
    let mut c = env.client().await;
    let canary = canary();
    let host = canary.path().display().to_string();
    let plant = || LayerBuilder::new().symlink("d", &host).build().unwrap().0;
    let (dir_tar, _) = LayerBuilder::new()
        .dir("d", 0o755)
        .file("d/pwned", "x", 0o644)
        .build()
        .unwrap();
    let cases: Vec<(&str, ArtifactBuilder, &str)> = vec![
        (
            "plant-then-file",
            ArtifactBuilder::new("application/vnd.test")
                .layer(plant())
                .file("d/pwned", OCI_LAYER_TAR, "x"),
            "d/pwned",
        ),
        (
            "plant-then-dir",
            ArtifactBuilder::new("application/vnd.test")
                .layer(plant())
                .layer(
                    dir_tar
                        .clone()
                        .annotated(TITLE, "d")
                        .annotated("io.deis.oras.content.unpack", "true"),
                ),
            "already provided",
        ),
        (
            "plant-then-untitled-tar",
            ArtifactBuilder::new("application/vnd.test")
                .layer(plant())
                .layer(dir_tar.clone()),
            "already provided",
        ),
        (
            "climbing-title",
            ArtifactBuilder::new("application/vnd.test").file(
                "../../../../../../../../tmp/x",
                "text/plain",
                "x",
            ),
            "\"..\"",
        ),
        (
            "absolute-title",
            ArtifactBuilder::new("application/vnd.test").file(
                &format!("{host}/pwned"),
                "text/plain",
                "x",
            ),
            "absolute",
        ),
        (
            "nul-title",
            ArtifactBuilder::new("application/vnd.test").file("a\0b", "text/plain", "x"),
            "NUL",
        ),
        (
            "duplicate-title",
            ArtifactBuilder::new("application/vnd.test")
                .file("a", "text/plain", "1")
                .file("a", "text/plain", "2"),
            "writing a",
        ),
        (
            "title-under-a-file",
            ArtifactBuilder::new("application/vnd.test")
                .file("a", "text/plain", "1")
                .file("a/b", "text/plain", "2"),
            "a/b",
        ),
        (
            "unpack-dir-outside-its-title",
            ArtifactBuilder::new("application/vnd.test").layer(
                dir_tar
                    .clone()
                    .annotated(TITLE, "other")
                    .annotated("io.deis.oras.content.unpack", "true"),
            ),
            "outside the directory",
        ),
        (
            "model-filepath-climbs",
            ArtifactBuilder::new("application/vnd.cncf.model.manifest.v1+json").layer(
                Blob::new("application/vnd.cncf.model.weight.v1.raw", b"w".to_vec())
                    .annotated("org.cncf.model.filepath", "../../w"),
            ),
            "org.cncf.model.filepath",
        ),
    ];
    for (name, a, needle) in cases {
        let m = a.build().unwrap();
        let tag = format!("{name}:v1");
        m.push(&env.registry, &tag).await.unwrap();
        refused(&env, &mut c, &tag, needle).await;
        assert_untouched(canary.path());
    }
    // Nothing half-made is left in the store.
    let leftovers: Vec<_> = std::fs::read_dir(env.daemon.root.join("images/artifacts"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Decompression bombs and floods of entries fail the pull under the
/// configured caps, per layer and per image; nothing of them is visible.
#[tokio::test]
async fn bombs_and_floods_are_capped() {
    use crius_test_support::image::Compression;
    let env = env(
        "max_layer_bytes = 4194304\nmax_layer_entries = 1000\nmax_image_bytes = 6291456\nmax_image_entries = 1500\n",
    )
    .await;
    let mut c = env.client().await;
    let zeros = |mib: usize| vec![0u8; mib << 20];
    // 16 MiB of zeros: a few KiB gzipped.
    let bomb = ImageBuilder::scratch()
        .layer(
            LayerBuilder::new()
                .compression(Compression::Gzip)
                .file("zeros", zeros(16), 0o644),
        )
        .build()
        .unwrap();
    assert!(bomb.layers[0].data.len() < 100_000);
    bomb.push(&env.registry, "bomb:v1").await.unwrap();
    refused(&env, &mut c, "bomb:v1", "max_layer_bytes").await;
    // Two layers of 3 MiB: each under the layer cap, together over the image's.
    let two = ImageBuilder::scratch()
        .layer(
            LayerBuilder::new()
                .compression(Compression::Gzip)
                .file("a", zeros(3), 0o644),
        )
        .layer(
            LayerBuilder::new()
                .compression(Compression::Gzip)
                .file("b", zeros(3), 0o644),
        )
        .build()
        .unwrap();
    two.push(&env.registry, "two:v1").await.unwrap();
    refused(&env, &mut c, "two:v1", "max_image_bytes").await;
    // 1200 empty files in one layer; then 2 x 800 over the image's 1500.
    // (The caps sit above the busybox image the harness pulls first.)
    let mut flood = LayerBuilder::new();
    for i in 0..1200 {
        flood = flood.file(&format!("f{i}"), "", 0o644);
    }
    let flood = ImageBuilder::scratch().layer(flood).build().unwrap();
    flood.push(&env.registry, "flood:v1").await.unwrap();
    refused(&env, &mut c, "flood:v1", "max_layer_entries").await;
    let eighty = |p: &str| {
        let mut l = LayerBuilder::new();
        for i in 0..800 {
            l = l.file(&format!("{p}{i}"), "", 0o644);
        }
        l
    };
    let wide = ImageBuilder::scratch()
        .layer(eighty("a"))
        .layer(eighty("b"))
        .build()
        .unwrap();
    wide.push(&env.registry, "wide:v1").await.unwrap();
    refused(&env, &mut c, "wide:v1", "max_image_entries").await;
    // Under every cap, an image pulls.
    let fine = ImageBuilder::scratch()
        .layer(LayerBuilder::new().file("ok", zeros(1), 0o644))
        .build()
        .unwrap();
    fine.push(&env.registry, "fine:v1").await.unwrap();
    try_pull(&mut c, &env.registry.reference("fine:v1"))
        .await
        .unwrap();
}

/// More hostile layers than `images.rs` covers, and hostile image configs:
/// each refused cleanly or made harmless, the canary untouched, the daemon
/// serving; entries nested past PATH_MAX (absolute) are measured by
/// ImageFsInfo.
#[tokio::test]
async fn hostile_layers_and_configs() {
    use tar::EntryType;
    let env = env("").await;
    let mut c = env.client().await;
    let canary = canary();
    let host = canary.path().display().to_string();
    // Refused outright.
    let refused_layers: Vec<(&str, LayerBuilder, &str)> = vec![
        (
            "whiteout-outside",
            LayerBuilder::new().raw("../.wh.etc", EntryType::Regular, "", ""),
            "escapes",
        ),
        (
            "huge-pax-header",
            LayerBuilder::new().raw("pax", EntryType::XHeader, "", vec![b'x'; 2 << 20]),
            "exceeds",
        ),
        (
            "hardlink-through-symlink",
            LayerBuilder::new()
                .raw("s", EntryType::Symlink, &host, "")
                .raw("h", EntryType::Link, "s/host-secret", ""),
            "symlink",
        ),
    ];
    for (name, layer, needle) in refused_layers {
        let img = ImageBuilder::busybox()
            .unwrap()
            .layer(layer)
            .build()
            .unwrap();
        let tag = format!("{name}:v1");
        img.push(&env.registry, &tag).await.unwrap();
        refused(&env, &mut c, &tag, needle).await;
        assert_untouched(canary.path());
    }
    // Made harmless: a device node is skipped, a hardlink to a symlink links
    // the symlink itself, deep nesting is stored and measured.
    let mut deep = LayerBuilder::new();
    let mut p = String::new();
    for _ in 0..95 {
        if !p.is_empty() {
            p.push('/');
        }
        p.push_str(&"n".repeat(40));
        deep = deep.dir(&p, 0o755);
    }
    deep = deep.file(&format!("{p}/leaf"), "deep", 0o644);
    assert!(p.len() > 3800);
    let harmless = ImageBuilder::busybox()
        .unwrap()
        .layer(
            LayerBuilder::new()
                .raw("sda", EntryType::Char, "", "")
                .raw("s", EntryType::Symlink, &host, "")
                .raw("hl", EntryType::Link, "s", ""),
        )
        .layer(deep)
        .build()
        .unwrap();
    harmless.push(&env.registry, "harmless:v1").await.unwrap();
    let r = env.registry.reference("harmless:v1");
    let e = try_pull(&mut c, &r).await;
    assert!(e.is_ok(), "{e:?}");
    let fs = c
        .image
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let used = fs.image_filesystems[0].used_bytes.as_ref().unwrap().value;
    assert!(used > 0);
    assert_untouched(canary.path());

    // Hostile configs: users that are not users, a huge environment and
    // entrypoint. Refused cleanly at create or start, never a dead daemon.
    let pc = pod_config("hostile-configs", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let configs: Vec<(&str, ImageBuilder)> = vec![
        ("user-nul", ImageBuilder::busybox().unwrap().user("a\u{0}b")),
        (
            "user-huge-uid",
            ImageBuilder::busybox().unwrap().user("99999999999"),
        ),
        (
            "user-climbing",
            ImageBuilder::busybox().unwrap().user("../../etc:../x"),
        ),
        (
            "env-huge",
            ImageBuilder::busybox()
                .unwrap()
                .env("BIG", &"v".repeat(4 << 20)),
        ),
        (
            "entrypoint-huge",
            ImageBuilder::busybox().unwrap().entrypoint(
                &vec!["x".repeat(64); 100_000]
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            ),
        ),
    ];
    for (i, (name, b)) in configs.into_iter().enumerate() {
        let tag = format!("{name}:v1");
        b.build().unwrap().push(&env.registry, &tag).await.unwrap();
        let r = env.registry.reference(&tag);
        pull_ref(&mut c, &r).await;
        let mut cc = container_config(&format!("c{i}"), &r, &[]);
        cc.command.clear();
        match create(&mut c, &pod, &pc, cc).await {
            Ok(id) => {
                if let Err(e) = try_start(&mut c, &id).await {
                    assert!(
                        matches!(
                            e.code(),
                            tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument
                        ),
                        "{name}: {e:?}"
                    );
                }
            }
            Err(e) => assert!(
                matches!(
                    e.code(),
                    tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
                ),
                "{name}: {e:?}"
            ),
        }
        c.runtime.version(VersionRequest::default()).await.unwrap();
    }
    remove_pod(&mut c, &pod).await;
    assert_untouched(canary.path());
}
