//! Image volumes (`Mount.image`) through the socket with runc: the seed's
//! artifact example, an image's layers with a sub path, sharing, read-only
//! and noexec from inside, hostile sub paths, RemoveImage while in use,
//! survival of a daemon restart, unmounting after the last container.

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
    pull(&mut c, &seed).await;

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
    assert!(img.image_ref.contains("@sha256:"), "{img:?}");
    assert!(m.host_path.is_empty(), "reported as kubelet sent it");

    // The busybox image's layers with a sub path: a directory of binaries
    // that cannot be executed (noexec).
    let mut cc = container_config("b", &env.image, &["sleep", "300"]);
    cc.mounts.push(image_mount("/tools", &env.image, "bin"));
    cc.mounts.push(image_mount("/shared", &seed, "dir/file"));
    let b = create(&mut c, &pod, &pc, cc).await.unwrap();
    start(&mut c, &b).await;
    let out = exec(&mut c, &b, &["ls", "/tools/busybox"]).await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    let out = exec(&mut c, &b, &["/tools/busybox", "true"]).await;
    assert_ne!(out.exit_code, 0, "noexec: {out:?}");
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
            image_mount("/x", &seed, "../../../dir/../missing"),
            Code::InvalidArgument,
            "missing",
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
