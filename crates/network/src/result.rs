//! Plugin output (pure): the addresses a result gives the pod, whichever
//! result version the plugin wrote, and the error object a failing plugin
//! prints.

use serde_json::Value;
use std::net::IpAddr;

/// An address a result assigns to the pod, with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodIp {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for PodIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn cidr(s: &str) -> Option<PodIp> {
    let (a, p) = s.split_once('/').unwrap_or((s, ""));
    let addr: IpAddr = a.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = if p.is_empty() { max } else { p.parse().ok()? };
    (prefix <= max).then_some(PodIp { addr, prefix })
}

/// The pod's addresses in a result, in the result's order:
/// - 0.3.0 on: `ips[].address`, keeping those whose `interface` index
///   names an interface inside a sandbox (a plugin also lists the host's
///   bridge and veth) or that name no interface;
/// - 0.1/0.2: `ip4.ip` then `ip6.ip`.
pub fn pod_ips(result: &Value) -> Vec<PodIp> {
    let mut out = Vec::new();
    if let Some(ips) = result.get("ips").and_then(Value::as_array) {
        let ifaces = result
            .get("interfaces")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for ip in ips {
            let in_sandbox = match ip.get("interface").and_then(Value::as_u64) {
                None => true,
                Some(i) => ifaces
                    .get(i as usize)
                    .and_then(|f| f.get("sandbox"))
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty()),
            };
            if let Some(p) = ip.get("address").and_then(Value::as_str).and_then(cidr) {
                if in_sandbox && !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    } else {
        for key in ["ip4", "ip6"] {
            if let Some(p) = result
                .get(key)
                .and_then(|o| o.get("ip"))
                .and_then(Value::as_str)
                .and_then(cidr)
            {
                out.push(p);
            }
        }
    }
    out
}

/// The primary IP (the first IPv4, as kubelet prefers it, else the first)
/// and the others in order: `PodSandboxNetworkStatus.ip` and
/// `additional_ips`.
pub fn primary_first(ips: &[PodIp]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = ips.iter().map(|p| p.addr).collect();
    if let Some(i) = out.iter().position(IpAddr::is_ipv4) {
        let v4 = out.remove(i);
        out.insert(0, v4);
    }
    out
}

/// What a failing plugin said: its error object's `msg` and `details`
/// (and code), or, if it printed none, the end of its stderr.
pub fn plugin_error(stdout: &[u8], stderr: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(stdout).ok();
    if let Some(o) = parsed.as_ref().filter(|v| v.get("msg").is_some()) {
        let msg = o.get("msg").and_then(Value::as_str).unwrap_or("");
        let details = o.get("details").and_then(Value::as_str).unwrap_or("");
        let code = o.get("code").and_then(Value::as_u64).unwrap_or(0);
        let mut s = msg.to_string();
        if !details.is_empty() {
            s.push_str(": ");
            s.push_str(details);
        }
        if code != 0 {
            s.push_str(&format!(" (CNI error code {code})"));
        }
        return s;
    }
    let text = String::from_utf8_lossy(if stdout.iter().any(|b| !b.is_ascii_whitespace()) {
        stdout
    } else {
        stderr
    });
    let text = text.trim();
    // The last 1 KiB: where a stack trace or a shell error ends.
    let start = text.len().saturating_sub(1024);
    let start = (start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    if text.is_empty() {
        "no error message".into()
    } else {
        text[start..].to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_ips_from_each_result_version() {
        let table: Vec<(Value, Vec<&str>)> = vec![
            (
                json!({"cniVersion":"1.0.0",
                       "interfaces":[{"name":"cni0","mac":"x"},{"name":"veth1"},{"name":"eth0","sandbox":"/run/ns"}],
                       "ips":[{"address":"10.88.0.5/16","gateway":"10.88.0.1","interface":2},
                              {"address":"fd00::5/64","interface":2},
                              {"address":"10.99.0.1/24","interface":0}]}),
                vec!["10.88.0.5/16", "fd00::5/64"],
            ),
            (
                json!({"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.1.0.2/24"}]}),
                vec!["10.1.0.2/24"],
            ),
            (
                json!({"cniVersion":"0.2.0","ip4":{"ip":"10.2.0.3/24"},"ip6":{"ip":"fd01::3/64"}}),
                vec!["10.2.0.3/24", "fd01::3/64"],
            ),
            (json!({"cniVersion":"1.0.0"}), vec![]),
            (
                json!({"ips":[{"address":"not-an-ip"},{"address":"10.0.0.1/33"},{"address":"10.0.0.9"}]}),
                vec!["10.0.0.9/32"],
            ),
        ];
        for (result, want) in table {
            let got: Vec<String> = pod_ips(&result).iter().map(|p| p.to_string()).collect();
            assert_eq!(got, want, "{result}");
        }
    }

    #[test]
    fn ipv4_is_primary() {
        let ips = pod_ips(&json!({"ips":[{"address":"fd00::5/64"},{"address":"10.0.0.5/24"}]}));
        let order: Vec<String> = primary_first(&ips).iter().map(|a| a.to_string()).collect();
        assert_eq!(order, ["10.0.0.5", "fd00::5"]);
    }

    #[test]
    fn plugin_errors_read_as_written() {
        let table: [(&[u8], &[u8], &str); 4] = [
            (
                br#"{"cniVersion":"1.0.0","code":11,"msg":"failed to allocate","details":"range full"}"#,
                b"",
                "failed to allocate: range full (CNI error code 11)",
            ),
            (br#"{"msg":"boom"}"#, b"", "boom"),
            (b"", b"panic: runtime error\n", "panic: runtime error"),
            (b"", b"", "no error message"),
        ];
        for (out, err, want) in table {
            assert_eq!(plugin_error(out, err), want);
        }
    }
}
