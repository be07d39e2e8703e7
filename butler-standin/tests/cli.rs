//! The binary as the Kubernetes and container tests use it: started with options, then told
//! from outside (another process, no shell) to go silent, answer again, report and stop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_butler-standin");

fn free() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The status code of `GET path`, or the connection error.
fn get(at: SocketAddr, path: &str) -> Result<u16, String> {
    let mut s =
        TcpStream::connect_timeout(&at, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).map_err(|e| e.to_string())?;
    all.get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or(format!("not HTTP: {all:?}"))
}

fn ctl(control: &str, args: &[&str]) -> Output {
    Command::new(EXE)
        .args(args)
        .args(["--control", control])
        .output()
        .unwrap()
}

fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The address after `label ` in the stand-in's first line (`… api A health off control C; …`).
fn bound(line: &str, label: &str) -> SocketAddr {
    line.split_whitespace()
        .skip_while(|w| *w != label)
        .nth(1)
        .and_then(|a| a.trim_end_matches(';').parse().ok())
        .unwrap_or_else(|| panic!("no {label} address in {line:?}"))
}

#[test]
fn serve_then_silent_answer_stats_stop() {
    // Port 0: the stand-in says where it listens. (Two ports found free beforehand could be
    // the same one, or be taken by the test beside this one before the stand-in binds.)
    let mut child = Command::new(EXE)
        .args(["serve", "--api", "127.0.0.1:0", "--control", "127.0.0.1:0"])
        .args(["--butler-version", "15.1.0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("butler-standin: api"), "{first}");
    let (api, control) = (bound(&first, "api"), bound(&first, "control").to_string());
    assert_eq!(get(api, "/v4/butlerping"), Ok(200));
    assert!(ctl(&control, &["silent"]).status.success());
    eventually("silent refuses connections", || {
        get(api, "/v4/butlerping").is_err()
    });
    assert!(ctl(&control, &["answer"]).status.success());
    eventually("answers again", || get(api, "/v4/butlerping") == Ok(200));
    let o = ctl(&control, &["stats"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ping_ok=2"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(
        ctl(&control, &["fault", "nonsense"]).status.code(),
        Some(64)
    );
    assert!(ctl(&control, &["stop"]).status.success());
    eventually("stops", || child.try_wait().unwrap().is_some());
}

#[test]
fn bad_arguments_exit_64_and_no_stand_in_is_exit_1() {
    for args in [
        &["serve", "--api", "butler:8080"][..],
        &["serve", "--rate-limit", "many"],
        &["serve", "--fault", "nonsense"],
        &["dance"],
    ] {
        let o = Command::new(EXE).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(64), "{args:?}");
    }
    let o = ctl(&free().to_string(), &["stats"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no stand-in answered"));
}
