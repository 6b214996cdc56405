//! Host-side checks of CRI bind mounts: the source exists (symlinks
//! followed), and for propagation modes the mount holding the source is
//! shared (Bidirectional) or shared or slave (HostToContainer) — otherwise
//! the container would silently not see the host's mounts.

/// One line of /proc/self/mountinfo, the parts needed here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: String,
    pub shared: bool,
    pub slave: bool,
}

/// Parses /proc/self/mountinfo (octal escapes in paths decoded).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let mount_point = unescape(f.nth(4)?);
            let mut shared = false;
            let mut slave = false;
            // Optional fields after the mount options, up to "-".
            for opt in f.skip(1) {
                if opt == "-" {
                    break;
                }
                shared |= opt.starts_with("shared:");
                slave |= opt.starts_with("master:");
            }
            Some(MountEntry {
                mount_point,
                shared,
                slave,
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount (the last, i.e. top-most, with the longest mount point that
/// contains `path`) holding a canonical `path`.
pub fn mount_of<'a>(mounts: &'a [MountEntry], path: &str) -> Option<&'a MountEntry> {
    let mut best: Option<&MountEntry> = None;
    for m in mounts {
        let mp = m.mount_point.as_str();
        let contains = mp == "/"
            || path == mp
            || (path.starts_with(mp) && path.as_bytes().get(mp.len()) == Some(&b'/'));
        if contains && best.is_none_or(|b| mp.len() >= b.mount_point.len()) {
            best = Some(m);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:25 / /run rw,nosuid shared:5 - tmpfs tmpfs rw
40 22 0:30 / /data rw master:7 - ext4 /dev/sdb rw
41 22 0:31 / /priv rw - tmpfs tmpfs rw
42 41 0:32 / /priv/with\\040space rw shared:9 - tmpfs tmpfs rw
";

    #[test]
    fn mountinfo_and_lookup() {
        let m = parse_mountinfo(INFO);
        assert_eq!(m.len(), 5);
        assert_eq!(m[4].mount_point, "/priv/with space");
        let find = |p: &str| mount_of(&m, p).map(|e| (e.mount_point.clone(), e.shared, e.slave));
        assert_eq!(find("/etc/x"), Some(("/".into(), true, false)));
        assert_eq!(find("/run/a/b"), Some(("/run".into(), true, false)));
        assert_eq!(find("/data"), Some(("/data".into(), false, true)));
        assert_eq!(find("/database"), Some(("/".into(), true, false)));
        assert_eq!(find("/priv/x"), Some(("/priv".into(), false, false)));
        assert_eq!(
            find("/priv/with space/y"),
            Some(("/priv/with space".into(), true, false))
        );
    }
}
