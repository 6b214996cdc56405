//! /etc/hosts, /etc/resolv.conf and /etc/hostname of a pod. The contents
//! are pure functions of the pod config and the host's files; `write_atomic`
//! puts them in place (write a temporary file, rename).

use crate::{io, SandboxError};
use crius_cri_api::v1::DnsConfig;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

/// glibc reads at most this many search domains (kubelet enforces 32).
pub const MAX_SEARCHES: usize = 32;

fn one_line(field: &str, v: &str) -> Result<(), SandboxError> {
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SandboxError::Dns(format!(
            "{field} {v:?} must be one non-empty word"
        )));
    }
    Ok(())
}

/// resolv.conf: from the pod's DNSConfig, or a copy of the host's when the
/// pod has none (what kubelet's `dnsPolicy: Default` means).
pub fn resolv_conf(dns: Option<&DnsConfig>, host: &str) -> Result<String, SandboxError> {
    let Some(d) =
        dns.filter(|d| !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()))
    else {
        return Ok(host.to_string());
    };
    if d.searches.len() > MAX_SEARCHES {
        return Err(SandboxError::Dns(format!(
            "searches has {} entries, at most {MAX_SEARCHES} are allowed",
            d.searches.len()
        )));
    }
    let mut out = String::new();
    for s in &d.searches {
        one_line("searches entry", s)?;
    }
    if !d.searches.is_empty() {
        out.push_str(&format!("search {}\n", d.searches.join(" ")));
    }
    for s in &d.servers {
        s.parse::<IpAddr>()
            .map_err(|_| SandboxError::Dns(format!("servers entry {s:?} is not an IP address")))?;
        out.push_str(&format!("nameserver {s}\n"));
    }
    for o in &d.options {
        one_line("options entry", o)?;
    }
    if !d.options.is_empty() {
        out.push_str(&format!("options {}\n", d.options.join(" ")));
    }
    Ok(out)
}

/// /etc/hosts: the host's for host-network pods, else the loopback names
/// and the pod's hostname on 127.0.0.1 (pod IPs join with CNI).
pub fn hosts(hostname: &str, host_network: bool, host: &str, ips: &[String]) -> String {
    if host_network {
        return host.to_string();
    }
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    if !hostname.is_empty() && hostname != "localhost" {
        // The pod's own addresses name it once it has a network (as
        // kubelet's managed hosts file does); loopback until then.
        if ips.is_empty() {
            s.push_str(&format!("127.0.0.1\t{hostname}\n"));
        }
        for ip in ips {
            s.push_str(&format!("{ip}\t{hostname}\n"));
        }
    }
    s
}

/// /etc/hostname.
pub fn hostname_file(hostname: &str) -> String {
    format!("{hostname}\n")
}

/// Writes `content` to `path` atomically with mode 0644: a reader (or a
/// daemon restarted after `kill -9`) sees the old file or the whole new one.
/// No fsync: these files live in the run root beside the pod's pinned
/// namespaces, and no pod survives the power loss that could tear them
/// (the run root is a tmpfs on most hosts; on this one an fsync per file
/// cost RunPodSandbox ~0.5 ms).
pub fn write_atomic(path: &Path, content: &[u8]) -> Result<(), SandboxError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(io(format!("creating {}", tmp.display())))?;
    f.write_all(content)
        .map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("renaming to {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(servers: &[&str], searches: &[&str], options: &[&str]) -> DnsConfig {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        DnsConfig {
            servers: v(servers),
            searches: v(searches),
            options: v(options),
        }
    }

    #[test]
    fn resolv_conf_table() {
        let host = "nameserver 192.0.2.53\n";
        let cases: Vec<(Option<DnsConfig>, Result<&str, &str>)> = vec![
            (None, Ok(host)),
            (Some(dns(&[], &[], &[])), Ok(host)),
            (
                Some(dns(&["10.96.0.10"], &["ns.svc.cluster.local", "svc.cluster.local"], &["ndots:5"])),
                Ok("search ns.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"),
            ),
            (Some(dns(&["fd00::10", "10.0.0.1"], &[], &[])), Ok("nameserver fd00::10\nnameserver 10.0.0.1\n")),
            (Some(dns(&["dns.example"], &[], &[])), Err("\"dns.example\" is not an IP address")),
            (Some(dns(&["10.0.0.1"], &["a b"], &[])), Err("searches entry")),
            (Some(dns(&["10.0.0.1"], &[], &["x\nnameserver 6.6.6.6"])), Err("options entry")),
        ];
        for (i, (d, want)) in cases.into_iter().enumerate() {
            match (resolv_conf(d.as_ref(), host), want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "case {i}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "case {i}: {e}"),
                (g, w) => panic!("case {i}: {g:?} vs {w:?}"),
            }
        }
        let many: Vec<String> = (0..33).map(|i| format!("d{i}")).collect();
        let d = DnsConfig {
            searches: many,
            ..Default::default()
        };
        assert!(resolv_conf(Some(&d), host).is_err());
    }

    #[test]
    fn hosts_table() {
        let host = "127.0.0.1 localhost\n10.0.0.5 node1\n";
        assert_eq!(hosts("pod", true, host, &[]), host);
        let h = hosts("web-0", false, host, &[]);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"), "{h}");
        assert!(h.ends_with("127.0.0.1\tweb-0\n"), "{h}");
        assert!(!h.contains("node1"));
        assert!(!hosts("", false, host, &[]).contains("\t\n"));
        let ips = ["10.88.0.5".to_string(), "fd00::5".to_string()];
        let h = hosts("web-0", false, host, &ips);
        assert!(h.ends_with("10.88.0.5\tweb-0\nfd00::5\tweb-0\n"), "{h}");
        assert!(!h.contains("127.0.0.1\tweb-0"), "{h}");
        assert_eq!(hostname_file("web-0"), "web-0\n");
    }
}
