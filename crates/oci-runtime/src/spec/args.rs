//! The container process: argv (kubelet's override rules), environment and
//! working directory.

use super::{ImageConfig, SpecError};
use crius_cri_api::v1::KeyValue;

/// The PATH a container gets when neither the image nor the CRI sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The argv of the container process.
///
/// Kubelet's rules: a CRI `command` replaces the image Entrypoint and then
/// the image Cmd is ignored; CRI `args` replace the Cmd. The result is
/// entrypoint ++ cmd and must not be empty.
pub fn process_args(
    command: &[String],
    args: &[String],
    image: &ImageConfig,
) -> Result<Vec<String>, SpecError> {
    let (entrypoint, cmd): (&[String], &[String]) = match (command.is_empty(), args.is_empty()) {
        (true, true) => (&image.entrypoint, &image.cmd),
        (true, false) => (&image.entrypoint, args),
        (false, true) => (command, &[]),
        (false, false) => (command, args),
    };
    let argv: Vec<String> = entrypoint.iter().chain(cmd).cloned().collect();
    if argv.is_empty() {
        return Err(SpecError::invalid(
            "command",
            "no command given and the image has neither Entrypoint nor Cmd",
        ));
    }
    Ok(argv)
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    match env.iter_mut().find(|e| env_key(e) == key) {
        Some(existing) => *existing = entry,
        None => env.push(entry),
    }
}

fn has_env(env: &[String], key: &str) -> bool {
    env.iter().any(|e| env_key(e) == key)
}

/// What the environment depends on besides the image and the CRI `envs`.
#[derive(Debug, Clone, Default)]
pub struct EnvContext<'a> {
    /// The pod hostname (`HOSTNAME`), if any.
    pub hostname: &'a str,
    /// Whether the process gets a terminal (`TERM=xterm`).
    pub tty: bool,
    /// The user's home directory (`HOME`, only when absent).
    pub home: Option<&'a str>,
}

/// The process environment: the image Env first, then the CRI `envs`
/// overriding by key (later wins; order of first appearance is kept), a
/// default PATH when absent, `HOSTNAME`, `TERM=xterm` with a tty and `HOME`
/// when absent.
pub fn merge_env(
    image_env: &[String],
    envs: &[KeyValue],
    ctx: &EnvContext,
) -> Result<Vec<String>, SpecError> {
    let mut env: Vec<String> = Vec::new();
    for entry in image_env {
        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
        set_env(&mut env, k, v);
    }
    for (i, kv) in envs.iter().enumerate() {
        if kv.key.is_empty() || kv.key.contains('=') {
            return Err(SpecError::invalid(
                format!("envs[{i}].key"),
                format!("invalid environment variable name {:?}", kv.key),
            ));
        }
        let value = std::str::from_utf8(&kv.value).map_err(|_| {
            SpecError::invalid(format!("envs[{i}].value"), "value is not valid UTF-8")
        })?;
        set_env(&mut env, &kv.key, value);
    }
    if !has_env(&env, "PATH") {
        set_env(&mut env, "PATH", DEFAULT_PATH);
    }
    if !ctx.hostname.is_empty() {
        set_env(&mut env, "HOSTNAME", ctx.hostname);
    }
    if ctx.tty {
        set_env(&mut env, "TERM", "xterm");
    }
    if !has_env(&env, "HOME") {
        set_env(
            &mut env,
            "HOME",
            ctx.home.filter(|h| !h.is_empty()).unwrap_or("/"),
        );
    }
    Ok(env)
}

