//! Seccomp profiles in the docker/containers JSON format, and their
//! conversion to the OCI `linux.seccomp` of one container.
//!
//! That format is what the ecosystem ships (moby's and containers/common's
//! default profiles) and what kubelet users write for Localhost profiles.
//! It is the OCI `LinuxSeccomp` plus rules that depend on where the
//! container runs: `archMap` (the architectures to filter, by host
//! architecture) and, per syscall rule, `includes` / `excludes` conditions on
//! the container's capabilities, the host architecture and the running
//! kernel, and `name` as well as `names`. Every OCI profile is also a valid
//! profile of this format (same field names, no conditions), so Localhost
//! profiles of either form go through [`parse`] and [`convert`].
//!
//! Everything here is pure: the caller passes the host architecture, the
//! kernel version and the container's capabilities in a [`Target`].

use super::super::caps;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// A profile as written: the OCI fields plus the docker/containers ones.
/// Unknown fields (`comment`, containers/common's `defaultErrno` names
/// alongside numbers, ...) are ignored, as the Go loaders ignore them.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: LinuxSeccompAction,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    /// containers/common's errno name for the default action; only
    /// meaningful next to `defaultErrnoRet` (see [`convert`]).
    #[serde(default)]
    pub default_errno: Option<String>,
    /// The OCI list of architectures (docker's older form of `archMap`).
    #[serde(default)]
    pub architectures: Option<Vec<Arch>>,
    #[serde(default)]
    pub arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    pub syscalls: Option<Vec<Syscall>>,
    #[serde(default)]
    pub flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    pub listener_path: Option<PathBuf>,
    #[serde(default)]
    pub listener_metadata: Option<String>,
}

/// The architectures filtered on a host whose native one is `architecture`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    pub architecture: Arch,
    #[serde(default)]
    pub sub_architectures: Option<Vec<Arch>>,
}

/// One syscall rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Syscall {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub names: Option<Vec<String>>,
    pub action: LinuxSeccompAction,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    /// containers/common's errno name; see `default_errno`.
    #[serde(default)]
    pub errno: Option<String>,
    #[serde(default)]
    pub args: Option<Vec<Arg>>,
    #[serde(default)]
    pub includes: Option<Filter>,
    #[serde(default)]
    pub excludes: Option<Filter>,
}

/// A syscall argument comparison (the OCI `LinuxSeccompArg`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    pub index: usize,
    pub value: u64,
    #[serde(default)]
    pub value_two: Option<u64>,
    pub op: LinuxSeccompOperator,
}

/// A rule's condition. In `includes` the rule applies only if every listed
/// capability is held, the host architecture is listed, and the kernel is at
/// least `minKernel`; in `excludes` it is left out if any listed capability
/// is held, the host architecture is listed, or the kernel is at least
/// `minKernel`. Architectures use the Go names ("amd64", "arm64", "x86").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default)]
    pub caps: Option<Vec<String>>,
    #[serde(default)]
    pub arches: Option<Vec<String>>,
    #[serde(default)]
    pub min_kernel: Option<String>,
}

/// What a profile's conditions are evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The host architecture as the profiles name it ([`native_arch`]).
    pub arch: &'a str,
    /// The running kernel (major, minor). Unknown: treated as older than
    /// any `minKernel`, so a rule that needs a newer kernel is left out (its
    /// syscalls fall to the default action) rather than allowed on a kernel
    /// that may lack the fix it waits for.
    pub kernel: Option<(u32, u32)>,
    /// The container's capabilities ("CAP_X"); crius gives a container the
    /// same bounding, effective and permitted sets, so this is all of them.
    pub caps: &'a BTreeSet<String>,
}

/// A profile that cannot be converted; `path` is the JSON path inside it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ProfileError {
    pub path: String,
    pub reason: String,
}

fn err(path: impl Into<String>, reason: impl Into<String>) -> ProfileError {
    ProfileError {
        path: path.into(),
        reason: reason.into(),
    }
}

/// The name the profiles give the architecture crius was built for (the
/// one its containers run on): Go's `GOARCH` names, except "x86" for 32-bit
/// x86, as the docker/containers loaders name the native architecture.
pub fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "loongarch64" => "loong64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        other => other,
    }
}

