//! Generated specs, validated by the real runtimes: runc (and crun where
//! the probe says it can run here) accept and run them, and what the spec
//! asks for holds inside the container — a non-root user by name, a
//! read-only rootfs, dropped capabilities, RuntimeDefault seccomp (a denied
//! syscall fails; a static binary's raw clone(CLONE_NEWUSER) gets EPERM),
//! a memory limit visible in the cgroup, masked paths.
#![allow(clippy::unwrap_used)]

use crius_cri_api::v1::*;
use crius_oci_runtime::probe::{probe_handler, HostFacts};
use crius_oci_runtime::rootfs::{mount_rootfs, remove_rootfs};
use crius_oci_runtime::spec::{
    generate, HostLimits, ImageConfig, PodFiles, PodNamespaces, SpecInput,
};
use crius_oci_runtime::RuntimeHandlers;
use crius_test_support::image::{busybox_rootfs, sha256_digest};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Env {
    dir: tempfile::TempDir,
    layer: PathBuf,
}

fn env() -> Env {
    crius_test_support::require_root();
    let dir = tempfile::tempdir().unwrap();
    let tar = busybox_rootfs().unwrap().tar().unwrap();
    let layer = dir.path().join("layer");
    crius_image_store::unpack::unpack_layer(tar.as_slice(), &sha256_digest(&tar), &layer).unwrap();
    Env { dir, layer }
}

fn container(
    script: &str,
    sc: LinuxContainerSecurityContext,
    resources: Option<LinuxContainerResources>,
) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "t".into(),
            attempt: 0,
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        linux: Some(LinuxContainerConfig {
            security_context: Some(sc),
            resources,
        }),
        ..Default::default()
    }
}

/// Generates the spec, runs it with each ready runtime, returns (runtime, stdout).
fn run(e: &Env, name: &str, c: &ContainerConfig) -> Vec<(String, String)> {
    run_with(e, name, c, 0, None)
}

/// [`run`] with a pids limit and the content of a Localhost seccomp profile.
fn run_with(
    e: &Env,
    name: &str,
    c: &ContainerConfig,
    pids_limit: i64,
    seccomp_localhost: Option<&str>,
) -> Vec<(String, String)> {
    let devices = crius_oci_runtime::spec::devices::resolve(&c.devices).unwrap();
    let host = HostFacts::read();
    let path = std::env::var("PATH").unwrap_or_default() + ":/usr/sbin:/sbin";
    let handlers = RuntimeHandlers::resolve(
        &BTreeMap::new(),
        "runc",
        Path::new("/run/crius-test"),
        &path,
    )
    .unwrap();
    let mut results = Vec::new();
    for h in handlers.handlers.values() {
        let probe = probe_handler(h, &host);
        if !probe.status.ready {
            continue;
        }
        let id = format!("crius-spec-{name}-{}-{}", h.name, std::process::id());
        let cdir = e.dir.path().join(&id);
        let paths = mount_rootfs(std::slice::from_ref(&e.layer), &cdir).unwrap();
        let pod = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "p".into(),
                uid: "u".into(),
                namespace: "n".into(),
                attempt: 0,
            }),
            hostname: "spec-test".into(),
            ..Default::default()
        };
        let image = ImageConfig {
            env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()],
            ..Default::default()
        };
        let read = |p: &str| std::fs::read_to_string(paths.merged.join(p)).unwrap_or_default();
        let (passwd, group) = (read("etc/passwd"), read("etc/group"));
        let limits = HostLimits {
            pids_limit,
            ..HostLimits::of_this_process("/crius-test")
        };
        let input = SpecInput {
            container_id: &id,
            sandbox_id: "sandbox",
            pod: &pod,
            container: c,
            image: &image,
            passwd: &passwd,
            group: &group,
            rootfs: &paths.merged,
            namespaces: &PodNamespaces::default(),
            files: &PodFiles::default(),
            oci_version: &probe.status.oci_version,
            host: &limits,
            seccomp_localhost,
            devices: &devices,
        };
        let spec = generate(&input).unwrap_or_else(|err| panic!("{name}: {err}"));
        let bundle = cdir.join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        spec.save(bundle.join("config.json")).unwrap();
        let out = Command::new(h.binary.as_ref().unwrap())
            .arg("--root")
            .arg(e.dir.path().join(format!("state-{}", h.name)))
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .output()
            .unwrap();
        let _ = remove_rootfs(&cdir);
        assert!(
            out.status.success(),
            "{name} with {}: {}\n{}",
            h.name,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        results.push((
            h.name.clone(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ));
    }
    assert!(
        results.iter().any(|(n, _)| n == "runc"),
        "runc must be ready here"
    );
    results
}

