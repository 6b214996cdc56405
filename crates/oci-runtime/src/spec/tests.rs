//! Tests of `generate` and the helpers in `mod.rs`: namespaces, resources,
//! oom clamping, and whole-spec snapshots (compared as JSON values of the
//! important parts).

use super::*;
use crius_cri_api::v1::{
    Capability, ContainerMetadata, HugepageLimit, Int64Value, KeyValue, LinuxContainerConfig,
    LinuxPodSandboxConfig, Mount as CriMount, PodSandboxMetadata, SecurityProfile, UserNamespace,
};
use serde_json::{json, Value};
use std::path::Path;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\nwheel:x:10:root,app\napp:x:1000:\n";

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn host() -> HostLimits {
    let mut caps = s(caps::DEFAULT_CAPABILITIES);
    caps.extend(s(&[
        "CAP_NET_ADMIN",
        "CAP_SYS_ADMIN",
        "CAP_NET_RAW",
        "CAP_MKNOD",
    ]));
    HostLimits {
        bounding_caps: caps,
        min_oom_score_adj: -998,
        cgroup_parent: "/kubepods/besteffort/pod123/".into(),
        max_nofile: 0,
        pids_limit: 0,
        lsm: Default::default(),
        kernel: Some((6, 1)),
    }
}

#[test]
fn nofile_limit_is_capped_by_the_daemons_own() {
    let mut h = host();
    h.max_nofile = 20_000;
    let (pod, c, img) = (
        pod(),
        ContainerConfig {
            command: vec!["/bin/true".into()],
            ..Default::default()
        },
        ImageConfig::default(),
    );
    let (ns, files) = (PodNamespaces::default(), PodFiles::default());
    let input = SpecInput {
        container_id: "c",
        sandbox_id: "s",
        pod: &pod,
        container: &c,
        image: &img,
        passwd: "",
        group: "",
        rootfs: std::path::Path::new("/r"),
        namespaces: &ns,
        files: &files,
        oci_version: "1.0.2",
        host: &h,
        seccomp_localhost: None,
        devices: &[],
    };
    let v = serde_json::to_value(generate(&input).unwrap()).unwrap();
    assert_eq!(v["process"]["rlimits"][0]["hard"], 20_000);
    assert_eq!(v["process"]["rlimits"][0]["soft"], 20_000);
    assert!(
        v["linux"]["resources"]["pids"].is_null(),
        "no pids limit unless configured"
    );
    let mut h2 = h.clone();
    h2.pids_limit = 1024;
    let input = SpecInput { host: &h2, ..input };
    let v = serde_json::to_value(generate(&input).unwrap()).unwrap();
    assert_eq!(v["linux"]["resources"]["pids"]["limit"], 1024);
}

