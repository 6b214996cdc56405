//! Exec, Attach and PortForward through the real socket and the URL they
//! return, over both transports (SPDY/3.1 and WebSocket), with the
//! project's own clients (crius-test-support::stream); crictl and critest
//! check the same by hand and in `make conformance`.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use crius_test_support::cri::*;
use crius_test_support::stream::{self, Finished, Forward, Refused, Streams, Transport};
use crius_test_support::CriClient;
use sha2::Digest;
use std::time::Duration;
use tonic::Code;

const BOTH: [Transport; 2] = [Transport::Spdy, Transport::WebSocket];

async fn exec_url(
    c: &mut CriClient,
    id: &str,
    cmd: &[&str],
    s: Streams,
) -> Result<String, tonic::Status> {
    c.runtime
        .exec(ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty: s.tty,
            stdin: s.stdin,
            stdout: s.stdout,
            stderr: s.stderr,
        })
        .await
        .map(|r| r.into_inner().url)
}

fn out_err() -> Streams {
    Streams {
        stdout: true,
        stderr: true,
        ..Default::default()
    }
}

async fn exec_stream(
    c: &mut CriClient,
    id: &str,
    cmd: &[&str],
    t: Transport,
    s: Streams,
    stdin: Option<Vec<u8>>,
) -> Finished {
    let url = exec_url(c, id, cmd, s).await.unwrap();
    stream::run(&url, t, s, stdin).await.unwrap()
}

/// A pod with a long-running container: (pod, container).
async fn sleeper(c: &mut CriClient, env: &Env, name: &str) -> (String, String) {
    sleeper_on(c, env, name, "").await
}

async fn sleeper_on(c: &mut CriClient, env: &Env, name: &str, handler: &str) -> (String, String) {
    let pc = pod_config(name, &env.logs);
    let pod = run_pod(c, pc.clone(), handler).await;
    let id = created(c, &pod, &pc, ("sleeper", &env.image), &["sleep", "100000"]).await;
    start(c, &id).await;
    (pod, id)
}