#[test]
fn non_root_user_by_name_with_supplemental_groups() {
    let e = env();
    let sc = LinuxContainerSecurityContext {
        run_as_username: "crius-user".into(),
        ..Default::default()
    };
    for (rt, out) in run(&e, "user", &container("id -u; id -g; id -G", sc, None)) {
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines[..2], ["1000", "1000"], "{rt}: {out}");
        assert!(
            lines[2].split(' ').any(|g| g == "100"),
            "{rt}: `users` (Merge policy) missing: {out}"
        );
    }
}

#[test]
fn read_only_rootfs() {
    let e = env();
    let sc = LinuxContainerSecurityContext {
        readonly_rootfs: true,
        ..Default::default()
    };
    for (rt, out) in run(
        &e,
        "ro",
        &container(
            "touch /x 2>/dev/null && echo writable || echo readonly",
            sc,
            None,
        ),
    ) {
        assert_eq!(out.trim(), "readonly", "{rt}");
    }
    let sc = LinuxContainerSecurityContext::default();
    for (rt, out) in run(
        &e,
        "rw",
        &container(
            "touch /x 2>/dev/null && echo writable || echo readonly",
            sc,
            None,
        ),
    ) {
        assert_eq!(out.trim(), "writable", "{rt}");
    }
}

