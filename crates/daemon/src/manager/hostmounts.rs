//! Host-side checks of CRI bind mounts: the source exists (symlinks
//! followed), and for propagation modes the mount holding the source is
//! shared (Bidirectional) or shared or slave (HostToContainer) — otherwise
//! the container would silently not see the host's mounts.

pub use crius_oci_runtime::mountinfo::{parse as parse_mountinfo, Mount as MountEntry};

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
