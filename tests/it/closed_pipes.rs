//! A reader that goes away is not an error worth a panic: a printing command whose stdout is
//! closed (`butler-agent host | head -0`) ends quietly with status 0, as ripgrep does, and a
//! closed stderr only loses the log lines: the agent keeps serving, and a failure still exits
//! with its documented code.

use crate::common;
use crate::common::{NOWHERE, Telemetry};

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A stream whose reading end is already closed: every write to it fails with EPIPE, as a
/// pipe's does once its reader has gone.
fn closed_pipe() -> Stdio {
    let (writer, reader) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    drop(reader);
    Stdio::from(std::os::fd::OwnedFd::from(writer))
}

/// Runs a command with telemetry off, host facts read below an empty directory, and stdout
/// closed.
fn with_closed_stdout(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    common::agent(Telemetry::Off)
        .args(args)
        .arg("--root")
        .arg(dir.path())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .expect("the agent binary runs")
}

#[test]
fn printing_commands_end_quietly_on_a_closed_stdout() {
    for args in [
        &["telemetry", "preview"][..],
        &["host"],
        &["host", "--json"],
        &["telemetry", "status"],
        &["telemetry", "status", "--json"],
        &["id", "--explain"],
    ] {
        let out = with_closed_stdout(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("butler-agent:"), "{args:?}: {stderr}");
    }
}

fn spawn_with_closed_stderr(port: u16) -> Child {
    common::agent(Telemetry::Off)
        .arg("run")
        .env("BUTLER_HEALTH_HOST", "127.0.0.1")
        .env("BUTLER_HEALTH_PORT", port.to_string())
        .env("BUTLER_POSTHOG_HOST", NOWHERE)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(closed_pipe())
        .spawn()
        .expect("the agent binary starts")
}

fn get(port: u16, path: &str) -> Option<u16> {
    common::get_status(([127, 0, 0, 1], port).into(), path).ok()
}

fn wait_exit(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait on the agent") {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("the agent did not exit within 10 s");
}

#[test]
fn the_agent_runs_and_stops_with_a_closed_stderr() {
    let mut child = spawn_with_closed_stderr(0);
    let port = common::listening_port(child.id(), Duration::from_secs(10))
        .expect("the agent listens within 10 s");
    let deadline = Instant::now() + Duration::from_secs(10);
    // Ready means the banner was logged (into the closed pipe) and the agent went on.
    while get(port, "/readyz") != Some(200) {
        assert!(
            child.try_wait().expect("wait on the agent").is_none(),
            "the agent ended although only its stderr is closed"
        );
        assert!(Instant::now() < deadline, "not ready within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(port, "/health"), Some(200));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    assert_eq!(wait_exit(&mut child), Some(0));
}

#[test]
fn a_failure_keeps_its_exit_code_with_a_closed_stderr() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port to occupy");
    let port = taken.local_addr().expect("bound").port();
    let mut child = spawn_with_closed_stderr(port);
    assert_eq!(wait_exit(&mut child), Some(1), "not a panic (101)");
}
