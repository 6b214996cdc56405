//! A CNI network of a test's own: a uniquely named network and bridge, a
//! subnet nobody else uses, host-local IPAM files in a directory of the
//! test's, plugins from the host's containernetworking-plugins, and the
//! leak checks (veths on the bridge, IPAM allocations, iptables rules
//! naming the network) that say a pod's network was fully undone.

use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's containernetworking-plugins installs its binaries.
pub const HOST_PLUGINS: &str = "/usr/lib/cni";

#[derive(Debug)]
pub struct TestNetwork {
    /// The CNI network name (unique: it names IPAM and iptables entries).
    pub name: String,
    pub bridge: String,
    /// The third octet of 10.231.N.0/24.
    pub subnet: u8,
    pub ipam_dir: PathBuf,
    /// A plugin directory of the test's own (scripted plugins), searched
    /// before the host's.
    pub plugin_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

/// Fails the test early, naming the package, when the plugins are absent.
pub fn require_plugins() {
    for p in ["bridge", "host-local", "portmap", "loopback"] {
        assert!(
            Path::new(HOST_PLUGINS).join(p).exists(),
            "{HOST_PLUGINS}/{p} is missing (apt-get install containernetworking-plugins)"
        );
    }
}

impl TestNetwork {
    /// `subnet` picks 10.231.<subnet>.0/24; each test takes its own.
    pub fn new(tag: &str, subnet: u8) -> Result<TestNetwork> {
        require_plugins();
        let tmp = tempfile::Builder::new().prefix("crius-net-").tempdir()?;
        let plugin_dir = tmp.path().join("plugins");
        std::fs::create_dir_all(&plugin_dir)?;
        let name = format!("crt-{tag}");
        purge_iptables(&name, subnet);
        Ok(TestNetwork {
            name,
            bridge: format!("crt{subnet}"),
            subnet,
            ipam_dir: tmp.path().join("ipam"),
            plugin_dir,
            _tmp: tmp,
        })
    }

    pub fn gateway(&self) -> String {
        format!("10.231.{}.1", self.subnet)
    }

    /// The bridge plugin with host-local IPAM on this network's subnet.
    pub fn bridge_plugin(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "dataDir": self.ipam_dir,
                "ranges": [[{"subnet": format!("10.231.{}.0/24", self.subnet)}]],
                "routes": [{"dst": "0.0.0.0/0"}]
            }
        })
    }

    /// A conflist: `loopback`, the bridge, then `extra` plugins.
    pub fn conflist(&self, extra: &[serde_json::Value]) -> String {
        let mut plugins = vec![
            serde_json::json!({"type": "loopback"}),
            self.bridge_plugin(),
        ];
        plugins.extend(extra.iter().cloned());
        serde_json::json!({"cniVersion": "1.0.0", "name": self.name, "plugins": plugins})
            .to_string()
    }

    /// Writes the conflist into `dir` (as a daemonset would: a temp file
    /// renamed into place).
    pub fn install(&self, dir: &Path, file: &str, conflist: &str) -> Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, conflist)?;
        let p = dir.join(file);
        std::fs::rename(&tmp, &p)?;
        Ok(p)
    }

    /// A scripted plugin in this network's plugin directory.
    pub fn script_plugin(&self, name: &str, body: &str) -> Result<PathBuf> {
        let p = self.plugin_dir.join(name);
        std::fs::write(&p, body)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        Ok(p)
    }

    /// A plugin that fails ADD with a CNI error object saying `msg` (and
    /// succeeds at everything else).
    pub fn failing_plugin(&self, name: &str, msg: &str) -> Result<PathBuf> {
        self.script_plugin(
            name,
            &format!(
                "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then\n  \
                 echo '{{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"{msg}\"}}'\n  exit 1\nfi\n\
                 echo '{{\"cniVersion\":\"1.0.0\"}}'\n"
            ),
        )
    }

    /// A pass-through plugin (it hands on its prevResult) that, while the
    /// file `<dir>/hold-<command>` exists, touches `<dir>/held-<command>`
    /// and waits (at most a minute) — so a test can kill the daemon in the
    /// middle of ADD or DEL.
    pub fn holding_plugin(&self, name: &str, dir: &Path) -> Result<PathBuf> {
        self.script_plugin(
            name,
            &format!(
                r#"#!/usr/bin/env python3
import json, os, sys, time
conf = json.load(sys.stdin)
cmd = os.environ.get("CNI_COMMAND", "").lower()
hold = os.path.join({dir:?}, "hold-" + cmd)
if os.path.exists(hold):
    open(os.path.join({dir:?}, "held-" + cmd), "w").close()
    end = time.time() + 60
    while os.path.exists(hold) and time.time() < end:
        time.sleep(0.05)
if cmd in ("add", "check"):
    print(json.dumps(conf.get("prevResult") or {{"cniVersion": conf["cniVersion"]}}))
"#,
                dir = dir.display().to_string()
            ),
        )
    }

    /// What this network holds on the host now: veths on its bridge, IPAM
    /// allocations, iptables rules naming it.
    pub fn holdings(&self) -> Result<Holdings> {
        let links = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
            .context("ip link")?;
        let links: Vec<String> = String::from_utf8_lossy(&links.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1).map(|s| s.trim().to_string()))
            .collect();
        let mut ipam = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.ipam_dir.join(&self.name)) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n != "lock" && !n.starts_with("last_reserved_ip") {
                    ipam.push(n);
                }
            }
        }
        ipam.sort();
        let save = Command::new("iptables-save")
            .output()
            .context("iptables-save")?;
        let iptables = String::from_utf8_lossy(&save.stdout)
            .lines()
            .filter(|l| l.contains(&self.name) || l.contains(&format!("10.231.{}.", self.subnet)))
            .map(str::to_string)
            .collect();
        Ok(Holdings {
            links,
            ipam,
            iptables,
        })
    }
}

/// Removes iptables rules naming a network or its subnet, and the chains
/// they jumped to, that an earlier run of the same test left (a failed
/// test's daemon is killed with its pods still up).
fn purge_iptables(name: &str, subnet: u8) {
    let net = format!("10.231.{subnet}.");
    for table in ["nat", "filter"] {
        let Ok(out) = Command::new("iptables-save").args(["-t", table]).output() else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut chains = Vec::new();
        for line in text.lines() {
            if line.starts_with("-A ") && (line.contains(name) || line.contains(&net)) {
                if let Some(j) = line.split(" -j ").nth(1) {
                    let target = j.split_whitespace().next().unwrap_or("");
                    if target.starts_with("CNI-DN-")
                        || target.starts_with("CNI-") && target.len() > 20
                    {
                        chains.push(target.to_string());
                    }
                }
                let _ = Command::new("sh")
                    .arg("-c")
                    .arg(format!("iptables -t {table} -D {}", &line[3..]))
                    .output();
            }
        }
        for chain in chains {
            let _ = Command::new("iptables")
                .args(["-t", table, "-F", &chain])
                .output();
            let _ = Command::new("iptables")
                .args(["-t", table, "-X", &chain])
                .output();
        }
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holdings {
    pub links: Vec<String>,
    pub ipam: Vec<String>,
    pub iptables: Vec<String>,
}

impl Holdings {
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.ipam.is_empty() && self.iptables.is_empty()
    }
}