fn pod() -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web".into(),
            uid: "uid-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web-pod".into(),
        linux: Some(LinuxPodSandboxConfig {
            sysctls: [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn busybox() -> ImageConfig {
    ImageConfig {
        cmd: s(&["sh"]),
        env: s(&["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]),
        ..Default::default()
    }
}

fn container(name: &str, sc: LinuxContainerSecurityContext) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        linux: Some(LinuxContainerConfig {
            resources: None,
            security_context: Some(sc),
        }),
        ..Default::default()
    }
}

fn pod_namespaces() -> PodNamespaces {
    PodNamespaces {
        network: Some("/run/netns/pod".into()),
        ipc: Some("/run/ipcns/pod".into()),
        uts: Some("/run/utsns/pod".into()),
        pid: None,
        ..Default::default()
    }
}

fn pod_files() -> PodFiles {
    PodFiles {
        hosts: Some("/run/pod/hosts".into()),
        resolv_conf: Some("/run/pod/resolv.conf".into()),
        hostname: Some("/run/pod/hostname".into()),
        shm: Some("/run/pod/shm".into()),
    }
}

struct Fixture {
    pod: PodSandboxConfig,
    container: ContainerConfig,
    image: ImageConfig,
    namespaces: PodNamespaces,
    files: PodFiles,
    host: HostLimits,
}

impl Fixture {
    fn new(container: ContainerConfig) -> Self {
        Fixture {
            pod: pod(),
            container,
            image: busybox(),
            namespaces: pod_namespaces(),
            files: pod_files(),
            host: host(),
        }
    }

    fn input(&self) -> SpecInput<'_> {
        SpecInput {
            container_id: "c1",
            sandbox_id: "s1",
            pod: &self.pod,
            container: &self.container,
            image: &self.image,
            passwd: PASSWD,
            group: GROUP,
            rootfs: Path::new("/var/lib/crius/c1/rootfs"),
            namespaces: &self.namespaces,
            files: &self.files,
            oci_version: "1.2.0",
            host: &self.host,
            seccomp_localhost: None,
            devices: &[],
        }
    }

    fn json(&self) -> Value {
        let mut v = serde_json::to_value(generate(&self.input()).unwrap()).unwrap();
        normalize(&mut v);
        v
    }
}

/// Sorts the capability sets (HashSets) so JSON comparisons are stable.
fn normalize(v: &mut Value) {
    if let Some(caps) = v
        .pointer_mut("/process/capabilities")
        .and_then(Value::as_object_mut)
    {
        for set in caps.values_mut() {
            if let Some(a) = set.as_array_mut() {
                a.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
            }
        }
    }
}

fn sorted(v: &[&str]) -> Value {
    let mut v = s(v);
    v.sort();
    json!(v)
}

fn mount_dests(v: &Value) -> Vec<String> {
    v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap().to_string())
        .collect()
}

fn find_mount<'a>(v: &'a Value, dest: &str) -> &'a Value {
    v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == dest)
        .unwrap_or_else(|| panic!("no mount {dest}"))
}

#[test]
fn json_has_version_root_and_args() {
    let f = Fixture::new(container("box", Default::default()));
    let text = serde_json::to_string(&generate(&f.input()).unwrap()).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["ociVersion"], "1.2.0");
    assert_eq!(v["root"]["path"], "/var/lib/crius/c1/rootfs");
    assert_eq!(v["process"]["args"], json!(["sh"]));
}

#[test]
fn snapshot_minimal_busybox() {
    let mut c = container("box", Default::default());
    c.envs = vec![KeyValue {
        key: "FOO".into(),
        value: b"bar".to_vec(),
    }];
    c.annotations = [("user.note".to_string(), "x".to_string())].into();
    let v = Fixture::new(c).json();
    let default_caps = sorted(caps::DEFAULT_CAPABILITIES);
    assert_eq!(v["ociVersion"], "1.2.0");
    assert_eq!(v["hostname"], "web-pod");
    assert_eq!(
        v["root"],
        json!({"path": "/var/lib/crius/c1/rootfs", "readonly": false})
    );
    assert_eq!(
        v["process"],
        json!({
            "terminal": false,
            "user": {"uid": 0, "gid": 0, "additionalGids": [0, 10]},
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "FOO=bar",
                "HOSTNAME=web-pod",
                "HOME=/root"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": default_caps,
                "effective": default_caps,
                "permitted": default_caps,
                "inheritable": [],
                "ambient": []
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}],
            "noNewPrivileges": false,
            "oomScoreAdj": 0
        })
    );
    assert_eq!(
        v["linux"]["namespaces"],
        json!([
            {"type": "mount"},
            {"type": "network", "path": "/run/netns/pod"},
            {"type": "ipc", "path": "/run/ipcns/pod"},
            {"type": "uts", "path": "/run/utsns/pod"},
            {"type": "pid"}
        ])
    );
    assert_eq!(
        v["linux"]["cgroupsPath"],
        "/kubepods/besteffort/pod123/crius-c1"
    );
    assert_eq!(v["linux"]["sysctl"], json!({"net.ipv4.ip_forward": "1"}));
    assert_eq!(
        v["linux"]["maskedPaths"],
        json!(mounts::DEFAULT_MASKED_PATHS)
    );
    assert_eq!(
        v["linux"]["readonlyPaths"],
        json!(mounts::DEFAULT_READONLY_PATHS)
    );
    assert!(
        v["linux"].get("seccomp").is_none(),
        "unset profile = unconfined"
    );
    assert!(v["linux"].get("rootfsPropagation").is_none());
    assert_eq!(
        mount_dests(&v),
        s(&[
            "/proc",
            "/dev",
            "/sys",
            "/dev/pts",
            "/dev/mqueue",
            "/dev/shm",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/etc/hostname",
            "/sys/fs/cgroup"
        ])
    );
    assert_eq!(
        find_mount(&v, "/dev"),
        &json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]})
    );
    assert_eq!(
        find_mount(&v, "/sys")["options"],
        json!(["nosuid", "noexec", "nodev", "ro"])
    );
    assert_eq!(
        find_mount(&v, "/etc/hosts"),
        &json!({"destination": "/etc/hosts", "type": "bind", "source": "/run/pod/hosts",
                "options": ["rbind", "rprivate"]})
    );
    assert_eq!(
        v["annotations"],
        json!({
            "user.note": "x",
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-id": "s1",
            "io.kubernetes.cri.container-name": "box",
            "io.kubernetes.pod.name": "web",
            "io.kubernetes.pod.namespace": "default",
            "io.kubernetes.pod.uid": "uid-1",
            "io.crius.stdin": "false",
            "io.crius.stdin-once": "false"
        })
    );
}

