//! The monitor's modes and their arguments: encoded by the daemon (and
//! the sandbox crate, for `pause`), parsed by `crius-monitor`.
//!
//! - A container job: `--runtime R --id ID --runtime-root DIR --bundle DIR
//!   --log FILE --exit-file FILE --pid-file FILE [--sync-fd N]
//!   [--max-line BYTES] [--tty] [--stdin] [--stdin-once] [--start]
//!   [--runtime-arg ARG]...`, on the
//!   command line or, for a standby, on its job pipe (each argument ending
//!   with a NUL). `--runtime` and `--id` lead: they are what a standby
//!   writes into its command line (see [`TITLE_ROOM`]), and what
//!   [`crate::identity`] finds a container's monitor by.
//! - `standby [ROOM]`: started ahead; job on fd 0, reports on fd 1.
//! - `pause --id POD --sync-fd N`: pid 1 of a pod's PID namespace.
//! - `exec --pid-file FILE -- RUNTIME ARGS...`: the parent of one exec.

use crate::crilog::DEFAULT_MAX_LINE;
use std::ffi::OsString;
use std::path::PathBuf;

pub const STANDBY: &str = "standby";
pub const PAUSE: &str = "pause";
pub const EXEC: &str = "exec";

/// Bytes a standby keeps in its command line for the job's leading
/// arguments (`--runtime R --id ID`), written over blank padding once the
/// job arrives.
pub const TITLE_ROOM: usize = 1024;

/// How many leading job arguments must fit in the title: `--runtime R
/// --id ID`.
pub const TITLE_REQUIRED: usize = 4;

/// A standby's error when the daemon closed the job pipe with no job (it
/// gave up, shut down or died): the monitor leaves having created nothing.
pub const NO_JOB: &str = "no job";

/// One container's job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Job {
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    pub runtime_args: Vec<String>,
    pub id: String,
    pub bundle: PathBuf,
    pub log: PathBuf,
    pub exit_file: PathBuf,
    pub pid_file: PathBuf,
    /// Where to report; None for a standby (it reports on fd 1).
    pub sync_fd: Option<i32>,
    /// The longest log line written as one record.
    pub max_line: usize,
    /// The container has a terminal: the runtime hands the monitor the pty
    /// master over a console socket, logged as stdout.
    pub tty: bool,
    /// The container keeps its stdin open (CRI `stdin`): without a
    /// terminal it is a pipe whose write end the monitor holds, fed by
    /// attach clients; otherwise it is /dev/null. With a terminal, attach
    /// clients' stdin goes to the pty only with this.
    pub stdin: bool,
    /// CRI `stdin_once`: the container's stdin is closed once the first
    /// attach client detaches (sends end of stdin or disconnects).
    pub stdin_once: bool,
    /// Start the container too (`run --detach`), not only create it.
    pub start: bool,
}

impl Job {
    /// The job as arguments, `--runtime` and `--id` first.
    pub fn to_args(&self) -> Vec<String> {
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        let mut a: Vec<String> = vec![
            "--runtime".into(),
            path(&self.runtime),
            "--id".into(),
            self.id.clone(),
            "--runtime-root".into(),
            path(&self.runtime_root),
            "--bundle".into(),
            path(&self.bundle),
            "--log".into(),
            path(&self.log),
            "--exit-file".into(),
            path(&self.exit_file),
            "--pid-file".into(),
            path(&self.pid_file),
            "--max-line".into(),
            self.max_line.to_string(),
        ];
        if let Some(fd) = self.sync_fd {
            a.push("--sync-fd".into());
            a.push(fd.to_string());
        }
        for r in &self.runtime_args {
            a.push("--runtime-arg".into());
            a.push(r.clone());
        }
        if self.tty {
            a.push("--tty".into());
        }
        if self.stdin {
            a.push("--stdin".into());
        }
        if self.stdin_once {
            a.push("--stdin-once".into());
        }
        if self.start {
            a.push("--start".into());
        }
        a
    }

    /// Bytes the job's title (its first [`TITLE_REQUIRED`] arguments, each
    /// NUL-terminated) takes in a standby's command line.
    pub fn title_len(&self) -> usize {
        self.to_args()
            .iter()
            .take(TITLE_REQUIRED)
            .map(|a| a.len() + 1)
            .sum()
    }

