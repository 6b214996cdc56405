//! Pod sysctls: only namespaced ones, and only when the pod has its own
//! namespace of that kind — a sysctl set in the host's namespace would
//! change the node for everyone (the same rules runc and kubelet apply).

use super::SpecError;
use std::collections::{BTreeMap, HashMap};

/// Which namespace a sysctl belongs to, if it is namespaced at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlNamespace {
    Ipc,
    Uts,
    Network,
}

const IPC_SYSCTLS: &[&str] = &[
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
];

/// Classifies `key` (dots or slashes as separators).
pub fn namespace_of(key: &str) -> Option<SysctlNamespace> {
    let key = key.replace('/', ".");
    if IPC_SYSCTLS.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
        Some(SysctlNamespace::Ipc)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(SysctlNamespace::Uts)
    } else if key.starts_with("net.") {
        Some(SysctlNamespace::Network)
    } else {
        None
    }
}

/// Validates the pod's sysctls against its namespaces (`host_*`: the pod
/// shares the node's namespace of that kind).
pub fn validate(
    sysctls: &HashMap<String, String>,
    host_network: bool,
    host_ipc: bool,
) -> Result<BTreeMap<String, String>, SpecError> {
    let mut out = BTreeMap::new();
    for (k, v) in sysctls {
        let field = format!("linux.sysctls[{k}]");
        let host = match namespace_of(k) {
            None => {
                return Err(SpecError::invalid(
                    field,
                    "not a namespaced sysctl; it would change the whole node",
                ))
            }
            Some(SysctlNamespace::Ipc) => host_ipc.then_some("IPC"),
            // The UTS namespace follows the network namespace's mode.
            Some(SysctlNamespace::Network) | Some(SysctlNamespace::Uts) => {
                host_network.then_some("network")
            }
        };
        if let Some(kind) = host {
            return Err(SpecError::invalid(
                field,
                format!("not allowed in a pod that uses the host's {kind} namespace"),
            ));
        }
        out.insert(k.clone(), v.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        for (k, want) in [
            ("net.ipv4.ip_forward", Some(SysctlNamespace::Network)),
            ("net/core/somaxconn", Some(SysctlNamespace::Network)),
            ("kernel.shmmax", Some(SysctlNamespace::Ipc)),
            ("fs.mqueue.msg_max", Some(SysctlNamespace::Ipc)),
            ("kernel.hostname", Some(SysctlNamespace::Uts)),
            ("vm.swappiness", None),
            ("kernel.panic", None),
            ("fs.file-max", None),
        ] {
            assert_eq!(namespace_of(k), want, "{k}");
        }
    }

    #[test]
    fn validation_table() {
        let one = |k: &str| HashMap::from([(k.to_string(), "1".to_string())]);
        // (sysctl, host_network, host_ipc, error fragment or "" for ok)
        for (k, hn, hi, want) in [
            ("net.ipv4.ip_forward", false, false, ""),
            (
                "net.ipv4.ip_forward",
                true,
                false,
                "host's network namespace",
            ),
            ("kernel.shmmax", false, false, ""),
            ("kernel.shmmax", false, true, "host's IPC namespace"),
            ("kernel.hostname", true, false, "host's network namespace"),
            ("vm.swappiness", false, false, "not a namespaced sysctl"),
        ] {
            match validate(&one(k), hn, hi) {
                Ok(m) => assert!(
                    want.is_empty() && m.len() == 1,
                    "{k}: expected error {want:?}"
                ),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(
                        !want.is_empty() && msg.contains(want) && msg.contains(k),
                        "{k}: {msg}"
                    );
                }
            }
        }
    }
}