/// The libseccomp architecture of a profile architecture name, to pick the
/// host's `archMap` entry.
pub fn scmp_arch(arch: &str) -> Option<Arch> {
    Some(match arch {
        "amd64" => Arch::ScmpArchX86_64,
        "x86" => Arch::ScmpArchX86,
        "x32" => Arch::ScmpArchX32,
        "arm64" => Arch::ScmpArchAarch64,
        "arm" => Arch::ScmpArchArm,
        "riscv64" => Arch::ScmpArchRiscv64,
        "s390x" => Arch::ScmpArchS390x,
        "s390" => Arch::ScmpArchS390,
        "ppc64le" => Arch::ScmpArchPpc64le,
        "ppc64" => Arch::ScmpArchPpc64,
        "ppc" => Arch::ScmpArchPpc,
        "loong64" => Arch::ScmpArchLoongarch64,
        "mips" => Arch::ScmpArchMips,
        "mipsel" => Arch::ScmpArchMipsel,
        "mips64" => Arch::ScmpArchMips64,
        "mips64n32" => Arch::ScmpArchMips64n32,
        "mipsel64" => Arch::ScmpArchMipsel64,
        "mipsel64n32" => Arch::ScmpArchMipsel64n32,
        _ => return None,
    })
}

/// Parses a profile of either form.
pub fn parse(text: &str) -> Result<Profile, serde_json::Error> {
    serde_json::from_str(text)
}

/// "4.8" → (4, 8). Only major.minor: the running kernel is known to that
/// precision, and a patch level would be silently ignored.
fn parse_min_kernel(path: &str, v: &str) -> Result<(u32, u32), ProfileError> {
    let bad = || err(path, format!("{v:?} is not a kernel version MAJOR.MINOR"));
    let (major, minor) = v.trim().split_once('.').ok_or_else(bad)?;
    Ok((
        major.parse().map_err(|_| bad())?,
        minor.parse().map_err(|_| bad())?,
    ))
}

/// Capability names compare in the "CAP_X" form whichever way they are
/// written; names that are no capability compare as written and so never
/// match a held one.
fn canonical_cap(name: &str) -> String {
    caps::canonical(name).unwrap_or_else(|| name.trim().to_ascii_uppercase())
}

/// A filter with its minimum kernel parsed, checked once per rule.
struct Condition<'a> {
    caps: Vec<String>,
    arches: &'a [String],
    min_kernel: Option<(u32, u32)>,
}

impl<'a> Condition<'a> {
    fn of(filter: Option<&'a Filter>, path: &str) -> Result<Self, ProfileError> {
        let f = filter.map(|f| {
            (
                f.caps.as_deref().unwrap_or_default(),
                f.arches.as_deref().unwrap_or_default(),
                f.min_kernel.as_deref(),
            )
        });
        let (caps, arches, min) = f.unwrap_or_default();
        Ok(Condition {
            caps: caps.iter().map(|c| canonical_cap(c)).collect(),
            arches,
            min_kernel: min
                .map(|v| parse_min_kernel(&format!("{path}.minKernel"), v))
                .transpose()?,
        })
    }

    fn kernel_at_least(t: &Target, min: (u32, u32)) -> bool {
        t.kernel.is_some_and(|k| k >= min)
    }

    /// `includes`: everything listed holds.
    fn all_hold(&self, t: &Target) -> bool {
        (self.arches.is_empty() || self.arches.iter().any(|a| a == t.arch))
            && self.caps.iter().all(|c| t.caps.contains(c))
            && self.min_kernel.is_none_or(|m| Self::kernel_at_least(t, m))
    }

    /// `excludes`: anything listed holds.
    fn any_holds(&self, t: &Target) -> bool {
        self.arches.iter().any(|a| a == t.arch)
            || self.caps.iter().any(|c| t.caps.contains(c))
            || self.min_kernel.is_some_and(|m| Self::kernel_at_least(t, m))
    }
}

