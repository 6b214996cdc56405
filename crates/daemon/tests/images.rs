//! The ImageService through the real socket against a real docker-registry:
//! pulls (anonymous, pull secrets, auth file, mirrors), listing, status,
//! artifacts, tag moves, integrity failures, removal and GC, restarts.
#![allow(clippy::unwrap_used)]

use crius_test_support::cri::*;
use crius_test_support::image::noise;
use crius_test_support::image::TEST_USER;
use crius_test_support::{ArtifactBuilder, Daemon, ImageBuilder, LayerBuilder, Manifest, Registry};
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_crius");

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

fn pull_req(image: &str, auth: Option<AuthConfig>) -> PullImageRequest {
    PullImageRequest {
        image: spec(image),
        auth,
        sandbox_config: None,
    }
}

fn basic(user: &str, pass: &str) -> Option<AuthConfig> {
    Some(AuthConfig {
        username: user.into(),
        password: pass.into(),
        ..Default::default()
    })
}

/// Daemon whose failed pulls do not make later pulls fail fast (tests that
/// retry with other credentials), with a short retry budget.
async fn daemon(extra_toml: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap().keep();
    let mut toml = extra_toml.to_string();
    for (key, value) in [
        (
            "registries_conf",
            format!("\"{}/none.conf\"", dir.display()),
        ),
        ("auth_file", format!("\"{}/none.json\"", dir.display())),
        ("pull_failure_backoff_seconds", "0".into()),
        ("pull_retry_budget_seconds", "3".into()),
    ] {
        if !extra_toml.contains(key) {
            toml += &format!("{key} = {value}\n");
        }
    }
    // A registries.conf that exists (the non-default path must).
    std::fs::write(dir.join("none.conf"), "").unwrap();
    Daemon::builder(BIN)
        .config_toml(toml)
        .start()
        .await
        .unwrap()
}

fn busybox() -> Manifest {
    ImageBuilder::busybox()
        .unwrap()
        .user("crius-user")
        .label("test", "crius")
        .build()
        .unwrap()
}

fn blob_count(d: &Daemon) -> usize {
    std::fs::read_dir(d.root.join("images/oci/blobs/sha256"))
        .map(|r| r.count())
        .unwrap_or(0)
}

async fn list(d: &Daemon) -> Vec<Image> {
    let mut c = d.client().await.unwrap();
    c.image
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
}

