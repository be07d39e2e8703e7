//! The probe binary against real TCP servers on loopback: what it exits with and what it says.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

/// A one-shot server answering the first connection with `answer` (or keeping silent).
fn serve_once(answer: Option<&'static str>) -> (SocketAddr, thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0 on loopback");
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let handle = thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("the probe connects");
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set a read timeout");
        let mut request = Vec::new();
        let mut buf = [0u8; 512];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        match answer {
            Some(a) => {
                let _ = conn.write_all(a.as_bytes());
            }
            // Hold the connection open past the probe's deadline.
            None => thread::sleep(Duration::from_secs(3)),
        }
        String::from_utf8_lossy(&request).into_owned()
    });
    (addr, handle)
}

/// The probe under test: this build's, or the one `BUTLER_PROBE_BIN` names (the image's
/// static `no_std` build: `target/<triple>/probe/healthcheck`).
fn probe_bin() -> std::ffi::OsString {
    std::env::var_os("BUTLER_PROBE_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_healthcheck").into())
}

fn probe(args: &[&str], env_port: Option<&str>) -> Output {
    let mut cmd = Command::new(probe_bin());
    cmd.args(args).env_remove("BUTLER_HEALTH_PORT");
    if let Some(p) = env_port {
        cmd.env("BUTLER_HEALTH_PORT", p);
    }
    cmd.output().expect("the probe binary runs")
}

fn one_line(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text.lines().count(), 1, "exactly one line, got {text:?}");
    assert!(out.stderr.is_empty(), "nothing on stderr: {:?}", out.stderr);
    text
}

#[test]
fn ok_on_200_with_port_from_env() {
    let (addr, server) = serve_once(Some(
        "HTTP/1.1 200 OK\r\ncontent-length: 32\r\n\r\n{\"statusCode\":200,\"status\":\"ok\"}",
    ));
    let port = addr.port().to_string();
    let out = probe(&[], Some(&port));
    let line = one_line(&out);
    assert_eq!(out.status.code(), Some(0), "{line}");
    assert!(line.starts_with(&format!(
        "healthy: http://127.0.0.1:{port}/health answered 200"
    )));
    let request = server.join().expect("server thread");
    assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
    assert!(
        request.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
        "{request}"
    );
}

#[test]
fn fails_on_503_with_url_argument() {
    let (addr, server) = serve_once(Some("HTTP/1.1 503 Service Unavailable\r\n\r\n"));
    let url = format!("http://{addr}/readyz?verbose");
    let out = probe(&[&url], None);
    let line = one_line(&out);
    assert_eq!(out.status.code(), Some(1), "{line}");
    assert_eq!(line.trim(), format!("unhealthy: {url} answered HTTP 503"));
    assert!(
        server
            .join()
            .expect("server thread")
            .starts_with("GET /readyz?verbose ")
    );
}

#[test]
fn fails_clearly_when_nothing_listens() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        l.local_addr().expect("address").port()
    };
    let out = probe(&[&port.to_string()], None);
    let line = one_line(&out);
    assert_eq!(out.status.code(), Some(1), "{line}");
    assert!(line.contains("connection refused"), "{line}");
}

#[test]
fn gives_up_on_a_silent_server() {
    let (addr, _server) = serve_once(None);
    let out = probe(&[&addr.port().to_string()], None);
    let line = one_line(&out);
    assert_eq!(out.status.code(), Some(1), "{line}");
    assert!(line.contains("no answer within 2 s"), "{line}");
}

#[test]
fn rejects_garbage_answers_and_arguments() {
    let (addr, _server) = serve_once(Some("SSH-2.0-OpenSSH_9.2\r\n"));
    let out = probe(&[&addr.port().to_string()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line(&out).contains("not an HTTP answer"));

    let out = probe(&["https://example.invalid/"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line(&out).contains("only http://"));

    let out = probe(&[], Some("seventy"));
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line(&out).contains("BUTLER_HEALTH_PORT"));
}

#[test]
fn an_argument_that_is_not_text_is_a_clear_failure() {
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(probe_bin())
        .arg(std::ffi::OsStr::from_bytes(b"http://127.0.0.1:1/\xff"))
        .output()
        .expect("the probe binary runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line(&out).starts_with("unhealthy: the argument is not UTF-8 text"));
}

#[test]
fn a_long_url_gives_one_cut_line() {
    let url = format!("http://127.0.0.1:1/{}", "a".repeat(100_000));
    let out = probe(&[&url], None);
    assert_eq!(out.status.code(), Some(1));
    let line = one_line(&out);
    assert!(line.contains("over 8 KiB"), "{}", &line[line.len() - 80..]);
}
