//! The container's mounts: CRI-O's defaults, the pod files and the CRI
//! `mounts`, plus masked and read-only paths.

use super::{PodFiles, SpecError};
use crius_cri_api::v1::{Mount as CriMount, MountPropagation};
use oci_spec::runtime::{Mount, MountBuilder};
use std::path::{Component, Path, PathBuf};

/// The mount options a CRI mount may carry besides ro/rbind/propagation.
pub const ALLOWED_MOUNT_OPTIONS: &[&str] = &[
    "noexec",
    "nosuid",
    "nodev",
    "noatime",
    "nodiratime",
    "relatime",
    "strictatime",
];

/// CRI-O's default masked paths.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/interrupts",
];

/// CRI-O's default read-only paths.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The mounts and what the caller must prepare on the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountPlan {
    /// Sorted so that parents come before children.
    pub mounts: Vec<Mount>,
    /// Host paths of BIDIRECTIONAL mounts: must be on a shared mount.
    pub needs_shared: Vec<PathBuf>,
    /// Host paths of HOST_TO_CONTAINER mounts: must be on a shared or
    /// slave mount.
    pub needs_slave: Vec<PathBuf>,
}

impl MountPlan {
    /// The rootfs propagation the runtime needs: "rshared" with
    /// bidirectional mounts, "rslave" with host-to-container ones.
    pub fn rootfs_propagation(&self) -> Option<&'static str> {
        if !self.needs_shared.is_empty() {
            Some("rshared")
        } else if !self.needs_slave.is_empty() {
            Some("rslave")
        } else {
            None
        }
    }
}

fn mount(dest: &str, typ: &str, source: &Path, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// CRI-O's default mounts, /dev/shm and the pod's /etc files.
pub fn default_mounts(privileged: bool, files: &PodFiles) -> Result<Vec<Mount>, SpecError> {
    let sys_ro = if privileged { "rw" } else { "ro" };
    let p = Path::new;
    let mut v = vec![
        mount("/proc", "proc", p("proc"), &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            p("tmpfs"),
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            p("devpts"),
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            p("mqueue"),
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            p("sysfs"),
            &["nosuid", "noexec", "nodev", sys_ro],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            p("cgroup"),
            &["nosuid", "noexec", "nodev", "relatime", sys_ro],
        )?,
    ];
    v.push(match &files.shm {
        Some(shm) => mount(
            "/dev/shm",
            "bind",
            shm,
            &["rbind", "nosuid", "noexec", "nodev"],
        )?,
        None => mount(
            "/dev/shm",
            "tmpfs",
            p("shm"),
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
    });
    for (dest, src) in [
        ("/etc/hosts", &files.hosts),
        ("/etc/resolv.conf", &files.resolv_conf),
        ("/etc/hostname", &files.hostname),
    ] {
        if let Some(src) = src {
            v.push(mount(dest, "bind", src, &["rbind", "rprivate"])?);
        }
    }
    Ok(v)
}

/// Checks a container path: absolute, no "..".
pub fn check_container_path(field: &str, path: &str) -> Result<(), SpecError> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(SpecError::invalid(
            field,
            format!("{path:?} is not an absolute path"),
        ));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(SpecError::invalid(
            field,
            format!("{path:?} contains \"..\""),
        ));
    }
    Ok(())
}

/// Maps a CRI propagation to the OCI mount option.
pub fn propagation_option(p: MountPropagation) -> &'static str {
    match p {
        MountPropagation::PropagationPrivate => "rprivate",
        MountPropagation::PropagationHostToContainer => "rslave",
        MountPropagation::PropagationBidirectional => "rshared",
    }
}