async fn status(d: &Daemon, image: &str, verbose: bool) -> ImageStatusResponse {
    let mut c = d.client().await.unwrap();
    c.image
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose,
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn anonymous_pull_list_status_remove() {
    let registry = Registry::start().await.unwrap();
    let image = busybox();
    image.push(&registry, "busybox:1").await.unwrap();
    let d = daemon("").await;
    let mut c = d.client().await.unwrap();
    let reference = registry.reference("busybox:1");

    let r = c
        .image
        .pull_image(pull_req(&reference, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.image_ref, image.config.digest,
        "image_ref is the image id (config digest)"
    );

    let images = list(&d).await;
    assert_eq!(images.len(), 1);
    let i = &images[0];
    assert_eq!(i.id, image.config.digest);
    assert_eq!(i.repo_tags, vec![reference.clone()]);
    assert_eq!(
        i.repo_digests,
        vec![format!("{}/busybox@{}", registry.host(), image.digest)]
    );
    assert_eq!(i.size as usize, image.content_size());
    assert_eq!(i.username, TEST_USER.0);

    // The same image by every name kubelet may use.
    let short_id = &image.config.digest["sha256:".len().."sha256:".len() + 12];
    for name in [
        reference.as_str(),
        image.config.digest.as_str(),
        image.config.digest.trim_start_matches("sha256:"),
        short_id,
        &format!("{}/busybox@{}", registry.host(), image.digest),
    ] {
        let s = status(&d, name, false).await;
        assert_eq!(
            s.image.map(|i| i.id),
            Some(image.config.digest.clone()),
            "by {name}"
        );
    }
    let s = status(&d, &reference, true).await;
    let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
    assert_eq!(info["artifact"], false);
    assert_eq!(info["config"]["config"]["User"], "crius-user");
    assert_eq!(info["manifest"]["layers"].as_array().unwrap().len(), 1);

    // Missing image: empty status, not an error.
    let s = status(&d, &registry.reference("nothing:here"), false).await;
    assert!(s.image.is_none());

    // The store is a valid OCI layout that skopeo-style tools can read.
    let layout = d.root.join("images/oci");
    assert!(layout.join("oci-layout").exists());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], image.digest);
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        reference
    );

    let fs = c
        .image
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let u = &fs.image_filesystems[0];
    assert_eq!(
        u.fs_id.as_ref().unwrap().mountpoint,
        d.root.join("images").display().to_string()
    );
    assert!(u.used_bytes.unwrap().value as usize >= image.content_size());
    assert!(u.inodes_used.unwrap().value >= 4);

    c.image
        .remove_image(RemoveImageRequest {
            image: spec(&reference),
        })
        .await
        .unwrap();
    assert!(list(&d).await.is_empty());
    assert_eq!(
        blob_count(&d),
        0,
        "blobs left after removing the only image"
    );
    // Removing a missing image is not an error.
    c.image
        .remove_image(RemoveImageRequest {
            image: spec(&reference),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn pull_secrets_and_auth_file() {
    let registry = Registry::start_with_auth("puller", "pa55word")
        .await
        .unwrap();
    busybox().push(&registry, "private:1").await.unwrap();
    let reference = registry.reference("private:1");
    let auth_dir = tempfile::tempdir().unwrap();
    let auth_file = auth_dir.path().join("auth.json");
    let d = daemon(&format!("auth_file = \"{}\"\n", auth_file.display())).await;
    let mut c = d.client().await.unwrap();

    let e = c
        .image
        .pull_image(pull_req(&reference, None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("unauthorized"), "{}", e.message());

    let e = c
        .image
        .pull_image(pull_req(&reference, basic("puller", "not-the-password")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(!e.message().contains("not-the-password"));

    c.image
        .pull_image(pull_req(&reference, basic("puller", "pa55word")))
        .await
        .unwrap();
    // base64 `auth` form of the same secret.
    c.image
        .pull_image(pull_req(
            &reference,
            Some(AuthConfig {
                auth: "cHVsbGVyOnBhNTV3b3Jk".into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap();
    c.image
        .remove_image(RemoveImageRequest {
            image: spec(&reference),
        })
        .await
        .unwrap();

    // The global auth file, longest key wins.
    std::fs::write(
        &auth_file,
        serde_json::json!({"auths": {
            registry.host(): {"auth": "cHVsbGVyOndyb25n"},
            format!("{}/private", registry.host()): {"auth": "cHVsbGVyOnBhNTV3b3Jk"},
        }})
        .to_string(),
    )
    .unwrap();
    c.image
        .pull_image(pull_req(&reference, None))
        .await
        .unwrap();

    let log = d.log();
    for secret in ["pa55word", "not-the-password", "cHVsbGVyOnBhNTV3b3Jk"] {
        assert!(!log.contains(secret), "secret {secret} in the daemon log");
    }
}

#[tokio::test]
async fn artifacts_are_first_class() {
    let registry = Registry::start().await.unwrap();
    let artifact = ArtifactBuilder::new("application/vnd.crius.test.model.v1")
        .file(
            "weights.bin",
            "application/octet-stream",
            vec![42u8; 100_000],
        )
        .file("config.yaml", "application/yaml", "layers: 2\n")
        .annotation("org.opencontainers.image.description", "test model")
        .build()
        .unwrap();
    artifact.push(&registry, "model:v1").await.unwrap();
    let d = daemon(&format!(
        "pinned_images = [\"{}/model*\"]\n",
        registry.host()
    ))
    .await;
    let mut c = d.client().await.unwrap();
    let reference = registry.reference("model:v1");

    let r = c
        .image
        .pull_image(pull_req(&reference, None))
        .await
        .unwrap()
        .into_inner();
    // An artifact's id is its manifest digest (artifacts share configs).
    assert_eq!(r.image_ref, artifact.digest);
    let images = list(&d).await;
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].repo_tags, vec![reference.clone()]);
    assert_eq!(images[0].size as usize, artifact.content_size());
    assert!(images[0].pinned, "pinned_images pattern not applied");
    let s = status(&d, &reference, true).await;
    assert_eq!(
        s.image
            .unwrap()
            .spec
            .unwrap()
            .annotations
            .get("org.opencontainers.image.description")
            .map(String::as_str),
        Some("test model")
    );
    let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
    assert_eq!(info["artifact"], true);
    assert_eq!(info["artifactType"], "application/vnd.crius.test.model.v1");
    assert_eq!(
        info["manifest"]["layers"][1]["annotations"]["org.opencontainers.image.title"],
        "config.yaml"
    );
    assert_eq!(blob_count(&d), 4, "manifest, config and two files");

    c.image
        .remove_image(RemoveImageRequest {
            image: spec(&reference),
        })
        .await
        .unwrap();
    assert!(list(&d).await.is_empty());
    assert_eq!(blob_count(&d), 0);
}

#[tokio::test]
async fn tags_move_and_untag_only_removes_the_tag() {
    let registry = Registry::start().await.unwrap();
    let one = ImageBuilder::busybox()
        .unwrap()
        .env("V", "1")
        .build()
        .unwrap();
    let two = ImageBuilder::busybox()
        .unwrap()
        .env("V", "2")
        .build()
        .unwrap();
    one.push(&registry, "app:latest").await.unwrap();
    one.push(&registry, "app:stable").await.unwrap();
    let d = daemon("").await;
    let mut c = d.client().await.unwrap();
    let latest = registry.reference("app:latest");
    let stable = registry.reference("app:stable");
    c.image.pull_image(pull_req(&latest, None)).await.unwrap();
    c.image.pull_image(pull_req(&stable, None)).await.unwrap();
    let images = list(&d).await;
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].repo_tags.len(), 2);

    // The tag moves to the new image; the old one keeps its other tag.
    two.push(&registry, "app:latest").await.unwrap();
    let r = c
        .image
        .pull_image(pull_req(&latest, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.image_ref, two.config.digest);
    assert_eq!(
        status(&d, &latest, false).await.image.unwrap().id,
        two.config.digest
    );
    let old = status(&d, &one.config.digest, false).await.image.unwrap();
    assert_eq!(old.repo_tags, vec![stable.clone()]);

    // Two tags on one image: removing one tag only untags.
    c.image
        .pull_image(pull_req(&registry.reference("app:stable"), None))
        .await
        .unwrap();
    two.push(&registry, "app:extra").await.unwrap();
    c.image
        .pull_image(pull_req(&registry.reference("app:extra"), None))
        .await
        .unwrap();
    c.image
        .remove_image(RemoveImageRequest {
            image: spec(&latest),
        })
        .await
        .unwrap();
    let still = status(&d, &two.config.digest, false).await.image.unwrap();
    assert_eq!(still.repo_tags, vec![registry.reference("app:extra")]);
    assert_eq!(list(&d).await.len(), 2);

    // Everything survives a crash of the daemon.
    let mut d = d;
    d.kill().unwrap();
    d.start().await.unwrap();
    let after = list(&d).await;
    assert_eq!(after.len(), 2);
    assert_eq!(
        status(&d, &registry.reference("app:extra"), false)
            .await
            .image
            .unwrap()
            .id,
        two.config.digest
    );
}

#[tokio::test]
async fn corrupted_blob_fails_with_nothing_stored() {
    let registry = Registry::start().await.unwrap();
    let image = ImageBuilder::busybox()
        .unwrap()
        .layer(LayerBuilder::new().file("data", vec![5u8; 50_000], 0o644))
        .build()
        .unwrap();
    image.push(&registry, "corrupt:1").await.unwrap();
    // Same size, different bytes, on the registry's disk.
    let path = registry.blob_path(&image.layers[1].digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let d = daemon("").await;
    let mut c = d.client().await.unwrap();
    let e = c
        .image
        .pull_image(pull_req(&registry.reference("corrupt:1"), None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(
        e.message().contains(&image.layers[1].digest),
        "{}",
        e.message()
    );
    assert!(list(&d).await.is_empty());
    assert_eq!(
        blob_count(&d),
        0,
        "blobs of a failed pull stay invisible and are collected"
    );
    let ingest = d.root.join("images/oci/ingest");
    assert_eq!(std::fs::read_dir(ingest).unwrap().count(), 0);
}

#[tokio::test]
async fn bad_requests_name_the_field_and_change_nothing() {
    let d = daemon("").await;
    let mut c = d.client().await.unwrap();
    let e = c.image.pull_image(pull_req("", None)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("image.image"), "{}", e.message());
    let e = c
        .image
        .pull_image(pull_req("Not/A:Valid:Ref", None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("Not/A:Valid:Ref"), "{}", e.message());
    let e = c
        .image
        .pull_image(pull_req(
            "localhost:1/x:1",
            Some(AuthConfig {
                auth: "%%%".into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("auth"), "{}", e.message());
    let e = c
        .image
        .image_status(ImageStatusRequest {
            image: None,
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(list(&d).await.is_empty());
}

#[tokio::test]
async fn mirror_down_falls_back_to_origin_and_failures_back_off() {
    let registry = Registry::start().await.unwrap();
    let image = busybox();
    image.push(&registry, "mirrored:1").await.unwrap();
    let dead = crius_test_support::registry::free_loopback_port().unwrap();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nprefix = \"{host}\"\nlocation = \"{host}\"\n\n[[registry.mirror]]\nlocation = \"{dead}\"\n",
            host = registry.host()
        ),
    )
    .unwrap();
    let d = Daemon::builder(BIN)
        .config_toml(format!(
            "registries_conf = \"{}\"\npull_retry_budget_seconds = 1\npull_failure_backoff_seconds = 30\n",
            conf.display()
        ))
        .start()
        .await
        .unwrap();
    let mut c = d.client().await.unwrap();
    let r = c
        .image
        .pull_image(pull_req(&registry.reference("mirrored:1"), None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.image_ref, image.config.digest);
    assert!(d.log().contains("mirror failed"), "{}", d.log());

    // A failing reference fails fast afterwards, naming the wait.
    let missing = registry.reference("missing:1");
    let e = c
        .image
        .pull_image(pull_req(&missing, None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = c
        .image
        .pull_image(pull_req(&missing, None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("not retrying for another"),
        "{}",
        e.message()
    );
}

fn big_image(mb: usize, seed: u64) -> Manifest {
    ImageBuilder::busybox()
        .unwrap()
        .layer(
            LayerBuilder::new()
                .compression(crius_test_support::image::Compression::None)
                .file("big.bin", noise(mb << 20, seed), 0o644),
        )
        .build()
        .unwrap()
}

fn ingest_has_partial(d: &Daemon) -> bool {
    std::fs::read_dir(d.root.join("images/oci/ingest"))
        .map(|r| {
            r.flatten()
                .any(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false))
        })
        .unwrap_or(false)
}

async fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn concurrent_pulls_download_each_blob_once() {
    let registry = Registry::start().await.unwrap();
    let shared = big_image(8, 1);
    shared.push(&registry, "shared:a").await.unwrap();
    // A second image sharing the busybox layer.
    let other = ImageBuilder::busybox()
        .unwrap()
        .env("X", "y")
        .build()
        .unwrap();
    other.push(&registry, "shared:b").await.unwrap();
    let d = daemon("").await;
    let mut pulls = Vec::new();
    for i in 0..8 {
        let c = d.client().await.unwrap();
        let reference = registry.reference(if i % 4 == 3 { "shared:b" } else { "shared:a" });
        pulls.push(tokio::spawn(async move {
            let mut c = c;
            c.image
                .pull_image(pull_req(&reference, None))
                .await
                .map(|r| r.into_inner().image_ref)
        }));
    }
    for p in pulls {
        p.await.unwrap().unwrap();
    }
    for layer in &shared.layers {
        assert_eq!(
            registry.blob_gets(&layer.digest),
            1,
            "layer {} fetched more than once",
            layer.digest
        );
    }
    assert_eq!(list(&d).await.len(), 2);
}

#[tokio::test]
async fn registry_dying_mid_pull_is_retried_and_nothing_is_visible_meanwhile() {
    let mut registry = Registry::start().await.unwrap();
    let image = big_image(96, 2);
    image.push(&registry, "flaky:1").await.unwrap();
    let d = daemon("pull_retry_budget_seconds = 60\n").await;
    let reference = registry.reference("flaky:1");
    let mut c = d.client().await.unwrap();
    let pull = tokio::spawn(async move { c.image.pull_image(pull_req(&reference, None)).await });

    wait_for(|| ingest_has_partial(&d), "a partial blob").await;
    registry.kill().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        list(&d).await.is_empty(),
        "an image became visible while its pull was broken"
    );
    assert!(
        !pull.is_finished(),
        "pull gave up while the registry was down"
    );
    registry.restart().await.unwrap();

    let r = pull.await.unwrap().unwrap().into_inner();
    assert_eq!(r.image_ref, image.config.digest);
    assert!(
        d.log().contains("blob download interrupted")
            || d.log().contains("transient registry error")
    );
    assert_eq!(list(&d).await.len(), 1);
    assert_eq!(
        std::fs::read_dir(d.root.join("images/oci/ingest"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn daemon_killed_mid_pull_restarts_with_a_consistent_store() {
    let registry = Registry::start().await.unwrap();
    let image = big_image(96, 3);
    image.push(&registry, "crash:1").await.unwrap();
    let mut d = daemon("").await;
    let reference = registry.reference("crash:1");
    let mut c = d.client().await.unwrap();
    let r2 = reference.clone();
    let pull = tokio::spawn(async move { c.image.pull_image(pull_req(&r2, None)).await });
    wait_for(|| ingest_has_partial(&d), "a partial blob").await;
    d.kill().unwrap();
    assert!(pull.await.unwrap().is_err());

    d.start().await.unwrap();
    assert!(list(&d).await.is_empty());
    assert_eq!(
        std::fs::read_dir(d.root.join("images/oci/ingest"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        blob_count(&d),
        0,
        "blobs of the interrupted pull were not collected at start"
    );
    let mut c = d.client().await.unwrap();
    c.image
        .pull_image(pull_req(&reference, None))
        .await
        .unwrap();
    assert_eq!(list(&d).await.len(), 1);
}

#[tokio::test]
async fn layers_are_unpacked_once_and_artifacts_materialised() {
    let registry = Registry::start().await.unwrap();
    let image = ImageBuilder::busybox()
        .unwrap()
        .layer(
            LayerBuilder::new()
                .dir("etc", 0o755)
                .file("etc/motd", "hello\n", 0o644)
                .whiteout("etc/group"),
        )
        .build()
        .unwrap();
    image.push(&registry, "layered:1").await.unwrap();
    let artifact = ArtifactBuilder::new("application/vnd.crius.seed.v1")
        .tar_layer(
            &LayerBuilder::new()
                .dir("dir", 0o755)
                .file("dir/file", "1", 0o644)
                .file("file", "2", 0o644),
        )
        .unwrap()
        .file("notes.txt", "text/plain", "three")
        .build()
        .unwrap();
    artifact.push(&registry, "seed:v1").await.unwrap();
    let d = daemon("").await;
    let mut c = d.client().await.unwrap();
    c.image
        .pull_image(pull_req(&registry.reference("layered:1"), None))
        .await
        .unwrap();
    c.image
        .pull_image(pull_req(&registry.reference("seed:v1"), None))
        .await
        .unwrap();

    let layers = d.root.join("images/layers");
    let mut dirs: Vec<_> = std::fs::read_dir(&layers)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 2, "one directory per diff ID");
    let top = dirs
        .iter()
        .find(|p| p.join("etc/motd").exists())
        .expect("top layer");
    use std::os::unix::fs::FileTypeExt;
    let wh = std::fs::symlink_metadata(top.join("etc/group")).unwrap();
    assert!(
        wh.file_type().is_char_device(),
        "whiteout is a 0/0 char device"
    );
    let base = dirs
        .iter()
        .find(|p| p.join("bin/busybox").exists())
        .expect("busybox layer");
    assert!(std::fs::symlink_metadata(base.join("bin/sh"))
        .unwrap()
        .file_type()
        .is_symlink());

    let art = d
        .root
        .join("images/artifacts")
        .join(artifact.digest.trim_start_matches("sha256:"));
    assert_eq!(std::fs::read_to_string(art.join("dir/file")).unwrap(), "1");
    assert_eq!(std::fs::read_to_string(art.join("file")).unwrap(), "2");
    assert_eq!(
        std::fs::read_to_string(art.join("notes.txt")).unwrap(),
        "three"
    );

    // Removal collects the unpacked content too.
    c.image
        .remove_image(RemoveImageRequest {
            image: spec(&registry.reference("seed:v1")),
        })
        .await
        .unwrap();
    assert!(!art.exists());
    c.image
        .remove_image(RemoveImageRequest {
            image: spec(&registry.reference("layered:1")),
        })
        .await
        .unwrap();
    assert_eq!(std::fs::read_dir(&layers).unwrap().count(), 0);
}

#[tokio::test]
async fn hostile_layers_are_refused_and_nothing_is_stored() {
    use tar::EntryType;
    let registry = Registry::start().await.unwrap();
    let outside = tempfile::tempdir().unwrap();
    let outside_dir = outside.path().display().to_string();
    let cases: Vec<(&str, LayerBuilder, &str)> = vec![
        (
            "dotdot",
            LayerBuilder::new().raw("../../escape", EntryType::Regular, "", "x"),
            "escapes",
        ),
        (
            "absolute",
            LayerBuilder::new().raw(&format!("{outside_dir}/abs"), EntryType::Regular, "", "x"),
            "absolute",
        ),
        (
            "through-symlink",
            LayerBuilder::new()
                .raw("link", EntryType::Symlink, &outside_dir, "")
                .raw("link/pwned", EntryType::Regular, "", "x"),
            "symlink",
        ),
        (
            "hardlink-out",
            LayerBuilder::new().raw("h", EntryType::Link, "../../../etc/passwd", ""),
            "..",
        ),
    ];
    let d = daemon("").await;
    let mut c = d.client().await.unwrap();
    for (name, layer, want) in cases {
        let image = ImageBuilder::busybox()
            .unwrap()
            .layer(layer)
            .build()
            .unwrap();
        image
            .push(&registry, &format!("hostile-{name}:1"))
            .await
            .unwrap();
        let e = c
            .image
            .pull_image(pull_req(
                &registry.reference(&format!("hostile-{name}:1")),
                None,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{name}: {e:?}");
        assert!(e.message().contains(want), "{name}: {}", e.message());
        assert!(list(&d).await.is_empty(), "{name}: image visible");
    }
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "something was written outside"
    );
    // Only the busybox layer (shared, fine) may be unpacked; nothing partial.
    for e in std::fs::read_dir(d.root.join("images/layers")).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.starts_with('.'), "partial unpack {n} left behind");
    }
    assert_eq!(blob_count(&d), 0, "blobs of refused images left behind");
}

#[tokio::test]
async fn bearer_token_flow() {
    let registry = Registry::start_with_token("tokenuser", "t0ken-pass")
        .await
        .unwrap();
    let image = busybox();
    // The harness itself pushes through the token flow.
    image.push(&registry, "tokened:1").await.unwrap();
    let tokens = registry.token_server().unwrap();
    assert!(tokens.issued() > 0, "push did not use the token server");
    let d = daemon("").await;
    let mut c = d.client().await.unwrap();
    let reference = registry.reference("tokened:1");

    let e = c
        .image
        .pull_image(pull_req(&reference, basic("tokenuser", "nope")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(tokens.refused() > 0);

    let before = tokens.issued();
    let r = c
        .image
        .pull_image(pull_req(&reference, basic("tokenuser", "t0ken-pass")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.image_ref, image.config.digest);
    assert!(tokens.issued() > before, "pull did not fetch a token");
    assert!(!d.log().contains("t0ken-pass"));
}

#[tokio::test]
async fn image_index_resolves_to_this_platform() {
    use crius_test_support::image::{host_arch, push_index};
    let registry = Registry::start().await.unwrap();
    let native = ImageBuilder::busybox()
        .unwrap()
        .env("P", "native")
        .build()
        .unwrap();
    let foreign = ImageBuilder::busybox()
        .unwrap()
        .env("P", "s390x")
        .architecture("s390x")
        .build()
        .unwrap();
    let index = push_index(
        &registry,
        "multi:1",
        &[
            (&foreign, ("linux", "s390x", None)),
            (&native, ("linux", host_arch(), None)),
        ],
    )
    .await
    .unwrap();
    push_index(
        &registry,
        "foreign:1",
        &[(&foreign, ("linux", "s390x", None))],
    )
    .await
    .unwrap();
    let d = daemon("").await;
    let mut c = d.client().await.unwrap();

    let r = c
        .image
        .pull_image(pull_req(&registry.reference("multi:1"), None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.image_ref, native.config.digest,
        "picked the host's platform"
    );
    let s = status(&d, &registry.reference("multi:1"), false)
        .await
        .image
        .unwrap();
    assert_eq!(
        s.repo_digests,
        vec![format!("{}/multi@{index}", registry.host())],
        "repo digest is the index's"
    );
    // Pullable by the index digest too.
    let by_digest = format!("{}/multi@{index}", registry.host());
    assert_eq!(
        status(&d, &by_digest, false).await.image.unwrap().id,
        native.config.digest
    );

    let e = c
        .image
        .pull_image(pull_req(&registry.reference("foreign:1"), None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(
        e.message().contains("linux/s390x") && e.message().contains(host_arch()),
        "{}",
        e.message()
    );
}

/// A pull secret for a registry is not sent to its mirror (which gets
/// anonymous access, fails with 401, and the origin serves the pull), unless
/// the operator sets `mirror_pull_secrets`.
#[tokio::test]
async fn pull_secrets_stay_with_their_registry_unless_mirrors_are_trusted() {
    let origin = Registry::start_with_auth("kube", "s3cret").await.unwrap();
    let mirror = Registry::start_with_auth("kube", "s3cret").await.unwrap();
    let image = busybox();
    image
        .push_as(&origin, "secret/app:1", origin.credentials())
        .await
        .unwrap();
    image
        .push_as(&mirror, "secret/app:1", mirror.credentials())
        .await
        .unwrap();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nprefix = \"{o}\"\nlocation = \"{o}\"\n\n[[registry.mirror]]\nlocation = \"{m}\"\n",
            o = origin.host(),
            m = mirror.host()
        ),
    )
    .unwrap();
    for (trusted, via_mirror) in [(false, false), (true, true)] {
        let d = Daemon::builder(BIN)
            .config_toml(format!(
                "registries_conf = \"{}\"\nauth_file = \"{}/none.json\"\nmirror_pull_secrets = {trusted}\npull_retry_budget_seconds = 1\n",
                conf.display(),
                conf_dir.path().display()
            ))
            .start()
            .await
            .unwrap();
        let mut c = d.client().await.unwrap();
        c.image
            .pull_image(pull_req(
                &origin.reference("secret/app:1"),
                basic("kube", "s3cret"),
            ))
            .await
            .unwrap();
        assert_eq!(
            !d.log().contains("mirror failed"),
            via_mirror,
            "mirror_pull_secrets = {trusted}: {}",
            d.log()
        );
        assert!(!d.log().contains("s3cret"), "a secret in the log");
    }
}
