//! Small helpers for tests and benchmarks that run containers directly with
//! an OCI runtime, below the CRI: a bundle from `runc spec`'s default
//! config, and a process's resident memory.

use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `dir/bundle` with `runc spec`'s default config, no terminal, `args`,
/// `rootfs`, and ociVersion 1.0.2 (the most crun 1.8.1 accepts).
pub fn runc_spec_bundle(dir: &Path, rootfs: &Path, args: &[&str]) -> Result<PathBuf> {
    let b = dir.join("bundle");
    std::fs::create_dir_all(&b)?;
    let st = Command::new("runc")
        .arg("spec")
        .current_dir(&b)
        .status()
        .context("runc spec")?;
    ensure!(st.success(), "runc spec failed");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json"))?)?;
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(args);
    spec["root"]["path"] = rootfs.display().to_string().into();
    spec["ociVersion"] = "1.0.2".into();
    std::fs::write(b.join("config.json"), serde_json::to_vec(&spec)?)?;
    Ok(b)
}

/// VmRSS of a process in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