/// The working directory: CRI `working_dir`, else the image WorkingDir,
/// else "/". It must be absolute.
pub fn working_dir(cri: &str, image: &ImageConfig) -> Result<String, SpecError> {
    let (field, dir) = if !cri.is_empty() {
        ("working_dir", cri)
    } else if !image.working_dir.is_empty() {
        ("image.config.WorkingDir", image.working_dir.as_str())
    } else {
        return Ok("/".to_string());
    };
    if !dir.starts_with('/') {
        return Err(SpecError::invalid(
            field,
            format!("{dir:?} is not an absolute path"),
        ));
    }
    Ok(dir.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn args_rules() {
        let image = ImageConfig {
            entrypoint: s(&["/ep"]),
            cmd: s(&["cmd1", "cmd2"]),
            ..Default::default()
        };
        // (command, args, expected)
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (&[], &[], &["/ep", "cmd1", "cmd2"]),
            (&[], &["a"], &["/ep", "a"]),
            (&["/c"], &[], &["/c"]),
            (&["/c"], &["a", "b"], &["/c", "a", "b"]),
        ];
        for (command, args, want) in cases {
            let got = process_args(&s(command), &s(args), &image).unwrap();
            assert_eq!(got, s(want), "command={command:?} args={args:?}");
        }
        // An image with only Cmd.
        let cmd_only = ImageConfig {
            cmd: s(&["sh"]),
            ..Default::default()
        };
        assert_eq!(process_args(&[], &[], &cmd_only).unwrap(), s(&["sh"]));
        assert_eq!(process_args(&[], &s(&["x"]), &cmd_only).unwrap(), s(&["x"]));
    }

    #[test]
    fn args_empty_is_an_error_naming_command() {
        let err = process_args(&[], &[], &ImageConfig::default()).unwrap_err();
        assert!(err.to_string().starts_with("command:"), "{err}");
        // `command` replaces the Entrypoint and drops Cmd, empty args stay empty.
        let image = ImageConfig {
            cmd: s(&["sh"]),
            ..Default::default()
        };
        assert_eq!(process_args(&[], &[], &image).unwrap(), s(&["sh"]));
    }

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: v.as_bytes().to_vec(),
        }
    }

    #[test]
    fn env_merge() {
        struct Case {
            image: &'static [&'static str],
            envs: Vec<KeyValue>,
            hostname: &'static str,
            tty: bool,
            home: Option<&'static str>,
            want: &'static [&'static str],
        }
        let cases = [
            Case {
                image: &[],
                envs: vec![],
                hostname: "",
                tty: false,
                home: None,
                want: &[
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME=/",
                ],
            },
            Case {
                image: &["PATH=/bin", "A=1", "B=2"],
                envs: vec![kv("B", "3"), kv("C", "4"), kv("C", "5")],
                hostname: "pod-1",
                tty: true,
                home: Some("/root"),
                want: &[
                    "PATH=/bin",
                    "A=1",
                    "B=3",
                    "C=5",
                    "HOSTNAME=pod-1",
                    "TERM=xterm",
                    "HOME=/root",
                ],
            },
            Case {
                image: &["HOME=/img", "HOSTNAME=old"],
                envs: vec![kv("PATH", "/x"), kv("EMPTY", "")],
                hostname: "h",
                tty: false,
                home: Some("/root"),
                want: &["HOME=/img", "HOSTNAME=h", "PATH=/x", "EMPTY="],
            },
            Case {
                image: &["A=x=y"],
                envs: vec![],
                hostname: "",
                tty: false,
                home: Some(""),
                want: &[
                    "A=x=y",
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME=/",
                ],
            },
        ];
        for (i, c) in cases.iter().enumerate() {
            let ctx = EnvContext {
                hostname: c.hostname,
                tty: c.tty,
                home: c.home,
            };
            let got = merge_env(&s(c.image), &c.envs, &ctx).unwrap();
            assert_eq!(got, s(c.want), "case {i}");
        }
    }

    #[test]
    fn env_errors_name_the_field() {
        let ctx = EnvContext::default();
        let err = merge_env(&[], &[kv("OK", "1"), kv("A=B", "1")], &ctx).unwrap_err();
        assert!(err.to_string().starts_with("envs[1].key:"), "{err}");
        let bad = KeyValue {
            key: "X".into(),
            value: vec![0xff, 0xfe],
        };
        let err = merge_env(&[], &[bad], &ctx).unwrap_err();
        assert!(err.to_string().starts_with("envs[0].value:"), "{err}");
    }

    #[test]
    fn working_dir_rules() {
        let with = ImageConfig {
            working_dir: "/app".into(),
            ..Default::default()
        };
        let without = ImageConfig::default();
        let cases: &[(&str, &ImageConfig, Result<&str, &str>)] = &[
            ("/w", &with, Ok("/w")),
            ("", &with, Ok("/app")),
            ("", &without, Ok("/")),
            ("rel", &with, Err("working_dir:")),
        ];
        for (cri, image, want) in cases {
            match (working_dir(cri, image), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, *w),
                (Err(e), Err(prefix)) => assert!(e.to_string().starts_with(prefix), "{e}"),
                (got, want) => panic!("{cri:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
