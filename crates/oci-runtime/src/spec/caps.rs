//! The process capability sets.

use super::SpecError;
use crius_cri_api::v1::Capability as CriCapability;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxCapabilitiesBuilder};
use std::collections::BTreeSet;
use std::str::FromStr;

/// CRI-O's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_KILL",
];

const FIELD: &str = "linux.security_context.capabilities";

/// The computed capability sets, names in canonical "CAP_X" form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapabilityPlan {
    /// Bounding = effective = permitted.
    pub set: BTreeSet<String>,
    pub ambient: BTreeSet<String>,
    /// Requested (or default) capabilities left out because the daemon's
    /// bounding set lacks them; the caller logs them.
    pub dropped: BTreeSet<String>,
}

/// Canonicalises "net_admin" / "CAP_NET_ADMIN" to "CAP_NET_ADMIN"; `None`
/// for names oci-spec does not know.
pub fn canonical(name: &str) -> Option<String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(bare).ok()?;
    Some(format!("CAP_{bare}"))
}

fn canonical_list(field: &str, names: &[String]) -> Result<(bool, Vec<String>), SpecError> {
    let mut all = false;
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        if n.trim().eq_ignore_ascii_case("ALL") {
            all = true;
            continue;
        }
        out.push(canonical(n).ok_or_else(|| SpecError::UnknownCapability {
            field: format!("{FIELD}.{field}[{i}]"),
            name: n.clone(),
        })?);
    }
    Ok((all, out))
}

/// Computes the capability sets: CRI-O's defaults, minus `drop_capabilities`
/// ("ALL" = start empty), plus `add_capabilities` ("ALL" = the whole
/// bounding set) and the ambient ones; `privileged` = the whole bounding
/// set. Everything is then limited to `bounding` (the daemon's own bounding
/// set); what that removes is reported in `dropped`.
pub fn capabilities(
    cri: Option<&CriCapability>,
    privileged: bool,
    bounding: &[String],
) -> Result<CapabilityPlan, SpecError> {
    let bounding: BTreeSet<String> = bounding.iter().filter_map(|c| canonical(c)).collect();
    let empty = CriCapability::default();
    let cri = cri.unwrap_or(&empty);
    let (add_all, add) = canonical_list("add_capabilities", &cri.add_capabilities)?;
    let (drop_all, drop) = canonical_list("drop_capabilities", &cri.drop_capabilities)?;
    let (_, ambient) = canonical_list("add_ambient_capabilities", &cri.add_ambient_capabilities)?;

    let mut set: BTreeSet<String> = if privileged || add_all {
        bounding.clone()
    } else if drop_all {
        BTreeSet::new()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    };
    if !privileged {
        for d in &drop {
            set.remove(d);
        }
    }
    set.extend(add);
    set.extend(ambient.iter().cloned());

    let dropped: BTreeSet<String> = set.difference(&bounding).cloned().collect();
    set.retain(|c| bounding.contains(c));
    let ambient = ambient.into_iter().filter(|c| set.contains(c)).collect();
    Ok(CapabilityPlan {
        set,
        ambient,
        dropped,
    })
}

fn to_oci(names: &BTreeSet<String>) -> Capabilities {
    names
        .iter()
        .filter_map(|n| Capability::from_str(n.trim_start_matches("CAP_")).ok())
        .collect()
}

