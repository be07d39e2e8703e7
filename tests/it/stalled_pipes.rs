//! A log or output pipe that nobody reads never hangs the process (issue 19, item 4).
//!
//! The pipe is real: the child's stderr (the agent) or stdout (the sink) is a pipe whose
//! reading end the test holds and never reads, so once its 64 KiB buffer is full every write
//! to it would wait. The process must keep answering, drop lines instead of waiting, and stop
//! on SIGTERM within a few seconds; once the pipe is read again it says how many it dropped.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{self, Telemetry};

/// How long a stop may take, a stalled pipe or not.
const STOP_BOUND: Duration = Duration::from_secs(5);

/// Whether the pipe at `fd` of process `pid` is full: a non-blocking write of one page
/// (PIPE_BUF, written whole or not at all) through `/proc/PID/fd/FD` finds no room. When there
/// is room the page goes in too (blank lines), which only fills the pipe further.
fn pipe_full(pid: u32, fd: u32) -> bool {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut pipe) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(format!("/proc/{pid}/fd/{fd}"))
    else {
        return false;
    };
    matches!(pipe.write(&[b'\n'; 4096]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A child process killed when the test ends, passed or not.
struct Proc(Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn sigterm_and_wait(child: &mut Child) -> Option<Duration> {
    let started = Instant::now();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    while started.elapsed() < STOP_BOUND {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn wait_until(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Any HTTP answer to `GET path` within 2 s (the status does not matter here: the question is
/// whether the server answers at all).
fn answers(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    common::http_exchange(addr, request.as_bytes(), false, Duration::from_secs(2))
        .and_then(|a| common::status_code(&a))
}

#[test]
fn the_agent_keeps_answering_and_stops_with_its_stderr_never_read() {
    let mut child = common::agent(Telemetry::Off)
        .arg("run")
        .env("BUTLER_LOG_LEVEL", "debug")
        .env("BUTLER_LOG_FORMAT", "json")
        .env("BUTLER_HEALTH_HOST", "127.0.0.1")
        .env("BUTLER_HEALTH_PORT", "0")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Proc)
        .expect("the agent starts");
    let port = common::listening_port(child.id(), Duration::from_secs(20))
        .expect("the agent listens within 20 s");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // Held, never read.
    let stderr = child.stderr.take().expect("piped");
    assert!(
        wait_until(Duration::from_secs(20), || answers(addr, "/health")
            == Ok(200)),
        "the agent answers at start"
    );
    // Each malformed request is a debug line naming the failure: fill the pipe and keep
    // logging well past it (bounded in count and time).
    let started = Instant::now();
    let mut sent = 0;
    while sent < 3000 && started.elapsed() < Duration::from_secs(30) {
        let _ = common::http_exchange(addr, b"NOT HTTP\r\n\r\n", false, Duration::from_secs(2));
        sent += 1;
        if sent % 500 == 0 && sent >= 1500 && pipe_full(child.id(), 2) {
            break;
        }
    }
    assert!(
        pipe_full(child.id(), 2),
        "the stderr pipe is full after {sent} requests"
    );
    for path in ["/health", "/livez", "/readyz"] {
        assert_eq!(
            answers(addr, path),
            Ok(200),
            "{path} with a full stderr pipe"
        );
    }
    let took = sigterm_and_wait(&mut child);
    eprintln!("agent, stderr full after {sent} requests: stopped in {took:?}");
    assert!(
        took.is_some(),
        "SIGTERM did not stop the agent within {STOP_BOUND:?}"
    );
    drop(stderr);
}

#[test]
fn the_agent_reports_the_lines_it_dropped_once_stderr_is_read_again() {
    let mut child = common::agent(Telemetry::Off)
        .arg("run")
        .env("BUTLER_LOG_LEVEL", "debug")
        .env("BUTLER_HEALTH_HOST", "127.0.0.1")
        .env("BUTLER_HEALTH_PORT", "0")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Proc)
        .expect("the agent starts");
    let port = common::listening_port(child.id(), Duration::from_secs(20))
        .expect("the agent listens within 20 s");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stderr = child.stderr.take().expect("piped");
    assert!(wait_until(Duration::from_secs(20), || answers(
        addr, "/health"
    ) == Ok(200)));
    // Past the pipe (64 KiB) and the writer's queue (4096 lines) together: about one line
    // per request (bounded in count and time).
    let started = Instant::now();
    for _ in 0..10_000 {
        let _ = common::http_exchange(addr, b"NOT HTTP\r\n\r\n", false, Duration::from_secs(2));
        if started.elapsed() > Duration::from_secs(40) {
            break;
        }
    }
    assert!(pipe_full(child.id(), 2), "the stderr pipe is full");
    // Read again: the log says how many lines it dropped.
    let log = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let reported = wait_until(Duration::from_secs(10), || {
        log.lock()
            .unwrap()
            .contains("dropped: standard error was not being read")
    });
    let stopped = sigterm_and_wait(&mut child);
    assert!(reported, "no report of dropped lines");
    assert!(stopped.is_some());
    let text = log.lock().unwrap().clone();
    let line = text
        .lines()
        .find(|l| l.contains("dropped: standard error was not being read"))
        .unwrap();
    let n: u64 = line
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or(0);
    assert!(n > 0, "{line}");
}

/// The sink with a stdout nobody reads: every event is still accepted, its health answers,
/// SIGTERM stops it; once stdout is read, the log (stderr) says how many lines were not
/// printed.
#[test]
fn the_sink_keeps_accepting_and_stops_with_its_stdout_never_read() {
    let mut child = common::agent(Telemetry::Off)
        .args(["sink", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(Proc)
        .expect("the sink starts");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let log = Arc::new(Mutex::new(String::new()));
    let sink_log = Arc::clone(&log);
    let stderr = child.stderr.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                let _ = tx.send(addr);
            }
            sink_log.lock().unwrap().push_str(&line);
            sink_log.lock().unwrap().push('\n');
        }
    });
    let addr: SocketAddr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the sink logs its address")
        .parse()
        .expect("an address");
    let pad = "x".repeat(2000);
    let body = format!(
        r#"{{"api_key":"phc_test","event":"e","distinct_id":"d","properties":{{"pad":"{pad}"}}}}"#
    );
    let request = format!(
        "POST /i/v0/e/ HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // 5 MB of lines: past the pipe and the writer's queue (4 MiB), so some are dropped.
    let started = Instant::now();
    for i in 0..2500 {
        let answer = common::http_exchange(addr, request.as_bytes(), false, Duration::from_secs(5));
        let status = answer.and_then(|a| common::status_code(&a));
        assert_eq!(status, Ok(200), "event {i} after {:?}", started.elapsed());
    }
    let accepted = started.elapsed();
    assert!(pipe_full(child.id(), 1), "stdout is full");
    assert_eq!(answers(addr, "/_liveness"), Ok(200), "the sink answers");
    // Read stdout again: the lines that did not fit are reported on stderr.
    std::thread::spawn(move || {
        let mut stdout = stdout;
        let mut buf = [0u8; 8192];
        while stdout.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    let reported = wait_until(Duration::from_secs(10), || {
        log.lock()
            .unwrap()
            .contains("not printed: standard output was not being read")
    });
    let stopped = sigterm_and_wait(&mut child);
    eprintln!("sink, stdout unread: 2500 events accepted in {accepted:?}, stopped in {stopped:?}");
    assert!(reported, "no report:\n{}", log.lock().unwrap());
    assert!(
        stopped.is_some(),
        "SIGTERM did not stop the sink within {STOP_BOUND:?}"
    );
}

/// Stopping while stdout stays full: the sink does not wait on the pipe.
#[test]
fn the_sink_stops_at_once_with_a_full_stdout() {
    let mut child = common::agent(Telemetry::Off)
        .args(["sink", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(Proc)
        .expect("the sink starts");
    let stdout = child.stdout.take().expect("piped");
    let addr: SocketAddr = common::sink_address(&mut child.0)
        .parse()
        .expect("an address");
    let pad = "y".repeat(4000);
    let body = format!(
        r#"{{"api_key":"phc_test","event":"e","distinct_id":"d","properties":{{"pad":"{pad}"}}}}"#
    );
    let request = format!(
        "POST /i/v0/e/ HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    for _ in 0..40 {
        let _ = common::http_exchange(addr, request.as_bytes(), false, Duration::from_secs(5));
    }
    assert!(pipe_full(child.id(), 1), "stdout is full");
    assert!(
        sigterm_and_wait(&mut child).is_some(),
        "SIGTERM with a full stdout"
    );
    drop(stdout);
}
