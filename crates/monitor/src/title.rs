//! A standby monitor's command line, rewritten once it has its job.
//!
//! A monitor started ahead of any container (`crius-monitor standby`)
//! learns its container only later, yet its command line must name it:
//! the daemon tells a live monitor from a recycled pid, and finds the
//! monitor of an orphaned container at recovery, by `--id <id>` in
//! `/proc/<pid>/cmdline`, as operators do with `ps`. A standby is therefore
//! started with room (blank padding) after its mode word, and writes its
//! job's leading arguments over that room, in place, as setproctitle
//! does: `/proc/<pid>/cmdline` reads the process's own argument area.

/// The argument area after `argv[0]`, writable in place.
pub struct Room {
    start: *mut u8,
    len: usize,
}

/// The bytes to write over a room of `room` bytes: as many whole leading
/// `args` as fit, each NUL-terminated, the rest NUL. None if not even the
/// first `required` arguments fit.
pub fn fit(args: &[String], room: usize, required: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(room);
    for (i, a) in args.iter().enumerate() {
        if a.as_bytes().contains(&0) || out.len() + a.len() + 1 > room {
            if i < required {
                return None;
            }
            break;
        }
        out.extend_from_slice(a.as_bytes());
        out.push(0);
    }
    if args.len() < required {
        return None;
    }
    out.resize(room, 0);
    Some(out)
}

/// `arg_start` and `arg_end` from a `/proc/<pid>/stat` line (fields 48 and
/// 49; the command name in field 2 may hold spaces and parentheses).
pub fn arg_area(stat: &str) -> Option<(usize, usize)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let start = fields.get(48 - 3)?.parse().ok()?;
    let end = fields.get(49 - 3)?.parse().ok()?;
    (end > start).then_some((start, end))
}

impl Room {
    /// The room after `argv[0]`, once the argument area the kernel reports
    /// is checked to hold exactly `args` (this process's arguments, with
    /// `argv[0]`), NUL-separated: nothing but what exec laid out is ever
    /// written to.
    pub fn find(args: &[String]) -> Result<Room, String> {
        let stat = std::fs::read_to_string("/proc/self/stat")
            .map_err(|e| format!("reading /proc/self/stat: {e}"))?;
        let (start, end) = arg_area(&stat).ok_or("no argument area in /proc/self/stat")?;
        let mut expect = Vec::new();
        for a in args {
            expect.extend_from_slice(a.as_bytes());
            expect.push(0);
        }
        if end - start != expect.len() {
            return Err("the argument area is not this process's arguments".into());
        }
        // SAFETY: [start, end) is this process's argument area, mapped and
        // writable for the life of the process; it is read as bytes only.
        let area = unsafe { std::slice::from_raw_parts(start as *const u8, end - start) };
        if area != expect.as_slice() {
            return Err("the argument area is not this process's arguments".into());
        }
        let first = args.first().map_or(0, |a| a.len() + 1);
        Ok(Room {
            start: (start + first) as *mut u8,
            // The area's final NUL stays: the kernel reads no further.
            len: (end - start).saturating_sub(first + 1),
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// Writes the leading `args` that fit (at least `required` of them).
    pub fn set(&self, args: &[String], required: usize) -> Result<(), String> {
        let bytes = fit(args, self.len, required).ok_or("the job's arguments do not fit")?;
        // SAFETY: `Room::find` checked [start, start + len) lies inside the
        // argument area; nothing in this process holds a reference into it
        // (the arguments were copied into Strings before).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.start, self.len) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitting() {
        let v = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        let cases: &[(&str, usize, usize, Option<&[u8]>)] = &[
            ("--id abc", 10, 2, Some(b"--id\0abc\0\0")),
            ("--id abc --bundle /b", 10, 2, Some(b"--id\0abc\0\0")),
            ("--id abc --x y", 16, 2, Some(b"--id\0abc\0--x\0y\0\0")),
            ("--id abcdef", 10, 2, None),
            ("--id", 10, 2, None),
            ("--id abc", 9, 2, Some(b"--id\0abc\0")),
            ("--id abc", 8, 2, None),
        ];
        for (args, room, required, want) in cases {
            assert_eq!(
                fit(&v(args), *room, *required).as_deref(),
                *want,
                "{args:?} in {room}"
            );
        }
        assert_eq!(fit(&["a\0b".to_string()], 10, 1), None);
    }

    #[test]
    fn stat_fields() {
        // Fields 3..=52 after a command name with a space and a parenthesis.
        let mut f: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        f[48 - 3] = "140000".into();
        f[49 - 3] = "140100".into();
        let line = format!("12 (crius (x) y) {}", f.join(" "));
        assert_eq!(arg_area(&line), Some((140000, 140100)));
        assert_eq!(arg_area("12 (short) S 1 2"), None);
        f[49 - 3] = "100".into();
        assert_eq!(arg_area(&format!("1 (m) {}", f.join(" "))), None);
    }

    #[test]
    fn own_room() {
        // The test binary's own argument area matches its arguments.
        let args: Vec<String> = std::env::args().collect();
        let room = Room::find(&args).unwrap();
        let total: usize = args.iter().map(|a| a.len() + 1).sum();
        assert_eq!(room.len(), total.saturating_sub(args[0].len() + 2));
        assert!(Room::find(&[args[0].clone(), "not-mine".into()]).is_err());
    }
}
