//! `/proc/self/mountinfo`, parsed once for everyone who asks about mounts:
//! the cgroup layout (probe), whether a path is a mount point (image
//! volumes), and the propagation of the mount holding a host path (the
//! daemon's checks of CRI bind mounts). Paths are decoded (the kernel
//! writes space, tab, newline and backslash as octal escapes).

/// One line of mountinfo, the fields crius reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: String,
    /// A peer group member (`shared:N`).
    pub shared: bool,
    /// Receives propagation from a master (`master:N`).
    pub slave: bool,
    pub fstype: String,
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

/// This process's mounts; none if /proc cannot be read.
pub fn read() -> Vec<Mount> {
    parse(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

fn parse_line(l: &str) -> Option<Mount> {
    // id parent major:minor root mount-point options [optional...] - fstype source super
    let (pre, post) = l.split_once(" - ")?;
    let mut f = pre.split(' ');
    let mount_point = unescape(f.nth(4)?);
    let mut shared = false;
    let mut slave = false;
    for opt in f.skip(1) {
        shared |= opt.starts_with("shared:");
        slave |= opt.starts_with("master:");
    }
    Some(Mount {
        mount_point,
        shared,
        slave,
        fstype: post.split(' ').next().unwrap_or("").to_string(),
    })
}

/// Decodes the kernel's octal escapes (`\040` for a space).
pub fn unescape(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_table() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
31 22 0:27 / /sys/fs/cgroup/unified rw master:3 - cgroup2 cgroup2 rw
40 22 0:50 / /mnt/with\\040space rw shared:7 master:2 - tmpfs tmpfs rw
garbage line
";
        let got = parse(text);
        let row = |m: &Mount| (m.mount_point.clone(), m.shared, m.slave, m.fstype.clone());
        let want = [
            ("/", true, false, "ext4"),
            ("/sys/fs/cgroup/memory", false, false, "cgroup"),
            ("/sys/fs/cgroup/unified", false, true, "cgroup2"),
            ("/mnt/with space", true, true, "tmpfs"),
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(row(g), (w.0.to_string(), w.1, w.2, w.3.to_string()));
        }
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape("\\04"), "\\04");
    }
}
