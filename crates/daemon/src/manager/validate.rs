//! Checks of request fields that reach paths, kernel calls or deadlines:
//! names, hostnames, durations. Pure; each error names the field.

use super::ManagerError;
use crius_cri_api::v1::{ContainerConfig, MountPropagation};
use std::collections::HashMap;

/// Longest pod or container name, namespace or uid: a DNS subdomain, the
/// longest name the Kubernetes API allows for any of them.
pub const MAX_NAME: usize = 253;
/// `HOST_NAME_MAX`: sethostname(2) refuses longer names.
pub const MAX_HOSTNAME: usize = 64;
/// Longest timeout honoured from a request (a day): anything longer is a
/// mistake or an attack, and clamping keeps deadline arithmetic finite.
pub const MAX_TIMEOUT_SECS: i64 = 24 * 60 * 60;

fn invalid(field: &str, v: &str, why: &str) -> ManagerError {
    ManagerError::InvalidArgument(format!("{field} {:?} {why}", truncated(v)))
}

/// Long hostile values are quoted short in errors and logs.
fn truncated(v: &str) -> String {
    if v.len() <= 80 {
        return v.to_string();
    }
    let mut end = 80;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &v[..end])
}

/// Non-empty, at most [`MAX_NAME`] bytes, no NUL.
fn bounded(field: &str, v: &str) -> Result<(), ManagerError> {
    if v.is_empty() {
        return Err(ManagerError::InvalidArgument(format!(
            "{field} is required"
        )));
    }
    if v.len() > MAX_NAME {
        return Err(invalid(
            field,
            v,
            &format!("is longer than {MAX_NAME} bytes"),
        ));
    }
    no_nul(field, v)
}

/// A pod or container name, or a pod namespace: it names log files and
/// reservation keys, so it is one path component that cannot climb out.
pub fn name(field: &str, v: &str) -> Result<(), ManagerError> {
    bounded(field, v)?;
    if v.contains('/') {
        return Err(invalid(field, v, "contains \"/\""));
    }
    if v.contains("..") || v == "." {
        return Err(invalid(field, v, "contains \"..\" or is \".\""));
    }
    Ok(())
}

/// A pod uid: free-form in the CRI, but bounded and without NUL.
pub fn uid(field: &str, v: &str) -> Result<(), ManagerError> {
    bounded(field, v)
}

/// A hostname a pod asks for: what sethostname(2) accepts, without NUL or
/// "/" (it is also written into the pod's hosts file).
pub fn hostname(field: &str, v: &str) -> Result<(), ManagerError> {
    if v.len() > MAX_HOSTNAME {
        return Err(invalid(
            field,
            v,
            &format!("is longer than {MAX_HOSTNAME} bytes"),
        ));
    }
    if v.contains('\0') || v.contains('/') || v.chars().any(char::is_whitespace) {
        return Err(invalid(field, v, "contains NUL, \"/\" or whitespace"));
    }
    Ok(())
}

fn no_nul(field: &str, v: &str) -> Result<(), ManagerError> {
    if v.contains('\0') {
        return Err(invalid(field, v, "contains NUL"));
    }
    Ok(())
}

fn absolute(field: &str, v: &str) -> Result<(), ManagerError> {
    no_nul(field, v)?;
    if !v.starts_with('/') {
        return Err(invalid(field, v, "must be an absolute path"));
    }
    Ok(())
}

fn map_no_nul(field: &str, m: &HashMap<String, String>) -> Result<(), ManagerError> {
    for (k, v) in m {
        if k.contains('\0') || v.contains('\0') {
            return Err(invalid(&format!("{field}[{k:?}]"), v, "contains NUL"));
        }
    }
    Ok(())
}

