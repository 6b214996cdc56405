//! CRI `devices`: host device nodes made available in the container, and
//! the device cgroup rules that go with them. Every container starts from
//! "deny all" (the runtime then allows its standard /dev nodes), so a
//! process that can mknod still cannot open a host disk.

use super::SpecError;
use crius_cri_api::v1::Device;
use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path};

/// A host device resolved for a container (the side-effecting part:
/// `resolve` stats the host path; everything else is pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    pub container_path: String,
    pub char_device: bool,
    pub major: i64,
    pub minor: i64,
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// cgroup access: a non-empty subset of "rwm".
    pub access: String,
}

/// `permissions` → cgroup access string (default "rwm").
pub fn access(field: &str, permissions: &str) -> Result<String, SpecError> {
    if permissions.is_empty() {
        return Ok("rwm".into());
    }
    let mut out = String::new();
    for c in ['r', 'w', 'm'] {
        if permissions.contains(c) {
            out.push(c);
        }
    }
    if permissions.chars().any(|c| !"rwm".contains(c)) {
        return Err(SpecError::invalid(
            format!("{field}.permissions"),
            format!("{permissions:?}: only r, w and m are allowed"),
        ));
    }
    Ok(out)
}

fn absolute_clean(field: &str, p: &str) -> Result<(), SpecError> {
    let path = Path::new(p);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(SpecError::invalid(
            field,
            format!("{p:?} must be an absolute path without \"..\""),
        ));
    }
    Ok(())
}

/// Stats each host path (following symlinks, as /dev/disk/by-id links
/// expect) and checks it is a device node.
pub fn resolve(devices: &[Device]) -> Result<Vec<HostDevice>, SpecError> {
    devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let field = format!("devices[{i}]");
            absolute_clean(&format!("{field}.host_path"), &d.host_path)?;
            let container_path = if d.container_path.is_empty() {
                d.host_path.clone()
            } else {
                d.container_path.clone()
            };
            absolute_clean(&format!("{field}.container_path"), &container_path)?;
            let meta = std::fs::metadata(&d.host_path).map_err(|e| {
                SpecError::invalid(
                    format!("{field}.host_path"),
                    format!("{}: {e}", d.host_path),
                )
            })?;
            let ft = meta.file_type();
            if !ft.is_char_device() && !ft.is_block_device() {
                return Err(SpecError::invalid(
                    format!("{field}.host_path"),
                    format!("{} is not a device node", d.host_path),
                ));
            }
            let rdev = meta.rdev();
            Ok(HostDevice {
                container_path,
                char_device: ft.is_char_device(),
                major: nix::sys::stat::major(rdev) as i64,
                minor: nix::sys::stat::minor(rdev) as i64,
                file_mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                access: access(&field, &d.permissions)?,
            })
        })
        .collect()
}

/// The spec's `linux.devices` and the device cgroup rules: deny all, then
/// allow each requested device with its access.
pub fn to_oci(
    devices: &[HostDevice],
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), SpecError> {
    let mut nodes = Vec::new();
    let mut rules = vec![LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()?];
    for d in devices {
        let typ = if d.char_device {
            LinuxDeviceType::C
        } else {
            LinuxDeviceType::B
        };
        nodes.push(
            LinuxDeviceBuilder::default()
                .path(d.container_path.clone())
                .typ(typ)
                .major(d.major)
                .minor(d.minor)
                .file_mode(d.file_mode)
                .uid(d.uid)
                .gid(d.gid)
                .build()?,
        );
        rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(typ)
                .major(d.major)
                .minor(d.minor)
                .access(d.access.clone())
                .build()?,
        );
    }
    Ok((nodes, rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(host: &str, container: &str, perms: &str) -> Device {
        Device {
            host_path: host.into(),
            container_path: container.into(),
            permissions: perms.into(),
        }
    }

    #[test]
    fn access_strings() {
        for (p, want) in [
            ("", Ok("rwm")),
            ("r", Ok("r")),
            ("mr", Ok("rm")),
            ("rwm", Ok("rwm")),
            ("rx", Err("only r, w and m")),
        ] {
            match (access("devices[0]", p), want) {
                (Ok(a), Ok(w)) => assert_eq!(a, w),
                (Err(e), Err(w)) => assert!(
                    e.to_string().contains(w) && e.to_string().contains("devices[0].permissions")
                ),
                (got, w) => panic!("{p:?}: {got:?} vs {w:?}"),
            }
        }
    }

    #[test]
    fn resolving_host_devices() {
        let r = resolve(&[dev("/dev/null", "/dev/mynull", "rw")]).unwrap();
        assert_eq!((r[0].char_device, r[0].major, r[0].minor), (true, 1, 3));
        assert_eq!(r[0].container_path, "/dev/mynull");
        assert_eq!(
            resolve(&[dev("/dev/zero", "", "")]).unwrap()[0].container_path,
            "/dev/zero"
        );
        for (d, want) in [
            (
                dev("/dev/nonexistent-device", "/dev/x", ""),
                "devices[0].host_path",
            ),
            (dev("/etc/passwd", "/dev/x", ""), "not a device node"),
            (dev("dev/null", "/dev/x", ""), "must be an absolute path"),
            (
                dev("/dev/null", "/dev/../etc/x", ""),
                "devices[0].container_path",
            ),
        ] {
            let e = resolve(&[d]).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn rules_start_from_deny_all() {
        let d = resolve(&[dev("/dev/null", "/dev/mynull", "r")]).unwrap();
        let (nodes, rules) = to_oci(&d).unwrap();
        let v = serde_json::to_value((&nodes, &rules)).unwrap();
        assert_eq!(v[0][0]["path"], "/dev/mynull");
        assert_eq!(v[0][0]["type"], "c");
        assert_eq!(
            v[1][0],
            serde_json::json!({"allow": false, "access": "rwm"})
        );
        assert_eq!(v[1][1]["allow"], true);
        assert_eq!(v[1][1]["access"], "r");
        assert_eq!(
            (v[1][1]["major"].as_i64(), v[1][1]["minor"].as_i64()),
            (Some(1), Some(3))
        );
        let (_, rules) = to_oci(&[]).unwrap();
        assert_eq!(
            rules.len(),
            1,
            "no devices: deny all (the runtime adds its standard nodes)"
        );
    }
}