#[test]
fn snapshot_non_root_readonly_dropped_caps_memory_limit() {
    let sc = LinuxContainerSecurityContext {
        run_as_user: Some(Int64Value { value: 1000 }),
        readonly_rootfs: true,
        no_new_privs: true,
        capabilities: Some(Capability {
            add_capabilities: s(&["NET_ADMIN", "SYS_RESOURCE"]),
            drop_capabilities: s(&["ALL"]),
            add_ambient_capabilities: vec![],
        }),
        supplemental_groups: vec![3000],
        seccomp: Some(SecurityProfile::default()), // RuntimeDefault
        ..Default::default()
    };
    let mut c = container("app", sc);
    c.command = s(&["/app/server"]);
    c.args = s(&["--port", "8080"]);
    c.working_dir = "/app".into();
    c.tty = true;
    c.mounts = vec![CriMount {
        container_path: "/data".into(),
        host_path: "/srv/data".into(),
        readonly: true,
        mount_options: s(&["noexec"]),
        ..Default::default()
    }];
    c.linux.as_mut().unwrap().resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 256 << 20,
        memory_swap_limit_in_bytes: 256 << 20,
        cpu_shares: 512,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        oom_score_adj: -999,
        ..Default::default()
    });
    let mut f = Fixture::new(c);
    f.image.entrypoint = s(&["/ignored"]);
    let v = f.json();
    assert_eq!(v["root"]["readonly"], true);
    assert_eq!(
        v["process"]["user"],
        json!({"uid": 1000, "gid": 1000, "additionalGids": [1000, 10, 3000]})
    );
    assert_eq!(
        v["process"]["args"],
        json!(["/app/server", "--port", "8080"])
    );
    assert_eq!(v["process"]["cwd"], "/app");
    assert_eq!(v["process"]["terminal"], true);
    assert_eq!(v["process"]["noNewPrivileges"], true);
    assert_eq!(
        v["process"]["oomScoreAdj"], -998,
        "clamped to the daemon's own"
    );
    assert!(v["process"]["env"]
        .as_array()
        .unwrap()
        .contains(&json!("TERM=xterm")));
    assert!(v["process"]["env"]
        .as_array()
        .unwrap()
        .contains(&json!("HOME=/home/app")));
    assert_eq!(
        v["process"]["capabilities"],
        json!({
            "bounding": ["CAP_NET_ADMIN"],
            "effective": ["CAP_NET_ADMIN"],
            "permitted": ["CAP_NET_ADMIN"],
            "inheritable": [],
            "ambient": []
        })
    );
    assert_eq!(
        v["annotations"][ANNOTATION_DROPPED_CAPS],
        "CAP_SYS_RESOURCE"
    );
    assert_eq!(
        v["linux"]["resources"],
        json!({
            "devices": [{"allow": false, "access": "rwm"}],
            "memory": {"limit": 268435456, "swap": 268435456},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000}
        })
    );
    assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(
        find_mount(&v, "/data"),
        &json!({"destination": "/data", "type": "bind", "source": "/srv/data",
                "options": ["rbind", "ro", "rprivate", "noexec"]})
    );
    assert_eq!(mount_dests(&v).last().unwrap(), "/sys/fs/cgroup");
}