fn syscall(s: &Syscall, i: usize, t: &Target) -> Result<Option<LinuxSyscall>, ProfileError> {
    let path = format!("syscalls[{i}]");
    // Validated before the conditions so that a broken rule is an error on
    // every host, not only where it applies.
    let names: Vec<String> = match (s.name.as_deref(), s.names.as_deref()) {
        (Some(n), Some(v)) if !n.is_empty() && !v.is_empty() => {
            return Err(err(&path, "has both name and names; give one"))
        }
        (Some(n), _) if !n.is_empty() => vec![n.to_string()],
        (_, Some(v)) if !v.is_empty() => v.to_vec(),
        _ => return Err(err(&path, "names no syscall (name or names)")),
    };
    if let Some(n) = names.iter().find(|n| n.trim().is_empty()) {
        return Err(err(format!("{path}.names"), format!("{n:?} is no syscall")));
    }
    if s.errno.is_some() && s.errno_ret.is_none() {
        return Err(err(
            format!("{path}.errno"),
            "errno names are not supported; give the number as errnoRet",
        ));
    }
    let includes = Condition::of(s.includes.as_ref(), &format!("{path}.includes"))?;
    let excludes = Condition::of(s.excludes.as_ref(), &format!("{path}.excludes"))?;
    if !includes.all_hold(t) || excludes.any_holds(t) {
        return Ok(None);
    }
    let mut b = LinuxSyscallBuilder::default().names(names).action(s.action);
    if let Some(e) = s.errno_ret {
        b = b.errno_ret(e);
    }
    if let Some(args) = s.args.as_ref().filter(|a| !a.is_empty()) {
        let mut v = Vec::with_capacity(args.len());
        for (j, a) in args.iter().enumerate() {
            let mut ab = LinuxSeccompArgBuilder::default()
                .index(a.index)
                .value(a.value)
                .op(a.op);
            if let Some(two) = a.value_two {
                ab = ab.value_two(two);
            }
            v.push(
                ab.build()
                    .map_err(|e| err(format!("{path}.args[{j}]"), e.to_string()))?,
            );
        }
        b = b.args(v);
    }
    b.build().map(Some).map_err(|e| err(path, e.to_string()))
}