    /// Parses a job's arguments.
    pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Job, String> {
        let mut a = Job {
            max_line: DEFAULT_MAX_LINE,
            ..Default::default()
        };
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--runtime" => a.runtime = value()?.into(),
                "--runtime-root" => a.runtime_root = value()?.into(),
                "--runtime-arg" => a.runtime_args.push(value()?),
                "--id" => a.id = value()?,
                "--bundle" => a.bundle = value()?.into(),
                "--log" => a.log = value()?.into(),
                "--exit-file" => a.exit_file = value()?.into(),
                "--pid-file" => a.pid_file = value()?.into(),
                "--sync-fd" => {
                    a.sync_fd = Some(
                        value()?
                            .parse()
                            .map_err(|_| "--sync-fd: not a number".to_string())?,
                    )
                }
                "--max-line" => {
                    a.max_line = value()?
                        .parse()
                        .map_err(|_| "--max-line: not a number".to_string())?
                }
                "--tty" => a.tty = true,
                "--stdin" => a.stdin = true,
                "--stdin-once" => a.stdin_once = true,
                "--start" => a.start = true,
                other => return Err(format!("unknown argument {other}")),
            }
        }
        if a.runtime.as_os_str().is_empty()
            || a.id.is_empty()
            || a.bundle.as_os_str().is_empty()
            || a.log.as_os_str().is_empty()
            || a.exit_file.as_os_str().is_empty()
            || a.pid_file.as_os_str().is_empty()
        {
            return Err("missing required arguments".into());
        }
        Ok(a)
    }
}

/// Arguments as a job pipe carries them: each ends with a NUL.
pub fn encode_nul(args: &[String]) -> Vec<u8> {
    args.iter().flat_map(|a| a.bytes().chain([0])).collect()
}

/// A job pipe's arguments (an empty one stays an argument). Nothing at
/// all: Err([`NO_JOB`]).
pub fn decode_nul(job: Vec<u8>) -> Result<Vec<String>, String> {
    if job.is_empty() {
        return Err(NO_JOB.into());
    }
    let text = String::from_utf8(job).map_err(|_| "the job is not UTF-8".to_string())?;
    Ok(text
        .strip_suffix('\0')
        .unwrap_or(&text)
        .split('\0')
        .map(str::to_string)
        .collect())
}

/// `pause --id POD --sync-fd N`.
pub fn pause_args(pod_id: &str, sync_fd: i32) -> Vec<String> {
    vec![
        PAUSE.into(),
        "--id".into(),
        pod_id.into(),
        "--sync-fd".into(),
        sync_fd.to_string(),
    ]
}

/// The arguments after `pause`: the pod id and the sync fd.
pub fn parse_pause(mut it: impl Iterator<Item = String>) -> Result<(String, i32), String> {
    let mut id = String::new();
    let mut sync_fd = -1;
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--id", Some(v)) => id = v,
            ("--sync-fd", Some(v)) => sync_fd = v.parse().unwrap_or(-1),
            _ => return Err("bad arguments".into()),
        }
    }
    if id.is_empty() || sync_fd < 0 {
        return Err("--id and --sync-fd are required".into());
    }
    Ok((id, sync_fd))
}

/// One exec: the runtime's command line, run under the monitor, and the
/// file the runtime writes the exec'd process's pid to (the monitor stops
/// its process tree from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecJob {
    pub pid_file: PathBuf,
    /// The runtime and its arguments.
    pub argv: Vec<OsString>,
    /// Where the stop pipe is: None, fd 0 (ExecSync: the process gets
    /// /dev/null); a streaming exec's stdin is the process's own, so its
    /// stop pipe comes on another descriptor.
    pub stop_fd: Option<i32>,
}

