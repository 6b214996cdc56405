//! `make bench` (image store): pulling through the real daemon from a
//! loopback docker-registry, next to the containers/image reference
//! implementation doing less work.
//!
//! 1. An ~1 GiB, 8-layer gzip image: crius PullImage (download, verify,
//!    store durably, unpack every layer) vs `skopeo copy docker://… dir:…`
//!    (download and verify only). Target: crius faster than skopeo.
//! 2. 20 concurrent PullImage calls of one reference: bytes the registry
//!    served vs the image's size (target: equal — each blob fetched once).
//!
//! Each measurement runs 3 times on a fresh store; medians are reported.
//! Run as root: `cargo bench -p crius --bench pull`.
#![allow(clippy::unwrap_used)]

use crius_test_support::cri::{ImageSpec, PullImageRequest, RemoveImageRequest};
use crius_test_support::image::noise;
use crius_test_support::image::Compression;
use crius_test_support::{Daemon, ImageBuilder, LayerBuilder, Manifest, Registry};
use std::process::Command;
use std::time::{Duration, Instant};

const LAYERS: usize = 8;
const LAYER_MIB: usize = 128;
const RUNS: usize = 3;

/// Each layer: 64 files of 2 MiB, 7/8 noise and 1/8 text, so gzip has
/// something to do, like a real image, and the image is ~1 GiB compressed.
fn layer(i: usize) -> LayerBuilder {
    let mut l = LayerBuilder::new()
        .compression(Compression::Gzip)
        .dir(&format!("data{i}"), 0o755);
    let per_file = 2 << 20;
    for f in 0..(LAYER_MIB << 20) / per_file {
        let mut content = noise(per_file / 8 * 7, (i * 1000 + f) as u64 + 7);
        content.extend(
            b"the quick brown fox jumps over the lazy dog\n"
                .iter()
                .cycle()
                .take(per_file / 8),
        );
        l = l.file(&format!("data{i}/f{f}"), content, 0o644);
    }
    l
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn pull(image: &str) -> PullImageRequest {
    PullImageRequest {
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mib_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let registry = Registry::start().await.expect("docker-registry");
    eprintln!("building {LAYERS} x {LAYER_MIB} MiB layers...");
    let mut b = ImageBuilder::busybox().unwrap();
    for i in 0..LAYERS {
        b = b.layer(layer(i));
    }
    let image: Manifest = b.build().unwrap();
    let size = image.content_size();
    image.push(&registry, "big:1").await.unwrap();
    let reference = registry.reference("big:1");

    // CRIUS_BENCH_DOWNLOADS overrides max_concurrent_downloads to compare settings.
    let config = std::env::var("CRIUS_BENCH_DOWNLOADS")
        .map(|n| format!("max_concurrent_downloads = {n}\n"))
        .unwrap_or_default();
    let d = Daemon::builder(env!("CARGO_BIN_EXE_crius"))
        .config_toml(config)
        .arg("--log-level")
        .arg("warn")
        .start()
        .await
        .unwrap();
    let mut c = d.client().await.unwrap();

    let mut crius = Vec::new();
    let mut skopeo = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        c.image.pull_image(pull(&reference)).await.unwrap();
        crius.push(t.elapsed());
        c.image
            .remove_image(RemoveImageRequest {
                image: Some(ImageSpec {
                    image: reference.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let st = Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("dir:{}", dir.path().join("img").display()))
            .status()
            .expect("skopeo (apt-get install skopeo)");
        assert!(st.success());
        skopeo.push(t.elapsed());
    }
    let (cm, sm) = (median(crius), median(skopeo));

    // 20 concurrent pulls of one reference on a fresh store (the loop above
    // removed the image): bytes served per layer, from the registry's log.
    let before: Vec<usize> = image
        .layers
        .iter()
        .map(|l| registry.blob_gets(&l.digest))
        .collect();
    let mut handles = Vec::new();
    for _ in 0..20 {
        let mut c = d.client().await.unwrap();
        let r = reference.clone();
        handles.push(tokio::spawn(async move {
            c.image.pull_image(pull(&r)).await.map(|_| ())
        }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let concurrent_bytes: usize = image
        .layers
        .iter()
        .zip(&before)
        .map(|(l, b)| (registry.blob_gets(&l.digest) - b) * l.data.len())
        .sum();
    let one_pull: usize = image.layers.iter().map(|l| l.data.len()).sum();

    println!(
        "crius image-store benchmark: {} layers, {:.0} MiB compressed, median of {RUNS}",
        image.layers.len(),
        size as f64 / 1048576.0
    );
    println!("{:<44} {:>10} {:>10}", "", "seconds", "MiB/s");
    println!(
        "{:<44} {:>10.2} {:>10.0}",
        "crius PullImage (fetch+verify+store+unpack)",
        cm.as_secs_f64(),
        mib_s(size, cm)
    );
    println!(
        "{:<44} {:>10.2} {:>10.0}",
        "skopeo copy docker:// dir: (fetch+verify)",
        sm.as_secs_f64(),
        mib_s(size, sm)
    );
    println!(
        "crius / skopeo: {:.2}x (target < 1.00x)",
        cm.as_secs_f64() / sm.as_secs_f64()
    );
    println!(
        "20 concurrent pulls: registry served {concurrent_bytes} layer bytes for one image of {one_pull} (ratio {:.2}, target 1.00)",
        concurrent_bytes as f64 / one_pull as f64
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "image-pull", "layers": image.layers.len(), "bytes": size,
            "crius_s": cm.as_secs_f64(), "skopeo_s": sm.as_secs_f64(),
            "ratio": cm.as_secs_f64() / sm.as_secs_f64(),
            "concurrent_pulls": 20, "concurrent_layer_bytes": concurrent_bytes, "one_pull_layer_bytes": one_pull,
        })
    );
}
