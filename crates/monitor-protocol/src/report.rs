//! What a monitor says on its sync fd, one line each:
//!
//! - `ready <pid>`: a standby has detached and set itself up (pid: the
//!   detached process), and waits for its job;
//! - `pid <container pid> <monitor pid>`: the container exists (or runs);
//!   the monitor's pid lets the daemon signal it later (SIGUSR1: reopen
//!   the log) and tell it from a recycled pid;
//! - `error <message>`: the job failed (the runtime's own words).
//!
//! The pipe is closed after `pid` or `error`: the daemon reads to end of
//! file.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Ready(i32),
    Pid { pid: i32, monitor_pid: i32 },
    Error(String),
}

impl fmt::Display for Report {
    /// One line, without its newline; an error's message on one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Ready(pid) => write!(f, "ready {pid}"),
            Report::Pid { pid, monitor_pid } => write!(f, "pid {pid} {monitor_pid}"),
            Report::Error(m) => write!(f, "error {}", m.replace('\n', " ")),
        }
    }
}

impl Report {
    /// One line as the monitor wrote it.
    pub fn parse(line: &str) -> Option<Report> {
        let line = line.trim_end_matches(['\n', '\r']);
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "ready" => rest
                .trim()
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .map(Report::Ready),
            "pid" => {
                let mut it = rest.split_whitespace().map(str::parse::<i32>);
                match (it.next(), it.next()) {
                    (Some(Ok(pid)), Some(Ok(monitor_pid))) => {
                        Some(Report::Pid { pid, monitor_pid })
                    }
                    _ => None,
                }
            }
            "error" => Some(Report::Error(rest.to_string())),
            _ => None,
        }
    }

    /// The outcome of a whole report (read to end of file): its last line
    /// that is not `ready` (a fresh monitor says `ready` first, like a
    /// pooled one did). None: no outcome, or one that does not parse.
    pub fn outcome(report: &str) -> Option<Report> {
        let last = report.lines().rfind(|l| !l.starts_with("ready "))?;
        Report::parse(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_table() {
        let cases: &[(&str, Option<Report>)] = &[
            ("ready 42", Some(Report::Ready(42))),
            ("ready 0", None),
            ("ready x", None),
            (
                "pid 10 11\n",
                Some(Report::Pid {
                    pid: 10,
                    monitor_pid: 11,
                }),
            ),
            ("pid 10", None),
            ("pid a b", None),
            ("error runc: boom", Some(Report::Error("runc: boom".into()))),
            ("hello", None),
            ("", None),
        ];
        for (line, want) in cases {
            assert_eq!(&Report::parse(line), want, "{line:?}");
        }
        for r in [
            Report::Ready(7),
            Report::Pid {
                pid: 1,
                monitor_pid: 2,
            },
            Report::Error("two\nlines".into()),
        ] {
            let back = Report::parse(&r.to_string()).unwrap();
            match (&r, back) {
                (Report::Error(_), Report::Error(m)) => assert_eq!(m, "two lines"),
                (r, back) => assert_eq!(*r, back),
            }
        }
    }

    #[test]
    fn outcomes() {
        assert_eq!(
            Report::outcome("ready 5\npid 10 5\n"),
            Some(Report::Pid {
                pid: 10,
                monitor_pid: 5
            })
        );
        assert_eq!(
            Report::outcome("ready 5\nerror no such file\n"),
            Some(Report::Error("no such file".into()))
        );
        assert_eq!(Report::outcome("ready 5\n"), None);
        assert_eq!(Report::outcome(""), None);
    }
}