impl ExecJob {
    /// `exec --pid-file FILE [--stop-fd N] -- RUNTIME ARGS...`
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            EXEC.into(),
            "--pid-file".into(),
            self.pid_file.clone().into(),
        ];
        if let Some(fd) = self.stop_fd {
            a.extend(["--stop-fd".into(), fd.to_string().into()]);
        }
        a.push("--".into());
        a.extend(self.argv.iter().cloned());
        a
    }

    /// The arguments after `exec`.
    pub fn parse(mut it: impl Iterator<Item = String>) -> Option<ExecJob> {
        let mut pid_file = None;
        let mut stop_fd = None;
        loop {
            match it.next().as_deref() {
                Some("--pid-file") => pid_file = it.next().map(PathBuf::from),
                Some("--stop-fd") => {
                    stop_fd = Some(it.next()?.parse::<i32>().ok().filter(|f| *f > 2)?)
                }
                Some("--") => break,
                _ => return None,
            }
        }
        let argv: Vec<OsString> = it.map(OsString::from).collect();
        (!argv.is_empty()).then_some(ExecJob {
            pid_file: pid_file?,
            argv,
            stop_fd,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn parsing() {
        let a = Job::parse(
            v("--runtime /r --runtime-root /s --id c1 --bundle /b --log /l --exit-file /e --pid-file /p --sync-fd 5 --runtime-arg --debug")
                .into_iter(),
        )
        .unwrap();
        assert_eq!(
            (a.id.as_str(), a.sync_fd, a.max_line),
            ("c1", Some(5), 16384)
        );
        assert_eq!(a.runtime_args, vec!["--debug"]);
        // A standby's job: no sync fd (its report goes to fd 1).
        let a = Job::parse(
            v("--runtime /r --id c1 --runtime-root /s --bundle /b --log /l --exit-file /e --pid-file /p --tty")
                .into_iter(),
        )
        .unwrap();
        assert_eq!((a.sync_fd, a.tty, a.start), (None, true, false));
        assert!(!a.stdin && !a.stdin_once);
        let a = Job::parse(
            v("--runtime /r --id c1 --bundle /b --log /l --exit-file /e --pid-file /p --start")
                .into_iter(),
        )
        .unwrap();
        assert!(a.start && !a.tty);
        let flags = "--runtime /r --id c1 --bundle /b --log /l --exit-file /e --pid-file /p";
        let cases: &[(&str, (bool, bool, bool))] = &[
            ("", (false, false, false)),
            ("--stdin", (true, false, false)),
            ("--stdin --stdin-once", (true, true, false)),
            ("--stdin-once --tty --stdin", (true, true, true)),
        ];
        for (extra, want) in cases {
            let a = Job::parse(v(&format!("{flags} {extra}")).into_iter()).unwrap();
            assert_eq!((a.stdin, a.stdin_once, a.tty), *want, "{extra}");
        }
        assert!(Job::parse(v("--sync-fd x").into_iter())
            .unwrap_err()
            .contains("--sync-fd"));
        assert!(Job::parse(v("--runtime /r").into_iter()).is_err());
        assert!(Job::parse(v("--bogus x").into_iter())
            .unwrap_err()
            .contains("--bogus"));
        assert!(Job::parse(v("--sync-fd").into_iter())
            .unwrap_err()
            .contains("needs a value"));
    }

    #[test]
    fn round_trip_and_title() {
        let job = Job {
            runtime: "/usr/bin/runc".into(),
            runtime_root: "/run/r".into(),
            runtime_args: vec!["--systemd-cgroup".into(), String::new()],
            id: "abc".into(),
            bundle: "/b".into(),
            log: "/l".into(),
            exit_file: "/e".into(),
            pid_file: "/p".into(),
            sync_fd: None,
            max_line: 100,
            tty: true,
            stdin: true,
            stdin_once: true,
            start: true,
        };
        let args = job.to_args();
        assert_eq!(&args[..4], &["--runtime", "/usr/bin/runc", "--id", "abc"]);
        assert_eq!(job.title_len(), "--runtime /usr/bin/runc --id abc ".len());
        let back = Job::parse(decode_nul(encode_nul(&args)).unwrap().into_iter()).unwrap();
        assert_eq!(back, job);
        // Each flag on its own survives the round trip too.
        for (stdin, stdin_once) in [(true, false), (false, true), (false, false)] {
            let job = Job {
                stdin,
                stdin_once,
                ..job.clone()
            };
            assert_eq!(Job::parse(job.to_args().into_iter()).unwrap(), job);
        }
    }

    #[test]
    fn nul_table() {
        type Case<'a> = (&'a [u8], Result<&'a [&'a str], &'a str>);
        let cases: &[Case] = &[
            (b"--id\0c1\0", Ok(&["--id", "c1"])),
            (b"--runtime-arg\0\0", Ok(&["--runtime-arg", ""])),
            (b"--id\0c1", Ok(&["--id", "c1"])),
            (b"", Err(NO_JOB)),
            (b"\xff\0", Err("the job is not UTF-8")),
        ];
        for (job, want) in cases {
            let got = decode_nul(job.to_vec());
            match want {
                Ok(w) => assert_eq!(got.unwrap(), *w, "{job:?}"),
                Err(e) => assert_eq!(got.unwrap_err(), *e, "{job:?}"),
            }
        }
    }

    #[test]
    fn pause_and_exec() {
        let a = pause_args("pod1", 1);
        assert_eq!(a[0], PAUSE);
        assert_eq!(parse_pause(a.into_iter().skip(1)), Ok(("pod1".into(), 1)));
        assert!(parse_pause(v("--id p").into_iter()).is_err());
        assert!(parse_pause(v("--bogus").into_iter()).is_err());
        for stop_fd in [None, Some(3)] {
            let e = ExecJob {
                pid_file: "/x/pid".into(),
                argv: vec!["runc".into(), "exec".into(), "c1".into()],
                stop_fd,
            };
            let args: Vec<String> = e
                .to_args()
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect();
            assert_eq!(args[0], EXEC);
            assert_eq!(ExecJob::parse(args.into_iter().skip(1)), Some(e));
        }
        // The stop pipe never replaces stdio.
        assert_eq!(
            ExecJob::parse(v("--pid-file /p --stop-fd 1 -- runc").into_iter()),
            None
        );
        assert_eq!(
            ExecJob::parse(v("--pid-file /p --stop-fd x -- runc").into_iter()),
            None
        );
        assert_eq!(ExecJob::parse(v("--pid-file /p --").into_iter()), None);
        assert_eq!(ExecJob::parse(v("-- runc").into_iter()), None);
        assert_eq!(ExecJob::parse(v("--bogus").into_iter()), None);
    }
}
