//! What a plugin is told about a pod (pure): the `CNI_ARGS` kubelet-era
//! plugins read, the `runtimeConfig` capabilities (port mappings,
//! bandwidth, DNS, the pod's cgroup, annotations), and each plugin's
//! stdin as libcni builds it: its own config with the list's `name` and
//! `cniVersion`, the previous plugin's result, and only the capabilities
//! it declares.

use crate::config::{NetworkConfigList, PluginConfig};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The interface name every pod's network gets (kubelet's default).
pub const IFNAME: &str = "eth0";

/// The pod annotations kubelet's bandwidth shaping reads.
pub const INGRESS_BANDWIDTH: &str = "kubernetes.io/ingress-bandwidth";
pub const EGRESS_BANDWIDTH: &str = "kubernetes.io/egress-bandwidth";

/// Bounds kubelet puts on a bandwidth annotation, in bits per second.
const MIN_BANDWIDTH: u128 = 1_000;
const MAX_BANDWIDTH: u128 = 1_000_000_000_000_000;

/// A request value a plugin cannot be given; the daemon reports it as
/// INVALID_ARGUMENT, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ArgError {
    pub field: String,
    pub reason: String,
}

fn arg_error(field: impl Into<String>, reason: impl Into<String>) -> ArgError {
    ArgError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A pod's hostPort mapping (only mappings with a host port reach CNI).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Empty: every host address.
    pub host_ip: String,
}

/// Traffic shaping in bits per second (the bandwidth plugin's units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Bandwidth {
    pub ingress_rate: u64,
    pub ingress_burst: u64,
    pub egress_rate: u64,
    pub egress_burst: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Dns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// What crius knows of a pod that its network plugins are given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PodNetwork {
    /// The sandbox id: `CNI_CONTAINERID` and `K8S_POD_INFRA_CONTAINER_ID`.
    pub id: String,
    /// The pod's pinned network namespace (`CNI_NETNS`).
    pub netns: PathBuf,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub port_mappings: Vec<PortMapping>,
    pub bandwidth: Option<Bandwidth>,
    pub dns: Option<Dns>,
    /// The pod's cgroup parent (the `cgroupPath` capability).
    pub cgroup_path: String,
    pub annotations: BTreeMap<String, String>,
}

/// `CNI_ARGS` for a pod, as kubelet's dockershim and every CRI runtime
/// since pass them. A value holding `;` or `=` would smuggle in arguments
/// of its own, so it is refused rather than passed.
pub fn cni_args(pod: &PodNetwork) -> Result<Vec<(String, String)>, ArgError> {
    let args = vec![
        ("IgnoreUnknown".to_string(), "1".to_string()),
        ("K8S_POD_NAMESPACE".into(), pod.namespace.clone()),
        ("K8S_POD_NAME".into(), pod.name.clone()),
        ("K8S_POD_INFRA_CONTAINER_ID".into(), pod.id.clone()),
        ("K8S_POD_UID".into(), pod.uid.clone()),
    ];
    for (field, (k, v)) in [
        "",
        "metadata.namespace",
        "metadata.name",
        "",
        "metadata.uid",
    ]
    .iter()
    .zip(&args)
    {
        if let Some(c) = v.chars().find(|c| matches!(c, ';' | '=' | '\0')) {
            return Err(arg_error(
                if field.is_empty() { k.as_str() } else { field },
                format!("{v:?} holds {c:?}, which CNI_ARGS cannot carry"),
            ));
        }
    }
    Ok(args)
}