#[test]
fn snapshot_privileged() {
    let sc = LinuxContainerSecurityContext {
        privileged: true,
        masked_paths: s(&["/proc/kcore"]),
        seccomp: Some(SecurityProfile::default()),
        capabilities: Some(Capability {
            drop_capabilities: s(&["ALL"]),
            ..Default::default()
        }),
        namespace_options: Some(NamespaceOption {
            network: NamespaceMode::Node as i32,
            pid: NamespaceMode::Node as i32,
            ipc: NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut f = Fixture::new(container("priv", sc));
    f.namespaces = PodNamespaces::default();
    let v = f.json();
    let all = {
        let mut v = s(caps::DEFAULT_CAPABILITIES);
        v.extend(s(&[
            "CAP_NET_ADMIN",
            "CAP_SYS_ADMIN",
            "CAP_NET_RAW",
            "CAP_MKNOD",
        ]));
        v.sort();
        json!(v)
    };
    assert_eq!(v["process"]["capabilities"]["bounding"], all);
    assert_eq!(v["process"]["capabilities"]["effective"], all);
    assert_eq!(v["linux"]["namespaces"], json!([{"type": "mount"}]));
    assert!(v.get("hostname").is_none(), "host UTS namespace");
    assert!(v["linux"].get("seccomp").is_none());
    assert_eq!(v["linux"]["maskedPaths"], json!([]));
    assert_eq!(v["linux"]["readonlyPaths"], json!([]));
    assert_eq!(
        find_mount(&v, "/sys")["options"],
        json!(["nosuid", "noexec", "nodev", "rw"])
    );
    assert!(v["annotations"].get(ANNOTATION_DROPPED_CAPS).is_none());
}

#[test]
fn generate_propagates_field_errors() {
    let cases: Vec<(LinuxContainerSecurityContext, &str)> = vec![
        (
            LinuxContainerSecurityContext {
                run_as_username: "nobodyx".into(),
                ..Default::default()
            },
            "linux.security_context.run_as_username: user \"nobodyx\" not found in the image's /etc/passwd",
        ),
        (
            LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Target as i32,
                    ..Default::default()
                }),
                ..Default::default()
            },
            "linux.security_context.namespace_options.pid: namespace mode TARGET is not supported yet",
        ),
    ];
    for (sc, want) in cases {
        let f = Fixture::new(container("x", sc));
        let err = generate(&f.input()).unwrap_err();
        assert_eq!(err.to_string(), want);
    }
    let mut f = Fixture::new(container("x", Default::default()));
    f.image = ImageConfig::default();
    let err = generate(&f.input()).unwrap_err();
    assert!(err.to_string().starts_with("command:"));
}

#[test]
fn stop_signal_and_stdin_annotations() {
    let mut c = container("x", Default::default());
    c.stdin = true;
    c.stdin_once = true;
    let mut f = Fixture::new(c);
    f.image.stop_signal = "SIGQUIT".into();
    let v = f.json();
    assert_eq!(v["annotations"][ANNOTATION_STDIN], "true");
    assert_eq!(v["annotations"][ANNOTATION_STDIN_ONCE], "true");
    assert_eq!(v["annotations"][ANNOTATION_STOP_SIGNAL], "SIGQUIT");
}

#[test]
fn bidirectional_mount_sets_rootfs_propagation() {
    let mut c = container("x", Default::default());
    c.mounts = vec![CriMount {
        container_path: "/shared".into(),
        host_path: "/mnt/shared".into(),
        propagation: crius_cri_api::v1::MountPropagation::PropagationBidirectional as i32,
        ..Default::default()
    }];
    let v = Fixture::new(c).json();
    assert_eq!(v["linux"]["rootfsPropagation"], "rshared");
}

