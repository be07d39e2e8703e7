//! The real binary end to end: `butler-agent sink` receiving from `butler-agent telemetry send`,
//! directly and through a local proxy, and sending nothing when telemetry is off.

mod common;
use common::{NOWHERE, Telemetry};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running `butler-agent sink`, killed on drop.
struct Sink {
    child: Child,
    addr: String,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sink(out: Option<&std::path::Path>) -> Sink {
    let mut cmd = common::agent(Telemetry::Off);
    cmd.args(["sink", "--listen", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .env("BUTLER_LOG_LEVEL", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(o) = out {
        cmd.arg("--out").arg(o);
    }
    let mut child = cmd.spawn().expect("the binary runs");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the sink logs its address");
    let stdout_lines = Arc::new(Mutex::new(Vec::new()));
    let lines = Arc::clone(&stdout_lines);
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    Sink {
        child,
        addr,
        stdout: stdout_lines,
    }
}

/// `butler-agent telemetry send` with a clean environment plus `vars`; the destination
/// (`BUTLER_POSTHOG_HOST` in `vars`, else nowhere) must be on this machine.
fn send(vars: &[(&str, &str)]) -> std::process::Output {
    let host = vars
        .iter()
        .find(|(k, _)| *k == "BUTLER_POSTHOG_HOST")
        .map_or(NOWHERE, |(_, v)| *v);
    let mut cmd = common::agent(Telemetry::To(host));
    cmd.args(["telemetry", "send"]).env("NO_COLOR", "1");
    for (k, v) in vars.iter().filter(|(k, _)| *k != "BUTLER_POSTHOG_HOST") {
        cmd.env(k, v);
    }
    cmd.output().expect("the binary runs")
}

fn wait_for_lines(s: &Sink, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let l = s.stdout.lock().unwrap().clone();
        if l.len() >= n {
            return l;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    s.stdout.lock().unwrap().clone()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn send_delivers_to_the_sink_which_prints_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let audit = dir.path().join("audit.jsonl");
    let state = dir.path().join("state");
    let sink = start_sink(Some(&out));
    let host = format!("http://{}", sink.addr);
    let o = send(&[
        ("BUTLER_POSTHOG_HOST", &host),
        ("BUTLER_TELEMETRY_AUDIT_LOG", audit.to_str().unwrap()),
        ("BUTLER_STATE_DIR", state.to_str().unwrap()),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("delivered (HTTP 200)"), "{}", text(&o));

    let lines = wait_for_lines(&sink, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let printed: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(printed["event"], "telemetry sent");
    let appended = std::fs::read_to_string(&out).unwrap();
    assert_eq!(appended.trim(), lines[0]);
    let audited: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&audit).unwrap().trim()).unwrap();
    assert_eq!(audited["status"], 200);
    assert_eq!(audited["event"], printed);

    // `telemetry status` now shows the attempt; the --json keys others read are unchanged.
    let st = common::agent(Telemetry::To(&host))
        .args(["telemetry", "status", "--json"])
        .env("BUTLER_STATE_DIR", state.to_str().unwrap())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["enabled"], true);
    assert_eq!(v["decidedBy"], "default");
    assert_eq!(v["destination"], format!("{host}/i/v0/e/"));
    assert_eq!(v["lastAttempt"]["result"], "delivered");
    assert_eq!(v["lastAttempt"]["httpStatus"], 200);
    let st = common::agent(Telemetry::To(&host))
        .args(["telemetry", "status"])
        .env("BUTLER_STATE_DIR", state.to_str().unwrap())
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&st.stdout);
    assert!(
        t.contains("last attempt:") && t.contains("delivered"),
        "{t}"
    );
}

#[test]
fn send_fails_with_exit_1_when_nothing_listens() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let o = send(&[
        ("BUTLER_POSTHOG_HOST", &host),
        ("BUTLER_TELEMETRY_TIMEOUT", "2s"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("could not connect"), "{}", text(&o));
}

/// Counts connections without answering.
fn counting_listener() -> (String, Arc<AtomicU32>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let n = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&n);
    std::thread::spawn(move || {
        for s in l.incoming() {
            c.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (addr, n)
}

#[test]
fn off_opens_no_socket() {
    let (addr, count) = counting_listener();
    let host = format!("http://{addr}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("off.yaml");
    std::fs::write(&cfg, "Butler:\n  anonTelemetry: false\n").unwrap();
    for vars in [
        vec![("DO_NOT_TRACK", "1")],
        vec![("BUTLER_ANON_TELEMETRY", "false")],
        vec![("BUTLER_CONFIG", cfg.to_str().unwrap())],
    ] {
        let mut all = vars.clone();
        all.push(("BUTLER_POSTHOG_HOST", &host));
        // A proxy that would also see any attempt.
        all.push(("HTTP_PROXY", &host));
        let o = send(&all);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(
            text(&o).contains("not sent: telemetry is off"),
            "{}",
            text(&o)
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(count.load(Ordering::SeqCst), 0);
}

/// A minimal forward proxy: records each request line; forwards absolute-form HTTP requests to
/// the address they name (only 127.0.0.1 is ever named here); answers CONNECT with 502 so
/// nothing is ever tunnelled anywhere.
fn proxy(upstream: Option<String>) -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = Vec::new();
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&got).to_string();
            let first = head.lines().next().unwrap_or("").to_string();
            log.lock().unwrap().push(first.clone());
            if first.starts_with("CONNECT ") {
                let _ = s.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
                continue;
            }
            let Some(up) = &upstream else { continue };
            // Rewrite the absolute-form target to origin-form and pass everything through.
            let rewritten = head.replacen("http://sink.butler-agent.invalid", "", 1);
            let len = rewritten
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            let head_len = rewritten
                .find("\r\n\r\n")
                .map_or(rewritten.len(), |i| i + 4);
            let mut body = rewritten.as_bytes()[head_len..].to_vec();
            while body.len() < len {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body.extend_from_slice(&buf[..n]),
                }
            }
            let mut u = TcpStream::connect(up).unwrap();
            u.write_all(&rewritten.as_bytes()[..head_len]).unwrap();
            u.write_all(&body).unwrap();
            let _ = u.set_read_timeout(Some(Duration::from_secs(5)));
            let mut resp = Vec::new();
            let mut chunk = [0u8; 8192];
            while let Ok(n) = u.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                resp.extend_from_slice(&chunk[..n]);
                if resp.windows(4).any(|w| w == b"\r\n\r\n") && resp.ends_with(b"}") {
                    break;
                }
            }
            let _ = s.write_all(&resp);
        }
    });
    (addr, seen)
}

#[test]
fn https_proxy_is_used_with_connect() {
    let (paddr, seen) = proxy(None);
    // A name that cannot resolve: only the proxy can have been asked for it.
    let o = send(&[
        (
            "BUTLER_POSTHOG_HOST",
            "https://capture.butler-agent.invalid",
        ),
        ("HTTPS_PROXY", &format!("http://{paddr}")),
        ("BUTLER_TELEMETRY_TIMEOUT", "5s"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec!["CONNECT capture.butler-agent.invalid:443 HTTP/1.1".to_string()]
    );
}

#[test]
fn http_proxy_forwards_to_the_sink_and_no_proxy_bypasses_it() {
    let sink = start_sink(None);
    let (paddr, seen) = proxy(Some(sink.addr.clone()));
    let o = send(&[
        ("BUTLER_POSTHOG_HOST", "http://sink.butler-agent.invalid"),
        ("HTTP_PROXY", &format!("http://{paddr}")),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec!["POST http://sink.butler-agent.invalid/i/v0/e/ HTTP/1.1".to_string()]
    );
    assert_eq!(wait_for_lines(&sink, 1).len(), 1);

    // NO_PROXY names the destination: straight to the sink, the proxy sees nothing more.
    let o = send(&[
        ("BUTLER_POSTHOG_HOST", &format!("http://{}", sink.addr)),
        ("HTTP_PROXY", &format!("http://{paddr}")),
        ("NO_PROXY", "127.0.0.1"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(wait_for_lines(&sink, 2).len(), 2);
}

/// Raw HTTP to the sink: one request, the status and body back.
fn http(addr: &str, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn sink_answers_as_posthog_does() {
    let sink = start_sink(None);
    let a = sink.addr.as_str();
    assert_eq!(
        http(
            a,
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .0,
        200
    );
    assert_eq!(
        http(
            a,
            "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .0,
        404
    );
    let good = r#"{"api_key":"phc_x","event":"e","distinct_id":"d"}"#;
    for path in ["/i/v0/e/", "/i/v0/e", "/e/", "/capture/", "/batch/"] {
        let body = if path == "/batch/" {
            format!(r#"{{"api_key":"phc_x","batch":[{good}]}}"#)
        } else {
            good.to_string()
        };
        let (status, body) = http(a, &post(path, &body));
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"status":"Ok"}"#),
            "{path}"
        );
    }
    let cases = [
        (
            r#"{"event":"e","distinct_id":"d"}"#,
            401,
            "ingest_key_required",
        ),
        (
            r#"{"api_key":"phx_personal","event":"e","distinct_id":"d"}"#,
            403,
            "ingest_key_unknown",
        ),
        (
            r#"{"api_key":"k","event":"","distinct_id":"d"}"#,
            400,
            "missing_event_name",
        ),
        (r#"{"api_key":"k","event":"e"}"#, 400, "missing_distinct_id"),
        (
            r#"{"api_key":"k","event":"e","distinct_id":"d","uuid":"x"}"#,
            400,
            "request_parsing_error",
        ),
        ("{", 400, "request_parsing_error"),
    ];
    for (body, status, code) in cases {
        let (s, b) = http(a, &post("/i/v0/e/", body));
        let v: serde_json::Value = serde_json::from_str(&b).unwrap_or_default();
        assert_eq!((s, v["code"].as_str()), (status, Some(code)), "{body}");
        assert_eq!(v["status"], status);
    }
    let big = format!(
        "POST /i/v0/e/ HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        3 * 1024 * 1024
    );
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(big.as_bytes()).unwrap();
    let _ = s.write_all(&vec![b' '; 3 * 1024 * 1024]);
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    // Only the accepted events were printed: five, one per good request.
    assert_eq!(wait_for_lines(&sink, 5).len(), 5);
}

#[test]
fn sink_refuses_a_bad_listen_address_or_out_file() {
    let o = common::agent(Telemetry::Off)
        .args([
            "sink",
            "--listen",
            "127.0.0.1:0",
            "--out",
            "/nonexistent/dir/x.jsonl",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(text(&o).contains("--out"), "{}", text(&o));
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let o = common::agent(Telemetry::Off)
        .args(["sink", "--listen", &busy.local_addr().unwrap().to_string()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("cannot listen"), "{}", text(&o));
}