#[tokio::test]
async fn exec_streams_exit_codes_and_stdin() {
    let env = env("").await;
    let mut c = env.client().await;
    let (_pod, id) = sleeper(&mut c, &env, "exec-stream").await;
    for t in BOTH {
        // stdout and stderr apart; the exit code as kubectl reads it.
        let f = exec_stream(
            &mut c,
            &id,
            &["sh", "-c", "echo out; echo err >&2"],
            t,
            out_err(),
            None,
        )
        .await;
        assert_eq!(
            (f.stdout_str().as_str(), f.stderr.as_slice()),
            ("out\n", &b"err\n"[..]),
            "{t:?}"
        );
        assert_eq!(f.exit_code(), Some(0), "{t:?} {f:?}");
        let f = exec_stream(&mut c, &id, &["sh", "-c", "exit 1"], t, out_err(), None).await;
        assert_eq!(f.exit_code(), Some(1), "{t:?} {f:?}");
        let f = exec_stream(&mut c, &id, &["sh", "-c", "kill -9 $$"], t, out_err(), None).await;
        assert_eq!(f.exit_code(), Some(137), "{t:?} {f:?}");
        // A command that does not exist: the runtime's words, a failure.
        let f = exec_stream(&mut c, &id, &["/no/such/binary"], t, out_err(), None).await;
        assert_ne!(f.exit_code(), Some(0), "{t:?} {f:?}");

        // 4 MiB through stdin and back, hashed; stdin's end reaches the
        // process (cat exits).
        let data: Vec<u8> = (0..4u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let s = Streams {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        };
        let f = exec_stream(&mut c, &id, &["cat"], t, s, Some(data.clone())).await;
        assert_eq!(f.stdout.len(), data.len(), "{t:?}");
        assert_eq!(
            sha2::Sha256::digest(&f.stdout),
            sha2::Sha256::digest(&data),
            "{t:?}"
        );
        assert_eq!(f.exit_code(), Some(0));

        // 100 MiB of output.
        let f = exec_stream(
            &mut c,
            &id,
            &["sh", "-c", "head -c 104857600 /dev/zero"],
            t,
            out_err(),
            None,
        )
        .await;
        assert_eq!(f.stdout.len(), 100 << 20, "{t:?}");
    }
}

#[tokio::test]
async fn exec_with_a_terminal_and_resize() {
    let env = env("").await;
    let mut c = env.client().await;
    // The runtime hands over the pty of a detached exec: runc and crun.
    let (_pod, runc) = sleeper_on(&mut c, &env, "exec-tty", "runc").await;
    let (_pod, crun) = sleeper_on(&mut c, &env, "exec-tty-crun", "crun").await;
    let cases = [
        (&runc, Transport::Spdy, (123u16, 45u16)),
        (&runc, Transport::WebSocket, (99, 33)),
        (&crun, Transport::Spdy, (111, 22)),
        (&crun, Transport::WebSocket, (100, 10)),
    ];
    for (id, t, (w, h)) in cases {
        let s = Streams {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
        };
        let url = exec_url(&mut c, id, &["sh"], s).await.unwrap();
        let r = stream::connect(&url, t, s).await.unwrap();
        r.resize(w, h).await.unwrap();
        // Give the resize a moment before the shell asks.
        tokio::time::sleep(Duration::from_millis(200)).await;
        r.write("stty size; tty; exit 3\n").await.unwrap();
        let f = r.finish(Duration::from_secs(20)).await.unwrap();
        let out = f.stdout_str();
        assert!(out.contains(&format!("{h} {w}")), "{t:?}: {out:?}");
        assert!(out.contains("/dev/pts/"), "{t:?}: {out:?}");
        assert_eq!(f.exit_code(), Some(3), "{t:?} {f:?}");
        assert!(f.stderr.is_empty());
    }
    // Console sockets are gone once the sessions are over.
    let console = env.daemon.runroot.join("console");
    let left: Vec<_> = std::fs::read_dir(&console)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn requests_are_checked_and_urls_are_good_once() {
    let env = env("stream_token_ttl_seconds = 1\nstream_idle_timeout_seconds = 2\n").await;
    let mut c = env.client().await;
    let (pod, id) = sleeper(&mut c, &env, "exec-tokens").await;
    // Bad requests change nothing and name what is wrong.
    let none = Streams::default();
    let e = exec_url(&mut c, &id, &["true"], none).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let tty_err = Streams {
        stdout: true,
        stderr: true,
        tty: true,
        ..Default::default()
    };
    let e = exec_url(&mut c, &id, &["true"], tty_err).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = exec_url(&mut c, &id, &[], out_err()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = exec_url(&mut c, "nope", &["true"], out_err())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = c
        .runtime
        .attach(AttachRequest {
            container_id: id.clone(),
            stdin: true,
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    // Created without stdin: nothing to write to.
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = c
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![70000],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = c
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: "nope".into(),
            port: vec![80],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    for t in BOTH {
        // Used once: the second use is refused.
        let url = exec_url(&mut c, &id, &["true"], out_err()).await.unwrap();
        let f = stream::run(&url, t, out_err(), None).await.unwrap();
        assert_eq!(f.exit_code(), Some(0));
        let e = stream::run(&url, t, out_err(), None).await.unwrap_err();
        assert_eq!(
            e.downcast_ref::<Refused>().map(|r| r.0),
            Some(404),
            "{t:?} {e:?}"
        );
        // Expired (the TTL is a second here).
        let url = exec_url(&mut c, &id, &["true"], out_err()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let e = stream::run(&url, t, out_err(), None).await.unwrap_err();
        assert_eq!(
            e.downcast_ref::<Refused>().map(|r| r.0),
            Some(404),
            "{t:?} {e:?}"
        );
        // A made-up token, and an exec token used on the attach path.
        let forged = url.replace("/exec/", "/attach/");
        let e = stream::run(&forged, t, out_err(), None).await.unwrap_err();
        assert_eq!(
            e.downcast_ref::<Refused>().map(|r| r.0),
            Some(404),
            "{t:?} {e:?}"
        );
    }
    // A session where nothing moves is closed after the idle timeout, and
    // its exec stopped.
    for t in BOTH {
        let url = exec_url(&mut c, &id, &["sleep", "1000"], out_err())
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let f = stream::run(&url, t, out_err(), None).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(10), "{t:?}");
        let status = String::from_utf8_lossy(&f.error).into_owned();
        assert!(status.contains("idle"), "{t:?}: {status}");
        assert_eq!(f.exit_code(), None, "{t:?}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ps = exec(&mut c, &id, &["pidof", "sleep"]).await;
        if String::from_utf8_lossy(&ps.stdout)
            .split_whitespace()
            .count()
            == 1
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "idle execs left running: {ps:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A container that has exited gets no URL.
    stop(&mut c, &id, 0).await;
    let e = exec_url(&mut c, &id, &["true"], out_err())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
}

#[tokio::test]
async fn a_container_exiting_mid_session_ends_it() {
    let env = env("").await;
    let mut c = env.client().await;
    let (_pod, id) = sleeper(&mut c, &env, "exec-exit").await;
    for t in BOTH {
        let url = exec_url(&mut c, &id, &["sleep", "1000"], out_err())
            .await
            .unwrap();
        let r = stream::connect(&url, t, out_err()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        if t == Transport::WebSocket {
            stop(&mut c, &id, 0).await;
        } else {
            // Kill only the exec'd sleep: the container stays.
            let out = exec(
                &mut c,
                &id,
                &[
                    "sh",
                    "-c",
                    "kill -9 $(pidof sleep | tr ' ' '\\n' | grep -v '^1$')",
                ],
            )
            .await;
            assert_eq!(out.exit_code, 0, "{out:?}");
        }
        let f = r.finish(Duration::from_secs(20)).await.unwrap();
        assert_eq!(f.exit_code(), Some(137), "{t:?} {f:?}");
    }
}

#[tokio::test]
async fn kill_9_of_the_daemon_leaves_containers_running() {
    let mut env = env("").await;
    let mut c = env.client().await;
    let (_pod, id) = sleeper(&mut c, &env, "exec-kill9").await;
    let url = exec_url(
        &mut c,
        &id,
        &["sh", "-c", "echo started; exec sleep 1000"],
        out_err(),
    )
    .await
    .unwrap();
    let mut r = stream::connect(&url, Transport::Spdy, out_err())
        .await
        .unwrap();
    r.wait_stdout("started", Duration::from_secs(10))
        .await
        .unwrap();
    env.daemon.kill().unwrap();
    // The session ends with the daemon.
    let _ = r.finish(Duration::from_secs(10)).await;
    env.daemon.start().await.unwrap();
    let mut c = env.client().await;
    assert_eq!(
        status(&mut c, &id).await.state,
        ContainerState::ContainerRunning as i32
    );
    // The session's exec was stopped with it (its monitor saw the daemon
    // go); the container's own sleep runs on.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ps = exec(&mut c, &id, &["sh", "-c", "pidof sleep"]).await;
        let n = String::from_utf8_lossy(&ps.stdout)
            .split_whitespace()
            .count();
        if n == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "sleeps left: {ps:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And streaming works again.
    let f = exec_stream(
        &mut c,
        &id,
        &["echo", "back"],
        Transport::WebSocket,
        out_err(),
        None,
    )
    .await;
    assert_eq!(f.stdout_str(), "back\n");
}

/// Two HTTP servers in a pod (busybox httpd on 8080 and 8081), served to
/// clients through PortForward.
#[tokio::test]
async fn port_forward_two_ports_concurrently() {
    let env = env("").await;
    let mut c = env.client().await;
    let pc = pod_config("portfwd", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "").await;
    let id = created(
        &mut c,
        &pod,
        &pc,
        ("web", &env.image),
        &[
            "sh",
            "-c",
            "mkdir -p /a /b && echo port-a > /a/index.html && echo port-b > /b/index.html \
             && head -c 20971520 /dev/urandom > /a/big \
             && httpd -p 8080 -h /a && httpd -p 8081 -h /b && echo ready && exec sleep 100000",
        ],
    )
    .await;
    start(&mut c, &id).await;
    // Serving once it said so.
    let log = env.logs.join("portfwd/web/0.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the web container never got ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let big = exec(&mut c, &id, &["sha256sum", "/a/big"]).await;
    let want_big = String::from_utf8_lossy(&big.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let get = |path: &str| format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").into_bytes();
    let body = |resp: &[u8]| -> Vec<u8> {
        let i = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        resp[i + 4..].to_vec()
    };
    for t in BOTH {
        let url = c
            .runtime
            .port_forward(PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![],
            })
            .await
            .unwrap()
            .into_inner()
            .url;
        let mut fwd = Forward::open(&url, t).await.unwrap();
        // Several connections to two ports at once, one of them large.
        let mut conns = Vec::new();
        for (port, path) in [
            (8080, "/big"),
            (8081, "/index.html"),
            (8080, "/index.html"),
            (8081, "/index.html"),
        ] {
            let conn = fwd.connect(port).await.unwrap();
            let req = get(path);
            conns.push(tokio::spawn(
                async move { conn.request(&req).await.unwrap() },
            ));
        }
        let mut answers: Vec<(Vec<u8>, String)> = Vec::new();
        for h in conns {
            answers.push(h.await.unwrap());
        }
        for (i, a) in answers.iter().enumerate() {
            assert!(a.1.is_empty(), "{t:?} connection {i}: {}", a.1);
        }
        let big_body = body(&answers[0].0);
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&big_body)),
            want_big,
            "{t:?}"
        );
        assert_eq!(body(&answers[1].0), b"port-b\n", "{t:?}");
        assert_eq!(body(&answers[2].0), b"port-a\n", "{t:?}");
        assert_eq!(body(&answers[3].0), b"port-b\n", "{t:?}");
        // A port nobody listens on: the error stream says so.
        let (data, err) = fwd.connect(9).await.unwrap().request(b"x").await.unwrap();
        assert!(data.is_empty());
        assert!(err.contains("port 9") && err.contains(&pod), "{t:?}: {err}");
    }
    // kubelet's own WebSocket protocol: ports in the query.
    let url = c
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![8080, 8081],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let got = stream::forward_ws_native(
        &url,
        &[8080, 8081],
        &[&get("/index.html"), &get("/index.html")],
    )
    .await
    .unwrap();
    assert_eq!(body(&got[0].0), b"port-a\n");
    assert_eq!(body(&got[1].0), b"port-b\n");
    // A port the request did not name is refused.
    let url = c
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![8080],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut fwd = Forward::open(&url, Transport::Spdy).await.unwrap();
    let (data, err) = fwd
        .connect(8081)
        .await
        .unwrap()
        .request(&get("/"))
        .await
        .unwrap();
    assert!(data.is_empty() && err.contains("not among"), "{err}");
}

#[tokio::test]
async fn tls_streaming() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = dir.path().join("stream.pem");
    let key = dir.path().join("stream.key");
    std::fs::write(&cert, ca.cert.pem()).unwrap();
    std::fs::write(&key, ca.signing_key.serialize_pem()).unwrap();
    let env = env(&format!(
        "stream_tls_cert = \"{}\"\nstream_tls_key = \"{}\"\n",
        cert.display(),
        key.display()
    ))
    .await;
    let mut c = env.client().await;
    let (_pod, id) = sleeper(&mut c, &env, "exec-tls").await;
    let url = exec_url(&mut c, &id, &["echo", "over-tls"], out_err())
        .await
        .unwrap();
    assert!(url.starts_with("https://"), "{url}");
    for t in BOTH {
        let url = exec_url(&mut c, &id, &["echo", "over-tls"], out_err())
            .await
            .unwrap();
        let f = stream::run(&url, t, out_err(), None).await.unwrap();
        assert_eq!(f.stdout_str(), "over-tls\n", "{t:?}");
    }
    // Plain HTTP to the TLS port gets nowhere.
    let plain = url.replacen("https://", "http://", 1);
    assert!(stream::run(&plain, Transport::Spdy, out_err(), None)
        .await
        .is_err());
}

async fn attach_url(c: &mut CriClient, id: &str, s: Streams) -> String {
    c.runtime
        .attach(AttachRequest {
            container_id: id.into(),
            stdin: s.stdin,
            tty: s.tty,
            stdout: s.stdout,
            stderr: s.stderr,
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

fn with_stdin(mut cc: ContainerConfig, once: bool, tty: bool) -> ContainerConfig {
    cc.stdin = true;
    cc.stdin_once = once;
    cc.tty = tty;
    cc
}

#[tokio::test]
async fn attach_two_clients_and_stdin_once() {
    let env = env("").await;
    let mut c = env.client().await;
    let pc = pod_config("attach", &env.logs);
    let pod = run_pod(&mut c, pc.clone(), "").await;
    let all = Streams {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };

    // A shell reading its stdin; two clients on it, one per transport.
    let id = create(
        &mut c,
        &pod,
        &pc,
        with_stdin(container_config("sh", &env.image, &["sh"]), false, false),
    )
    .await
    .unwrap();
    start(&mut c, &id).await;
    let url = attach_url(&mut c, &id, all).await;
    let mut a = stream::connect(&url, Transport::Spdy, all).await.unwrap();
    let url = attach_url(&mut c, &id, all).await;
    let mut b = stream::connect(&url, Transport::WebSocket, all)
        .await
        .unwrap();
    // Both are attached before anything is written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.write("echo hello-from-a\n").await.unwrap();
    a.wait_stdout("hello-from-a", Duration::from_secs(10))
        .await
        .unwrap();
    b.wait_stdout("hello-from-a", Duration::from_secs(10))
        .await
        .unwrap();
    // One client detaching (its stdin ends) ends its session only.
    a.close_stdin().await;
    let fa = a.finish(Duration::from_secs(10)).await.unwrap();
    assert_eq!(fa.exit_code(), Some(0), "{fa:?}");
    b.write("echo still-here; echo to-stderr >&2; exit 4\n")
        .await
        .unwrap();
    let fb = b.finish(Duration::from_secs(20)).await.unwrap();
    assert!(fb.stdout_str().contains("still-here"), "{fb:?}");
    assert_eq!(fb.stderr, b"to-stderr\n", "{fb:?}");
    let st = wait_exited(&mut c, &id, Duration::from_secs(10)).await;
    assert_eq!(st.exit_code, 4);
    // What attached clients saw is in the log too.
    let log = std::fs::read_to_string(env.logs.join("attach/sh/0.log")).unwrap();
    assert!(
        log.contains("hello-from-a") && log.contains("still-here"),
        "{log}"
    );

    // stdin_once: the first detach closes the container's stdin.
    let id = create(
        &mut c,
        &pod,
        &pc,
        with_stdin(container_config("cat", &env.image, &["cat"]), true, false),
    )
    .await
    .unwrap();
    start(&mut c, &id).await;
    let url = attach_url(&mut c, &id, all).await;
    let f = stream::run(
        &url,
        Transport::WebSocket,
        all,
        Some(b"only-once\n".to_vec()),
    )
    .await
    .unwrap();
    assert_eq!(f.stdout_str(), "only-once\n", "{f:?}");
    let st = wait_exited(&mut c, &id, Duration::from_secs(10)).await;
    assert_eq!(st.exit_code, 0);

    // A terminal: resize reaches the container's pty.
    let tty = Streams {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    let id = create(
        &mut c,
        &pod,
        &pc,
        with_stdin(container_config("tty", &env.image, &["sh"]), false, true),
    )
    .await
    .unwrap();
    start(&mut c, &id).await;
    for (t, (w, h)) in BOTH.into_iter().zip([(77u16, 22u16), (88, 11)]) {
        let url = attach_url(&mut c, &id, tty).await;
        let mut r = stream::connect(&url, t, tty).await.unwrap();
        r.resize(w, h).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        r.write("stty size\n").await.unwrap();
        r.wait_stdout(&format!("{h} {w}"), Duration::from_secs(10))
            .await
            .unwrap();
        r.close_stdin().await;
        r.finish(Duration::from_secs(10)).await.unwrap();
    }
    // Without stdin, a session lasts until the container exits.
    let out_only = Streams {
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let id = created(
        &mut c,
        &pod,
        &pc,
        ("ticker", &env.image),
        &["sh", "-c", "sleep 1; echo tick; exit 2"],
    )
    .await;
    start(&mut c, &id).await;
    let url = attach_url(&mut c, &id, out_only).await;
    let f = stream::run(&url, Transport::Spdy, out_only, None)
        .await
        .unwrap();
    assert_eq!(f.stdout_str(), "tick\n", "{f:?}");
}
