//! What a runtime handler can do on this host, from facts rather than
//! guesses: the runtime's own `features` output (OCI runtime features JSON),
//! the kernel version and the cgroup layout. A runtime without a `features`
//! command (Debian's crun 1.8.1) has *unknown* features, and every feature
//! crius derives from them is then reported false.

use crate::handlers::ResolvedHandler;
use oci_spec::runtime::Features;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The spec version used when a runtime does not say what it accepts;
/// crun 1.8.1 rejects 1.2.0 and later ("unknown version specified").
pub const FALLBACK_OCI_VERSION: &str = "1.0.2";
/// `MOUNT_ATTR_RDONLY` with `AT_RECURSIVE` via mount_setattr(2).
pub const RRO_KERNEL: (u32, u32) = (5, 12);
/// Idmapped mounts for the filesystems containers use (overlayfs).
pub const IDMAP_KERNEL: (u32, u32) = (5, 19);

/// How the cgroup hierarchies are mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "mode")]
pub enum CgroupLayout {
    V1,
    V2,
    /// v1 controllers plus a v2 hierarchy (at `/sys/fs/cgroup/unified`),
    /// with these controllers enabled on the v2 side.
    Hybrid {
        v2_controllers: Vec<String>,
    },
    Unknown,
}

/// Facts about the host that decide what runtimes can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    pub kernel_release: String,
    pub kernel: Option<(u32, u32)>,
    pub cgroup: CgroupLayout,
}

/// Parses `6.18.44-fc-v657` → (6, 18).
pub fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// The running kernel's (major, minor), from uname(2).
pub fn kernel_version() -> Option<(u32, u32)> {
    let u = nix::sys::utsname::uname().ok()?;
    parse_kernel(&u.release().to_string_lossy())
}

/// The cgroup layout from `/proc/self/mountinfo` and, when a v2 hierarchy
/// is mounted beside v1 ones, its `cgroup.controllers`.
pub fn cgroup_layout(mountinfo: &str, unified_controllers: Option<&str>) -> CgroupLayout {
    let mut v1 = false;
    let mut v2 = false;
    for m in crate::mountinfo::parse(mountinfo) {
        match m.fstype.as_str() {
            "cgroup" => v1 = true,
            "cgroup2" => v2 = true,
            _ => {}
        }
    }
    match (v1, v2) {
        (true, true) => CgroupLayout::Hybrid {
            v2_controllers: unified_controllers
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        },
        (true, false) => CgroupLayout::V1,
        (false, true) => CgroupLayout::V2,
        (false, false) => CgroupLayout::Unknown,
    }
}

impl HostFacts {
    pub fn read() -> Self {
        let kernel_release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let unified = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers").ok();
        HostFacts {
            kernel: parse_kernel(&kernel_release),
            kernel_release,
            cgroup: cgroup_layout(&mountinfo, unified.as_deref()),
        }
    }
}

/// Capability names by number (linux/capability.h).
pub const CAPABILITY_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities in a `/proc/<pid>/status` `CapBnd:` mask (pure).
pub fn capabilities_in_mask(hex: &str) -> Vec<String> {
    let mask = u64::from_str_radix(hex.trim(), 16).unwrap_or(0);
    CAPABILITY_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1u64 << i) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// The daemon's own capability bounding set: what a container can be
/// given at most (these machines lack CAP_SYS_RESOURCE, for one).
pub fn bounding_set() -> Vec<String> {
    own_capabilities("CapBnd:")
}

/// The daemon's effective capabilities.
pub fn effective_set() -> Vec<String> {
    own_capabilities("CapEff:")
}

fn own_capabilities(key: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key).map(capabilities_in_mask))
        })
        .unwrap_or_default()
}

/// The daemon's own oom_score_adj (containers cannot go below it without
/// CAP_SYS_RESOURCE).
pub fn own_oom_score_adj() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The daemon's own hard RLIMIT_NOFILE (container limits cannot exceed it
/// without CAP_SYS_RESOURCE).
pub fn own_nofile_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(0)
}

/// The runtime's features, or why they are unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeaturesProbe {
    Known(Box<Features>),
    Unknown(String),
}

/// What crius tells kubelet and operators about one handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HandlerStatus {
    pub ready: bool,
    /// CamelCase reason when not ready.
    pub reason: String,
    pub message: String,
    pub recursive_read_only_mounts: bool,
    pub user_namespaces: bool,
    /// The `ociVersion` generated specs carry for this handler.
    pub oci_version: String,
}

/// One handler, probed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub name: String,
    pub binary: Option<PathBuf>,
    pub root: PathBuf,
    pub version: Option<String>,
    /// Why features are unknown, if they are.
    pub features_unknown: Option<String>,
    pub mount_options: Option<Vec<String>>,
    #[serde(flatten)]
    pub status: HandlerStatus,
}

fn at_least(kernel: Option<(u32, u32)>, min: (u32, u32)) -> bool {
    kernel.is_some_and(|k| k >= min)
}