/// Builds the OCI bind mount of one CRI mount (index `i` for messages).
pub fn cri_mount(i: usize, m: &CriMount) -> Result<Mount, SpecError> {
    if m.image.is_some() && m.host_path.is_empty() {
        return Err(SpecError::invalid(
            format!("mounts[{i}].image"),
            "image volumes are resolved by the caller",
        ));
    }
    check_container_path(&format!("mounts[{i}].container_path"), &m.container_path)?;
    if m.host_path.is_empty() {
        return Err(SpecError::invalid(
            format!("mounts[{i}].host_path"),
            "must not be empty",
        ));
    }
    let propagation = MountPropagation::try_from(m.propagation).map_err(|_| {
        SpecError::invalid(
            format!("mounts[{i}].propagation"),
            format!("unknown propagation {}", m.propagation),
        )
    })?;
    let mut options = vec!["rbind".to_string()];
    if m.readonly {
        options.push("ro".into());
    }
    if m.recursive_read_only {
        if !m.readonly || propagation != MountPropagation::PropagationPrivate {
            return Err(SpecError::invalid(
                format!("mounts[{i}]"),
                "recursive_read_only requires readonly and PROPAGATION_PRIVATE",
            ));
        }
        options.push("rro".into());
    }
    options.push(propagation_option(propagation).into());
    for o in &m.mount_options {
        if !ALLOWED_MOUNT_OPTIONS.contains(&o.as_str()) {
            return Err(SpecError::invalid(
                format!("mounts[{i}].mount_options"),
                format!(
                    "option {o:?} is not allowed (allowed: {})",
                    ALLOWED_MOUNT_OPTIONS.join(", ")
                ),
            ));
        }
        if !options.contains(o) {
            options.push(o.clone());
        }
    }
    Ok(MountBuilder::default()
        .destination(&m.container_path)
        .typ("bind")
        .source(&m.host_path)
        .options(options)
        .build()?)
}

