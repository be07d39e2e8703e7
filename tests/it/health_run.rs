//! `butler-agent run` as a process: the health server comes up, `/readyz` turns 200, the banner
//! is logged, SIGTERM and SIGINT end it with exit code 0, and a taken port is a clear error.

use crate::common;
use crate::common::{NOWHERE, Telemetry};

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Starts the agent on a loopback port chosen by the OS, with telemetry off (nothing is sent
/// anywhere) and a clean environment.
fn spawn_agent(extra_env: &[(&str, &str)]) -> Child {
    let mut cmd = common::agent(Telemetry::Off);
    cmd.arg("run")
        .env("BUTLER_HEALTH_HOST", "127.0.0.1")
        .env("BUTLER_HEALTH_PORT", "0")
        // Were telemetry turned on by a later variable, it would still go nowhere.
        .env("BUTLER_POSTHOG_HOST", NOWHERE)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("the agent binary starts")
}

/// Reads stderr lines on a thread, so the test can wait for a line with a time limit.
fn log_lines(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(rx: &mpsc::Receiver<String>, what: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(what) {
                    return line;
                }
            }
            Err(_) => panic!(
                "no log line with {what:?} within 10 s; got:\n{}",
                seen.join("\n")
            ),
        }
    }
}

fn http_get(addr: SocketAddr, path: &str) -> u16 {
    common::get_status(addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait on the agent") {
            return status
                .code()
                .expect("the agent exits by itself, not by a signal");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the agent did not exit within 10 s of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_until(sig: &str) {
    let mut child = spawn_agent(&[]);
    let lines = log_lines(child.stderr.take().expect("stderr is piped"));
    let mut seen = Vec::new();
    let listening = wait_line(&lines, "health server listening on http://", &mut seen);
    let addr: SocketAddr = listening
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("an address in {listening:?}"));
    assert_ne!(addr.port(), 0, "the log names the bound port");
    wait_line(&lines, "Instance ID", &mut seen);
    wait_line(&lines, "Telemetry         : off: DO_NOT_TRACK", &mut seen);
    assert_eq!(http_get(addr, "/readyz"), 200);
    assert_eq!(http_get(addr, "/health"), 200);
    signal(&child, sig);
    assert_eq!(wait_exit(&mut child), 0);
    wait_line(&lines, "received: stopping", &mut seen);
    assert!(
        TcpStream::connect(addr).is_err(),
        "the health port is closed after exit"
    );
}

#[test]
fn sigterm_stops_the_agent_with_exit_0() {
    run_until("-TERM");
}

#[test]
fn sigint_stops_the_agent_with_exit_0() {
    run_until("-INT");
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port to occupy");
    let port = taken
        .local_addr()
        .expect("bound listener has an address")
        .port()
        .to_string();
    let mut child = spawn_agent(&[("BUTLER_HEALTH_PORT", &port)]);
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_to_string(&mut err)
        .expect("read stderr");
    assert_eq!(wait_exit(&mut child), 1, "{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && err.contains("BUTLER_HEALTH_PORT"),
        "{err}"
    );
}

#[test]
fn health_server_can_be_turned_off() {
    let mut child = spawn_agent(&[("BUTLER_HEALTH_ENABLE", "false")]);
    let lines = log_lines(child.stderr.take().expect("stderr is piped"));
    let mut seen = Vec::new();
    wait_line(&lines, "health server disabled", &mut seen);
    wait_line(&lines, "Health server     : disabled", &mut seen);
    signal(&child, "-TERM");
    assert_eq!(wait_exit(&mut child), 0);
}