/// Is this binary crun (by file name; crun is also installed as `crun-*`)?
fn is_crun(binary: &Path) -> bool {
    binary
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("crun"))
}

/// Derives a handler's status from probed facts (pure).
pub fn evaluate(
    binary: Option<&Path>,
    features: &FeaturesProbe,
    host: &HostFacts,
) -> HandlerStatus {
    let known = match features {
        FeaturesProbe::Known(f) => Some(f.as_ref()),
        FeaturesProbe::Unknown(_) => None,
    };
    let rro = known
        .and_then(|f| f.mount_options().as_ref())
        .is_some_and(|m| m.iter().any(|o| o == "rro"))
        && at_least(host.kernel, RRO_KERNEL);
    let idmap = known
        .and_then(|f| f.linux().as_ref())
        .and_then(|l| l.mount_extensions().as_ref())
        .and_then(|m| m.idmap().as_ref())
        .and_then(|i| *i.enabled())
        .unwrap_or(false);
    let userns = known
        .and_then(|f| f.linux().as_ref())
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| matches!(n, oci_spec::runtime::LinuxNamespaceType::User))
        });
    let oci_version = known
        .map(|f| f.oci_version_max().clone())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| FALLBACK_OCI_VERSION.to_string());
    let mut status = HandlerStatus {
        ready: true,
        reason: String::new(),
        message: String::new(),
        recursive_read_only_mounts: rro,
        user_namespaces: idmap && userns && at_least(host.kernel, IDMAP_KERNEL),
        oci_version,
    };
    let Some(binary) = binary else {
        status.ready = false;
        status.reason = "RuntimeBinaryNotFound".into();
        status.message = "the runtime binary was not found".into();
        return status;
    };
    // crun refuses a hybrid layout whose v2 hierarchy has controllers
    // ("cgroups in hybrid mode not supported, drop all controllers from
    // cgroupv2"): every create would fail, so say so up front.
    if let CgroupLayout::Hybrid { v2_controllers } = &host.cgroup {
        if is_crun(binary) && !v2_controllers.is_empty() {
            status.ready = false;
            status.reason = "UnsupportedCgroupLayout".into();
            status.message = format!(
                "crun cannot run containers on a hybrid cgroup layout with controllers enabled on cgroup v2 ({}); \
                 mount those controllers on v1 (see docs/runtimes.md)",
                v2_controllers.join(", ")
            );
        }
    }
    status
}

/// Runs `binary args…` with a deadline; stdout on success.
fn run(binary: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let mut child = Command::new(binary)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", binary.display()))?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} {} timed out", binary.display(), args.join(" ")));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let out_s = String::from_utf8_lossy(&out.stdout);
        let msg = if err.trim().is_empty() {
            out_s.trim().to_string()
        } else {
            err.trim().to_string()
        };
        Err(format!(
            "`{} {}` failed ({}): {}",
            binary.display(),
            args.join(" "),
            out.status,
            msg
        ))
    }
}

/// Parses `<runtime> features` output.
pub fn parse_features(json: &str) -> Result<Features, String> {
    serde_json::from_str(json).map_err(|e| format!("unparsable features output: {e}"))
}