fn depth(m: &Mount) -> usize {
    m.destination()
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

/// All mounts of the container: the defaults, replaced by CRI mounts with
/// the same container path, sorted parents-first (stable otherwise).
pub fn mounts(
    cri: &[CriMount],
    privileged: bool,
    files: &PodFiles,
) -> Result<MountPlan, SpecError> {
    let mut plan = MountPlan::default();
    let mut user = Vec::with_capacity(cri.len());
    for (i, m) in cri.iter().enumerate() {
        let oci = cri_mount(i, m)?;
        match m.propagation() {
            MountPropagation::PropagationBidirectional => {
                plan.needs_shared.push(PathBuf::from(&m.host_path))
            }
            MountPropagation::PropagationHostToContainer => {
                plan.needs_slave.push(PathBuf::from(&m.host_path))
            }
            MountPropagation::PropagationPrivate => {}
        }
        user.push(oci);
    }
    let mut all: Vec<Mount> = default_mounts(privileged, files)?
        .into_iter()
        .filter(|d| !user.iter().any(|u| u.destination() == d.destination()))
        .collect();
    // A later CRI mount of the same path wins over an earlier one.
    for u in user {
        all.retain(|m| m.destination() != u.destination());
        all.push(u);
    }
    all.sort_by_key(depth);
    plan.mounts = all;
    Ok(plan)
}

/// Masked and read-only paths: CRI-O's defaults, replaced by the CRI lists
/// when those are non-empty; none at all for privileged containers.
pub fn masked_and_readonly_paths(
    masked: &[String],
    readonly: &[String],
    privileged: bool,
) -> (Vec<String>, Vec<String>) {
    if privileged {
        return (Vec::new(), Vec::new());
    }
    let pick = |cri: &[String], default: &[&str]| {
        if cri.is_empty() {
            default.iter().map(|s| s.to_string()).collect()
        } else {
            cri.to_vec()
        }
    };
    (
        pick(masked, DEFAULT_MASKED_PATHS),
        pick(readonly, DEFAULT_READONLY_PATHS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_cri_api::v1::ImageSpec;

    fn bind(container: &str, host: &str) -> CriMount {
        CriMount {
            container_path: container.into(),
            host_path: host.into(),
            ..Default::default()
        }
    }

    fn opts(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    #[test]
    fn propagation_mapping() {
        let cases = [
            (MountPropagation::PropagationPrivate, "rprivate", 0, 0),
            (MountPropagation::PropagationHostToContainer, "rslave", 0, 1),
            (MountPropagation::PropagationBidirectional, "rshared", 1, 0),
        ];
        for (p, opt, shared, slave) in cases {
            let mut m = bind("/data", "/host/data");
            m.set_propagation(p);
            let plan = mounts(&[m], false, &PodFiles::default()).unwrap();
            let data = plan
                .mounts
                .iter()
                .find(|m| m.destination() == Path::new("/data"))
                .unwrap();
            assert_eq!(opts(data), vec!["rbind", opt], "{p:?}");
            assert_eq!(plan.needs_shared.len(), shared);
            assert_eq!(plan.needs_slave.len(), slave);
        }
        let mut m = bind("/data", "/h");
        m.propagation = 42;
        let err = cri_mount(3, &m).unwrap_err();
        assert!(
            err.to_string().starts_with("mounts[3].propagation:"),
            "{err}"
        );
    }

    /// (given options, resulting options or error prefix)
    type OptionsCase<'a> = (&'a [&'a str], Result<&'a [&'a str], &'a str>);

    #[test]
    fn mount_options_allow_list() {
        let cases: &[OptionsCase] = &[
            (&[], Ok(&["rbind", "ro", "rprivate"])),
            (
                &["noexec", "nosuid", "nodev"],
                Ok(&["rbind", "ro", "rprivate", "noexec", "nosuid", "nodev"]),
            ),
            (
                &[
                    "noatime",
                    "nodiratime",
                    "relatime",
                    "strictatime",
                    "noatime",
                ],
                Ok(&[
                    "rbind",
                    "ro",
                    "rprivate",
                    "noatime",
                    "nodiratime",
                    "relatime",
                    "strictatime",
                ]),
            ),
            (
                &["nosuid", "suid"],
                Err("mounts[0].mount_options: option \"suid\" is not allowed"),
            ),
            (&["exec"], Err("mounts[0].mount_options:")),
            (&["rw"], Err("mounts[0].mount_options:")),
            (&["bind"], Err("mounts[0].mount_options:")),
        ];
        for (given, want) in cases {
            let mut m = bind("/data", "/h");
            m.readonly = true;
            m.mount_options = given.iter().map(|s| s.to_string()).collect();
            match (cri_mount(0, &m), want) {
                (Ok(got), Ok(w)) => assert_eq!(opts(&got), *w),
                (Err(e), Err(prefix)) => assert!(e.to_string().starts_with(prefix), "{e}"),
                (got, want) => panic!("{given:?}: got {got:?} want {want:?}"),
            }
        }
    }

    #[test]
    fn recursive_read_only_validation() {
        // (readonly, propagation, ok)
        let cases = [
            (true, MountPropagation::PropagationPrivate, true),
            (false, MountPropagation::PropagationPrivate, false),
            (true, MountPropagation::PropagationHostToContainer, false),
            (true, MountPropagation::PropagationBidirectional, false),
        ];
        for (ro, p, ok) in cases {
            let mut m = bind("/data", "/h");
            m.readonly = ro;
            m.recursive_read_only = true;
            m.set_propagation(p);
            match cri_mount(5, &m) {
                Ok(got) => {
                    assert!(ok, "{ro} {p:?}");
                    assert_eq!(opts(&got), vec!["rbind", "ro", "rro", "rprivate"]);
                }
                Err(e) => {
                    assert!(!ok, "{ro} {p:?}: {e}");
                    assert!(
                        e.to_string().starts_with("mounts[5]: recursive_read_only"),
                        "{e}"
                    );
                }
            }
        }
    }

    #[test]
    fn container_path_and_image_checks() {
        let cases: &[(CriMount, &str)] = &[
            (
                bind("data", "/h"),
                "mounts[0].container_path: \"data\" is not an absolute path",
            ),
            (
                bind("/a/../etc", "/h"),
                "mounts[0].container_path: \"/a/../etc\" contains \"..\"",
            ),
            (bind("/a", ""), "mounts[0].host_path:"),
            (
                CriMount {
                    container_path: "/img".into(),
                    image: Some(ImageSpec::default()),
                    ..Default::default()
                },
                "mounts[0].image: image volumes are resolved by the caller",
            ),
        ];
        for (m, want) in cases {
            let err = cri_mount(0, m).unwrap_err();
            assert!(err.to_string().starts_with(want), "{err}");
        }
        // An image volume the caller already resolved is a normal bind.
        let resolved = CriMount {
            image: Some(ImageSpec::default()),
            ..bind("/img", "/var/lib/crius/img")
        };
        assert_eq!(
            opts(&cri_mount(0, &resolved).unwrap()),
            vec!["rbind", "rprivate"]
        );
    }

    #[test]
    fn defaults_overrides_and_order() {
        let files = PodFiles {
            hosts: Some("/run/pod/hosts".into()),
            resolv_conf: Some("/run/pod/resolv.conf".into()),
            hostname: None,
            shm: Some("/run/pod/shm".into()),
        };
        let cri = vec![
            bind("/var/lib/data/sub", "/h/sub"),
            bind("/etc/hosts", "/my/hosts"),
            bind("/var/lib/data", "/h/data"),
        ];
        let plan = mounts(&cri, false, &files).unwrap();
        let dests: Vec<String> = plan
            .mounts
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect();
        assert_eq!(
            dests,
            vec![
                "/proc",
                "/dev",
                "/sys",
                "/dev/pts",
                "/dev/mqueue",
                "/dev/shm",
                "/etc/resolv.conf",
                "/etc/hosts",
                "/sys/fs/cgroup",
                "/var/lib/data",
                "/var/lib/data/sub",
            ]
        );
        let hosts = plan
            .mounts
            .iter()
            .find(|m| m.destination() == Path::new("/etc/hosts"))
            .unwrap();
        assert_eq!(hosts.source().as_deref(), Some(Path::new("/my/hosts")));
        let shm = plan
            .mounts
            .iter()
            .find(|m| m.destination() == Path::new("/dev/shm"))
            .unwrap();
        assert_eq!(shm.typ().as_deref(), Some("bind"));
    }

    #[test]
    fn sys_is_rw_only_when_privileged() {
        for (privileged, want) in [(false, "ro"), (true, "rw")] {
            let v = default_mounts(privileged, &PodFiles::default()).unwrap();
            let sys = v
                .iter()
                .find(|m| m.destination() == Path::new("/sys"))
                .unwrap();
            assert!(opts(sys).contains(&want.to_string()), "{privileged}");
            let shm = v
                .iter()
                .find(|m| m.destination() == Path::new("/dev/shm"))
                .unwrap();
            assert_eq!(shm.typ().as_deref(), Some("tmpfs"));
            assert!(!v.iter().any(|m| m.destination() == Path::new("/etc/hosts")));
        }
    }

    #[test]
    fn masked_paths_overrides() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // (masked, readonly, privileged, want masked, want readonly)
        type Case = (Vec<String>, Vec<String>, bool, Vec<String>, Vec<String>);
        let cases: Vec<Case> = vec![
            (
                vec![],
                vec![],
                false,
                s(DEFAULT_MASKED_PATHS),
                s(DEFAULT_READONLY_PATHS),
            ),
            (
                s(&["/proc/x"]),
                vec![],
                false,
                s(&["/proc/x"]),
                s(DEFAULT_READONLY_PATHS),
            ),
            (
                vec![],
                s(&["/proc/y"]),
                false,
                s(DEFAULT_MASKED_PATHS),
                s(&["/proc/y"]),
            ),
            (s(&["/proc/x"]), s(&["/proc/y"]), true, vec![], vec![]),
            (vec![], vec![], true, vec![], vec![]),
        ];
        for (i, (masked, ro, privileged, want_m, want_r)) in cases.into_iter().enumerate() {
            let (m, r) = masked_and_readonly_paths(&masked, &ro, privileged);
            assert_eq!((m, r), (want_m, want_r), "case {i}");
        }
    }
}
