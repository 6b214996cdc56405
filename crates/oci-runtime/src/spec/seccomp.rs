//! The seccomp profile: the built-in RuntimeDefault profile, Unconfined, or
//! a Localhost profile whose JSON the caller read.

use super::SpecError;
use crius_cri_api::v1::{security_profile::ProfileType, SecurityProfile};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscall, LinuxSyscallBuilder,
};

/// EPERM, the default errno of the RuntimeDefault profile.
pub const EPERM: u32 = 1;
/// ENOSYS, returned for syscalls glibc must fall back from (clone3).
pub const ENOSYS: u32 = 38;

/// Syscalls the RuntimeDefault profile allows: the containers/common
/// (moby) default allow-list for unprivileged containers. Names a given
/// architecture lacks are ignored by runc/crun.
///
/// Denied by omission (EPERM): keyctl, add_key, request_key, ptrace, mount,
/// umount, umount2, reboot, swapon, swapoff, kexec_load, kexec_file_load,
/// init_module, finit_module, delete_module, bpf, perf_event_open, unshare,
/// setns, pivot_root, acct, open_by_handle_at, name_to_handle_at, vm86,
/// vm86old, userfaultfd, lookup_dcookie, quotactl, clock_settime,
/// settimeofday, stime, adjtimex, iopl, ioperm, create_module,
/// get_kernel_syms, query_module, nfsservctl, uselib, sysfs, _sysctl,
/// fsopen/fsmount/move_mount/open_tree and the other new mount API calls,
/// kcmp, process_vm_readv/writev, mbind, set_mempolicy, move_pages, syslog.
pub const DEFAULT_ALLOWED_SYSCALLS: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "clone",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "personality",
    "pidfd_getfd",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // Architecture-specific helpers.
    "arch_prctl",
    "modify_ldt",
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
    "riscv_flush_icache",
];

/// Syscalls the RuntimeDefault profile explicitly makes fail with ENOSYS so
/// that libcs fall back to an older call (clone3 → clone).
pub const ENOSYS_SYSCALLS: &[&str] = &["clone3"];

/// Syscalls that must never be in the allow-list (checked by tests).
pub const DENIED_SYSCALLS: &[&str] = &[
    "keyctl",
    "add_key",
    "request_key",
    "ptrace",
    "mount",
    "umount",
    "umount2",
    "reboot",
    "swapon",
    "swapoff",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "unshare",
    "setns",
    "pivot_root",
    "acct",
    "open_by_handle_at",
    "name_to_handle_at",
    "vm86",
    "vm86old",
    "userfaultfd",
    "lookup_dcookie",
    "quotactl",
    "clock_settime",
    "settimeofday",
    "stime",
    "adjtimex",
    "iopl",
    "ioperm",
    "fsopen",
    "fsmount",
    "move_mount",
    "open_tree",
    "fsconfig",
    "fspick",
    "mount_setattr",
    "kcmp",
    "process_vm_readv",
    "process_vm_writev",
    "syslog",
    "chroot",
    "sethostname",
    "setdomainname",
];

fn allowed() -> Vec<String> {
    DEFAULT_ALLOWED_SYSCALLS
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The built-in RuntimeDefault profile.
pub fn runtime_default() -> Result<LinuxSeccomp, SpecError> {
    let syscalls: Vec<LinuxSyscall> = vec![
        LinuxSyscallBuilder::default()
            .names(allowed())
            .action(LinuxSeccompAction::ScmpActAllow)
            .build()?,
        LinuxSyscallBuilder::default()
            .names(
                ENOSYS_SYSCALLS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(ENOSYS)
            .build()?,
    ];
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
            Arch::ScmpArchAarch64,
            Arch::ScmpArchArm,
        ])
        .syscalls(syscalls)
        .build()?)
}

const FIELD: &str = "linux.security_context.seccomp";