/// What CreateContainer must refuse before anything is made: strings that
/// reach execve, environment blocks, paths and the spec's JSON with a NUL,
/// environment keys with `=`, relative working dirs and container paths.
/// (Names, log paths, mounts' host side and devices are checked where they
/// are resolved.)
pub fn container_config(c: &ContainerConfig) -> Result<(), ManagerError> {
    for (field, list) in [("config.command", &c.command), ("config.args", &c.args)] {
        for (i, a) in list.iter().enumerate() {
            no_nul(&format!("{field}[{i}]"), a)?;
        }
    }
    for (i, kv) in c.envs.iter().enumerate() {
        let field = format!("config.envs[{i}]");
        if kv.key.is_empty() || kv.key.contains('=') || kv.key.contains('\0') {
            return Err(invalid(
                &format!("{field}.key"),
                &kv.key,
                "must be non-empty, without \"=\" or NUL",
            ));
        }
        if kv.value.contains(&0) {
            return Err(ManagerError::InvalidArgument(format!(
                "{field}.value contains NUL"
            )));
        }
    }
    if !c.working_dir.is_empty() {
        absolute("config.working_dir", &c.working_dir)?;
    }
    no_nul("config.log_path", &c.log_path)?;
    for (i, m) in c.mounts.iter().enumerate() {
        absolute(
            &format!("config.mounts[{i}].container_path"),
            &m.container_path,
        )?;
        no_nul(&format!("config.mounts[{i}].host_path"), &m.host_path)?;
        no_nul(
            &format!("config.mounts[{i}].image_sub_path"),
            &m.image_sub_path,
        )?;
    }
    for (i, d) in c.devices.iter().enumerate() {
        absolute(
            &format!("config.devices[{i}].container_path"),
            &d.container_path,
        )?;
        no_nul(&format!("config.devices[{i}].host_path"), &d.host_path)?;
    }
    map_no_nul("config.labels", &c.labels)?;
    map_no_nul("config.annotations", &c.annotations)?;
    Ok(())
}

/// An ExecSync command: not empty, no NUL (execve cannot pass one).
pub fn exec_cmd(cmd: &[String]) -> Result<(), ManagerError> {
    if cmd.is_empty() {
        return Err(ManagerError::InvalidArgument("cmd is required".into()));
    }
    for (i, a) in cmd.iter().enumerate() {
        no_nul(&format!("cmd[{i}]"), a)?;
    }
    Ok(())
}

/// A timeout in seconds from a request: negative means none (0), and
/// anything past a day is clamped so deadlines never overflow.
pub fn timeout_secs(v: i64) -> u64 {
    v.clamp(0, MAX_TIMEOUT_SECS) as u64
}

/// Why a handler cannot honour `recursive_read_only` (None: it can).
pub fn rro_unsupported(
    probe: &crius_oci_runtime::Probe,
    host: &crius_oci_runtime::HostFacts,
) -> Option<String> {
    if probe.status.recursive_read_only_mounts {
        return None;
    }
    Some(if let Some(why) = &probe.features_unknown {
        format!("its features are unknown ({why})")
    } else if !probe
        .mount_options
        .as_ref()
        .is_some_and(|m| m.iter().any(|o| o == "rro"))
    {
        "its `features` do not list the rro mount option".to_string()
    } else {
        format!(
            "the kernel ({}) is older than 5.12 (mount_setattr with AT_RECURSIVE)",
            host.kernel_release
        )
    })
}