#[test]
fn namespace_modes() {
    use NamespaceMode::*;
    let pinned = PodNamespaces {
        pid: Some("/run/pidns/pod".into()),
        ..pod_namespaces()
    };
    // (network, pid, ipc, pod namespaces, expected JSON, own uts)
    let cases: Vec<(
        NamespaceMode,
        NamespaceMode,
        NamespaceMode,
        PodNamespaces,
        Value,
        bool,
    )> = vec![
        (
            Pod,
            Pod,
            Pod,
            pinned.clone(),
            json!([{"type": "mount"}, {"type": "network", "path": "/run/netns/pod"},
                   {"type": "ipc", "path": "/run/ipcns/pod"}, {"type": "uts", "path": "/run/utsns/pod"},
                   {"type": "pid", "path": "/run/pidns/pod"}]),
            true,
        ),
        (
            Pod,
            Container,
            Pod,
            pinned.clone(),
            json!([{"type": "mount"}, {"type": "network", "path": "/run/netns/pod"},
                   {"type": "ipc", "path": "/run/ipcns/pod"}, {"type": "uts", "path": "/run/utsns/pod"},
                   {"type": "pid"}]),
            true,
        ),
        (
            Node,
            Node,
            Pod,
            pinned.clone(),
            json!([{"type": "mount"}, {"type": "ipc", "path": "/run/ipcns/pod"}]),
            false,
        ),
        (
            Node,
            Container,
            Node,
            PodNamespaces::default(),
            json!([{"type": "mount"}, {"type": "pid"}]),
            false,
        ),
        (
            Pod,
            Container,
            Pod,
            PodNamespaces::default(),
            json!([{"type": "mount"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "pid"}]),
            true,
        ),
        // POD in a pod on the host's namespaces: the host's.
        (
            Pod,
            Pod,
            Pod,
            PodNamespaces {
                host_network: true,
                host_ipc: true,
                host_pid: true,
                ..PodNamespaces::default()
            },
            json!([{"type": "mount"}]),
            false,
        ),
        (
            Pod,
            Container,
            Pod,
            PodNamespaces {
                host_network: true,
                ..pinned.clone()
            },
            json!([{"type": "mount"}, {"type": "ipc", "path": "/run/ipcns/pod"}, {"type": "pid"}]),
            false,
        ),
    ];
    for (i, (net, pid, ipc, pod_ns, want, want_uts)) in cases.into_iter().enumerate() {
        let opts = NamespaceOption {
            network: net as i32,
            pid: pid as i32,
            ipc: ipc as i32,
            ..Default::default()
        };
        let (got, own_uts) = namespaces(Some(&opts), &pod_ns).unwrap();
        assert_eq!(serde_json::to_value(&got).unwrap(), want, "case {i}");
        assert_eq!(own_uts, want_uts, "case {i}");
    }
}