impl CapabilityPlan {
    /// The OCI `process.capabilities`: bounding = effective = permitted =
    /// the set, inheritable empty, ambient as computed.
    pub fn to_oci(&self) -> Result<LinuxCapabilities, SpecError> {
        let set = to_oci(&self.set);
        Ok(LinuxCapabilitiesBuilder::default()
            .bounding(set.clone())
            .effective(set.clone())
            .permitted(set)
            .inheritable(Capabilities::new())
            .ambient(to_oci(&self.ambient))
            .build()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }
    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// A typical daemon bounding set without CAP_SYS_RESOURCE.
    fn host() -> Vec<String> {
        let mut v = s(DEFAULT_CAPABILITIES);
        v.extend(s(&[
            "CAP_NET_ADMIN",
            "CAP_SYS_ADMIN",
            "CAP_NET_RAW",
            "CAP_SYS_TIME",
        ]));
        v.push("CAP_NOT_A_REAL_ONE".into()); // newer kernel: ignored
        v
    }

    #[test]
    fn canonical_names() {
        let cases = [
            ("NET_ADMIN", Some("CAP_NET_ADMIN")),
            ("cap_net_admin", Some("CAP_NET_ADMIN")),
            ("Cap_Chown", Some("CAP_CHOWN")),
            ("CAP_BOGUS", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(canonical(input).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn capability_sets() {
        let defaults: Vec<&str> = DEFAULT_CAPABILITIES.to_vec();
        let all_host: Vec<&str> = {
            let mut v = defaults.clone();
            v.extend([
                "CAP_NET_ADMIN",
                "CAP_SYS_ADMIN",
                "CAP_NET_RAW",
                "CAP_SYS_TIME",
            ]);
            v
        };
        struct Case {
            name: &'static str,
            add: &'static [&'static str],
            drop: &'static [&'static str],
            ambient: &'static [&'static str],
            privileged: bool,
            want: Vec<&'static str>,
            want_ambient: &'static [&'static str],
            want_dropped: &'static [&'static str],
        }
        let mut without_kill_chown = defaults.clone();
        without_kill_chown.retain(|c| *c != "CAP_KILL" && *c != "CAP_CHOWN");
        let mut defaults_plus_admin = defaults.clone();
        defaults_plus_admin.push("CAP_NET_ADMIN");
        let cases = vec![
            Case {
                name: "defaults",
                add: &[],
                drop: &[],
                ambient: &[],
                privileged: false,
                want: defaults.clone(),
                want_ambient: &[],
                want_dropped: &[],
            },
            Case {
                name: "add short lowercase",
                add: &["net_admin"],
                drop: &[],
                ambient: &[],
                privileged: false,
                want: defaults_plus_admin.clone(),
                want_ambient: &[],
                want_dropped: &[],
            },
            Case {
                name: "drop",
                add: &[],
                drop: &["KILL", "CAP_chown"],
                ambient: &[],
                privileged: false,
                want: without_kill_chown,
                want_ambient: &[],
                want_dropped: &[],
            },
            Case {
                name: "drop ALL then add",
                add: &["NET_RAW"],
                drop: &["ALL"],
                ambient: &[],
                privileged: false,
                want: vec!["CAP_NET_RAW"],
                want_ambient: &[],
                want_dropped: &[],
            },
            Case {
                name: "drop ALL",
                add: &[],
                drop: &["all"],
                ambient: &[],
                privileged: false,
                want: vec![],
                want_ambient: &[],
                want_dropped: &[],
            },
            Case {
                name: "add ALL",
                add: &["ALL"],
                drop: &[],
                ambient: &[],
                privileged: false,
                want: all_host.clone(),
                want_ambient: &[],
                want_dropped: &[],
            },
            Case {
                name: "add ALL drop one",
                add: &["ALL"],
                drop: &["SYS_ADMIN"],
                ambient: &[],
                privileged: false,
                want: all_host
                    .iter()
                    .copied()
                    .filter(|c| *c != "CAP_SYS_ADMIN")
                    .collect(),
                want_ambient: &[],
                want_dropped: &[],
            },
            Case {
                name: "privileged ignores drop",
                add: &[],
                drop: &["ALL", "KILL"],
                ambient: &[],
                privileged: true,
                want: all_host.clone(),
                want_ambient: &[],
                want_dropped: &[],
            },
            Case {
                name: "sys_resource missing from bounding",
                add: &["SYS_RESOURCE", "NET_ADMIN"],
                drop: &[],
                ambient: &[],
                privileged: false,
                want: defaults_plus_admin.clone(),
                want_ambient: &[],
                want_dropped: &["CAP_SYS_RESOURCE"],
            },
            Case {
                name: "ambient joins the set",
                add: &[],
                drop: &["ALL"],
                ambient: &["NET_BIND_SERVICE", "SYS_RESOURCE"],
                privileged: false,
                want: vec!["CAP_NET_BIND_SERVICE"],
                want_ambient: &["CAP_NET_BIND_SERVICE"],
                want_dropped: &["CAP_SYS_RESOURCE"],
            },
        ];
        for c in cases {
            let cri = CriCapability {
                add_capabilities: s(c.add),
                drop_capabilities: s(c.drop),
                add_ambient_capabilities: s(c.ambient),
            };
            let got = capabilities(Some(&cri), c.privileged, &host()).unwrap();
            assert_eq!(got.set, set(&c.want), "{}", c.name);
            assert_eq!(got.ambient, set(c.want_ambient), "{}", c.name);
            assert_eq!(got.dropped, set(c.want_dropped), "{}", c.name);
        }
    }

    #[test]
    fn defaults_missing_from_bounding_are_reported() {
        let got = capabilities(None, false, &s(&["CAP_CHOWN"])).unwrap();
        assert_eq!(got.set, set(&["CAP_CHOWN"]));
        assert_eq!(got.dropped.len(), DEFAULT_CAPABILITIES.len() - 1);
    }

    #[test]
    fn unknown_names_are_errors_naming_the_field() {
        let cases = [
            (CriCapability { add_capabilities: s(&["NET_ADMIN", "FLY"]), ..Default::default() }, "linux.security_context.capabilities.add_capabilities[1]: unknown capability \"FLY\""),
            (CriCapability { drop_capabilities: s(&["bogus"]), ..Default::default() }, "linux.security_context.capabilities.drop_capabilities[0]: unknown capability \"bogus\""),
            (CriCapability { add_ambient_capabilities: s(&["x"]), ..Default::default() }, "linux.security_context.capabilities.add_ambient_capabilities[0]: unknown capability \"x\""),
        ];
        for (cri, want) in cases {
            let err = capabilities(Some(&cri), false, &host()).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn oci_sets() {
        let plan = capabilities(None, false, &host()).unwrap();
        let oci = plan.to_oci().unwrap();
        assert_eq!(
            oci.bounding().as_ref().unwrap().len(),
            DEFAULT_CAPABILITIES.len()
        );
        assert_eq!(oci.effective(), oci.bounding());
        assert_eq!(oci.permitted(), oci.bounding());
        assert!(oci.inheritable().as_ref().unwrap().is_empty());
        assert!(oci.ambient().as_ref().unwrap().is_empty());
    }
}