/// The seccomp section for the container's `seccomp` profile.
///
/// - privileged → none.
/// - unset (no `SecurityProfile`) → none (Unconfined), matching CRI-O;
///   kubelet ≥ 1.27 sends RuntimeDefault explicitly when the pod asks for it.
/// - RuntimeDefault → [`runtime_default`].
/// - Unconfined → none.
/// - Localhost → `localhost`, the profile JSON the caller read from
///   `localhost_ref`, parsed as an OCI `LinuxSeccomp`.
pub fn seccomp(
    profile: Option<&SecurityProfile>,
    privileged: bool,
    localhost: Option<&str>,
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
        ProfileType::RuntimeDefault => runtime_default().map(Some),
        ProfileType::Localhost => {
            let field = format!("{FIELD}.localhost_ref");
            if profile.localhost_ref.is_empty() {
                return Err(SpecError::invalid(field, "must not be empty"));
            }
            let text = localhost.ok_or_else(|| {
                SpecError::invalid(&field, "the profile's content was not provided")
            })?;
            let parsed: LinuxSeccomp = serde_json::from_str(text).map_err(|e| {
                SpecError::invalid(
                    &field,
                    format!("invalid seccomp profile {:?}: {e}", profile.localhost_ref),
                )
            })?;
            Ok(Some(parsed))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(t: ProfileType, r: &str) -> SecurityProfile {
        let mut p = SecurityProfile {
            localhost_ref: r.into(),
            ..Default::default()
        };
        p.set_profile_type(t);
        p
    }

    #[test]
    fn profile_selection() {
        let local = r#"{"defaultAction":"SCMP_ACT_LOG","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ALLOW"}]}"#;
        // (profile, privileged, localhost content, expected default action)
        type Case<'a> = (
            Option<SecurityProfile>,
            bool,
            Option<&'a str>,
            Option<LinuxSeccompAction>,
        );
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
                Some(LinuxSeccompAction::ScmpActErrno),
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
                Some(LinuxSeccompAction::ScmpActLog),
            ),
            (
                Some(profile(ProfileType::Localhost, "p.json")),
                true,
                Some(local),
                None,
            ),
        ];
        for (i, (p, privileged, content, want)) in cases.into_iter().enumerate() {
            let got = seccomp(p.as_ref(), privileged, content).unwrap();
            assert_eq!(got.map(|s| s.default_action()), want, "case {i}");
        }
    }

    #[test]
    fn localhost_errors_name_the_field() {
        let cases = [
            (profile(ProfileType::Localhost, "p.json"), Some("{not json"), "linux.security_context.seccomp.localhost_ref: invalid seccomp profile \"p.json\""),
            (profile(ProfileType::Localhost, "p.json"), None, "linux.security_context.seccomp.localhost_ref: the profile's content was not provided"),
            (profile(ProfileType::Localhost, ""), Some("{}"), "linux.security_context.seccomp.localhost_ref: must not be empty"),
        ];
        for (p, content, want) in cases {
            let err = seccomp(Some(&p), false, content).unwrap_err();
            assert!(err.to_string().starts_with(want), "{err}");
        }
        let bad = SecurityProfile {
            profile_type: 9,
            ..Default::default()
        };
        let err = seccomp(Some(&bad), false, None).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("linux.security_context.seccomp.profile_type:"));
    }

    #[test]
    fn runtime_default_shape() {
        let p = runtime_default().unwrap();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(v["defaultErrnoRet"], 1);
        assert_eq!(
            v["architectures"],
            serde_json::json!([
                "SCMP_ARCH_X86_64",
                "SCMP_ARCH_X86",
                "SCMP_ARCH_X32",
                "SCMP_ARCH_AARCH64",
                "SCMP_ARCH_ARM"
            ])
        );
        assert_eq!(
            v["syscalls"][1],
            serde_json::json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38})
        );
        let names: Vec<String> = p.syscalls().as_ref().unwrap()[0].names().clone();
        for needed in [
            "clone",
            "execve",
            "openat",
            "read",
            "write",
            "mmap",
            "futex",
            "exit_group",
            "rt_sigaction",
            "wait4",
            "personality",
            "socket",
            "epoll_pwait",
            "statx",
            "getrandom",
        ] {
            assert!(
                names.iter().any(|n| n == needed),
                "{needed} must be allowed"
            );
        }
        for denied in DENIED_SYSCALLS.iter().chain(ENOSYS_SYSCALLS) {
            assert!(
                !names.iter().any(|n| n == denied),
                "{denied} must not be allowed"
            );
        }
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "no duplicates");
    }
}
