//! Image volumes (`Mount.image`) through the socket with runc: the seed's
//! artifact example, an image's layers with a sub path, sharing, read-only
//! and executable from inside (noexec only when configured), hostile sub
//! paths, RemoveImage while in use, survival of a daemon restart,
//! unmounting after the last container; artifacts shaped as `oras push`,
//! Helm and ModelPack tools push them.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use crius_test_support::cri::*;
use crius_test_support::{ArtifactBuilder, ImageBuilder, LayerBuilder};
use tonic::Code;

fn image_mount(path: &str, image: &str, sub: &str) -> Mount {
    Mount {
        container_path: path.into(),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub.into(),
        readonly: true,
        ..Default::default()
    }
}

fn views(env: &Env) -> Vec<String> {
    mounts_under(&env.daemon.runroot.join("image-volumes"))
}

#[tokio::test]
async fn image_volumes_end_to_end_runc() {
    image_volumes_end_to_end("runc").await;
}

#[tokio::test]
async fn image_volumes_end_to_end_crun() {
    image_volumes_end_to_end("crun").await;
}

async fn image_volumes_end_to_end(handler: &str) {
    let mut env = env("").await;
    let mut c = env.client().await;
    // The seed's artifact: dir/file = 1, file = 2.
    let artifact = ArtifactBuilder::new("application/vnd.crius.test")
        .file("dir/file", "text/plain", "1")
        .file("file", "text/plain", "2")
        .build()
        .unwrap();
    artifact.push(&env.registry, "seed:v1").await.unwrap();
    let seed = env.registry.reference("seed:v1");
    let seed_id = pull_ref(&mut c, &seed).await;

    let pc = pod_config("vol", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), handler).await;
    let mut cc = container_config("a", &env.image, &["sleep", "300"]);
    cc.mounts.push(image_mount("/volume", &seed, ""));
    let a = create(&mut c, &pod, &pc, cc).await.unwrap();
    start(&mut c, &a).await;
    let out = exec(&mut c, &a, &["ls", "/volume"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "dir\nfile\n");
    let out = exec(&mut c, &a, &["cat", "/volume/dir/file"]).await;
    assert_eq!(out.stdout, b"1");
    let out = exec(&mut c, &a, &["touch", "/volume/x"]).await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only"),
        "{out:?}"
    );
    let s = status(&mut c, &a).await;
    let m = s
        .mounts
        .iter()
        .find(|m| m.container_path == "/volume")
        .unwrap();
    let img = m.image.as_ref().unwrap();
    assert_eq!(img.image, seed);
    assert_eq!(img.image_ref, seed_id, "what PullImage returned");
    assert!(m.host_path.is_empty(), "reported as kubelet sent it");

    // The busybox image's layers with a sub path: a directory of binaries
    // that run (KEP-4639 dropped noexec).
    let mut cc = container_config("b", &env.image, &["sleep", "300"]);
    cc.mounts.push(image_mount("/tools", &env.image, "bin"));
    cc.mounts.push(image_mount("/shared", &seed, "dir/file"));
    let b = create(&mut c, &pod, &pc, cc).await.unwrap();
    start(&mut c, &b).await;
    let out = exec(&mut c, &b, &["ls", "/tools/busybox"]).await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    let out = exec(&mut c, &b, &["/tools/busybox", "echo", "ran"]).await;
    assert_eq!(out.stdout, b"ran\n", "not noexec: {out:?}");
    let out = exec(&mut c, &b, &["cat", "/shared"]).await;
    assert_eq!(out.stdout, b"1", "a file sub path mounts a file");
    // A regular image by id, no sub path: its whole merged tree.
    let id = c
        .image
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: env.image.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap()
        .id;
    let mut cc = container_config("byid", &env.image, &["sleep", "300"]);
    cc.mounts.push(image_mount("/img", &id, ""));
    let byid = create(&mut c, &pod, &pc, cc).await.unwrap();
    start(&mut c, &byid).await;
    let out = exec(
        &mut c,
        &byid,
        &["ls", "/img/bin/busybox", "/img/etc/passwd"],
    )
    .await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    c.runtime
        .remove_container(RemoveContainerRequest { container_id: byid })
        .await
        .unwrap();
    // One view per image, however many containers use it.
    assert_eq!(views(&env).len(), 2, "{:?}", views(&env));

    // Symlinks in the image resolve inside it: an absolute one to /etc
    // reaches the image's /etc/passwd, never the host's.
    let hostile = ImageBuilder::busybox()
        .unwrap()
        .layer(
            LayerBuilder::new()
                .symlink("escape", "/etc")
                .symlink("up", "../../../../../../../etc"),
        )
        .build()
        .unwrap();
    hostile.push(&env.registry, "hostile:v1").await.unwrap();
    let hostile_ref = env.registry.reference("hostile:v1");
    pull(&mut c, &hostile_ref).await;
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    for sub in ["escape/passwd", "up/passwd"] {
        let mut cc = container_config(&format!("h-{}", &sub[..2]), &env.image, &["sleep", "300"]);
        cc.mounts.push(image_mount("/p", &hostile_ref, sub));
        let h = create(&mut c, &pod, &pc, cc).await.unwrap();
        start(&mut c, &h).await;
        let out = exec(&mut c, &h, &["cat", "/p"]).await;
        let got = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(got.contains("crius-user"), "the image's passwd: {got}");
        assert_ne!(got, host_passwd);
        c.runtime
            .remove_container(RemoveContainerRequest { container_id: h })
            .await
            .unwrap();
    }
    c.image
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: hostile_ref,
                ..Default::default()
            }),
        })
        .await
        .unwrap();

    // Bad input: nothing created.
    for (m, code, needle) in [
        (
            image_mount("/x", &seed, "missing"),
            Code::InvalidArgument,
            "missing",
        ),
        // `..` and absolute sub paths are refused, never clamped to the root.
        (
            image_mount("/x", &seed, "../../.."),
            Code::InvalidArgument,
            "\"..\"",
        ),
        (
            image_mount("/x", &seed, "dir/../../etc"),
            Code::InvalidArgument,
            "\"..\"",
        ),
        (
            image_mount("/x", &seed, "/dir"),
            Code::InvalidArgument,
            "relative",
        ),
        // Image volumes are read-only: a writable one is the pod author's
        // mistake, refused rather than downgraded.
        (
            Mount {
                readonly: false,
                ..image_mount("/x", &seed, "")
            },
            Code::InvalidArgument,
            "readonly",
        ),
        (
            image_mount("/x", "no-such:img", ""),
            Code::NotFound,
            "no-such",
        ),
        (
            Mount {
                host_path: "/tmp".into(),
                ..image_mount("/x", &seed, "")
            },
            Code::InvalidArgument,
            "mutually exclusive",
        ),
    ] {
        let mut cc = container_config("bad", &env.image, &["true"]);
        cc.mounts.push(m);
        let e = create(&mut c, &pod, &pc, cc).await.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(
            e.message().contains(needle) && e.message().contains("\"/x\""),
            "{}",
            e.message()
        );
    }
    assert_eq!(views(&env).len(), 2);

    // RemoveImage refuses an artifact in use, naming a container.
    let e = c
        .image
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: seed.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains(&a) || e.message().contains(&b),
        "{}",
        e.message()
    );

    // A daemon restart keeps the views and their users.
    env.daemon.kill().unwrap();
    env.daemon.start().await.unwrap();
    c = env.client().await;
    let out = exec(&mut c, &a, &["cat", "/volume/file"]).await;
    assert_eq!(out.stdout, b"2");
    c.runtime
        .remove_container(RemoveContainerRequest {
            container_id: a.clone(),
        })
        .await
        .unwrap();
    assert_eq!(views(&env).len(), 2, "b still uses both");
    c.runtime
        .remove_container(RemoveContainerRequest {
            container_id: b.clone(),
        })
        .await
        .unwrap();
    assert!(views(&env).is_empty(), "{:?}", views(&env));
    c.image
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: seed.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    remove_pod(&mut c, &pod).await;
    assert!(
        mounts_under(env.daemon.dir()).is_empty(),
        "{:?}",
        mounts_under(env.daemon.dir())
    );
}

