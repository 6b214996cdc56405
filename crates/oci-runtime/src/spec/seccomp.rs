//! The seccomp profile: RuntimeDefault (moby's default profile, shipped as
//! data in `seccomp/default.json`), Unconfined, or a Localhost profile whose
//! JSON the caller read, in the OCI or the docker/containers format.
//!
//! RuntimeDefault is the ecosystem's profile rather than a list of our own
//! so that it carries what a hand-written allow-list misses: argument
//! filters (`clone` only without namespace flags, `personality` only for the
//! usual personas, `socket` without AF_ALG/AF_VSOCK) and rules that depend
//! on the container's capabilities (`clone`, `unshare`, `mount`, ... with
//! `CAP_SYS_ADMIN`). [`profile::convert`] turns it into the OCI section of
//! one container.

pub mod profile;

use super::SpecError;
use crius_cri_api::v1::{security_profile::ProfileType, SecurityProfile};
use oci_spec::runtime::LinuxSeccomp;
use std::sync::OnceLock;

pub use profile::{native_arch, Target};

/// moby's default seccomp profile, verbatim (see `seccomp/README.md`).
pub const DEFAULT_PROFILE: &str = include_str!("seccomp/default.json");
/// Where [`DEFAULT_PROFILE`] comes from: repository, path and commit.
pub const DEFAULT_PROFILE_SOURCE: &str =
    "https://github.com/moby/profiles/blob/cd3bed8061c7b7378b61fc6827c7885779417a75/seccomp/default.json";
/// The sha256 of the file at [`DEFAULT_PROFILE_SOURCE`]; a test checks the
/// embedded copy against it, so the data cannot change without the
/// recorded source changing too.
pub const DEFAULT_PROFILE_SHA256: &str =
    "536529b665dd0972c37bfb569f5d4ac8a53592e7b00752bc39ff063ca9864c74";

/// An error in the embedded profile: a bug (the unit tests convert it),
/// but one that fails the container rather than the daemon.
fn builtin(e: impl std::fmt::Display) -> SpecError {
    SpecError::invalid(FIELD, format!("the built-in RuntimeDefault profile: {e}"))
}

/// The embedded default profile, parsed once (every container create uses
/// it).
fn default_profile() -> Result<&'static profile::Profile, SpecError> {
    static PARSED: OnceLock<Result<profile::Profile, String>> = OnceLock::new();
    PARSED
        .get_or_init(|| profile::parse(DEFAULT_PROFILE).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(builtin)
}

/// The RuntimeDefault profile of a container on `target` (its
/// capabilities decide the capability-conditional rules).
pub fn runtime_default(target: &Target) -> Result<LinuxSeccomp, SpecError> {
    profile::convert(default_profile()?, target).map_err(builtin)
}

const FIELD: &str = "linux.security_context.seccomp";

