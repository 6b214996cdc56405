//! `make bench` (image store): unpacking one 500 MiB layer with crius's
//! confined unpacker next to GNU `tar -xf` of the same file (the baseline),
//! in the same process, on the same filesystem. Target: within 1.2x of tar.
//!
//! crius ends every unpack with syncfs (a layer must be durable before it
//! becomes visible); tar does not, so tar is also timed followed by
//! `sync -f` on its directory, the like-for-like comparison.
#![allow(clippy::unwrap_used)]

use crius_test_support::image::noise;
use sha2::{Digest, Sha256};
use std::process::Command;
use std::time::{Duration, Instant};

const FILES: usize = 2000;
const FILE_SIZE: usize = 256 * 1024; // 2000 x 256 KiB = 500 MiB
const RUNS: usize = 3;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let work = tempfile::Builder::new()
        .prefix("crius-unpack-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let tar_path = work.path().join("layer.tar");
    {
        let f = std::fs::File::create(&tar_path).unwrap();
        let mut b = tar::Builder::new(std::io::BufWriter::new(f));
        for d in 0..20 {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, format!("d{d}/"), std::io::empty())
                .unwrap();
        }
        for i in 0..FILES {
            let data = noise(FILE_SIZE, i as u64 + 1);
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            h.set_uid(1000);
            h.set_gid(1000);
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, format!("d{}/f{i}", i % 20), data.as_slice())
                .unwrap();
        }
        b.into_inner().unwrap();
    }
    let bytes = std::fs::metadata(&tar_path).unwrap().len();
    let diff_id = {
        let mut h = Sha256::new();
        std::io::copy(&mut std::fs::File::open(&tar_path).unwrap(), &mut h).unwrap();
        format!("sha256:{}", hex::encode(h.finalize()))
    };

    let (mut crius, mut tar, mut tar_sync) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        let target = work.path().join(format!("crius{run}"));
        let t = Instant::now();
        let f = std::fs::File::open(&tar_path).unwrap();
        crius_image_store::unpack::unpack_layer(
            std::io::BufReader::with_capacity(1 << 20, f),
            &diff_id,
            &target,
        )
        .unwrap();
        crius.push(t.elapsed());
        std::fs::remove_dir_all(&target).unwrap();

        for (sync, out) in [(false, &mut tar), (true, &mut tar_sync)] {
            let dir = work.path().join(format!("tar{run}{sync}"));
            std::fs::create_dir(&dir).unwrap();
            let t = Instant::now();
            let st = Command::new("tar")
                .arg("-xf")
                .arg(&tar_path)
                .arg("-C")
                .arg(&dir)
                .status()
                .unwrap();
            assert!(st.success());
            if sync {
                assert!(Command::new("sync")
                    .arg("-f")
                    .arg(&dir)
                    .status()
                    .unwrap()
                    .success());
            }
            out.push(t.elapsed());
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    let (c, t, ts) = (median(crius), median(tar), median(tar_sync));
    let mib = bytes as f64 / 1048576.0;
    println!("crius unpack benchmark: one {mib:.0} MiB layer, {FILES} files, median of {RUNS}");
    println!("{:<36} {:>9} {:>9}", "", "seconds", "MiB/s");
    for (name, d) in [
        ("crius unpack_layer (+ syncfs)", c),
        ("GNU tar -xf", t),
        ("GNU tar -xf + sync -f", ts),
    ] {
        println!(
            "{name:<36} {:>9.3} {:>9.0}",
            d.as_secs_f64(),
            mib / d.as_secs_f64()
        );
    }
    println!(
        "crius / tar: {:.2}x; crius / (tar + sync): {:.2}x (target <= 1.20x)",
        c.as_secs_f64() / t.as_secs_f64(),
        c.as_secs_f64() / ts.as_secs_f64()
    );
    println!(
        "{}",
        serde_json::json!({"bench": "unpack", "bytes": bytes, "crius_s": c.as_secs_f64(), "tar_s": t.as_secs_f64(),
            "tar_sync_s": ts.as_secs_f64(), "ratio_tar": c.as_secs_f64() / t.as_secs_f64(),
            "ratio_tar_sync": c.as_secs_f64() / ts.as_secs_f64()})
    );
}
