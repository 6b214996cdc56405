//! Linux security modules: the AppArmor profile of a container, and what
//! happens to SELinux labels.
//!
//! The rules are the honest ones: a profile is applied only when the kernel
//! can apply it, and a request the host cannot honour is refused rather than
//! silently dropped — except where dropping is what every CRI runtime does
//! and kubelet expects (RuntimeDefault on a host without AppArmor; SELinux
//! options on a host without SELinux, which mean nothing there).

use super::SpecError;
use crius_cri_api::v1::{security_profile::ProfileType, SeLinuxOption, SecurityProfile};

const APPARMOR_FIELD: &str = "linux.security_context.apparmor";
const SELINUX_FIELD: &str = "linux.security_context.selinux_options";

/// The profile RuntimeDefault maps to unless configured otherwise
/// (`contrib/apparmor/crius-default`).
pub const DEFAULT_APPARMOR_PROFILE: &str = "crius-default";

/// What the host's security modules can do, read once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LsmHost {
    /// AppArmor is enabled in the kernel.
    pub apparmor: bool,
    /// Names of the AppArmor profiles loaded in the kernel.
    pub apparmor_profiles: Vec<String>,
    /// The profile RuntimeDefault means.
    pub apparmor_default_profile: String,
    /// SELinux is enabled (enforcing or permissive).
    pub selinux: bool,
}