#[test]
fn namespace_mode_errors() {
    let cases: Vec<(NamespaceOption, &str)> = vec![
        (
            NamespaceOption { network: NamespaceMode::Target as i32, ..Default::default() },
            "linux.security_context.namespace_options.network: namespace mode TARGET is not supported yet",
        ),
        (
            NamespaceOption { ipc: NamespaceMode::Target as i32, ..Default::default() },
            "linux.security_context.namespace_options.ipc: namespace mode TARGET is not supported yet",
        ),
        (
            NamespaceOption { pid: 17, ..Default::default() },
            "linux.security_context.namespace_options.pid: unknown mode 17",
        ),
        (
            NamespaceOption {
                userns_options: Some(UserNamespace { mode: NamespaceMode::Pod as i32, ..Default::default() }),
                ..Default::default()
            },
            "linux.security_context.namespace_options.userns_options.mode: user namespaces is not supported yet",
        ),
    ];
    for (opts, want) in cases {
        let err = namespaces(Some(&opts), &pod_namespaces()).unwrap_err();
        assert_eq!(err.to_string(), want);
    }
    let host_userns = NamespaceOption {
        userns_options: Some(UserNamespace {
            mode: NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(namespaces(Some(&host_userns), &pod_namespaces()).is_ok());
}

#[test]
fn oom_clamp() {
    // (requested, daemon's own, expected)
    let cases = [
        (0, -998, 0),
        (-999, -998, -998),
        (-1000, -998, -998),
        (500, 0, 500),
        (-5, 0, 0),
        (5000, 0, 1000),
        (-1000, -1000, -1000),
        (0, 1000, 1000),
        (i64::MIN, -2000, -1000),
    ];
    for (req, min, want) in cases {
        assert_eq!(clamp_oom_score_adj(req, min), want, "{req} {min}");
    }
}

#[test]
fn resources_mapping() {
    let cases: Vec<(Option<LinuxContainerResources>, Value)> = vec![
        (None, json!({})),
        (Some(LinuxContainerResources::default()), json!({})),
        (
            Some(LinuxContainerResources {
                cpuset_cpus: "0-1".into(),
                cpuset_mems: "0".into(),
                hugepage_limits: vec![HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 4 << 21,
                }],
                unified: [("memory.high".to_string(), "1000000".to_string())].into(),
                ..Default::default()
            }),
            json!({
                "cpu": {"cpus": "0-1", "mems": "0"},
                "hugepageLimits": [{"pageSize": "2MB", "limit": 8388608}],
                "unified": {"memory.high": "1000000"}
            }),
        ),
        (
            Some(LinuxContainerResources {
                memory_limit_in_bytes: 1 << 20,
                ..Default::default()
            }),
            json!({"memory": {"limit": 1048576}}),
        ),
    ];
    for (i, (r, want)) in cases.into_iter().enumerate() {
        let got = serde_json::to_value(resources(r.as_ref()).unwrap()).unwrap();
        assert_eq!(got, want, "case {i}");
    }
    let bad = [
        (
            LinuxContainerResources {
                cpu_shares: -1,
                ..Default::default()
            },
            "linux.resources.cpu_shares:",
        ),
        (
            LinuxContainerResources {
                memory_limit_in_bytes: -1,
                ..Default::default()
            },
            "linux.resources.memory_limit_in_bytes:",
        ),
        (
            LinuxContainerResources {
                hugepage_limits: vec![HugepageLimit {
                    page_size: "".into(),
                    limit: 1,
                }],
                ..Default::default()
            },
            "linux.resources.hugepage_limits[0].page_size:",
        ),
    ];
    for (r, want) in bad {
        let err = resources(Some(&r)).unwrap_err();
        assert!(err.to_string().starts_with(want), "{err}");
    }
}

#[test]
fn apparmor_profile_lands_in_the_process() {
    use crius_cri_api::v1::{security_profile::ProfileType, SecurityProfile};
    let mut f = Fixture::new(container("app", LinuxContainerSecurityContext::default()));
    f.host.lsm = lsm::LsmHost {
        apparmor: true,
        apparmor_profiles: s(&["crius-default", "tight"]),
        apparmor_default_profile: "crius-default".into(),
        selinux: false,
    };
    assert_eq!(f.json()["process"]["apparmorProfile"], "crius-default");
    let sc = LinuxContainerSecurityContext {
        apparmor: Some(SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: "tight".into(),
        }),
        ..Default::default()
    };
    f.container = container("app", sc);
    assert_eq!(f.json()["process"]["apparmorProfile"], "tight");
    // Without AppArmor in the kernel the same request is refused, not dropped.
    f.host.lsm = Default::default();
    let e = generate(&f.input()).unwrap_err();
    assert!(matches!(e, SpecError::HostUnsupported { .. }), "{e}");
}

#[test]
fn resource_updates_merge_into_a_created_containers_spec() {
    // (spec before, update, spec after)
    let cases = [
        // Fields the update sets replace the spec's, field by field;
        // devices stay.
        (
            json!({"linux": {"resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": {"limit": 100, "swap": 200},
                "cpu": {"shares": 2}}}}),
            json!({"memory": {"limit": 300}, "devices": [{"allow": true}]}),
            json!({"linux": {"resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": {"limit": 300, "swap": 200},
                "cpu": {"shares": 2}}}}),
        ),
        // The CPU manager's update: cpus alone; shares and quota stay.
        (
            json!({"linux": {"resources": {"cpu": {"shares": 512, "quota": 50000, "period": 100000}}}}),
            json!({"cpu": {"cpus": "1", "shares": null}}),
            json!({"linux": {"resources": {"cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "1"}}}}),
        ),
        // Arrays (hugepage limits) and unified keys: replaced, merged.
        (
            json!({"linux": {"resources": {
                "hugepageLimits": [{"pageSize": "2MB", "limit": 1}],
                "unified": {"memory.high": "1", "pids.max": "5"}}}}),
            json!({"hugepageLimits": [{"pageSize": "1GB", "limit": 2}], "unified": {"memory.high": "2"}}),
            json!({"linux": {"resources": {
                "hugepageLimits": [{"pageSize": "1GB", "limit": 2}],
                "unified": {"memory.high": "2", "pids.max": "5"}}}}),
        ),
        // Unset groups (null) leave the spec's alone.
        (
            json!({"linux": {"resources": {"pids": {"limit": 10}}}}),
            json!({"pids": null, "cpu": {"cpus": "0"}}),
            json!({"linux": {"resources": {"pids": {"limit": 10}, "cpu": {"cpus": "0"}}}}),
        ),
        // A spec without resources (or without linux) gains them.
        (
            json!({"ociVersion": "1.0.2"}),
            json!({"cpu": {"quota": 5000}}),
            json!({"ociVersion": "1.0.2", "linux": {"resources": {"cpu": {"quota": 5000}}}}),
        ),
        // Not an object: nothing changes.
        (json!({"linux": {}}), json!(null), json!({"linux": {}})),
    ];
    for (before, update, after) in cases {
        let mut spec = before.clone();
        merge_resources(&mut spec, &update);
        assert_eq!(spec, after, "{before} + {update}");
    }
    // The real thing: resources() serialised merges as the runtime's update.
    let res = resources(Some(&LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        cpu_shares: 512,
        ..Default::default()
    }))
    .unwrap();
    let mut spec = json!({"linux": {"resources": {"devices": [{"allow": false}]}}});
    merge_resources(&mut spec, &serde_json::to_value(&res).unwrap());
    assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 << 20);
    assert_eq!(spec["linux"]["resources"]["cpu"]["shares"], 512);
    assert_eq!(spec["linux"]["resources"]["devices"][0]["allow"], false);
}

/// The names of the seccomp rules without argument filters.
fn unfiltered_syscalls(v: &Value) -> Vec<String> {
    v["linux"]["seccomp"]["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s.get("args").is_none())
        .flat_map(|s| s["names"].as_array().unwrap().clone())
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn runtime_default_seccomp_follows_the_containers_capabilities_and_kernel() {
    let sc = |add: &[&str]| LinuxContainerSecurityContext {
        seccomp: Some(SecurityProfile::default()), // RuntimeDefault
        capabilities: Some(Capability {
            add_capabilities: s(add),
            ..Default::default()
        }),
        ..Default::default()
    };
    let has = |v: &Value, name: &str| unfiltered_syscalls(v).iter().any(|n| n == name);
    // (added capabilities, daemon has CAP_SYS_ADMIN, kernel, unshare and
    // ptrace allowed outright)
    let cases = [
        (vec![], true, Some((6, 1)), false, true),
        (vec!["SYS_ADMIN"], true, Some((6, 1)), true, true),
        // A capability the daemon cannot give is not the container's, and
        // does not open its rules either.
        (vec!["SYS_ADMIN"], false, Some((6, 1)), false, true),
        // ptrace waits for 4.8 (seccomp bypass before it); unknown = old.
        (vec![], true, Some((4, 4)), false, false),
        (vec![], true, None, false, false),
    ];
    for (add, daemon_admin, kernel, unshare, ptrace) in cases {
        let mut f = Fixture::new(container("app", sc(&add)));
        if !daemon_admin {
            f.host.bounding_caps.retain(|c| c != "CAP_SYS_ADMIN");
        }
        f.host.kernel = kernel;
        let v = f.json();
        let case = format!("{add:?} daemon_admin={daemon_admin} {kernel:?}");
        assert_eq!(has(&v, "unshare"), unshare, "{case}");
        assert_eq!(has(&v, "clone"), unshare, "{case}");
        assert_eq!(has(&v, "ptrace"), ptrace, "{case}");
        assert!(has(&v, "read"), "{case}");
    }
}
