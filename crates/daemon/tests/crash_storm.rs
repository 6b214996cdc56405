//! The kill -9 storm: pod lifecycles (runp, create, start, ExecSync, stop,
//! rm, stopp, rmp) run in parallel while the daemon is killed at random
//! moments and restarted; then everything left is removed, and root,
//! runroot, the mount table, the runtimes' own lists, the process table and
//! the daemon's fds must be as they were before the storm. Bounded in count
//! and time; three seeds in `make test`, more behind `make soak`
//! (`CRIUS_SOAK=1`).
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use crius_test_support::cri::*;
use crius_test_support::CriClient;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A small deterministic generator (the storm is replayable by its seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Every path under `dir`, relative, except the daemon's own databases and
/// files whose names change with each start (sled's segments, the lock, the
/// socket, the log).
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, p: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let path = e.path();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            // The runtimes' state roots are made on first use and kept
            // (their contents are compared).
            let runtime_root = rel == "runtimes"
                || (rel.starts_with("runtimes/") && rel.matches('/').count() == 1);
            if rel == "state"
                || runtime_root
                || rel == "images/db"
                || rel == "crius.lock"
                || rel.ends_with(".sock")
                || rel.ends_with(".log")
            {
                if runtime_root {
                    walk(base, &path, out);
                }
                continue;
            }
            out.insert(rel);
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(base, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Processes (not the daemon) whose command line names one of `dirs`:
/// monitors, runtimes, pause processes of this daemon.
fn our_processes(dirs: &[&Path], daemon: Option<u32>) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if Some(pid as u32) == daemon {
            continue;
        }
        let cmd = crius_test_support::procs::cmdline(pid);
        if dirs.iter().any(|d| cmd.contains(&d.display().to_string())) {
            out.push((pid, cmd));
        }
    }
    out
}

/// Zombies whose parent is pid 1, named like what crius starts.
fn zombies_under_init() -> Vec<(i32, String)> {
    crius_test_support::procs::zombies_of(1, &["sleep", "runc", "crun", "crius-monitor", "sh"])
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One lifecycle; any step may fail while the daemon is down (the storm's
/// point), so errors end it early without failing the test.
async fn lifecycle(socket: PathBuf, image: String, logs: PathBuf, n: usize, handler: &str) {
    let Ok(mut c) = CriClient::connect(&socket).await else {
        return;
    };
    let pc = pod_config(&format!("storm-{n}"), &logs);
    let Ok(pod) = c
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
    else {
        return;
    };
    let Ok(id) = create(
        &mut c,
        &pod,
        &pc,
        container_config("c", &image, &["sleep", "300"]),
    )
    .await
    else {
        return;
    };
    if try_start(&mut c, &id).await.is_err() {
        return;
    }
    let _ = c
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: ["sh", "-c", "sleep 0.3; echo done"]
                .map(String::from)
                .to_vec(),
            timeout: 5,
        })
        .await;
    let _ = c
        .runtime
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await;
    let _ = c
        .runtime
        .remove_container(RemoveContainerRequest { container_id: id })
        .await;
    let _ = c
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await;
    let _ = c
        .runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await;
}

async fn storm(seed: u64, lifecycles: usize, parallel: usize, kills: usize) {
    let started = Instant::now();
    let mut env = env("").await;
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let root = env.daemon.root.clone();
    let runroot = env.daemon.runroot.clone();
    // The baseline: a daemon with its image pulled and nothing else.
    let base_root = tree(&root);
    let base_runroot = tree(&runroot);
    let base_mounts = mounts_under(env.daemon.dir());
    let base_fds = fds(env.daemon.pid().unwrap());
    assert!(our_processes(&[&root, &runroot], env.daemon.pid()).is_empty());

    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..parallel)
        .map(|w| {
            let (socket, image, logs) = (
                env.daemon.socket.clone(),
                env.image.clone(),
                env.logs.clone(),
            );
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= lifecycles {
                        return;
                    }
                    let handler = if (n + w).is_multiple_of(3) {
                        "crun"
                    } else {
                        "runc"
                    };
                    lifecycle(socket.clone(), image.clone(), logs.clone(), n, handler).await;
                }
            })
        })
        .collect();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(200 + rng.below(1500))).await;
        env.daemon.kill().unwrap();
        tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        env.daemon.start().await.unwrap();
    }
    for w in workers {
        tokio::time::timeout(Duration::from_secs(240), w)
            .await
            .expect("a lifecycle hung")
            .unwrap();
    }

    // Remove everything left, as kubelet would after the storm.
    let mut c = env.client().await;
    for p in list_pods(&mut c).await {
        c.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: p.id.clone(),
            })
            .await
            .unwrap();
        c.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: p.id,
            })
            .await
            .unwrap();
    }
    assert!(list_all(&mut c).await.is_empty());
    // Monitors finish writing exit files and leave shortly after their
    // containers die.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !our_processes(&[&root, &runroot], env.daemon.pid()).is_empty()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let what = format!("seed {seed}");
    let extra = |base: &BTreeSet<String>, now: BTreeSet<String>| {
        now.difference(base).cloned().collect::<Vec<_>>()
    };
    assert_eq!(
        extra(&base_root, tree(&root)),
        Vec::<String>::new(),
        "{what}: left under root"
    );
    assert_eq!(
        extra(&base_runroot, tree(&runroot)),
        Vec::<String>::new(),
        "{what}: left under runroot"
    );
    assert_eq!(
        mounts_under(env.daemon.dir()),
        base_mounts,
        "{what}: mounts"
    );
    for rt in ["runc", "crun"] {
        let listed = runtime_list(rt, &runroot.join("runtimes").join(rt));
        assert!(listed.is_empty(), "{what}: {rt} still lists {listed:?}");
    }
    assert_eq!(
        our_processes(&[&root, &runroot], env.daemon.pid()),
        Vec::<(i32, String)>::new(),
        "{what}: processes"
    );
    // Processes of a killed daemon's in-flight calls are re-parented to
    // init, which reaps them in its own time: only zombies that stay count.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !zombies_under_init().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let z = zombies_under_init();
    assert!(z.is_empty(), "{what}: zombies under init: {z:?}");
    // The daemon's fds: what a fresh one had (pools refilled), give or
    // take the clients' connections.
    let now_fds = fds(env.daemon.pid().unwrap());
    assert!(
        now_fds <= base_fds + 4,
        "{what}: daemon fds {now_fds}, baseline {base_fds}"
    );
    eprintln!(
        "{what}: {lifecycles} lifecycles, {parallel} at a time, {kills} kills: clean in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_storm_seed_1() {
    storm(1, 12, 4, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_storm_seed_2() {
    storm(2, 12, 4, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_storm_seed_3() {
    storm(3, 12, 4, 3).await;
}

/// `make soak`: many more lifecycles and kills, over several seeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: run with make soak"]
async fn crash_storm_soak() {
    let rounds: u64 = std::env::var("CRIUS_SOAK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    for seed in 100..100 + rounds {
        storm(seed, 60, 6, 8).await;
    }
}