/// The OCI seccomp section of `profile` for a container on `target`: the
/// architectures of the host's `archMap` entry (the native one and its
/// sub-architectures; none when the host has no entry, which leaves the
/// native one only), and the syscall rules whose conditions hold, without
/// their conditions. An OCI-form profile comes out unchanged.
pub fn convert(profile: &Profile, target: &Target) -> Result<LinuxSeccomp, ProfileError> {
    if profile.default_errno.is_some() && profile.default_errno_ret.is_none() {
        return Err(err(
            "defaultErrno",
            "errno names are not supported; give the number as defaultErrnoRet",
        ));
    }
    let listed = profile.architectures.as_deref().unwrap_or_default();
    let map = profile.arch_map.as_deref().unwrap_or_default();
    let architectures: Vec<Arch> = match (listed.is_empty(), map.is_empty()) {
        (false, false) => {
            return Err(err(
                "architectures",
                "and archMap are both set; give one of them",
            ))
        }
        (false, true) => listed.to_vec(),
        _ => {
            let native = scmp_arch(target.arch);
            map.iter()
                .find(|m| Some(m.architecture) == native)
                .map(|m| {
                    std::iter::once(m.architecture)
                        .chain(m.sub_architectures.iter().flatten().copied())
                        .collect()
                })
                .unwrap_or_default()
        }
    };
    let mut syscalls = Vec::new();
    for (i, s) in profile.syscalls.iter().flatten().enumerate() {
        if let Some(s) = syscall(s, i, target)? {
            syscalls.push(s);
        }
    }
    let mut b = LinuxSeccompBuilder::default().default_action(profile.default_action);
    if let Some(e) = profile.default_errno_ret {
        b = b.default_errno_ret(e);
    }
    if !architectures.is_empty() {
        b = b.architectures(architectures);
    }
    if let Some(f) = &profile.flags {
        b = b.flags(f.clone());
    }
    if let Some(p) = &profile.listener_path {
        b = b.listener_path(p.clone());
    }
    if let Some(m) = &profile.listener_metadata {
        b = b.listener_metadata(m.clone());
    }
    if !syscalls.is_empty() {
        b = b.syscalls(syscalls);
    }
    b.build().map_err(|e| err("(profile)", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn caps(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|c| c.to_string()).collect()
    }

    fn run(profile: Value, arch: &str, kernel: Option<(u32, u32)>, held: &[&str]) -> Value {
        let p: Profile = serde_json::from_value(profile).unwrap();
        let held = caps(held);
        let t = Target {
            arch,
            kernel,
            caps: &held,
        };
        serde_json::to_value(convert(&p, &t).unwrap()).unwrap()
    }

    /// The names of the rules that survive, in order.
    fn kept(out: &Value) -> Vec<String> {
        out["syscalls"]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|s| s["names"][0].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn rule(name: &str, includes: Value, excludes: Value) -> Value {
        json!({"names": [name], "action": "SCMP_ACT_ALLOW", "includes": includes, "excludes": excludes})
    }

    #[test]
    fn conditions() {
        let profile = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                rule("plain", json!({}), json!({})),
                rule("needs_admin", json!({"caps": ["CAP_SYS_ADMIN"]}), json!({})),
                // Written without the prefix, in lower case: still matched.
                rule("needs_admin_and_bpf", json!({"caps": ["sys_admin", "CAP_BPF"]}), json!({})),
                rule("unless_admin", json!({}), json!({"caps": ["CAP_SYS_ADMIN"]})),
                rule("unless_admin_or_bpf", json!({}), json!({"caps": ["CAP_SYS_ADMIN", "CAP_BPF"]})),
                rule("amd64_only", json!({"arches": ["amd64", "x32"]}), json!({})),
                rule("not_s390", json!({}), json!({"arches": ["s390", "s390x"]})),
                rule("kernel_4_8", json!({"minKernel": "4.8"}), json!({})),
                rule("below_5_10", json!({}), json!({"minKernel": "5.10"})),
                rule("not_a_cap", json!({"caps": ["CAP_NO_SUCH"]}), json!({})),
            ]
        });
        // (arch, kernel, caps, the rules kept)
        type Case<'a> = (&'a str, Option<(u32, u32)>, &'a [&'a str], &'a [&'a str]);
        let cases: &[Case] = &[
            (
                "amd64",
                Some((6, 1)),
                &["CAP_CHOWN"],
                &[
                    "plain",
                    "unless_admin",
                    "unless_admin_or_bpf",
                    "amd64_only",
                    "not_s390",
                    "kernel_4_8",
                ],
            ),
            (
                "amd64",
                Some((6, 1)),
                &["CAP_SYS_ADMIN"],
                &[
                    "plain",
                    "needs_admin",
                    "amd64_only",
                    "not_s390",
                    "kernel_4_8",
                ],
            ),
            (
                "amd64",
                Some((6, 1)),
                &["CAP_SYS_ADMIN", "CAP_BPF"],
                &[
                    "plain",
                    "needs_admin",
                    "needs_admin_and_bpf",
                    "amd64_only",
                    "not_s390",
                    "kernel_4_8",
                ],
            ),
            (
                "amd64",
                Some((6, 1)),
                &["CAP_BPF"],
                &[
                    "plain",
                    "unless_admin",
                    "amd64_only",
                    "not_s390",
                    "kernel_4_8",
                ],
            ),
            (
                "s390x",
                Some((4, 8)),
                &[],
                &[
                    "plain",
                    "unless_admin",
                    "unless_admin_or_bpf",
                    "kernel_4_8",
                    "below_5_10",
                ],
            ),
            (
                "arm64",
                Some((4, 7)),
                &[],
                &[
                    "plain",
                    "unless_admin",
                    "unless_admin_or_bpf",
                    "not_s390",
                    "below_5_10",
                ],
            ),
            (
                "arm64",
                Some((5, 10)),
                &[],
                &[
                    "plain",
                    "unless_admin",
                    "unless_admin_or_bpf",
                    "not_s390",
                    "kernel_4_8",
                ],
            ),
            // Unknown kernel: as if older than every minKernel.
            (
                "arm64",
                None,
                &[],
                &[
                    "plain",
                    "unless_admin",
                    "unless_admin_or_bpf",
                    "not_s390",
                    "below_5_10",
                ],
            ),
        ];
        for (arch, kernel, held, want) in cases {
            let out = run(profile.clone(), arch, *kernel, held);
            assert_eq!(kept(&out), *want, "{arch} {kernel:?} {held:?}");
            // The conditions themselves are not OCI fields.
            for s in out["syscalls"].as_array().unwrap() {
                assert!(s.get("includes").is_none() && s.get("excludes").is_none());
            }
        }
    }

    #[test]
    fn architectures_from_the_arch_map() {
        let profile = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "archMap": [
                {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
                {"architecture": "SCMP_ARCH_RISCV64", "subArchitectures": null},
            ]
        });
        let cases: &[(&str, Value)] = &[
            (
                "amd64",
                json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
            ),
            ("arm64", json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])),
            ("riscv64", json!(["SCMP_ARCH_RISCV64"])),
            // No entry for the host: the native architecture only.
            ("s390x", Value::Null),
            ("sparc", Value::Null),
        ];
        for (arch, want) in cases {
            let out = run(profile.clone(), arch, Some((6, 1)), &[]);
            assert_eq!(out["architectures"], *want, "{arch}");
        }
    }

    #[test]
    fn fields_carried_over() {
        let profile = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "defaultErrno": "ENOSYS",
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "listenerPath": "/run/agent.sock",
            "listenerMetadata": "meta",
            "syscalls": [
                {"name": "personality", "action": "SCMP_ACT_ALLOW", "comment": "x",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [
                    {"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22, "errno": "EINVAL",
                 "args": []},
                {"names": ["kill"], "action": "SCMP_ACT_LOG", "args": null},
            ]
        });
        let out = run(profile, "amd64", Some((6, 1)), &[]);
        assert_eq!(
            out,
            json!({
                "defaultAction": "SCMP_ACT_ERRNO",
                "defaultErrnoRet": 38,
                "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                "listenerPath": "/run/agent.sock",
                "listenerMetadata": "meta",
                "syscalls": [
                    {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                    {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                    {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22},
                    {"names": ["kill"], "action": "SCMP_ACT_LOG"},
                ]
            })
        );
    }

    #[test]
    fn an_oci_profile_comes_out_unchanged() {
        let oci = json!({
            "defaultAction": "SCMP_ACT_KILL_PROCESS",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
            "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["openat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                 "args": [{"index": 2, "value": 64, "valueTwo": 64, "op": "SCMP_CMP_MASKED_EQ"}]},
            ]
        });
        let want: Value =
            serde_json::to_value(serde_json::from_value::<LinuxSeccomp>(oci.clone()).unwrap())
                .unwrap();
        for arch in ["amd64", "arm64"] {
            assert_eq!(run(oci.clone(), arch, Some((6, 1)), &[]), want, "{arch}");
        }
    }

    #[test]
    fn errors_name_the_path() {
        let base =
            |syscalls: Value| json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": syscalls});
        let cases: Vec<(Value, &str)> = vec![
            (
                base(json!([{"name": "read", "names": ["write"], "action": "SCMP_ACT_ALLOW"}])),
                "syscalls[0]: has both name and names",
            ),
            (
                base(
                    json!([{"names": ["read"], "action": "SCMP_ACT_ALLOW"}, {"names": [], "action": "SCMP_ACT_ALLOW"}]),
                ),
                "syscalls[1]: names no syscall",
            ),
            (
                base(json!([{"name": "", "action": "SCMP_ACT_ALLOW"}])),
                "syscalls[0]: names no syscall",
            ),
            (
                base(json!([{"names": ["read", " "], "action": "SCMP_ACT_ALLOW"}])),
                "syscalls[0].names: \" \" is no syscall",
            ),
            (
                base(
                    json!([{"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4"}}]),
                ),
                "syscalls[0].includes.minKernel: \"4\" is not a kernel version",
            ),
            // Checked even where the rule does not apply (another arch).
            (
                base(json!([{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                             "includes": {"arches": ["s390x"]}, "excludes": {"minKernel": "5.x"}}])),
                "syscalls[0].excludes.minKernel: \"5.x\" is not a kernel version",
            ),
            (
                base(json!([{"names": ["read"], "action": "SCMP_ACT_ERRNO", "errno": "EPERM"}])),
                "syscalls[0].errno: errno names are not supported",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrno": "ENOSYS"}),
                "defaultErrno: errno names are not supported",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                       "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}),
                "architectures: and archMap are both set",
            ),
        ];
        let none = BTreeSet::new();
        let t = Target {
            arch: "amd64",
            kernel: Some((6, 1)),
            caps: &none,
        };
        for (profile, want) in cases {
            let p: Profile = serde_json::from_value(profile).unwrap();
            let e = convert(&p, &t).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}");
        }
        // Unknown actions, operators and architectures are parse errors.
        for bad in [
            r#"{"defaultAction": "SCMP_ACT_MAYBE"}"#,
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_VAX"]}"#,
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]}"#,
            r#"{"syscalls": []}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_min_kernel("p", "4.8"), Ok((4, 8)));
        assert_eq!(parse_min_kernel("p", " 5.15 "), Ok((5, 15)));
        for bad in ["4", "4.8.1", "v4.8", "", "4."] {
            assert!(parse_min_kernel("p", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn native_arch_has_an_scmp_arch() {
        // The architectures crius runs on map to the archMap entries.
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert!(scmp_arch(native_arch()).is_some());
        }
    }
}