/// Probes one handler: its version and features, then evaluates it.
pub fn probe_handler(h: &ResolvedHandler, host: &HostFacts) -> Probe {
    const TIMEOUT: Duration = Duration::from_secs(10);
    let (version, features) = match &h.binary {
        None => (
            None,
            FeaturesProbe::Unknown(format!("{} not found", h.config.path.display())),
        ),
        Some(bin) => {
            let version = run(bin, &["--version"], TIMEOUT)
                .ok()
                .and_then(|v| v.lines().next().map(str::to_string));
            let features = match run(bin, &["features"], TIMEOUT).and_then(|j| parse_features(&j)) {
                Ok(f) => FeaturesProbe::Known(Box::new(f)),
                Err(e) => FeaturesProbe::Unknown(e),
            };
            (version, features)
        }
    };
    let status = evaluate(h.binary.as_deref(), &features, host);
    let mut status = status;
    if h.binary.is_none() {
        status.message = format!("runtime binary {} not found", h.config.path.display());
    }
    Probe {
        name: h.name.clone(),
        binary: h.binary.clone(),
        root: h.config.root.clone(),
        version,
        mount_options: match &features {
            FeaturesProbe::Known(f) => f.mount_options().clone(),
            FeaturesProbe::Unknown(_) => None,
        },
        features_unknown: match &features {
            FeaturesProbe::Known(_) => None,
            FeaturesProbe::Unknown(why) => Some(why.clone()),
        },
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNC_1_1_5: &str = r#"{"ociVersionMin":"1.0.0","ociVersionMax":"1.0.2-dev",
        "mountOptions":["bind","rbind","ro","rro","nosuid"],
        "linux":{"namespaces":["cgroup","ipc","mount","network","pid","user","uts"]}}"#;
    const RUNC_1_2: &str = r#"{"ociVersionMin":"1.0.0","ociVersionMax":"1.2.0",
        "mountOptions":["rro","ro"],
        "linux":{"namespaces":["user","mount"],"mountExtensions":{"idmap":{"enabled":true}}}}"#;

    fn host(kernel: (u32, u32), cgroup: CgroupLayout) -> HostFacts {
        HostFacts {
            kernel_release: format!("{}.{}.0", kernel.0, kernel.1),
            kernel: Some(kernel),
            cgroup,
        }
    }

    fn known(j: &str) -> FeaturesProbe {
        FeaturesProbe::Known(Box::new(parse_features(j).unwrap()))
    }

    #[test]
    fn capability_masks() {
        assert_eq!(capabilities_in_mask("0000000000000001"), vec!["CAP_CHOWN"]);
        let all_but_resource = (0x1ff_ffff_ffffu64 & !(1 << 24)).to_string();
        let _ = all_but_resource;
        let caps = capabilities_in_mask(&format!("{:x}", 0x1ff_ffff_ffffu64 & !(1u64 << 24)));
        assert_eq!(caps.len(), 40);
        assert!(!caps.iter().any(|c| c == "CAP_SYS_RESOURCE"));
        assert!(capabilities_in_mask("zz").is_empty());
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_kernel("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_kernel("garbage"), None);
    }

    #[test]
    fn cgroup_layouts() {
        let v1 = "30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let v2 = "31 25 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup_layout(v1, None), CgroupLayout::V1);
        assert_eq!(cgroup_layout(v2, None), CgroupLayout::V2);
        assert_eq!(
            cgroup_layout(&format!("{v1}{v2}"), Some("hugetlb\n")),
            CgroupLayout::Hybrid {
                v2_controllers: vec!["hugetlb".into()]
            }
        );
        assert_eq!(
            cgroup_layout(&format!("{v1}{v2}"), Some("")),
            CgroupLayout::Hybrid {
                v2_controllers: vec![]
            }
        );
        assert_eq!(cgroup_layout("", None), CgroupLayout::Unknown);
    }

    #[test]
    fn evaluation_table() {
        let runc = Some(Path::new("/usr/sbin/runc"));
        let crun = Some(Path::new("/usr/bin/crun"));
        let hybrid = CgroupLayout::Hybrid {
            v2_controllers: vec!["hugetlb".into()],
        };
        let clean_hybrid = CgroupLayout::Hybrid {
            v2_controllers: vec![],
        };
        struct Case {
            name: &'static str,
            binary: Option<&'static Path>,
            features: FeaturesProbe,
            host: HostFacts,
            want: (bool, bool, bool, &'static str, &'static str), // ready, rro, userns, reason, ociVersion
        }
        let cases = vec![
            Case {
                name: "runc 1.1.5 here",
                binary: runc,
                features: known(RUNC_1_1_5),
                host: host((6, 18), hybrid.clone()),
                want: (true, true, false, "", "1.0.2-dev"),
            },
            Case {
                name: "runc on an old kernel",
                binary: runc,
                features: known(RUNC_1_1_5),
                host: host((5, 10), CgroupLayout::V2),
                want: (true, false, false, "", "1.0.2-dev"),
            },
            Case {
                name: "runc 1.2 with idmap",
                binary: runc,
                features: known(RUNC_1_2),
                host: host((6, 18), CgroupLayout::V2),
                want: (true, true, true, "", "1.2.0"),
            },
            Case {
                name: "runc 1.2 idmap, kernel too old",
                binary: runc,
                features: known(RUNC_1_2),
                host: host((5, 15), CgroupLayout::V2),
                want: (true, true, false, "", "1.2.0"),
            },
            Case {
                name: "crun 1.8.1 here",
                binary: crun,
                features: FeaturesProbe::Unknown("unknown command features".into()),
                host: host((6, 18), hybrid.clone()),
                want: (false, false, false, "UnsupportedCgroupLayout", "1.0.2"),
            },
            Case {
                name: "crun, controllers moved to v1",
                binary: crun,
                features: FeaturesProbe::Unknown("x".into()),
                host: host((6, 18), clean_hybrid),
                want: (true, false, false, "", "1.0.2"),
            },
            Case {
                name: "missing binary",
                binary: None,
                features: FeaturesProbe::Unknown("x".into()),
                host: host((6, 18), CgroupLayout::V2),
                want: (false, false, false, "RuntimeBinaryNotFound", "1.0.2"),
            },
        ];
        for c in cases {
            let s = evaluate(c.binary, &c.features, &c.host);
            assert_eq!(
                (
                    s.ready,
                    s.recursive_read_only_mounts,
                    s.user_namespaces,
                    s.reason.as_str(),
                    s.oci_version.as_str()
                ),
                c.want,
                "{}: {s:?}",
                c.name
            );
            assert_eq!(
                s.ready,
                s.message.is_empty(),
                "{}: a not-ready handler says why",
                c.name
            );
        }
    }
}