/// `K1=V1;K2=V2`.
pub fn cni_args_string(args: &[(String, String)]) -> String {
    args.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Every capability crius can fill for this pod; each plugin is given the
/// ones it declares.
pub fn capability_args(pod: &PodNetwork) -> Map<String, Value> {
    let mut m = Map::new();
    if !pod.port_mappings.is_empty() {
        let pms: Vec<Value> = pod
            .port_mappings
            .iter()
            .map(|p| {
                let mut o = json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": p.protocol,
                });
                if !p.host_ip.is_empty() {
                    o["hostIP"] = json!(p.host_ip);
                }
                o
            })
            .collect();
        m.insert("portMappings".into(), Value::Array(pms));
    }
    if let Some(b) = &pod.bandwidth {
        let mut o = Map::new();
        if b.ingress_rate > 0 {
            o.insert("ingressRate".into(), json!(b.ingress_rate));
            o.insert("ingressBurst".into(), json!(b.ingress_burst));
        }
        if b.egress_rate > 0 {
            o.insert("egressRate".into(), json!(b.egress_rate));
            o.insert("egressBurst".into(), json!(b.egress_burst));
        }
        if !o.is_empty() {
            m.insert("bandwidth".into(), Value::Object(o));
        }
    }
    if let Some(d) = &pod.dns {
        m.insert(
            "dns".into(),
            json!({ "servers": d.servers, "searches": d.searches, "options": d.options }),
        );
    }
    if !pod.cgroup_path.is_empty() {
        m.insert("cgroupPath".into(), json!(pod.cgroup_path));
    }
    // containerd's name for it, which plugins such as Multus and Calico read.
    m.insert(
        "io.kubernetes.cri.pod-annotations".into(),
        json!(pod.annotations),
    );
    m
}