/// The seccomp section for the container's `seccomp` profile, for a
/// container on `target`.
///
/// - privileged → none.
/// - unset (no `SecurityProfile`) → none (Unconfined), matching CRI-O;
///   kubelet ≥ 1.27 sends RuntimeDefault explicitly when the pod asks for it.
/// - RuntimeDefault → [`runtime_default`].
/// - Unconfined → none.
/// - Localhost → `localhost`, the profile JSON the caller read from
///   `localhost_ref`, in the OCI form or the docker/containers form (what
///   kubelet users write, often a copy of a default profile), converted for
///   `target` like RuntimeDefault.
pub fn seccomp(
    profile: Option<&SecurityProfile>,
    privileged: bool,
    localhost: Option<&str>,
    target: &Target,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    let Some(profile) = profile else {
        return Ok(None);
    };
    if privileged {
        return Ok(None);
    }
    let kind = ProfileType::try_from(profile.profile_type).map_err(|_| {
        SpecError::invalid(
            format!("{FIELD}.profile_type"),
            format!("unknown profile type {}", profile.profile_type),
        )
    })?;
    match kind {
        ProfileType::Unconfined => Ok(None),
        ProfileType::RuntimeDefault => runtime_default(target).map(Some),
        ProfileType::Localhost => {
            let field = format!("{FIELD}.localhost_ref");
            if profile.localhost_ref.is_empty() {
                return Err(SpecError::invalid(field, "must not be empty"));
            }
            let text = localhost.ok_or_else(|| {
                SpecError::invalid(&field, "the profile's content was not provided")
            })?;
            let invalid = |e: &dyn std::fmt::Display| {
                SpecError::invalid(
                    &field,
                    format!("invalid seccomp profile {:?}: {e}", profile.localhost_ref),
                )
            };
            let parsed = profile::parse(text).map_err(|e| invalid(&e))?;
            profile::convert(&parsed, target)
                .map(Some)
                .map_err(|e| invalid(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::caps::DEFAULT_CAPABILITIES;
    use super::*;
    use oci_spec::runtime::{LinuxSeccompAction as A, LinuxSeccompOperator as Op};
    use std::collections::BTreeSet;

    const EPERM: u32 = 1;
    const ENOSYS: u32 = 38;
    // Namespace flags of clone(2); CLONE_NEWUSER is what the issue is about.
    const CLONE_NEWNS: u64 = 0x0002_0000;
    const CLONE_NEWCGROUP: u64 = 0x0200_0000;
    const CLONE_NEWUTS: u64 = 0x0400_0000;
    const CLONE_NEWIPC: u64 = 0x0800_0000;
    const CLONE_NEWUSER: u64 = 0x1000_0000;
    const CLONE_NEWPID: u64 = 0x2000_0000;
    const CLONE_NEWNET: u64 = 0x4000_0000;
    const SIGCHLD: u64 = 17;
    /// What glibc's pthread_create passes.
    const THREAD_FLAGS: u64 = 0x003d_0f00;

    fn profile(t: ProfileType, r: &str) -> SecurityProfile {
        let mut p = SecurityProfile {
            localhost_ref: r.into(),
            ..Default::default()
        };
        p.set_profile_type(t);
        p
    }

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|c| c.to_string()).collect()
    }

    fn default_caps() -> BTreeSet<String> {
        set(DEFAULT_CAPABILITIES)
    }

    fn target<'a>(arch: &'a str, caps: &'a BTreeSet<String>) -> Target<'a> {
        Target {
            arch,
            kernel: Some((6, 1)),
            caps,
        }
    }

    /// What `p` does with syscall `name` called with `args` (missing ones
    /// are 0), as the filter libseccomp builds from it would: the action of
    /// the rules naming it whose comparisons all hold, else the default.
    /// The matching rules must agree, so their order cannot matter.
    fn verdict(p: &LinuxSeccomp, name: &str, args: &[u64]) -> Verdict {
        let arg = |i: usize| args.get(i).copied().unwrap_or(0);
        let holds = |a: &oci_spec::runtime::LinuxSeccompArg| {
            let (x, v) = (arg(a.index()), a.value());
            match a.op() {
                Op::ScmpCmpNe => x != v,
                Op::ScmpCmpLt => x < v,
                Op::ScmpCmpLe => x <= v,
                Op::ScmpCmpEq => x == v,
                Op::ScmpCmpGe => x >= v,
                Op::ScmpCmpGt => x > v,
                Op::ScmpCmpMaskedEq => x & v == a.value_two().unwrap_or(0),
            }
        };
        let mut matching: Vec<Verdict> = Vec::new();
        for s in p.syscalls().iter().flatten() {
            let v = (s.action(), s.errno_ret());
            let hit = s.names().iter().any(|n| n == name) && s.args().iter().flatten().all(holds);
            if hit && !matching.contains(&v) {
                matching.push(v);
            }
        }
        assert!(
            matching.len() <= 1,
            "{name}{args:?}: rules disagree: {matching:?}"
        );
        matching
            .first()
            .copied()
            .unwrap_or((p.default_action(), p.default_errno_ret()))
    }

    /// An action and its errno.
    type Verdict = (A, Option<u32>);
    const ALLOW: Verdict = (A::ScmpActAllow, None);
    const DENY: Verdict = (A::ScmpActErrno, Some(EPERM));
    const NOSYS: Verdict = (A::ScmpActErrno, Some(ENOSYS));

    #[test]
    fn default_profile_is_upstreams() {
        // Fails when default.json is edited (or replaced by a newer upstream
        // copy) without recording where the new content comes from.
        let got = crius_test_support::image::sha256_digest(DEFAULT_PROFILE.as_bytes());
        assert_eq!(
            got.trim_start_matches("sha256:"),
            DEFAULT_PROFILE_SHA256,
            "seccomp/default.json is not the file of {DEFAULT_PROFILE_SOURCE}"
        );
        let readme = include_str!("seccomp/README.md");
        let commit = DEFAULT_PROFILE_SOURCE
            .split('/')
            .nth(6)
            .expect("a commit in the source URL");
        assert_eq!(commit.len(), 40, "{DEFAULT_PROFILE_SOURCE}");
        for recorded in [DEFAULT_PROFILE_SHA256, commit] {
            assert!(readme.contains(recorded), "README.md lacks {recorded}");
        }
        assert!(DEFAULT_PROFILE_SOURCE.starts_with("https://github.com/moby/profiles/"));
    }

    #[test]
    fn runtime_default_denies_user_namespaces() {
        let caps = default_caps();
        let p = runtime_default(&target("amd64", &caps)).unwrap();
        // (syscall, arguments, verdict)
        let cases: &[(&str, &[u64], Verdict)] = &[
            // fork and threads, but no namespace of any kind.
            ("clone", &[SIGCHLD], ALLOW),
            ("clone", &[THREAD_FLAGS], ALLOW),
            ("clone", &[CLONE_NEWUSER | SIGCHLD], DENY),
            ("clone", &[CLONE_NEWUSER], DENY),
            ("clone", &[CLONE_NEWNS], DENY),
            ("clone", &[CLONE_NEWCGROUP], DENY),
            ("clone", &[CLONE_NEWUTS], DENY),
            ("clone", &[CLONE_NEWIPC], DENY),
            ("clone", &[CLONE_NEWPID], DENY),
            ("clone", &[CLONE_NEWNET], DENY),
            // Its flags are behind a pointer seccomp cannot read: ENOSYS so
            // that libcs fall back to clone, whose flags it can.
            ("clone3", &[], NOSYS),
            ("unshare", &[CLONE_NEWUSER], DENY),
            ("unshare", &[0], DENY),
            ("setns", &[], DENY),
            ("mount", &[], DENY),
            // The usual personas only: PER_LINUX, PER_LINUX32, UNAME26 and
            // both, and the query 0xffffffff.
            ("personality", &[0], ALLOW),
            ("personality", &[8], ALLOW),
            ("personality", &[0x2_0000], ALLOW),
            ("personality", &[0x2_0008], ALLOW),
            ("personality", &[0xffff_ffff], ALLOW),
            ("personality", &[0x004_0000], DENY), // ADDR_NO_RANDOMIZE
            ("personality", &[0x040_0000], DENY), // READ_IMPLIES_EXEC
            // moby dropped io_uring from its profile (2023): denied.
            ("io_uring_setup", &[], DENY),
            ("io_uring_enter", &[], DENY),
            ("io_uring_register", &[], DENY),
            // AF_ALG (38) and AF_VSOCK (40) sockets are not allowed.
            ("socket", &[2], ALLOW),
            ("socket", &[1], ALLOW),
            ("socket", &[38], DENY),
            ("socket", &[39], ALLOW),
            ("socket", &[40], DENY),
            ("socket", &[41], ALLOW),
            // The everyday ones.
            ("read", &[], ALLOW),
            ("execve", &[], ALLOW),
            ("openat", &[], ALLOW),
            ("arch_prctl", &[], ALLOW),
            ("set_tls", &[], DENY), // arm only
            // Need capabilities a default container lacks.
            ("chroot", &[], DENY),
            ("settimeofday", &[], DENY),
            ("clock_settime", &[], DENY),
            ("kcmp", &[], DENY),
            ("pidfd_getfd", &[], DENY),
            ("open_by_handle_at", &[], DENY),
            ("bpf", &[], DENY),
            ("perf_event_open", &[], DENY),
            ("syslog", &[], DENY),
            ("vhangup", &[], DENY),
            ("iopl", &[], DENY),
            // Never, short of CAP_SYS_ADMIN.
            ("keyctl", &[], DENY),
            ("add_key", &[], DENY),
            ("request_key", &[], DENY),
            ("umount2", &[], DENY),
            ("pivot_root", &[], DENY),
            ("fsopen", &[], DENY),
            ("fsmount", &[], DENY),
            ("move_mount", &[], DENY),
            ("open_tree", &[], DENY),
            ("mount_setattr", &[], DENY),
            ("sethostname", &[], DENY),
            ("setdomainname", &[], DENY),
            ("userfaultfd", &[], DENY),
            ("kexec_load", &[], DENY),
            ("init_module", &[], DENY),
            ("reboot", &[], DENY),
            ("swapon", &[], DENY),
            ("quotactl", &[], DENY),
            ("lookup_dcookie", &[], DENY),
        ];
        for (name, args, want) in cases {
            assert_eq!(verdict(&p, name, args), *want, "{name}{args:x?}");
        }
        // No rule allows clone without looking at its flags.
        for s in p.syscalls().iter().flatten() {
            if s.names().iter().any(|n| n == "clone" || n == "unshare") {
                assert!(s.args().is_some(), "unfiltered {:?}", s.names());
            }
        }
    }

    #[test]
    fn capabilities_open_their_rules() {
        // (capability added to the defaults, syscall, arguments, verdict)
        let cases: &[(&str, &str, &[u64], Verdict)] = &[
            ("CAP_SYS_ADMIN", "clone", &[CLONE_NEWUSER | SIGCHLD], ALLOW),
            ("CAP_SYS_ADMIN", "clone3", &[], ALLOW),
            ("CAP_SYS_ADMIN", "unshare", &[CLONE_NEWUSER], ALLOW),
            ("CAP_SYS_ADMIN", "mount", &[], ALLOW),
            ("CAP_SYS_ADMIN", "setns", &[], ALLOW),
            ("CAP_SYS_CHROOT", "chroot", &[], ALLOW),
            ("CAP_SYS_CHROOT", "unshare", &[], DENY),
            ("CAP_SYS_TIME", "settimeofday", &[], ALLOW),
            ("CAP_SYS_PTRACE", "kcmp", &[], ALLOW),
            ("CAP_SYS_PTRACE", "clone", &[CLONE_NEWUSER], DENY),
            ("CAP_DAC_READ_SEARCH", "open_by_handle_at", &[], ALLOW),
            ("CAP_BPF", "bpf", &[], ALLOW),
            ("CAP_PERFMON", "perf_event_open", &[], ALLOW),
            ("CAP_SYSLOG", "syslog", &[], ALLOW),
            ("CAP_SYS_MODULE", "finit_module", &[], ALLOW),
            ("CAP_SYS_BOOT", "reboot", &[], ALLOW),
            ("CAP_NET_ADMIN", "clone", &[CLONE_NEWNET], DENY),
        ];
        for (cap, name, args, want) in cases {
            let mut caps = default_caps();
            caps.insert(cap.to_string());
            let p = runtime_default(&target("amd64", &caps)).unwrap();
            assert_eq!(verdict(&p, name, args), *want, "{cap}: {name}{args:x?}");
        }
        // Dropping every capability keeps the profile's core.
        let none = BTreeSet::new();
        let p = runtime_default(&target("amd64", &none)).unwrap();
        assert_eq!(verdict(&p, "read", &[]), ALLOW);
        assert_eq!(verdict(&p, "clone", &[CLONE_NEWUSER]), DENY);
    }

    #[test]
    fn runtime_default_architectures_and_kernel() {
        let caps = default_caps();
        let v = |arch: &str, kernel| {
            let t = Target {
                arch,
                kernel,
                caps: &caps,
            };
            runtime_default(&t).unwrap()
        };
        let amd64 = serde_json::to_value(v("amd64", Some((6, 1)))).unwrap();
        assert_eq!(amd64["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(amd64["defaultErrnoRet"], 1);
        assert_eq!(
            amd64["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        let arm64 = v("arm64", Some((6, 1)));
        assert_eq!(
            serde_json::to_value(&arm64).unwrap()["architectures"],
            serde_json::json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
        );
        assert_eq!(verdict(&arm64, "set_tls", &[]), ALLOW);
        assert_eq!(verdict(&arm64, "arch_prctl", &[]), DENY);
        assert_eq!(verdict(&arm64, "clone", &[CLONE_NEWUSER]), DENY);
        // s390x passes clone's flags second; its own rule applies there.
        let s390x = v("s390x", Some((6, 1)));
        assert_eq!(verdict(&s390x, "clone", &[0, SIGCHLD]), ALLOW);
        assert_eq!(verdict(&s390x, "clone", &[0, CLONE_NEWUSER]), DENY);
        // ptrace is allowed only where seccomp cannot be bypassed with it
        // (4.8 and later); an unknown kernel counts as old.
        for (kernel, want) in [
            (Some((6, 1)), ALLOW),
            (Some((4, 8)), ALLOW),
            (Some((4, 4)), DENY),
            (None, DENY),
        ] {
            assert_eq!(
                verdict(&v("amd64", kernel), "ptrace", &[]),
                want,
                "{kernel:?}"
            );
        }
    }

    #[test]
    fn profile_selection() {
        let local = r#"{"defaultAction":"SCMP_ACT_LOG","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ALLOW"}]}"#;
        // (profile, privileged, localhost content, expected default action)
        type Case<'a> = (Option<SecurityProfile>, bool, Option<&'a str>, Option<A>);
        let cases: Vec<Case> = vec![
            (None, false, None, None),
            (
                Some(profile(ProfileType::Unconfined, "")),
                false,
                None,
                None,
            ),
            (
                Some(profile(ProfileType::RuntimeDefault, "")),
                false,
                None,
                Some(A::ScmpActErrno),
            ),
            (
                Some(profile(ProfileType::RuntimeDefault, "")),
                true,
                None,
                None,
            ),
            (
                Some(profile(ProfileType::Localhost, "p.json")),
                false,
                Some(local),
                Some(A::ScmpActLog),
            ),
            (
                Some(profile(ProfileType::Localhost, "p.json")),
                true,
                Some(local),
                None,
            ),
        ];
        let caps = default_caps();
        for (i, (p, privileged, content, want)) in cases.into_iter().enumerate() {
            let got = seccomp(p.as_ref(), privileged, content, &target("amd64", &caps)).unwrap();
            assert_eq!(got.map(|s| s.default_action()), want, "case {i}");
        }
    }

    #[test]
    fn localhost_profiles_of_both_forms() {
        let caps = default_caps();
        let t = target("amd64", &caps);
        let local = |text: &str| {
            seccomp(
                Some(&profile(ProfileType::Localhost, "/p.json")),
                false,
                Some(text),
                &t,
            )
            .unwrap()
            .unwrap()
        };
        // A copy of the docker default (what kubelet users start from) is
        // converted like RuntimeDefault.
        assert_eq!(local(DEFAULT_PROFILE), runtime_default(&t).unwrap());
        // The OCI form as given.
        let oci = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"architectures":["SCMP_ARCH_X86_64"],
                      "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"}]}"#;
        assert_eq!(
            local(oci),
            serde_json::from_str::<LinuxSeccomp>(oci).unwrap()
        );
        // The docker form with a capability rule and `name`.
        let docker = r#"{"defaultAction":"SCMP_ACT_ERRNO","archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]}],
                         "syscalls":[{"name":"read","action":"SCMP_ACT_ALLOW"},
                                     {"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}},
                                     {"names":["chown"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_CHOWN"]}}]}"#;
        let got = serde_json::to_value(local(docker)).unwrap();
        assert_eq!(
            got,
            serde_json::json!({
                "defaultAction": "SCMP_ACT_ERRNO",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
                "syscalls": [
                    {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                    {"names": ["chown"], "action": "SCMP_ACT_ALLOW"},
                ]
            })
        );
    }

    #[test]
    fn localhost_errors_name_the_field() {
        let cases = [
            (profile(ProfileType::Localhost, "p.json"), Some("{not json"), "linux.security_context.seccomp.localhost_ref: invalid seccomp profile \"p.json\""),
            (profile(ProfileType::Localhost, "p.json"), None, "linux.security_context.seccomp.localhost_ref: the profile's content was not provided"),
            (profile(ProfileType::Localhost, ""), Some("{}"), "linux.security_context.seccomp.localhost_ref: must not be empty"),
            (
                profile(ProfileType::Localhost, "p.json"),
                Some(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"name":"read","names":["write"],"action":"SCMP_ACT_ALLOW"}]}"#),
                "linux.security_context.seccomp.localhost_ref: invalid seccomp profile \"p.json\": syscalls[0]: has both name and names",
            ),
        ];
        let caps = default_caps();
        let t = target("amd64", &caps);
        for (p, content, want) in cases {
            let err = seccomp(Some(&p), false, content, &t).unwrap_err();
            assert!(err.to_string().starts_with(want), "{err}");
        }
        let bad = SecurityProfile {
            profile_type: 9,
            ..Default::default()
        };
        let err = seccomp(Some(&bad), false, None, &t).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("linux.security_context.seccomp.profile_type:"));
    }
}
