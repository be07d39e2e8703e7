//! Settings in the environment that are not valid UTF-8, through the real binary: an opt-out
//! is never lost, a destination never falls back to PostHog, and paths are taken as bytes.
//!
//! Rule: a variable that is set but cannot be read as text is a configuration error (exit 64)
//! naming it; `DO_NOT_TRACK` with any value but empty, `0` or `false` opts out, unreadable
//! ones included; path settings (`BUTLER_CONFIG`, `NODE_ENV`'s file, `BUTLER_STATE_DIR` …)
//! are bytes, as the file system takes them.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{self, NOWHERE, Telemetry};

fn bytes(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// A local capture endpoint that accepts every event and counts the connections it gets.
struct Capture {
    url: String,
    hits: Arc<AtomicUsize>,
}

fn capture() -> Capture {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream);
            let (mut line, mut len) = (String::new(), 0usize);
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; len.min(1 << 20)];
            let _ = reader.read_exact(&mut body);
            let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                          Content-Length: 15\r\nConnection: close\r\n\r\n{\"status\":\"Ok\"}";
            let _ = reader.into_inner().write_all(answer.as_bytes());
        }
    });
    Capture { url, hits }
}

fn run_cmd(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("the binary runs")
}

fn status_json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("status --json: {out:?}"))
}

fn assert_config_error(what: &str, out: &Output, var: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{what}: {out:?}");
    assert!(
        err.contains(&format!("environment variable {var}")) && err.contains("not valid UTF-8"),
        "{what}: the error names {var}: {err}"
    );
}