/// One plugin's stdin: its config with the list's name and version, the
/// previous result (when there is one), and the capabilities it declares
/// that crius has for this pod as `runtimeConfig`.
pub fn plugin_stdin(
    list: &NetworkConfigList,
    plugin: &PluginConfig,
    prev_result: Option<&Value>,
    capabilities: &Map<String, Value>,
) -> Vec<u8> {
    let mut m = plugin.raw.clone();
    m.insert("name".into(), json!(list.name));
    m.insert("cniVersion".into(), json!(list.cni_version));
    if let Some(p) = prev_result {
        m.insert("prevResult".into(), p.clone());
    }
    let wanted = plugin.capabilities();
    let rc: Map<String, Value> = capabilities
        .iter()
        .filter(|(k, _)| wanted.iter().any(|w| w == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !rc.is_empty() {
        m.insert("runtimeConfig".into(), Value::Object(rc));
    }
    // A Map of JSON values always serialises.
    serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
}

/// A Kubernetes resource quantity (`10M`, `1Gi`, `500k`, `1e6`, `1500m`)
/// as the integer kubelet's `Quantity.Value()` gives: rounded up. None if
/// it is not a quantity or is negative or absurdly large.
pub fn quantity(s: &str) -> Option<u128> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let num = num.strip_prefix('+').unwrap_or(num);
    if num.is_empty() || num.starts_with('.') && num.len() == 1 {
        return None;
    }
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.len() + frac.len() > 30 || frac.contains('.') {
        return None;
    }
    let digits: u128 = format!("{int}{frac}").parse().ok()?;
    let scale = 10u128.checked_pow(frac.len() as u32)?;
    // value = digits * mul / div / scale, rounded up.
    let (mul, div): (u128, u128) = match suffix {
        "" => (1, 1),
        "m" => (1, 1000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        e if e.starts_with(['e', 'E']) => {
            let n: u32 = e[1..].parse().ok()?;
            (10u128.checked_pow(n.min(40))?, 1)
        }
        _ => return None,
    };
    let top = digits.checked_mul(mul)?;
    let bottom = div.checked_mul(scale)?;
    Some(top.div_ceil(bottom))
}

/// The pod's bandwidth annotations as the bandwidth plugin takes them
/// (burst unlimited, as CRI-O and containerd pass it); an annotation that
/// is not a quantity, or outside kubelet's 1k..1P bounds, is refused.
pub fn bandwidth_from_annotations(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<Bandwidth>, ArgError> {
    let rate = |key: &str| -> Result<u64, ArgError> {
        let Some(v) = annotations.get(key) else {
            return Ok(0);
        };
        let field = format!("config.annotations[{key:?}]");
        let q = quantity(v)
            .ok_or_else(|| arg_error(&field, format!("{v:?} is not a resource quantity")))?;
        if !(MIN_BANDWIDTH..=MAX_BANDWIDTH).contains(&q) {
            return Err(arg_error(
                &field,
                format!("{v:?} is outside 1k..1P bits per second"),
            ));
        }
        Ok(q as u64)
    };
    let (ingress, egress) = (rate(INGRESS_BANDWIDTH)?, rate(EGRESS_BANDWIDTH)?);
    if ingress == 0 && egress == 0 {
        return Ok(None);
    }
    let burst = |r: u64| if r > 0 { u64::from(u32::MAX) } else { 0 };
    Ok(Some(Bandwidth {
        ingress_rate: ingress,
        ingress_burst: burst(ingress),
        egress_rate: egress,
        egress_burst: burst(egress),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod() -> PodNetwork {
        PodNetwork {
            id: "abc".into(),
            netns: "/run/crius/pods/abc/ns/net".into(),
            name: "web".into(),
            namespace: "default".into(),
            uid: "u-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn cni_args_carry_the_pod_and_refuse_smuggling() {
        let args = cni_args(&pod()).unwrap();
        assert_eq!(
            cni_args_string(&args),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1"
        );
        let table = [
            ("name", "a;IgnoreUnknown=0", "metadata.name"),
            ("namespace", "x=y", "metadata.namespace"),
            ("uid", "u\0", "metadata.uid"),
        ];
        for (which, v, field) in table {
            let mut p = pod();
            match which {
                "name" => p.name = v.into(),
                "namespace" => p.namespace = v.into(),
                _ => p.uid = v.into(),
            }
            let e = cni_args(&p).unwrap_err();
            assert_eq!(e.field, field, "{v:?}");
        }
    }

    #[test]
    fn stdin_gets_name_version_prev_result_and_only_declared_capabilities() {
        let list = crate::config::parse(
            std::path::Path::new("/x.conflist"),
            br#"{"cniVersion":"1.0.0","name":"net","plugins":[
                {"type":"bridge","cniVersion":"0.3.1","name":"ignored"},
                {"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false},
                 "runtimeConfig":{"stale":1}}]}"#,
            true,
        )
        .unwrap();
        let mut p = pod();
        p.port_mappings = vec![PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }];
        p.bandwidth = Some(Bandwidth {
            ingress_rate: 1000,
            ingress_burst: 5,
            ..Default::default()
        });
        let caps = capability_args(&p);
        let first: Value =
            serde_json::from_slice(&plugin_stdin(&list, &list.plugins[0], None, &caps)).unwrap();
        assert_eq!(first["name"], "net");
        assert_eq!(first["cniVersion"], "1.0.0");
        assert!(first.get("prevResult").is_none());
        assert!(first.get("runtimeConfig").is_none(), "{first}");
        let prev = json!({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]});
        let second: Value =
            serde_json::from_slice(&plugin_stdin(&list, &list.plugins[1], Some(&prev), &caps))
                .unwrap();
        assert_eq!(second["prevResult"], prev);
        assert_eq!(
            second["runtimeConfig"],
            json!({"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]})
        );
    }

    #[test]
    fn quantities_as_kubelet_reads_them() {
        let table: [(&str, Option<u128>); 16] = [
            ("10M", Some(10_000_000)),
            ("1k", Some(1000)),
            ("1Ki", Some(1024)),
            ("1.5M", Some(1_500_000)),
            ("1Gi", Some(1 << 30)),
            ("100", Some(100)),
            ("1500m", Some(2)),
            ("1e3", Some(1000)),
            ("+5k", Some(5000)),
            ("0.001k", Some(1)),
            ("-1M", None),
            ("", None),
            ("M", None),
            ("10Q", None),
            ("1.2.3", None),
            ("99999999999999999999999999999999E", None),
        ];
        for (s, want) in table {
            assert_eq!(quantity(s), want, "{s:?}");
        }
    }

    #[test]
    fn bandwidth_annotations() {
        let ann = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(bandwidth_from_annotations(&ann(&[])).unwrap(), None);
        let b = bandwidth_from_annotations(&ann(&[(INGRESS_BANDWIDTH, "10M")]))
            .unwrap()
            .unwrap();
        assert_eq!(
            b,
            Bandwidth {
                ingress_rate: 10_000_000,
                ingress_burst: u32::MAX as u64,
                egress_rate: 0,
                egress_burst: 0
            }
        );
        for bad in ["lots", "10", "2P"] {
            let e = bandwidth_from_annotations(&ann(&[(EGRESS_BANDWIDTH, bad)])).unwrap_err();
            assert!(e.field.contains("egress-bandwidth"), "{bad}: {e}");
        }
    }

    #[test]
    fn capabilities_are_omitted_when_the_pod_has_none() {
        let caps = capability_args(&pod());
        let keys: Vec<_> = caps.keys().cloned().collect();
        assert_eq!(keys, ["io.kubernetes.cri.pod-annotations"]);
    }
}