/// Mount ids of the image volume views (mountinfo's first field).
fn view_mount_ids(env: &Env) -> Vec<String> {
    views(env)
        .iter()
        .filter_map(|l| l.split(' ').next().map(str::to_string))
        .collect()
}

/// Containers created at once share one view of a single-layer image (a
/// bind mount from the same file system, which a device-number check took
/// for unmounted): every create succeeds and the view is never remounted
/// under the others.
#[tokio::test]
async fn concurrent_creates_share_one_view() {
    let env = env("").await;
    let mut c = env.client().await;
    let pc = pod_config("vol-par", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let mut first = container_config("first", &env.image, &["sleep", "300"]);
    first.mounts.push(image_mount("/vol", &env.image, ""));
    create(&mut c, &pod, &pc, first).await.unwrap();
    let before = view_mount_ids(&env);
    assert_eq!(before.len(), 1, "{:?}", views(&env));
    let creates = (0..6).map(|i| {
        let mut c = c.clone();
        let (pod, pc) = (pod.clone(), pc.clone());
        let mut cc = container_config(&format!("par-{i}"), &env.image, &["sleep", "300"]);
        cc.mounts.push(image_mount("/vol", &env.image, ""));
        async move { create(&mut c, &pod, &pc, cc).await }
    });
    for r in futures_util::future::join_all(creates).await {
        r.unwrap();
    }
    assert_eq!(view_mount_ids(&env), before, "the view was remounted");
    remove_pod(&mut c, &pod).await;
    assert!(views(&env).is_empty(), "{:?}", views(&env));
}

/// The operator's `image_volume_noexec` brings noexec back.
#[tokio::test]
async fn image_volume_noexec_is_an_operator_option() {
    let env = env("image_volume_noexec = true").await;
    let mut c = env.client().await;
    let pc = pod_config("vol-noexec", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let mut cc = container_config("a", &env.image, &["sleep", "300"]);
    cc.mounts.push(image_mount("/tools", &env.image, "bin"));
    let a = create(&mut c, &pod, &pc, cc).await.unwrap();
    start(&mut c, &a).await;
    let out = exec(&mut c, &a, &["ls", "/tools/busybox"]).await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    let out = exec(&mut c, &a, &["/tools/busybox", "true"]).await;
    assert_ne!(out.exit_code, 0, "noexec: {out:?}");
    remove_pod(&mut c, &pod).await;
}

const ORAS_DEFAULT_TYPE: &str = "application/vnd.unknown.artifact.v1";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const TITLE: &str = "org.opencontainers.image.title";

/// Artifacts exactly as the tools that make them push them, each mounted
/// and read from inside a container.
#[tokio::test]
async fn artifacts_as_tools_push_them() {
    use crius_test_support::image::Compression;
    use crius_test_support::Blob;
    let env = env("").await;
    let mut c = env.client().await;
    let mut mounts = Vec::new();
    let mut ids = Vec::new();

    // `oras push r:t dir/file file` (the seed's quay.io/crio/artifact:v1):
    // the default artifactType and layer media type, the bytes are the
    // files themselves.
    let a = ArtifactBuilder::new(ORAS_DEFAULT_TYPE)
        .file("dir/file", OCI_LAYER_TAR, "1")
        .file("file", OCI_LAYER_TAR, "2")
        .build()
        .unwrap();
    // `oras push r:t dir/`: a gzipped tar of the directory, entries named
    // `dir/...`, marked for unpacking.
    let (tgz, _) = LayerBuilder::new()
        .compression(Compression::Gzip)
        .dir("dir", 0o755)
        .file("dir/a", "A", 0o644)
        .dir("dir/sub", 0o755)
        .file("dir/sub/b", "B", 0o644)
        .build()
        .unwrap();
    let b = ArtifactBuilder::new(ORAS_DEFAULT_TYPE)
        .layer(
            tgz.annotated(TITLE, "dir")
                .annotated("io.deis.oras.content.unpack", "true"),
        )
        .build()
        .unwrap();
    // `oras push --artifact-type application/vnd.example.config r:t cfg.yaml:application/yaml`.
    let cc = ArtifactBuilder::new("application/vnd.example.config")
        .file("cfg.yaml", "application/yaml", "key: value\n")
        .build()
        .unwrap();
    // OCI 1.0 style: no artifactType, the type in the config's media type.
    let d = ArtifactBuilder::new("unused")
        .without_artifact_type()
        .config(
            "application/vnd.example.thing.config.v1+json",
            "{\"kind\":\"thing\"}",
        )
        .file("thing.txt", OCI_LAYER_TAR, "old style")
        .build()
        .unwrap();
    // A Helm chart as `helm push` makes it: the .tgz layer stays a file
    // (untitled: named after its digest).
    let (chart, _) = LayerBuilder::new()
        .compression(Compression::Gzip)
        .file(
            "mychart/Chart.yaml",
            "name: mychart\nversion: 0.1.0\n",
            0o644,
        )
        .build()
        .unwrap();
    let chart = Blob::new(
        "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
        chart.data,
    );
    let chart_name = chart.digest.trim_start_matches("sha256:").to_string();
    let chart_bytes = chart.data.clone();
    let e = ArtifactBuilder::new("unused")
        .without_artifact_type()
        .config(
            "application/vnd.cncf.helm.config.v1+json",
            "{\"name\":\"mychart\",\"version\":\"0.1.0\"}",
        )
        .layer(chart)
        .build()
        .unwrap();
    // A CNCF ModelPack model: tar layers carrying their paths, a raw layer
    // placed by org.cncf.model.filepath.
    let (weights, _) = LayerBuilder::new()
        .dir("weights", 0o755)
        .file("weights/model.safetensors", "W1", 0o644)
        .build()
        .unwrap();
    let (weights2, _) = LayerBuilder::new()
        .dir("weights", 0o755)
        .file("weights/extra.safetensors", "W2", 0o644)
        .build()
        .unwrap();
    let f = ArtifactBuilder::new("application/vnd.cncf.model.manifest.v1+json")
        .config(
            "application/vnd.cncf.model.config.v1+json",
            "{\"descriptor\":{\"name\":\"m\"}}",
        )
        .layer(
            Blob::new("application/vnd.cncf.model.weight.v1.tar", weights.data)
                .annotated("org.cncf.model.filepath", "weights/model.safetensors"),
        )
        .layer(
            Blob::new("application/vnd.cncf.model.weight.v1.tar", weights2.data)
                .annotated("org.cncf.model.filepath", "weights/extra.safetensors"),
        )
        .layer(
            Blob::new(
                "application/vnd.cncf.model.doc.v1.raw",
                b"# model\n".to_vec(),
            )
            .annotated("org.cncf.model.filepath", "docs/README.md"),
        )
        .build()
        .unwrap();

    for (i, (m, name)) in [
        (a, "oras-files"),
        (b, "oras-dir"),
        (cc, "oras-type"),
        (d, "oci10"),
        (e, "helm"),
        (f, "model"),
    ]
    .into_iter()
    .enumerate()
    {
        m.push(&env.registry, &format!("{name}:v1")).await.unwrap();
        let r = env.registry.reference(&format!("{name}:v1"));
        ids.push(pull_ref(&mut c, &r).await);
        mounts.push(image_mount(&format!("/v{i}"), &r, ""));
    }
    // Artifacts sharing ORAS's empty config are still distinct images.
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");

    let pc = pod_config("arts", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "runc").await;
    let mut cfg = container_config("reader", &env.image, &["sleep", "300"]);
    cfg.mounts = mounts;
    let id = create(&mut c, &pod, &pc, cfg).await.unwrap();
    start(&mut c, &id).await;
    let out = exec(
        &mut c,
        &id,
        &["sh", "-c", "cd / && find v0 v1 v2 v3 v4 v5 | sort"],
    )
    .await;
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    let want = format!(
        "v0\nv0/dir\nv0/dir/file\nv0/file\n\
         v1\nv1/dir\nv1/dir/a\nv1/dir/sub\nv1/dir/sub/b\n\
         v2\nv2/cfg.yaml\n\
         v3\nv3/thing.txt\n\
         v4\nv4/{chart_name}\n\
         v5\nv5/docs\nv5/docs/README.md\nv5/weights\nv5/weights/extra.safetensors\nv5/weights/model.safetensors\n"
    );
    assert_eq!(listing, want);
    for (path, content) in [
        ("/v0/dir/file", "1"),
        ("/v0/file", "2"),
        ("/v1/dir/sub/b", "B"),
        ("/v2/cfg.yaml", "key: value\n"),
        ("/v3/thing.txt", "old style"),
        ("/v5/weights/model.safetensors", "W1"),
        ("/v5/docs/README.md", "# model\n"),
    ] {
        let out = exec(&mut c, &id, &["cat", path]).await;
        assert_eq!(String::from_utf8_lossy(&out.stdout), content, "{path}");
    }
    let out = exec(&mut c, &id, &["cat", &format!("/v4/{chart_name}")]).await;
    assert_eq!(out.stdout, chart_bytes, "the chart's .tgz, byte for byte");
    remove_pod(&mut c, &pod).await;
}