/// Recursive read-only mounts (KEP-3857): valid only with `readonly` and
/// private propagation, and only where the handler can make every submount
/// read-only — never silently downgraded to a plain read-only bind.
pub fn check_recursive_read_only(
    mounts: &[crius_cri_api::v1::Mount],
    handler: &str,
    unsupported: Option<&str>,
) -> Result<(), ManagerError> {
    for (i, m) in mounts.iter().enumerate() {
        if !m.recursive_read_only {
            continue;
        }
        let at = format!("mounts[{i}] (container_path {:?})", m.container_path);
        if !m.readonly {
            return Err(ManagerError::InvalidArgument(format!(
                "{at}: recursive_read_only requires readonly"
            )));
        }
        if m.propagation != MountPropagation::PropagationPrivate as i32 {
            return Err(ManagerError::InvalidArgument(format!(
                "{at}: recursive_read_only requires PROPAGATION_PRIVATE"
            )));
        }
        if let Some(why) = unsupported {
            return Err(ManagerError::FailedPrecondition(format!(
                "{at}: recursive_read_only requested, but runtime handler {handler:?} cannot honour it: {why}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let long = "a".repeat(MAX_NAME);
        let too_long = "a".repeat(MAX_NAME + 1);
        for (v, ok) in [
            ("web", true),
            (
                "podsandbox-for-create-container-d5a1b3c0-8f2e-4f7b-9a6c-0123456789ab",
                true,
            ),
            ("a.b", true),
            (long.as_str(), true),
            ("", false),
            (too_long.as_str(), false),
            ("..", false),
            (".", false),
            ("a..b", false),
            ("../../../../x/y", false),
            ("x/y", false),
            ("/abs", false),
            ("a\0b", false),
        ] {
            assert_eq!(name("config.metadata.name", v).is_ok(), ok, "{v:?}");
        }
        let e = name("config.metadata.name", "../x")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config.metadata.name \"../x\""), "{e}");
        // Errors quote a hostile value short.
        let e = name("f", &format!("{}/", "x".repeat(5000)))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn uids() {
        assert!(uid("u", "0e2a4c5e-1d2b-4c3a-8f9e-0123456789ab").is_ok());
        assert!(uid("u", "").is_err());
        assert!(uid("u", "a\0").is_err());
        assert!(uid("u", &"a".repeat(300)).is_err());
    }

    #[test]
    fn hostnames() {
        let max = "h".repeat(MAX_HOSTNAME);
        let over = "h".repeat(MAX_HOSTNAME + 1);
        for (v, ok) in [
            ("", true),
            ("web-0", true),
            (max.as_str(), true),
            (over.as_str(), false),
            ("a/b", false),
            ("a b", false),
            ("a\nb", false),
            ("a\0b", false),
        ] {
            assert_eq!(hostname("config.hostname", v).is_ok(), ok, "{v:?}");
        }
    }

    #[test]
    fn container_configs() {
        use crius_cri_api::v1::{Device, KeyValue, Mount};
        let ok = ContainerConfig {
            command: vec!["sh".into()],
            envs: vec![KeyValue {
                key: "A".into(),
                value: b"b=c".to_vec(),
            }],
            working_dir: "/w".into(),
            mounts: vec![Mount {
                container_path: "/m".into(),
                host_path: "/tmp".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(container_config(&ok).is_ok());
        type F = fn(&mut ContainerConfig);
        let cases: &[(F, &str)] = &[
            (|c| c.command.push("a\0".into()), "config.command[1]"),
            (|c| c.args = vec!["x".into(), "\0".into()], "config.args[1]"),
            (|c| c.envs[0].key = "A=B".into(), "config.envs[0].key"),
            (|c| c.envs[0].key = String::new(), "config.envs[0].key"),
            (|c| c.envs[0].value = b"\0".to_vec(), "config.envs[0].value"),
            (|c| c.working_dir = "rel".into(), "config.working_dir"),
            (|c| c.log_path = "a\0".into(), "config.log_path"),
            (
                |c| c.mounts[0].container_path = "rel".into(),
                "config.mounts[0].container_path",
            ),
            (
                |c| c.mounts[0].container_path = String::new(),
                "config.mounts[0].container_path",
            ),
            (
                |c| c.mounts[0].host_path = "/a\0".into(),
                "config.mounts[0].host_path",
            ),
            (
                |c| {
                    c.devices = vec![Device {
                        container_path: "dev/x".into(),
                        ..Default::default()
                    }]
                },
                "config.devices[0].container_path",
            ),
            (
                |c| {
                    c.labels.insert("k".into(), "\0".into());
                },
                "config.labels",
            ),
            (
                |c| {
                    c.annotations.insert("\0".into(), "v".into());
                },
                "config.annotations",
            ),
        ];
        for (f, field) in cases {
            let mut c = ok.clone();
            f(&mut c);
            let e = container_config(&c).unwrap_err().to_string();
            assert!(e.starts_with(field), "{field}: {e}");
        }
        assert!(exec_cmd(&[]).is_err());
        assert!(exec_cmd(&["a".into(), "b\0".into()])
            .unwrap_err()
            .to_string()
            .starts_with("cmd[1]"));
    }

    #[test]
    fn timeouts_are_clamped() {
        for (v, want) in [
            (-5, 0),
            (0, 0),
            (30, 30),
            (MAX_TIMEOUT_SECS, MAX_TIMEOUT_SECS as u64),
            (MAX_TIMEOUT_SECS + 1, MAX_TIMEOUT_SECS as u64),
            (i64::MAX, MAX_TIMEOUT_SECS as u64),
            (i64::MIN, 0),
        ] {
            assert_eq!(timeout_secs(v), want, "{v}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever a name holds, one that passes is a single path
        /// component that cannot climb: joined under a directory, it stays
        /// directly under it.
        #[test]
        fn accepted_names_stay_one_component(s in "\\PC{0,300}") {
            if name("f", &s).is_ok() {
                let joined = std::path::Path::new("/logs").join(format!("{s}_0.log"));
                prop_assert_eq!(joined.parent(), Some(std::path::Path::new("/logs")));
                prop_assert!(!s.contains(".."));
            }
        }

        #[test]
        fn hostnames_and_timeouts_never_panic(s in "\\PC{0,100}", t in any::<i64>()) {
            let _ = hostname("h", &s);
            let _ = uid("u", &s);
            prop_assert!(timeout_secs(t) <= MAX_TIMEOUT_SECS as u64);
        }

        /// A container config that passes holds no NUL anywhere execve,
        /// the environment or a path would see it.
        #[test]
        fn accepted_configs_hold_no_nul(
            args in prop::collection::vec("\\PC{0,8}|\\x00", 0..4),
            key in "\\PC{0,6}|=|\\x00",
            wd in "\\PC{0,10}",
        ) {
            let c = ContainerConfig {
                command: args.clone(),
                envs: vec![crius_cri_api::v1::KeyValue { key: key.clone(), value: b"v".to_vec() }],
                working_dir: wd.clone(),
                ..Default::default()
            };
            if container_config(&c).is_ok() {
                prop_assert!(args.iter().all(|a| !a.contains('\0')));
                prop_assert!(!key.is_empty() && !key.contains('=') && !key.contains('\0'));
                prop_assert!(wd.is_empty() || (wd.starts_with('/') && !wd.contains('\0')));
            }
        }
    }

    #[test]
    fn recursive_read_only_table() {
        use crius_cri_api::v1::Mount;
        let m = |ro: bool, rro: bool, prop: MountPropagation| Mount {
            container_path: "/data".into(),
            host_path: "/srv".into(),
            readonly: ro,
            recursive_read_only: rro,
            propagation: prop as i32,
            ..Default::default()
        };
        let private = MountPropagation::PropagationPrivate;
        let cases = [
            (m(true, false, private), None, Ok(())),
            (m(false, false, private), Some("x"), Ok(())),
            (m(true, true, private), None, Ok(())),
            (m(false, true, private), None, Err("requires readonly")),
            (
                m(true, true, MountPropagation::PropagationHostToContainer),
                None,
                Err("requires PROPAGATION_PRIVATE"),
            ),
            (
                m(true, true, private),
                Some("no rro"),
                Err("runtime handler \"crun\" cannot honour it: no rro"),
            ),
        ];
        for (i, (mount, why, want)) in cases.into_iter().enumerate() {
            let got = check_recursive_read_only(&[mount], "crun", why);
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(w)) => {
                    assert!(e.to_string().contains(w), "case {i}: {e}");
                    assert!(
                        e.to_string().contains("\"/data\""),
                        "case {i}: names the path: {e}"
                    );
                }
                (g, w) => panic!("case {i}: {g:?} vs {w:?}"),
            }
        }
    }
}