impl LsmHost {
    /// Reads the host's AppArmor and SELinux state from securityfs/selinuxfs.
    pub fn read(default_profile: &str) -> Self {
        let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .map(|s| s.trim() == "Y")
            .unwrap_or(false);
        let apparmor_profiles = if apparmor {
            std::fs::read_to_string("/sys/kernel/security/apparmor/profiles")
                .map(|s| parse_apparmor_profiles(&s))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        LsmHost {
            apparmor,
            apparmor_profiles,
            apparmor_default_profile: default_profile.to_string(),
            selinux: std::path::Path::new("/sys/fs/selinux/enforce").exists(),
        }
    }
}

/// Profile names from securityfs's `profiles` file (`name (mode)` lines).
pub fn parse_apparmor_profiles(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let name = match l.rfind(" (") {
                Some(i) if l.ends_with(')') => &l[..i],
                _ => l,
            };
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// What the CRI asked for, from the `apparmor` field or the deprecated
/// `apparmor_profile` string ("runtime/default", "unconfined",
/// "localhost/<name>").
#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    Unset,
    RuntimeDefault,
    Unconfined,
    Localhost(String),
}

fn request(profile: Option<&SecurityProfile>, deprecated: &str) -> Result<Request, SpecError> {
    if let Some(p) = profile {
        let kind = ProfileType::try_from(p.profile_type).map_err(|_| {
            SpecError::invalid(
                format!("{APPARMOR_FIELD}.profile_type"),
                format!("unknown profile type {}", p.profile_type),
            )
        })?;
        return Ok(match kind {
            ProfileType::RuntimeDefault => Request::RuntimeDefault,
            ProfileType::Unconfined => Request::Unconfined,
            ProfileType::Localhost => {
                let name = p.localhost_ref.trim();
                let name = name.strip_prefix("localhost/").unwrap_or(name);
                if name.is_empty() {
                    return Err(SpecError::invalid(
                        format!("{APPARMOR_FIELD}.localhost_ref"),
                        "must name a profile",
                    ));
                }
                Request::Localhost(name.to_string())
            }
        });
    }
    match deprecated.trim() {
        "" => Ok(Request::Unset),
        "runtime/default" => Ok(Request::RuntimeDefault),
        "unconfined" => Ok(Request::Unconfined),
        other => match other.strip_prefix("localhost/") {
            Some(name) if !name.is_empty() => Ok(Request::Localhost(name.to_string())),
            _ => Err(SpecError::invalid(
                "linux.security_context.apparmor_profile",
                format!("{other:?} is not runtime/default, unconfined or localhost/<profile>"),
            )),
        },
    }
}

/// The AppArmor profile for `process.apparmorProfile`, or None.
///
/// - No AppArmor in the kernel: unset, RuntimeDefault and Unconfined mean
///   no profile (there is nothing to confine with — containerd and CRI-O do
///   the same); a Localhost profile is refused, since the pod asked for a
///   specific confinement the host cannot give.
/// - AppArmor enabled: Unconfined → none; unset on a privileged container →
///   none; RuntimeDefault or unset → the default profile; Localhost → that
///   profile. A profile that is not loaded is refused (runc would fail the
///   create with a far less helpful message).
pub fn apparmor_profile(
    profile: Option<&SecurityProfile>,
    deprecated: &str,
    privileged: bool,
    host: &LsmHost,
) -> Result<Option<String>, SpecError> {
    let req = request(profile, deprecated)?;
    if !host.apparmor {
        return match req {
            Request::Localhost(name) => Err(SpecError::HostUnsupported {
                field: APPARMOR_FIELD.into(),
                reason: format!(
                    "AppArmor profile {name:?} requested, but AppArmor is not enabled in this host's kernel"
                ),
            }),
            _ => Ok(None),
        };
    }
    let name = match req {
        Request::Unconfined => return Ok(None),
        Request::Unset if privileged => return Ok(None),
        Request::Unset | Request::RuntimeDefault => host.apparmor_default_profile.clone(),
        Request::Localhost(name) => name,
    };
    if !host.apparmor_profiles.contains(&name) {
        return Err(SpecError::HostUnsupported {
            field: APPARMOR_FIELD.into(),
            reason: format!(
                "AppArmor profile {name:?} is not loaded (load it with apparmor_parser -r)"
            ),
        });
    }
    Ok(Some(name))
}

/// Checks the SELinux options. Returns true when options were given but are
/// meaningless here (SELinux disabled) so the caller can log that they were
/// ignored. On a host with SELinux enabled, labels are refused: crius does
/// not label processes or mounts, and pretending to would be worse.
pub fn check_selinux(opts: Option<&SeLinuxOption>, host: &LsmHost) -> Result<bool, SpecError> {
    let Some(o) = opts else { return Ok(false) };
    let given =
        !(o.user.is_empty() && o.role.is_empty() && o.r#type.is_empty() && o.level.is_empty());
    if !given {
        return Ok(false);
    }
    if host.selinux {
        return Err(SpecError::HostUnsupported {
            field: SELINUX_FIELD.into(),
            reason: "SELinux labels are not supported by crius on SELinux-enabled hosts".into(),
        });
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(t: ProfileType, r: &str) -> SecurityProfile {
        SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        }
    }

    fn host(enabled: bool) -> LsmHost {
        LsmHost {
            apparmor: enabled,
            apparmor_profiles: vec!["crius-default".into(), "custom".into()],
            apparmor_default_profile: DEFAULT_APPARMOR_PROFILE.into(),
            selinux: false,
        }
    }

    #[test]
    fn apparmor_table() {
        use ProfileType::*;
        let rd = sp(RuntimeDefault, "");
        let un = sp(Unconfined, "");
        let lc = sp(Localhost, "custom");
        let lc_prefixed = sp(Localhost, "localhost/custom");
        let missing = sp(Localhost, "nope");
        let empty = sp(Localhost, "");
        type Case<'a> = (
            Option<&'a SecurityProfile>,
            &'a str,
            bool,
            bool,
            Result<Option<&'a str>, &'a str>,
        );
        let cases: Vec<Case> = vec![
            // AppArmor disabled.
            (None, "", false, false, Ok(None)),
            (Some(&rd), "", false, false, Ok(None)),
            (Some(&un), "", false, false, Ok(None)),
            (Some(&lc), "", false, false, Err("not enabled")),
            (None, "localhost/custom", false, false, Err("not enabled")),
            (None, "runtime/default", false, false, Ok(None)),
            // AppArmor enabled.
            (None, "", false, true, Ok(Some("crius-default"))),
            (None, "", true, true, Ok(None)),
            (Some(&rd), "", true, true, Ok(Some("crius-default"))),
            (Some(&un), "", false, true, Ok(None)),
            (Some(&lc), "", false, true, Ok(Some("custom"))),
            (Some(&lc_prefixed), "", false, true, Ok(Some("custom"))),
            (
                Some(&missing),
                "",
                false,
                true,
                Err("\"nope\" is not loaded"),
            ),
            (None, "localhost/custom", false, true, Ok(Some("custom"))),
            (None, "unconfined", false, true, Ok(None)),
            (None, "bogus", false, true, Err("apparmor_profile")),
            (Some(&empty), "", false, true, Err("must name a profile")),
        ];
        for (i, (p, dep, privileged, enabled, want)) in cases.into_iter().enumerate() {
            let got = apparmor_profile(p, dep, privileged, &host(enabled));
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g.as_deref(), w, "case {i}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "case {i}: {e}"),
                (g, w) => panic!("case {i}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn default_profile_must_be_loaded() {
        let mut h = host(true);
        h.apparmor_profiles.clear();
        let e = apparmor_profile(None, "", false, &h).unwrap_err();
        assert!(e.to_string().contains("crius-default"), "{e}");
    }

    #[test]
    fn profiles_file() {
        let text = "crius-default (enforce)\n/usr/bin/man (enforce)\nlsb_release (complain)\n\n";
        assert_eq!(
            parse_apparmor_profiles(text),
            vec!["crius-default", "/usr/bin/man", "lsb_release"]
        );
    }

    #[test]
    fn selinux_table() {
        let opts = SeLinuxOption {
            level: "s0:c1,c2".into(),
            ..Default::default()
        };
        let mut h = host(false);
        assert!(!check_selinux(None, &h).unwrap());
        assert!(!check_selinux(Some(&SeLinuxOption::default()), &h).unwrap());
        assert!(check_selinux(Some(&opts), &h).unwrap());
        h.selinux = true;
        assert!(!check_selinux(Some(&SeLinuxOption::default()), &h).unwrap());
        let e = check_selinux(Some(&opts), &h).unwrap_err();
        assert!(e.to_string().starts_with(SELINUX_FIELD), "{e}");
    }
}
