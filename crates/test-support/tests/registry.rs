//! The harness itself: a real registry with htpasswd auth accepts an image
//! and an artifact pushed with the right password, refuses a wrong one, and
//! serves back exactly what was pushed.
#![allow(clippy::unwrap_used)]

use crius_test_support::image::{fetch_manifest, MEDIA_EMPTY};
use crius_test_support::{ArtifactBuilder, Credentials, ImageBuilder, LayerBuilder, Registry};
use serde_json::Value;

#[tokio::test]
async fn push_image_and_artifact_with_auth() {
    let registry = Registry::start_with_auth("tester", "s3cret").await.unwrap();
    assert_eq!(
        registry.v2_status().unwrap(),
        401,
        "anonymous /v2/ must be refused"
    );

    let image = ImageBuilder::busybox()
        .unwrap()
        .entrypoint(&["/bin/sh", "-c"])
        .cmd(&["echo hello"])
        .env("GREETING", "hi")
        .user("crius-user")
        .working_dir("/home/crius-user")
        .exposed_port("8080/tcp")
        .stop_signal("SIGUSR1")
        .label("app", "test")
        .build()
        .unwrap();
    let pushed = image.push(&registry, "busybox:1").await.unwrap();
    assert_eq!(
        pushed,
        format!("{}/busybox@{}", registry.host(), image.digest)
    );

    let creds = registry.credentials().cloned();
    let (bytes, digest) = fetch_manifest(&registry, "busybox:1", creds.as_ref())
        .await
        .unwrap();
    assert_eq!(digest, image.digest);
    assert_eq!(bytes, image.bytes);
    let config: Value = serde_json::from_slice(&image.config.data).unwrap();
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["User"], "crius-user");
    assert_eq!(c["StopSignal"], "SIGUSR1");
    assert!(c["ExposedPorts"]["8080/tcp"].is_object());
    assert!(c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "GREETING=hi"));
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    // The registry stored the layer byte for byte.
    let stored = std::fs::read(registry.blob_path(&image.layers[0].digest)).unwrap();
    assert_eq!(stored, image.layers[0].data);

    let artifact = ArtifactBuilder::new("application/vnd.crius.test.v1")
        .file("model.bin", "application/octet-stream", vec![7u8; 4096])
        .file("config.yaml", "application/yaml", "a: 1\n")
        .tar_layer(
            &LayerBuilder::new()
                .dir("dir", 0o755)
                .file("dir/file", "1", 0o644)
                .file("file", "2", 0o644),
        )
        .unwrap()
        .build()
        .unwrap();
    artifact.push(&registry, "artifact:v1").await.unwrap();
    let (bytes, _) = fetch_manifest(&registry, "artifact:v1", creds.as_ref())
        .await
        .unwrap();
    let m: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(m["artifactType"], "application/vnd.crius.test.v1");
    assert_eq!(m["config"]["mediaType"], MEDIA_EMPTY);
    assert_eq!(
        m["layers"][0]["annotations"]["org.opencontainers.image.title"],
        "model.bin"
    );
    assert_eq!(m["layers"][1]["mediaType"], "application/yaml");
    assert_eq!(m["layers"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn wrong_password_and_anonymous_push_are_refused() {
    let registry = Registry::start_with_auth("tester", "s3cret").await.unwrap();
    let image = ImageBuilder::scratch()
        .layer(LayerBuilder::new().file("hello", "world", 0o644))
        .build()
        .unwrap();
    let wrong = Credentials {
        username: "tester".into(),
        password: "wrong".into(),
    };
    let err = image
        .push_as(&registry, "denied:1", Some(&wrong))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("code: 401"), "{err:#}");
    let err = image
        .push_as(&registry, "denied:1", None)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("code: 401"), "{err:#}");
    // Nothing was stored under that name.
    assert!(
        fetch_manifest(&registry, "denied:1", registry.credentials())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn registry_restarts_with_its_data() {
    let mut registry = Registry::start().await.unwrap();
    let image = ImageBuilder::scratch()
        .layer(LayerBuilder::new().file("a", "b", 0o644))
        .build()
        .unwrap();
    image.push(&registry, "keep:1").await.unwrap();
    registry.kill().unwrap();
    assert!(
        registry.v2_status().is_err(),
        "killed registry still answers"
    );
    registry.restart().await.unwrap();
    let (_, digest) = fetch_manifest(&registry, "keep:1", None).await.unwrap();
    assert_eq!(digest, image.digest);
}

#[test]
fn busybox_rootfs_has_applets_and_users() {
    let layer = crius_test_support::image::busybox_rootfs().unwrap();
    let tar = layer.tar().unwrap();
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut names = Vec::new();
    let mut passwd = String::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        if path == "etc/passwd" {
            std::io::Read::read_to_string(&mut e, &mut passwd).unwrap();
        }
        names.push(path);
    }
    for want in [
        "bin/busybox",
        "bin/sh",
        "bin/ls",
        "bin/cat",
        "etc/group",
        "tmp/",
    ] {
        assert!(names.iter().any(|n| n == want), "rootfs lacks {want}");
    }
    assert!(passwd.contains("crius-user:x:1000:1000"));
}
