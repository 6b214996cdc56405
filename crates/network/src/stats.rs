//! A pod's network counters: `/proc/net/dev` as seen from inside its
//! network namespace, read on a thread of its own that enters the
//! namespace (setns moves only the calling thread) and exits.

use std::path::{Path, PathBuf};

/// One interface's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Parses `/proc/net/dev`: two header lines, then `name: rx… tx…` with
/// receive bytes, packets, errs, drop (fields 0–3) and transmit bytes,
/// packets, errs, drop (fields 8–11).
pub fn parse_net_dev(text: &str) -> Vec<Interface> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            (f.len() >= 12).then(|| Interface {
                name: name.trim().to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .collect()
}

/// The interfaces of the network namespace pinned at `netns` (None: the
/// host's).
pub fn read(netns: Option<&Path>) -> std::io::Result<Vec<Interface>> {
    let netns: Option<PathBuf> = netns.map(Path::to_path_buf);
    std::thread::Builder::new()
        .name("crius-netstats".into())
        .spawn(move || {
            if let Some(ns) = netns {
                let f = std::fs::File::open(&ns)?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                    std::io::Error::other(format!("entering {}: {e}", ns.display()))
                })?;
            }
            // thread-self: this thread's namespace, not the process's.
            Ok(parse_net_dev(&std::fs::read_to_string(
                "/proc/thread-self/net/dev",
            )?))
        })?
        .join()
        .map_err(|_| std::io::Error::other("network stats thread panicked"))?
}

/// The pod's main interface: `eth0` (what CNI names it), else the first
/// that is not loopback.
pub fn default_interface(ifs: &[Interface]) -> Option<&Interface> {
    ifs.iter()
        .find(|i| i.name == "eth0")
        .or_else(|| ifs.iter().find(|i| i.name != "lo"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0: 123456     100    2    5    0     0          0         0   654321      90    3    6    0     0       0          0
";

    #[test]
    fn parses_proc_net_dev() {
        let ifs = parse_net_dev(DEV);
        assert_eq!(ifs.len(), 2);
        let eth = default_interface(&ifs).unwrap();
        assert_eq!(
            eth,
            &Interface {
                name: "eth0".into(),
                rx_bytes: 123456,
                rx_packets: 100,
                rx_errors: 2,
                rx_dropped: 5,
                tx_bytes: 654321,
                tx_packets: 90,
                tx_errors: 3,
                tx_dropped: 6,
            }
        );
        assert!(parse_net_dev("h\nh\ngarbage\nx: 1 2\n").is_empty());
        assert_eq!(default_interface(&ifs[..1]), None);
    }

    #[test]
    fn reads_the_hosts_own() {
        let ifs = read(None).unwrap();
        assert!(ifs.iter().any(|i| i.name == "lo"));
    }
}
