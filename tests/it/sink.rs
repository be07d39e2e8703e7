//! The real binary end to end: `butler-agent sink` receiving from `butler-agent telemetry send`,
//! directly and through a local proxy, and sending nothing when telemetry is off.

use crate::common;
use crate::common::{NOWHERE, Telemetry};

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
    let addr = common::sink_address(&mut child);
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
    let lines = seen.lock().unwrap().clone();
    assert_eq!(lines.len(), 1, "{lines:?}");
    // The request line, with the sending time capture reads as `sent_at`.
    let millis = lines[0]
        .strip_prefix("POST http://sink.butler-agent.invalid/i/v0/e/?_=")
        .and_then(|r| r.strip_suffix(" HTTP/1.1"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(
        millis.len() >= 13 && millis.bytes().all(|b| b.is_ascii_digit()),
        "{lines:?}"
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

/// One raw HTTP exchange with the sink: the status, the headers (names lower-cased) and the body.
struct Exchange {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Exchange {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn exchange(addr: &str, request: &[u8]) -> Exchange {
    let addr = addr.parse().expect("the sink logs a socket address");
    let resp = common::http_exchange(addr, request, false, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("no answer from the sink: {e}"));
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer: {:?}", String::from_utf8_lossy(&resp)));
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Exchange {
        status,
        headers,
        body: resp[split + 4..].to_vec(),
    }
}

/// A request: `target` is the path with its query; `headers` are added to `Host`,
/// `Content-Length` and `Connection: close`.
fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    if !headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    }) {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Percent-encodes everything but unreserved characters (for query and form values).
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const KEY: &str = "phc_5cmKiX9OubQjsSfOZuaolWaxo2z7WXqd295eB0uOtTb";
/// lz-string's `compressToBase64` of `{"api_key":KEY,"event":"e","distinct_id":"d"}`.
const LZ_EVENT: &str = "N4IghgDglg+g1gUwJ4gFwggCwMYwKzYC2A0lABoCcA8gK4BGAigFYDOAygGZUBaNYA9gBsA6mAAe/AEwAvAOzCyARwAmkingQAhAAw0qAFwAqdEABoQCAG4IAdvrQWzIZVBb6oN7PphRlDvwC+QA";
const JSON: Option<&str> = Some("application/json");
const TEXT: Option<&str> = Some("text/plain; charset=utf-8");
const OK: &str = r#"{"status":"Ok"}"#;
const UNTAGGED: &str =
    "failed to parse request: data did not match any variant of untagged enum RawRequest";
const HYDRATION: &str =
    "failed to hydrate events from request: non-engage request missing event name attribute";

/// One row: a request and the answer PostHog's current capture gives it, with the capture
/// source file (in the PostHog/posthog repository) that decides it.
struct Row {
    what: &'static str,
    request: Vec<u8>,
    status: u16,
    content_type: Option<&'static str>,
    body: String,
    source: &'static str,
}

fn row(
    what: &'static str,
    request: Vec<u8>,
    status: u16,
    content_type: Option<&'static str>,
    body: &str,
    source: &'static str,
) -> Row {
    Row {
        what,
        request,
        status,
        content_type,
        body: body.to_string(),
        source,
    }
}

/// A JSON POST.
fn post(path: &str, body: &str) -> Vec<u8> {
    request(
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// An event with the key and `extra` top-level fields.
fn ev(extra: &str) -> String {
    format!(r#"{{"api_key":"{KEY}","event":"e","distinct_id":"d"{extra}}}"#)
}

/// An event whose `api_key` is `token` (raw JSON string contents).
fn with_key(token: &str) -> String {
    format!(r#"{{"api_key":"{token}","event":"e","distinct_id":"d"}}"#)
}

fn table() -> Vec<Row> {
    const ROUTER: &str = "rust/capture/src/router.rs";
    const API: &str = "rust/capture/src/api.rs";
    const COMMON: &str = "rust/capture/src/payload/common.rs";
    const DECOMP: &str = "rust/capture/src/payload/decompression.rs";
    const TYPES: &str = "rust/capture/src/payload/types.rs";
    const REQUEST: &str = "rust/capture/src/v0_request.rs";
    const UTILS: &str = "rust/capture/src/utils.rs";
    const TOKEN: &str = "rust/capture/src/token.rs";
    const ANALYTICS: &str = "rust/capture/src/events/analytics.rs";
    const EVENT: &str = "rust/common/types/src/event.rs";
    const EXTRACT: &str = "rust/capture/src/extractors.rs";
    const KAFKA: &str = "rust/capture/src/sinks/kafka.rs";
    const ENDPOINT: &str = "rust/capture/src/v0_endpoint.rs";

    let e = ev("");
    let form = "application/x-www-form-urlencoded";
    let mut bad_gzip = gzip(e.as_bytes());
    bad_gzip.truncate(15);
    let mut rows = Vec::new();
    // Routes: each event path with and without its trailing slash; nothing else.
    for path in [
        "/i/v0/e/",
        "/i/v0/e",
        "/e/",
        "/e",
        "/track/",
        "/track",
        "/capture/",
        "/capture",
        "/engage/",
        "/engage",
    ] {
        rows.push(row("event route", post(path, &e), 200, JSON, OK, ROUTER));
    }
    let batch = format!(r#"{{"api_key":"{KEY}","batch":[{e},{e}]}}"#);
    rows.push(row("batch", post("/batch/", &batch), 200, JSON, OK, ROUTER));
    rows.push(row(
        "batch no slash",
        post("/batch", &batch),
        200,
        JSON,
        OK,
        ROUTER,
    ));
    rows.extend([
        row("double slash", post("/e//", &e), 404, None, "", ROUTER),
        row(
            "recordings route in events mode",
            post("/s/", &e),
            404,
            None,
            "",
            ROUTER,
        ),
        row("unknown route", post("/decide/", &e), 404, None, "", ROUTER),
        row(
            "PUT",
            request("PUT", "/e/", &[], e.as_bytes()),
            405,
            None,
            "",
            ROUTER,
        ),
        row(
            "DELETE batch",
            request("DELETE", "/batch/", &[], b""),
            405,
            None,
            "",
            ROUTER,
        ),
        // The CORS layer answers every OPTIONS before capture's handlers see it.
        row(
            "OPTIONS",
            request("OPTIONS", "/i/v0/e/", &[], b""),
            200,
            None,
            "",
            ROUTER,
        ),
        row(
            "OPTIONS batch",
            request("OPTIONS", "/batch", &[], b""),
            200,
            None,
            "",
            ROUTER,
        ),
        row(
            "OPTIONS on no route",
            request("OPTIONS", "/nowhere", &[], b""),
            200,
            None,
            "",
            ROUTER,
        ),
        row(
            "CORS preflight",
            request(
                "OPTIONS",
                "/i/v0/e/",
                &[
                    ("Origin", "https://a.example"),
                    ("Access-Control-Request-Method", "POST"),
                ],
                b"",
            ),
            200,
            None,
            "",
            ROUTER,
        ),
        row(
            "index",
            request("GET", "/", &[], b""),
            200,
            TEXT,
            "capture",
            ROUTER,
        ),
        row(
            "POST index",
            request("POST", "/", &[], b""),
            405,
            None,
            "",
            ROUTER,
        ),
        row(
            "GET ?data=",
            request("GET", &format!("/e/?data={}", pct(&e)), &[], b""),
            200,
            JSON,
            OK,
            COMMON,
        ),
        row(
            "GET ?data= base64",
            request(
                "GET",
                &format!("/i/v0/e/?data={}", pct(&b64(e.as_bytes()))),
                &[],
                b"",
            ),
            200,
            JSON,
            OK,
            COMMON,
        ),
        row(
            "GET without data",
            request("GET", "/i/v0/e/", &[], b""),
            400,
            TEXT,
            "request missing data payload",
            COMMON,
        ),
        row(
            "empty POST",
            post("/i/v0/e/", ""),
            400,
            TEXT,
            "request missing data payload",
            COMMON,
        ),
    ]);
    // Body decoding.
    rows.extend([
        row(
            "gzip by magic",
            request("POST", "/i/v0/e/", &[], &gzip(e.as_bytes())),
            200,
            JSON,
            OK,
            DECOMP,
        ),
        row(
            "gzip by header",
            request(
                "POST",
                "/batch/",
                &[("Content-Encoding", "gzip")],
                &gzip(batch.as_bytes()),
            ),
            200,
            JSON,
            OK,
            DECOMP,
        ),
        row(
            "gzip hint in query, plain body",
            post("/i/v0/e/?compression=gzip-js", &e),
            400,
            TEXT,
            "failed to decode request: invalid GZIP data",
            DECOMP,
        ),
        row(
            "gzip header, plain body",
            request("POST", "/e/", &[("Content-Encoding", "gzip")], e.as_bytes()),
            400,
            TEXT,
            "failed to decode request: invalid GZIP data",
            DECOMP,
        ),
        row(
            "truncated gzip",
            request("POST", "/e/", &[], &bad_gzip),
            400,
            TEXT,
            "failed to decode request: invalid GZIP data",
            DECOMP,
        ),
        row(
            "gzip of non-UTF-8",
            request("POST", "/e/", &[], &gzip(&[0xff, 0xfe, 0xfd])),
            400,
            TEXT,
            "failed to decode request: invalid gzip data",
            DECOMP,
        ),
        row(
            "non-UTF-8 body",
            request("POST", "/e/", &[], &[0xff, 0xfe, 0xfd]),
            400,
            TEXT,
            "failed to decode request: invalid UTF8 in request payload",
            DECOMP,
        ),
        row(
            "unknown compression hint",
            post("/e/?compression=zstd", &e),
            200,
            JSON,
            OK,
            TYPES,
        ),
        row(
            "lz-string form, as posthog-js sends it",
            request(
                "POST",
                "/e/?compression=lz64",
                &[("Content-Type", form)],
                format!("data={}", pct(LZ_EVENT)).as_bytes(),
            ),
            200,
            JSON,
            OK,
            DECOMP,
        ),
        row(
            "cut lz-string",
            request(
                "POST",
                "/e/?compression=lz-string",
                &[("Content-Type", form)],
                format!("data={}", pct(&LZ_EVENT[..40])).as_bytes(),
            ),
            400,
            TEXT,
            "failed to decode request: decompress_lz64: failed decompress to UTF16",
            DECOMP,
        ),
        row(
            "base64 body",
            request("POST", "/i/v0/e/", &[], b64(e.as_bytes()).as_bytes()),
            200,
            JSON,
            OK,
            COMMON,
        ),
        row(
            "base64 twice on a legacy path",
            request(
                "POST",
                "/capture/",
                &[],
                b64(b64(e.as_bytes()).as_bytes()).as_bytes(),
            ),
            200,
            JSON,
            OK,
            DECOMP,
        ),
        row(
            "base64 twice on /i/v0/e",
            request(
                "POST",
                "/i/v0/e/",
                &[],
                b64(b64(e.as_bytes()).as_bytes()).as_bytes(),
            ),
            400,
            TEXT,
            "failed to parse request: expected value at line 1 column 1",
            DECOMP,
        ),
        row(
            "form with base64 data",
            request(
                "POST",
                "/e/",
                &[("Content-Type", form)],
                format!("data={}&compression=base64", b64(e.as_bytes())).as_bytes(),
            ),
            200,
            JSON,
            OK,
            COMMON,
        ),
        row(
            "form with JSON data",
            request(
                "POST",
                "/e/",
                &[("Content-Type", form)],
                format!("data={}", pct(&e)).as_bytes(),
            ),
            200,
            JSON,
            OK,
            COMMON,
        ),
        row(
            "form type, JSON body",
            request("POST", "/e/", &[("Content-Type", form)], e.as_bytes()),
            400,
            TEXT,
            "failed to decode request: expected form data in POST request payload",
            COMMON,
        ),
        row(
            "form with data twice",
            request("POST", "/e/", &[("Content-Type", form)], b"data=a&data=b"),
            400,
            TEXT,
            "failed to decode request: invalid urlencoded form data",
            UTILS,
        ),
        row(
            "sent_at not a number",
            post("/i/v0/e/?_=soon", &e),
            400,
            TEXT,
            "Failed to deserialize query string: _: invalid digit found in string",
            TYPES,
        ),
        row(
            "beacon not a number",
            post("/i/v0/e/?beacon=yes", &e),
            400,
            TEXT,
            "Failed to deserialize query string: beacon: invalid digit found in string",
            TYPES,
        ),
        row(
            "beacon",
            post("/i/v0/e/?beacon=1", &e),
            204,
            None,
            "",
            ENDPOINT,
        ),
        row(
            "sent_at and ver in the query",
            post("/i/v0/e/?ver=1.2.3&_=1767225600000", &e),
            200,
            JSON,
            OK,
            TYPES,
        ),
    ]);
    // Request shapes.
    rows.extend([
        row(
            "array, one token",
            post(
                "/e/",
                &format!(r#"[{e},{{"token":"{KEY}","event":"f","$distinct_id":"x"}}]"#),
            ),
            200,
            JSON,
            OK,
            REQUEST,
        ),
        row(
            "empty array",
            post("/e/", "[]"),
            400,
            TEXT,
            "request holds no event",
            REQUEST,
        ),
        row(
            "empty batch",
            post("/batch/", &format!(r#"{{"api_key":"{KEY}","batch":[]}}"#)),
            400,
            TEXT,
            "request holds no event",
            REQUEST,
        ),
        row(
            "batch without a token",
            post("/batch/", &format!(r#"{{"batch":[{e}]}}"#)),
            400,
            TEXT,
            HYDRATION,
            REQUEST,
        ),
        row(
            "event name not a string",
            post(
                "/e/",
                &format!(r#"{{"api_key":"{KEY}","event":5,"distinct_id":"d"}}"#),
            ),
            400,
            TEXT,
            HYDRATION,
            REQUEST,
        ),
        row(
            "nameless update on /engage",
            post(
                "/engage/",
                &format!(r#"{{"$token":"{KEY}","$distinct_id":"d","$set":{{"plan":"x"}}}}"#),
            ),
            200,
            JSON,
            OK,
            REQUEST,
        ),
        row("a number", post("/e/", "42"), 400, TEXT, UNTAGGED, REQUEST),
        row(
            "cut JSON",
            post("/e/", "{"),
            400,
            TEXT,
            "failed to parse request: EOF while parsing an object at line 1 column 1",
            REQUEST,
        ),
        row(
            "trailing characters",
            post("/e/", &format!("{e} x")),
            400,
            TEXT,
            &format!(
                "failed to parse request: trailing characters at line 1 column {}",
                e.len() + 2
            ),
            REQUEST,
        ),
        row(
            "only $performance_event",
            post("/e/", r#"{"event":"$performance_event"}"#),
            200,
            JSON,
            OK,
            REQUEST,
        ),
        row(
            "$performance_event dropped from a batch",
            post(
                "/batch/",
                &format!(r#"{{"api_key":"{KEY}","batch":[{{"event":"$performance_event"}},{e}]}}"#),
            ),
            200,
            JSON,
            OK,
            REQUEST,
        ),
    ]);
    // Tokens: all 401, with capture's reason.
    rows.extend([
        row("no token", post("/e/", r#"{"event":"e","distinct_id":"d"}"#), 401, TEXT, "event submitted without an api_key", UTILS),
        row(
            "token from properties",
            post("/e/", &format!(r#"{{"event":"e","distinct_id":"d","properties":{{"token":"{KEY}"}}}}"#)),
            200,
            JSON,
            OK,
            EVENT,
        ),
        row("empty token", post("/e/", &with_key("")), 401, TEXT, "API key is not valid: empty", TOKEN),
        row("whitespace token", post("/e/", &with_key(" \\t ")), 401, TEXT, "API key is not valid: empty", TOKEN),
        row("65-byte token", post("/e/", &with_key(&"x".repeat(65))), 401, TEXT, "API key is not valid: too_long", TOKEN),
        row("non-ASCII token", post("/e/", &with_key("phc_clé")), 401, TEXT, "API key is not valid: not_ascii", TOKEN),
        row("personal key", post("/e/", &with_key("phx_abc")), 401, TEXT, "API key is not valid: personal_api_key", TOKEN),
        row("NUL in token", post("/e/", &with_key("phc_a\\u0000b")), 401, TEXT, "API key is not valid: null_byte", TOKEN),
        row("token with a newline", post("/e/", &with_key(&format!(" {KEY}\\n"))), 200, JSON, OK, TOKEN),
        row(
            "two tokens",
            post("/e/", &format!(r#"[{e},{{"token":"phc_other","event":"e","distinct_id":"d"}}]"#)),
            401,
            TEXT,
            "batch submitted with inconsistent api_key values",
            API,
        ),
        row(
            "batch's personal key",
            post("/batch/", &format!(r#"{{"api_key":"phx_abc","batch":[{e}]}}"#)),
            401,
            TEXT,
            "API key is not valid: personal_api_key",
            UTILS,
        ),
        row(
            "batch token wins over the events'",
            post("/batch/", &format!(r#"{{"token":"{KEY}","batch":[{{"token":"a","event":"e","distinct_id":"d"}},{{"token":"b","event":"e","distinct_id":"d"}}]}}"#)),
            200,
            JSON,
            OK,
            UTILS,
        ),
        row("api_key and token", post("/e/", &ev(&format!(r#","token":"{KEY}""#))), 400, TEXT, UNTAGGED, EVENT),
        row("token not a string", post("/e/", r#"{"api_key":5,"event":"e","distinct_id":"d"}"#), 400, TEXT, UNTAGGED, EVENT),
    ]);
    // Event rules.
    let no_id = format!(r#"{{"api_key":"{KEY}","event":"e"}}"#);
    rows.extend([
        row("empty event name", post("/e/", &format!(r#"{{"api_key":"{KEY}","event":"","distinct_id":"d"}}"#)), 400, TEXT, "event submitted with an empty event name", ANALYTICS),
        row(
            "second event nameless",
            post("/e/", &format!(r#"[{e},{{"api_key":"{KEY}","event":"","distinct_id":"d"}}]"#)),
            400,
            TEXT,
            "event submitted with an empty event name",
            ANALYTICS,
        ),
        row("no distinct_id", post("/e/", &no_id), 400, TEXT, "event submitted without a distinct_id", EVENT),
        row(
            "empty distinct_id",
            post("/e/", &format!(r#"{{"api_key":"{KEY}","event":"e","distinct_id":""}}"#)),
            400,
            TEXT,
            "event submitted without a distinct_id",
            EVENT,
        ),
        row(
            "whitespace distinct_id",
            post("/e/", &format!(r#"{{"api_key":"{KEY}","event":"e","distinct_id":"  "}}"#)),
            400,
            TEXT,
            "event submitted without a distinct_id",
            EVENT,
        ),
        row(
            "distinct_id from properties",
            post("/e/", &format!(r#"{{"api_key":"{KEY}","event":"e","distinct_id":null,"properties":{{"distinct_id":"p"}}}}"#)),
            200,
            JSON,
            OK,
            EVENT,
        ),
        row(
            "numeric and object distinct_id",
            post("/e/", &format!(r#"[{{"api_key":"{KEY}","event":"e","distinct_id":42}},{{"api_key":"{KEY}","event":"e","distinct_id":{{"a":1}}}}]"#)),
            200,
            JSON,
            OK,
            EVENT,
        ),
        row("distinct_id and $distinct_id", post("/e/", &ev(r#","$distinct_id":"x""#)), 400, TEXT, UNTAGGED, EVENT),
        row("bad uuid", post("/e/", &ev(r#","uuid":"not-a-uuid""#)), 400, TEXT, UNTAGGED, EVENT),
        row("empty uuid", post("/e/", &ev(r#","uuid":"""#)), 200, JSON, OK, EVENT),
        row("unparseable timestamp", post("/e/", &ev(r#","timestamp":"yesterday""#)), 200, JSON, OK, EVENT),
        row("numeric timestamp", post("/e/", &ev(r#","timestamp":1767225600"#)), 400, TEXT, UNTAGGED, EVENT),
        row("offset as text", post("/e/", &ev(r#","offset":"5""#)), 400, TEXT, UNTAGGED, EVENT),
        row("offset", post("/e/", &ev(r#","offset":5"#)), 200, JSON, OK, EVENT),
        row("$set not an object", post("/e/", &ev(r#","$set":[1]"#)), 400, TEXT, UNTAGGED, EVENT),
        row("$set_once not an object", post("/e/", &ev(r#","$set_once":"x""#)), 400, TEXT, UNTAGGED, EVENT),
        row("$set and $set_once", post("/e/", &ev(r#","$set":{"a":1},"$set_once":{}"#)), 200, JSON, OK, EVENT),
        row("properties not an object", post("/e/", &ev(r#","properties":[]"#)), 400, TEXT, UNTAGGED, EVENT),
        row(
            "cookieless mode not a boolean",
            post("/e/", &ev(r#","properties":{"$cookieless_mode":"yes"}"#)),
            400,
            TEXT,
            "event submitted with invalid cookieless mode",
            EVENT,
        ),
        row("cookieless mode", post("/e/", &ev(r#","properties":{"$cookieless_mode":true}"#)), 200, JSON, OK, EVENT),
    ]);
    // Size.
    // One wire cap of 20 MiB on every event route, declared or streamed (decided by
    // rust/capture/src/extractors.rs; rust/capture/tests/integration_wire_body_limits.rs).
    let too_big = "maximum event size exceeded: Request body exceeds limit of 20971520 bytes";
    let over = 20 * 1024 * 1024 + 1;
    let mut chunked = format!("{over:x}\r\n").into_bytes();
    chunked.extend(std::iter::repeat_n(b' ', over));
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    rows.extend([
        row(
            "declared body over the wire cap",
            request(
                "POST",
                "/i/v0/e/",
                &[("Content-Length", &over.to_string())],
                b"{",
            ),
            413,
            TEXT,
            too_big,
            EXTRACT,
        ),
        row(
            "streamed body over the wire cap",
            request("POST", "/e/", &[("Transfer-Encoding", "chunked")], &chunked),
            413,
            TEXT,
            too_big,
            EXTRACT,
        ),
    ]);
    // Under the cap on an event route (the old 2 MiB event-route cap is gone): 4 MiB of events,
    // each under the Kafka producer's 1,000,000-byte message limit.
    let pad = |n: usize| ev(&format!(r#","properties":{{"pad":"{}"}}"#, "a".repeat(n)));
    let batch = format!("[{}]", vec![pad(999_000); 4].join(","));
    rows.push(row(
        "4 MiB of events",
        post("/i/v0/e/", &batch),
        200,
        JSON,
        OK,
        EXTRACT,
    ));
    // One event over the Kafka producer's message limit (KAFKA_PRODUCER_MESSAGE_MAX_BYTES,
    // 1,000,000 by default in rust/capture/src/config.rs) is refused when capture sends it.
    let one_over = pad(1_000_000 - pad(0).len() + 1);
    rows.extend([
        row(
            "event at the Kafka limit",
            post("/i/v0/e/", &pad(1_000_000 - pad(0).len())),
            200,
            JSON,
            OK,
            KAFKA,
        ),
        row(
            "event over the Kafka limit",
            post("/batch/", &format!("[{},{one_over}]", ev(""))),
            413,
            TEXT,
            "maximum event size exceeded: Event rejected by kafka during send",
            KAFKA,
        ),
    ]);
    rows
}

/// Every row of [`table`], each on its own connection, answered exactly as PostHog's current
/// capture answers it: status, content type and body.
#[test]
fn sink_answers_every_request_as_capture_does() {
    let sink = start_sink(None);
    let rows = table();
    assert!(rows.len() >= 60, "{} rows", rows.len());
    let mut accepted = 0;
    for r in &rows {
        let x = exchange(&sink.addr, &r.request);
        let got = (
            x.status,
            x.header("content-type"),
            String::from_utf8_lossy(&x.body),
        );
        assert_eq!(
            got,
            (r.status, r.content_type, r.body.as_str().into()),
            "{} (decided by {})",
            r.what,
            r.source
        );
        if r.status == 204 || (r.status == 200 && r.body == OK && !r.what.starts_with("OPTIONS")) {
            accepted += 1;
        }
    }
    // Printed: one line per accepted event (the batch rows hold two, $performance_event none).
    let printed = wait_for_lines(&sink, accepted);
    assert!(printed.len() >= accepted, "{} < {accepted}", printed.len());
    assert!(printed.iter().all(|l| !l.contains("$performance_event")));
    assert!(printed.iter().any(|l| l.contains(r#""event":"$identify""#)));
}

/// CORS as capture's layer does it: the origin mirrored, credentials allowed, preflights
/// answered with the methods; HEAD like GET without the body; `/_liveness` (the sink's health
/// check), and `/health`, which is not capture's: 404.
#[test]
fn sink_cors_head_and_health() {
    let sink = start_sink(None);
    let a = sink.addr.as_str();
    let pre = exchange(
        a,
        &request(
            "OPTIONS",
            "/batch/",
            &[
                ("Origin", "https://a.example"),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
            b"",
        ),
    );
    assert_eq!(pre.status, 200);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    assert_eq!(pre.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        pre.header("access-control-allow-methods"),
        Some("GET,POST,OPTIONS")
    );
    assert_eq!(
        pre.header("access-control-allow-headers"),
        Some("content-type")
    );
    let post = exchange(
        a,
        &request(
            "POST",
            "/e/",
            &[
                ("Origin", "https://b.example"),
                ("Content-Type", "application/json"),
            ],
            ev("").as_bytes(),
        ),
    );
    assert_eq!(post.status, 200);
    assert_eq!(
        post.header("access-control-allow-origin"),
        Some("https://b.example")
    );
    let refused = exchange(
        a,
        &request("POST", "/e/", &[("Origin", "https://c.example")], b""),
    );
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.header("access-control-allow-origin"),
        Some("https://c.example")
    );
    // A plain OPTIONS is a preflight too.
    let plain = exchange(a, &request("OPTIONS", "/e/", &[], b""));
    assert_eq!((plain.status, plain.body.len()), (200, 0));
    assert_eq!(
        plain.header("access-control-allow-methods"),
        Some("GET,POST,OPTIONS")
    );
    assert_eq!(plain.header("access-control-allow-origin"), None);
    let put = exchange(a, &request("PUT", "/e/", &[], b""));
    assert_eq!(put.header("allow"), Some("POST,GET,HEAD,OPTIONS"));
    let head = exchange(a, &request("HEAD", "/", &[], b""));
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(head.header("content-length"), Some("7"));
    let health = exchange(a, &request("GET", "/_liveness", &[], b""));
    assert_eq!(
        (health.status, health.body.as_slice()),
        (200, &b"capture"[..])
    );
    let not_capture = exchange(a, &request("GET", "/health", &[], b""));
    assert_eq!((not_capture.status, not_capture.body.len()), (404, 0));
}

/// A small gzip body that inflates past capture's limit is refused after inflating no more
/// than the limit (decided by rust/capture/src/payload/decompression.rs).
#[test]
fn sink_refuses_a_gzip_bomb() {
    let sink = start_sink(None);
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![b' '; 1024 * 1024];
    for _ in 0..101 {
        bomb.write_all(&block).unwrap();
    }
    let bomb = bomb.finish().unwrap();
    assert!(bomb.len() < 1024 * 1024);
    let x = exchange(&sink.addr, &request("POST", "/i/v0/e/", &[], &bomb));
    let body = String::from_utf8_lossy(&x.body);
    assert_eq!((x.status, x.header("content-type")), (413, TEXT), "{body}");
    assert!(
        body.starts_with(
            "maximum event size exceeded: Decompressed payload would exceed 104857600 bytes (got "
        ),
        "{body}"
    );
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