#[test]
fn dropped_capability_is_gone() {
    let e = env();
    let script = "touch /tmp/f; chown 1 /tmp/f 2>/dev/null && echo chown-ok || echo chown-denied";
    let sc = LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            drop_capabilities: vec!["CHOWN".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    for (rt, out) in run(&e, "drop", &container(script, sc, None)) {
        assert_eq!(out.trim(), "chown-denied", "{rt}");
    }
    for (rt, out) in run(
        &e,
        "keep",
        &container(script, LinuxContainerSecurityContext::default(), None),
    ) {
        assert_eq!(out.trim(), "chown-ok", "{rt}");
    }
}

#[test]
fn runtime_default_seccomp_blocks_a_denied_syscall() {
    let e = env();
    // unshare(2) is denied by the default profile; without seccomp, root in
    // the container may create a user namespace.
    let script = "unshare -U true 2>/dev/null && echo allowed || echo blocked";
    let profile = |t: i32| LinuxContainerSecurityContext {
        seccomp: Some(SecurityProfile {
            profile_type: t,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    };
    for (rt, out) in run(
        &e,
        "seccomp",
        &container(
            script,
            profile(security_profile::ProfileType::RuntimeDefault as i32),
            None,
        ),
    ) {
        assert_eq!(out.trim(), "blocked", "{rt}");
    }
    for (rt, out) in run(
        &e,
        "unconfined",
        &container(
            script,
            profile(security_profile::ProfileType::Unconfined as i32),
            None,
        ),
    ) {
        assert_eq!(
            out.trim(),
            "allowed",
            "{rt}: the test proves nothing if unshare fails anyway"
        );
    }
}

#[test]
fn memory_limit_is_in_the_cgroup() {
    let e = env();
    let resources = LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    };
    let script = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max";
    for (rt, out) in run(
        &e,
        "mem",
        &container(
            script,
            LinuxContainerSecurityContext::default(),
            Some(resources.clone()),
        ),
    ) {
        assert_eq!(out.trim(), (64u64 << 20).to_string(), "{rt}");
    }
}

#[test]
fn masked_and_readonly_paths() {
    let e = env();
    let script = "n=$(cat /proc/kcore 2>/dev/null | head -c 64 | wc -c); echo kcore=$n; \
                  echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo sys-writable || echo sys-readonly";
    for (rt, out) in run(
        &e,
        "masked",
        &container(script, LinuxContainerSecurityContext::default(), None),
    ) {
        let lines: Vec<_> = out.lines().map(str::trim).collect();
        assert_eq!(lines, ["kcore=0", "sys-readonly"], "{rt}");
    }
}

#[test]
fn devices_are_allowed_as_requested_and_nothing_else() {
    let e = env();
    // /dev/loop-control (10:237) is in no runtime's default allow list.
    let script = "(: < /dev/lc) 2>/dev/null && echo open-ok || echo open-denied; \
                  mknod /tmp/disk b 8 0 && (head -c 1 /tmp/disk >/dev/null 2>&1 && echo disk-open || echo disk-denied)";
    let sc = || LinuxContainerSecurityContext {
        // Even a container that may mknod cannot open a host disk.
        capabilities: Some(Capability {
            add_capabilities: vec!["MKNOD".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    for (perms, want) in [("rw", "open-ok"), ("m", "open-denied")] {
        let mut c = container(script, sc(), None);
        c.devices = vec![Device {
            host_path: "/dev/loop-control".into(),
            container_path: "/dev/lc".into(),
            permissions: perms.into(),
        }];
        for (rt, out) in run(&e, &format!("devices-{perms}"), &c) {
            let lines: Vec<_> = out.lines().collect();
            assert_eq!(lines, [want, "disk-denied"], "{rt} with {perms:?}");
        }
    }
}

#[test]
fn pids_limit_is_in_the_cgroup() {
    let e = env();
    let script = "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max";
    for (rt, out) in run_with(
        &e,
        "pids",
        &container(script, LinuxContainerSecurityContext::default(), None),
        321,
        None,
    ) {
        assert_eq!(out.trim(), "321", "{rt}");
    }
}

/// A program that asks for a user namespace the way a hostile binary would:
/// the raw clone syscall with CLONE_NEWUSER (not glibc's unshare(), and not
/// through a shell's unshare applet), after a plain clone as a control.
const CLONE_NEWUSER_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* A NULL stack makes clone fork-like: the child returns here too. */
static void try_clone(const char *what, unsigned long flags) {
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0)
        _exit(0);
    if (pid < 0) {
        printf("%s errno=%d\n", what, errno);
        return;
    }
    int status = 0;
    waitpid((pid_t)pid, &status, 0);
    printf("%s ok\n", what);
}

int main(void) {
    try_clone("clone", 0);
    try_clone("clone(CLONE_NEWUSER)", CLONE_NEWUSER);
    return 0;
}
"#;

/// Builds [`CLONE_NEWUSER_C`] statically into the busybox layer (the rootfs
/// has no libc) as `/clone-newuser`.
fn install_clone_newuser(e: &Env) {
    let src = e.dir.path().join("clone-newuser.c");
    std::fs::write(&src, CLONE_NEWUSER_C).unwrap();
    let out = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(e.layer.join("clone-newuser"))
        .arg(&src)
        .output()
        .expect("gcc (make test installs it)");
    assert!(
        out.status.success(),
        "gcc -static: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn runtime_default_seccomp_denies_clone_newuser() {
    let e = env();
    install_clone_newuser(&e);
    let sc = |t: security_profile::ProfileType, localhost_ref: &str, add: &[&str]| {
        LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile {
                profile_type: t as i32,
                localhost_ref: localhost_ref.into(),
            }),
            capabilities: Some(Capability {
                add_capabilities: add.iter().map(|c| c.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    use security_profile::ProfileType::*;
    let docker_default = crius_oci_runtime::spec::seccomp::DEFAULT_PROFILE;
    // (name, security context, Localhost content, clone(CLONE_NEWUSER)'s
    // result). Plain clone must work in every case: the denial is about
    // the flag, not the syscall.
    let cases = [
        ("default", sc(RuntimeDefault, "", &[]), None, "errno=1"),
        // The docker-format default given as a Localhost profile.
        (
            "localhost",
            sc(Localhost, "/profiles/docker-default.json", &[]),
            Some(docker_default),
            "errno=1",
        ),
        // Without seccomp root in the container may create a user
        // namespace, so the EPERM above is the profile's doing.
        ("unconfined", sc(Unconfined, "", &[]), None, "ok"),
        // The profile's CAP_SYS_ADMIN rule lets such a container do it.
        (
            "sysadmin",
            sc(RuntimeDefault, "", &["SYS_ADMIN"]),
            None,
            "ok",
        ),
    ];
    for (name, sc, localhost, want) in cases {
        let results = run_with(
            &e,
            &format!("userns-{name}"),
            &container("/clone-newuser", sc, None),
            0,
            localhost,
        );
        for (rt, out) in &results {
            let lines: Vec<_> = out.lines().collect();
            assert_eq!(
                lines,
                [
                    "clone ok".to_string(),
                    format!("clone(CLONE_NEWUSER) {want}")
                ],
                "{name} under {rt}"
            );
        }
        let ran: Vec<_> = results.iter().map(|(rt, _)| rt.as_str()).collect();
        eprintln!("{name}: checked under {ran:?}");
    }
}