/// `run` for `secs` seconds with its first event due at once; the capture's connections then.
fn run_briefly(mut cmd: Command, capture: &Capture, secs: u64) -> (usize, String) {
    cmd.arg("run")
        .env("BUTLER_TELEMETRY_START_DELAY", "0s")
        .env("BUTLER_HEALTH_ENABLE", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the agent starts");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let out = child.wait_with_output().expect("the agent ends");
    (
        capture.hits.load(Ordering::SeqCst),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const UNREADABLE_DO_NOT_TRACK: &[&[u8]] = &[b"\xff", b"1\xe9", b"fals\xe9", b"\xc3"];

#[test]
fn an_unreadable_do_not_track_opts_out_and_nothing_is_sent() {
    for value in UNREADABLE_DO_NOT_TRACK {
        let capture = capture();
        let mut status = common::agent(Telemetry::To(&capture.url));
        status
            .env("DO_NOT_TRACK", bytes(value))
            .args(["telemetry", "status", "--json"]);
        let out = run_cmd(status);
        assert!(out.status.success(), "{value:?}: {out:?}");
        let v = status_json(&out);
        assert_eq!(v["enabled"], false, "{value:?}: {v}");
        assert_eq!(v["decidedBy"], "DO_NOT_TRACK", "{value:?}: {v}");

        let mut send = common::agent(Telemetry::To(&capture.url));
        send.env("DO_NOT_TRACK", bytes(value))
            .env("BUTLER_ANON_TELEMETRY", "true")
            .args(["telemetry", "send"]);
        let out = run_cmd(send);
        assert!(out.status.success(), "{value:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("not sent"),
            "{value:?}: {out:?}"
        );
        assert_eq!(capture.hits.load(Ordering::SeqCst), 0, "{value:?}: send");
    }
    // The running agent, first event due at once: nothing reaches the capture.
    let capture = capture();
    let mut run = common::agent(Telemetry::To(&capture.url));
    run.env("DO_NOT_TRACK", bytes(b"\xff"));
    let (hits, log) = run_briefly(run, &capture, 3);
    assert_eq!(hits, 0, "run delivered with DO_NOT_TRACK=\\xff:\n{log}");
    assert!(log.contains("off: DO_NOT_TRACK is set"), "{log}");
}

#[test]
fn an_unreadable_butler_anon_telemetry_is_an_error_and_nothing_is_sent() {
    let capture = capture();
    for value in [&b"fals\xe9"[..], b"\xff", b"true\xff"] {
        for args in [
            &["telemetry", "status"][..],
            &["telemetry", "send"],
            &["run"],
        ] {
            let mut cmd = common::agent(Telemetry::To(&capture.url));
            cmd.env("BUTLER_ANON_TELEMETRY", bytes(value))
                .env("BUTLER_HEALTH_ENABLE", "false")
                .env("BUTLER_TELEMETRY_START_DELAY", "0s")
                .args(args);
            let out = run_cmd(cmd);
            assert_config_error(
                &format!("{value:?} {args:?}"),
                &out,
                "BUTLER_ANON_TELEMETRY",
            );
        }
    }
    assert_eq!(capture.hits.load(Ordering::SeqCst), 0);
    // Beside an opt-out, the opt-out wins: nothing else needs to be readable for it.
    let mut cmd = common::agent(Telemetry::To(&capture.url));
    cmd.env("DO_NOT_TRACK", "1")
        .env("BUTLER_ANON_TELEMETRY", bytes(b"\xff"))
        .args(["telemetry", "status", "--json"]);
    let out = run_cmd(cmd);
    assert_eq!(status_json(&out)["decidedBy"], "DO_NOT_TRACK", "{out:?}");
}

#[test]
fn a_config_file_at_a_latin1_path_is_read_and_its_opt_out_kept() {
    let dir = tempfile::tempdir().unwrap();
    let name = bytes(b"butler-caf\xe9.yaml");
    let config = dir.path().join(name);
    std::fs::write(&config, "Butler:\n  anonTelemetry: false\n").unwrap();
    let capture = capture();

    let mut status = common::agent(Telemetry::To(&capture.url));
    status
        .env("BUTLER_CONFIG", &config)
        .args(["telemetry", "status", "--json"]);
    let v = status_json(&run_cmd(status));
    assert_eq!(v["enabled"], false, "{v}");
    assert_eq!(v["decidedBy"], "config", "{v}");

    let mut send = common::agent(Telemetry::To(&capture.url));
    send.env("BUTLER_CONFIG", &config)
        .args(["telemetry", "send"]);
    let out = run_cmd(send);
    assert!(out.status.success(), "{out:?}");
    let mut run = common::agent(Telemetry::To(&capture.url));
    run.env("BUTLER_CONFIG", &config);
    let (hits, log) = run_briefly(run, &capture, 3);
    assert_eq!(hits, 0, "the file's opt-out was lost:\n{log}");

    // Butler's own convention, ./config/$NODE_ENV.yaml, with a NODE_ENV that is not UTF-8.
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config").join(bytes(b"prod\xe9.yaml")),
        "Butler:\n  anonTelemetry: false\n",
    )
    .unwrap();
    let mut status = common::agent(Telemetry::To(&capture.url));
    status
        .current_dir(dir.path())
        .env("NODE_ENV", bytes(b"prod\xe9"))
        .args(["telemetry", "status", "--json"]);
    let v = status_json(&run_cmd(status));
    assert_eq!(
        (&v["enabled"], &v["decidedBy"]),
        (&false.into(), &"config".into()),
        "{v}"
    );
}

#[test]
fn an_unreadable_destination_is_an_error_never_posthog() {
    for value in [
        &b"http://127.0.0.1:9/\xff"[..],
        b"\xff",
        b"https://eu.i.posthog.co\xed",
    ] {
        for args in [&["telemetry", "status"][..], &["telemetry", "preview"]] {
            let mut cmd = common::agent(Telemetry::To(NOWHERE));
            cmd.env("BUTLER_POSTHOG_HOST", bytes(value)).args(args);
            let out = run_cmd(cmd);
            assert_config_error(&format!("{value:?} {args:?}"), &out, "BUTLER_POSTHOG_HOST");
            assert!(
                !String::from_utf8_lossy(&out.stdout).contains("posthog.com"),
                "{out:?}"
            );
        }
        // `run` refuses to start (opted out as well, so that no build of the agent could send).
        let mut cmd = common::agent(Telemetry::Off);
        cmd.env("BUTLER_POSTHOG_HOST", bytes(value))
            .env("BUTLER_HEALTH_ENABLE", "false")
            .arg("run");
        let out = run_cmd(cmd);
        assert_config_error(&format!("{value:?} run"), &out, "BUTLER_POSTHOG_HOST");
    }
}

#[test]
fn a_latin1_state_dir_is_used_as_named() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(bytes(b"st\xe4te"));
    let capture = capture();
    let mut send = common::agent(Telemetry::To(&capture.url));
    send.env("BUTLER_STATE_DIR", &state)
        .args(["telemetry", "send"]);
    let out = run_cmd(send);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(capture.hits.load(Ordering::SeqCst), 1, "{out:?}");
    assert!(
        state.join("telemetry-state.json").is_file(),
        "the state file is in the directory named by the bytes: {out:?}"
    );
    let mut status = common::agent(Telemetry::To(&capture.url));
    status
        .env("BUTLER_STATE_DIR", &state)
        .args(["telemetry", "status"]);
    let out = run_cmd(status);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("last attempt: 20"),
        "{out:?}"
    );
}

#[test]
fn other_unreadable_settings_are_errors_naming_the_variable() {
    for var in [
        "BUTLER_LOG_LEVEL",
        "RUST_LOG",
        "BUTLER_LOG_FORMAT",
        "BUTLER_TELEMETRY_INTERVAL",
        "BUTLER_HEALTH_PORT",
        "BUTLER_POSTHOG_KEY",
        "BUTLER_CONTAINER_RUNTIME",
        "BUTLER_HOST_NO_CPUID",
    ] {
        let mut cmd = common::agent(Telemetry::Off);
        cmd.env(var, bytes(b"x\xff")).args(["telemetry", "status"]);
        let out = run_cmd(cmd);
        assert_config_error(var, &out, var);
    }
}
