//! The health server over real TCP: what probes, browsers and hostile clients get.

use super::*;
use http_body_util::BodyExt;
use std::convert::Infallible;

fn body(r: Response<Full<Bytes>>) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime builds");
    let collected = rt.block_on(r.into_body().collect());
    let bytes = collected
        .unwrap_or_else(|e: Infallible| match e {})
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("bodies are UTF-8 text")
}

/// [`super::respond`] with the flags as they are.
fn respond(
    method: &Method,
    path: &str,
    query: Option<&str>,
    status: Status,
) -> Response<Full<Bytes>> {
    super::respond(method, path, query, || status)
}

/// Every check passing.
const READY: Status = Status {
    started: true,
    config_valid: true,
    listening: true,
    butler: ButlerCheck::Off,
};
/// Before the first host facts and instance ID: what a fresh agent serves.
const STARTING: Status = Status {
    started: false,
    ..READY
};

#[test]
fn health_is_butlers_body() {
    let r = respond(&Method::GET, "/health", None, STARTING);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/json; charset=utf-8");
    assert_eq!(body(r), HEALTH_BODY);
}

#[test]
fn readyz_follows_the_latch() {
    let before = respond(&Method::GET, "/readyz", None, STARTING);
    assert_eq!(before.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body(before),
        "[+]ping ok\n[+]config ok\n[-]startup failed: host facts and instance ID not yet known\n\
         [+]listener ok\nreadyz check failed\n"
    );
    let after = respond(&Method::GET, "/readyz", None, READY);
    assert_eq!(after.status(), StatusCode::OK);
    assert_eq!(body(after), "ok");
}

#[test]
fn readyz_fails_on_an_invalid_config_or_a_closed_listener_and_health_stays_ok() {
    let bad_config = Status {
        config_valid: false,
        ..READY
    };
    let r = respond(&Method::GET, "/readyz", None, bad_config.clone());
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body(r),
        "[+]ping ok\n[-]config failed: the config file no longer loads (the log says why); \
         the last good config stays in use\n[+]startup ok\n[+]listener ok\nreadyz check failed\n"
    );
    let closed = Status {
        listening: false,
        ..READY
    };
    let r = respond(&Method::GET, "/readyz", None, closed.clone());
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(body(r).contains(
        "[-]listener failed: the health listener no longer accepts connections: stopping\n"
    ));
    // Neither /health (Butler's body) nor /livez follows readiness.
    for s in [bad_config, closed, STARTING] {
        let r = respond(&Method::GET, "/health", None, s.clone());
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r), HEALTH_BODY);
        assert_eq!(
            respond(&Method::GET, "/livez", None, s).status(),
            StatusCode::OK
        );
    }
}

#[test]
fn the_butler_check_is_listed_only_when_required_and_feeds_only_readyz() {
    let failed = Status {
        butler: ButlerCheck::Failed(
            "Butler's health endpoint on 127.0.0.1:12398 did not \
                                     answer: connection refused"
                .into(),
        ),
        ..READY
    };
    let r = respond(&Method::GET, "/readyz", None, failed.clone());
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body(r),
        "[+]ping ok\n[+]config ok\n[+]startup ok\n[+]listener ok\n[-]butler failed: \
         Butler's health endpoint on 127.0.0.1:12398 did not answer: connection refused\n\
         readyz check failed\n"
    );
    let pending = Status {
        butler: ButlerCheck::Pending,
        ..READY
    };
    assert_eq!(
        respond(&Method::GET, "/readyz", None, pending.clone()).status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    for s in [failed, pending] {
        assert_eq!(
            respond(&Method::GET, "/livez", None, s.clone()).status(),
            StatusCode::OK
        );
        let r = respond(&Method::GET, "/health", None, s);
        assert_eq!((r.status(), body(r)), (StatusCode::OK, HEALTH_BODY.into()));
    }
    let ok = Status {
        butler: ButlerCheck::Ok,
        ..READY
    };
    let r = respond(&Method::GET, "/readyz", Some("verbose"), ok);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        body(r),
        "[+]ping ok\n[+]config ok\n[+]startup ok\n[+]listener ok\n[+]butler ok\n\
         readyz check passed\n"
    );
}

#[test]
fn the_flags_follow_the_agent() {
    let r = Readiness::new();
    assert_eq!(
        r.status(),
        Status {
            started: false,
            config_valid: true,
            listening: false,
            butler: ButlerCheck::Off,
        }
    );
    r.release();
    r.set_config_valid(false);
    assert!(r.status().started && !r.status().config_valid);
    r.set_config_valid(true);
    assert!(r.status().config_valid);
}

/// The listener check is true while `serve` accepts and false once its stop trigger fired.
#[tokio::test]
async fn serve_sets_the_listener_flag_and_clears_it_on_stop() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let readiness = Readiness::new();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        readiness.clone(),
        Limits::default(),
        async {
            let _ = rx.await;
        },
    ));
    for _ in 0..200 {
        if readiness.status().listening {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(readiness.status().listening);
    let _ = tx.send(());
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("serve returns after the stop")
        .expect("serve does not panic")
        .expect("serve took its listener");
    assert!(!readiness.status().listening);
}

#[test]
fn verbose_lists_checks() {
    let r = respond(&Method::GET, "/livez", Some("verbose"), STARTING);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r), "[+]ping ok\nlivez check passed\n");
    let r = respond(&Method::GET, "/readyz", Some("x=1&verbose=true"), READY);
    assert_eq!(
        body(r),
        "[+]ping ok\n[+]config ok\n[+]startup ok\n[+]listener ok\nreadyz check passed\n"
    );
    assert!(!wants_verbose(Some("verbosex")));
    assert!(!wants_verbose(None));
}

#[test]
fn unknown_paths_and_methods() {
    assert_eq!(
        respond(&Method::GET, "/", None, READY).status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        respond(&Method::POST, "/nothing", None, READY).status(),
        StatusCode::NOT_FOUND
    );
    let r = respond(&Method::POST, "/health", None, READY);
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()[ALLOW], "GET, HEAD");
    assert_eq!(
        respond(&Method::HEAD, "/livez", None, STARTING).status(),
        StatusCode::OK
    );
}

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::health::{self, HEALTH_BODY, Limits, Readiness};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server on a loopback port chosen by the OS.
struct Server {
    addr: SocketAddr,
    readiness: Readiness,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Triggers the graceful stop and waits for `serve` to return.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the server stops within 5 s")
            .expect("the server task does not panic")
            .expect("the server took its listener");
    }
}

async fn start_server(limits: Limits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0 on loopback");
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let readiness = Readiness::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(health::serve(listener, readiness.clone(), limits, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        readiness,
        stop: Some(stop),
        task,
    }
}

/// An HTTP answer split into status, lower-cased header lines and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("an HTTP answer has a blank line: {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("an answer has a status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Sends `raw` and reads until the server closes (after `Connection: close`, an error answer,
/// or the request cap).
async fn send(addr: SocketAddr, raw: &[u8]) -> Answer {
    let mut conn = TcpStream::connect(addr)
        .await
        .expect("connect to the server");
    conn.write_all(raw).await.expect("send the request");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf))
        .await
        .expect("the server answers and closes within 5 s")
        .expect("read the answer");
    parse_answer(&buf)
}

async fn get(addr: SocketAddr, method: &str, target: &str) -> Answer {
    let req = format!("{method} {target} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n");
    send(addr, req.as_bytes()).await
}

#[tokio::test]
async fn health_answers_like_butler() {
    let server = start_server(Limits::default()).await;
    let a = get(server.addr, "GET", "/health").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, HEALTH_BODY);
    assert_eq!(a.body, r#"{"statusCode":200,"status":"ok"}"#);
    assert_eq!(
        a.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let head = get(server.addr, "HEAD", "/health").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "", "HEAD has no body");
    assert_eq!(head.header("content-length"), Some("32"));
    server.stop().await;
}

#[tokio::test]
async fn readyz_waits_for_the_latch_and_livez_does_not() {
    let server = start_server(Limits::default()).await;
    assert_eq!(get(server.addr, "GET", "/livez").await.status, 200);
    let before = get(server.addr, "GET", "/readyz").await;
    assert_eq!(before.status, 503);
    assert!(before.body.contains("[-]startup failed"), "{}", before.body);
    assert!(before.body.ends_with("readyz check failed\n"));
    // /health is Butler's liveness answer: it does not wait for readiness either.
    assert_eq!(get(server.addr, "GET", "/health").await.status, 200);

    server.readiness.release();
    let after = get(server.addr, "GET", "/readyz").await;
    assert_eq!((after.status, after.body.as_str()), (200, "ok"));
    let verbose = get(server.addr, "GET", "/readyz?verbose").await;
    assert_eq!(
        verbose.body,
        "[+]ping ok\n[+]config ok\n[+]startup ok\n[+]listener ok\nreadyz check passed\n"
    );
    let live = get(server.addr, "GET", "/livez?verbose=1").await;
    assert_eq!(live.body, "[+]ping ok\nlivez check passed\n");
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_methods_and_oversized_headers() {
    let server = start_server(Limits::default()).await;
    assert_eq!(get(server.addr, "GET", "/").await.status, 404);
    assert_eq!(get(server.addr, "GET", "/healthz").await.status, 404);
    let post = get(server.addr, "POST", "/health").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(get(server.addr, "DELETE", "/readyz").await.status, 405);

    let big = format!(
        "GET /health HTTP/1.1\r\nHost: probe\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(health::MAX_HEADER_BYTES + 10)
    );
    assert_eq!(send(server.addr, big.as_bytes()).await.status, 431);
    // And the server still answers afterwards.
    assert_eq!(get(server.addr, "GET", "/health").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn slow_client_neither_blocks_others_nor_stays_forever() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = start_server(limits).await;
    let mut slow = TcpStream::connect(server.addr).await.expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: sl")
        .await
        .expect("send half the headers");
    // A probe arriving meanwhile is answered at once.
    assert_eq!(get(server.addr, "GET", "/health").await.status, 200);
    // The slow client is cut off by the header-read timeout.
    let mut buf = Vec::new();
    let started = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf))
        .await
        .expect("the server closes the slow connection within 5 s");
    assert!(started.elapsed() < Duration::from_secs(5));
    server.stop().await;
}

#[tokio::test]
async fn excess_connections_evict_the_oldest_idle_one() {
    let limits = Limits {
        max_connections: 3,
        ..Limits::default()
    };
    let server = start_server(limits).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(server.addr).await.expect("connect");
        // Half a request: the connection holds its slot but is not being answered.
        c.write_all(b"GET /health HTTP/1.1\r\n")
            .await
            .expect("send");
        held.push(c);
        // Accept order is eviction order.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // A probe arriving with every slot taken is answered: the oldest idle connection makes room.
    assert_eq!(get(server.addr, "GET", "/health").await.status, 200);
    let mut oldest = held.remove(0);
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), oldest.read_to_end(&mut buf))
        .await
        .expect("the evicted connection is closed at once, not left hanging");
    assert!(
        read.is_err() || buf.is_empty(),
        "no answer on the evicted connection"
    );
    // The newer held connections finish their requests normally.
    for mut c in held {
        c.write_all(b"Host: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("finish the request");
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).await.expect("read the answer");
        assert_eq!(parse_answer(&buf).status, 200);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(get(server.addr, "GET", "/health").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn stop_closes_idle_connections_at_once() {
    let server = start_server(Limits::default()).await;
    let addr = server.addr;
    // An idle connection (nothing sent) must not hold the stop up for the header timeout.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < health::HEADER_READ_TIMEOUT,
        "stop waited {:?} for an idle connection",
        started.elapsed()
    );
    let mut buf = Vec::new();
    let n = idle.read_to_end(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "the idle connection is closed without an answer");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed after stop"
    );
}

#[tokio::test]
async fn a_request_in_progress_is_answered_during_stop() {
    let server = start_server(Limits::default()).await;
    let mut half = TcpStream::connect(server.addr).await.expect("connect");
    half.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send most of the request");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !stopping.is_finished(),
        "stop waits for the request in progress"
    );
    half.write_all(b"\r\n").await.expect("finish the request");
    let mut buf = Vec::new();
    half.read_to_end(&mut buf).await.expect("read the answer");
    assert_eq!(parse_answer(&buf).status, 200);
    stopping.await.expect("stop completes");
}

/// Reads one answer (head and a `Content-Length` body) from a kept-alive connection; bytes
/// of later (pipelined) answers stay in `pending`.
async fn read_answer_after(conn: &mut TcpStream, pending: &mut Vec<u8>) -> Answer {
    let mut chunk = [0u8; 1024];
    let read = async {
        loop {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = parse_answer(&pending[..end + 4]);
                let len: usize = head
                    .header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if pending.len() >= end + 4 + len {
                    let answer = parse_answer(&pending[..end + 4 + len]);
                    pending.drain(..end + 4 + len);
                    return answer;
                }
            }
            let n = conn.read(&mut chunk).await.expect("read the answer");
            assert!(n > 0, "closed before a full answer: {pending:?}");
            pending.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("an answer within 5 s")
}

async fn read_answer(conn: &mut TcpStream) -> Answer {
    let mut pending = Vec::new();
    let answer = read_answer_after(conn, &mut pending).await;
    assert!(pending.is_empty(), "one answer to one request: {pending:?}");
    answer
}

/// Waits for the server to close `conn`; how long that took, at most `limit`.
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(limit, conn.read_to_end(&mut buf))
        .await
        .ok()
        .map(|_| started.elapsed())
}

#[tokio::test]
async fn keep_alive_serves_several_requests_then_closes_when_idle() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = start_server(limits).await;
    let mut c = TcpStream::connect(server.addr).await.expect("connect");
    for path in ["/health", "/livez", "/health"] {
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: k\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let a = read_answer(&mut c).await;
        assert_eq!(a.status, 200, "{path} on a kept-alive connection");
        assert_eq!(a.header("connection"), None, "keep-alive is not refused");
    }
    // Pipelined requests are all answered, in order.
    c.write_all(b"GET /health HTTP/1.1\r\nHost: k\r\n\r\nGET /nope HTTP/1.1\r\nHost: k\r\n\r\n")
        .await
        .expect("send two at once");
    let mut pending = Vec::new();
    assert_eq!(read_answer_after(&mut c, &mut pending).await.status, 200);
    assert_eq!(read_answer_after(&mut c, &mut pending).await.status, 404);
    // Then, with nothing more to do, the server closes it after the idle timeout.
    let took = closed_within(&mut c, Duration::from_secs(3))
        .await
        .expect("an idle kept-alive connection is closed");
    assert!(
        took >= Duration::from_millis(200),
        "closed after {took:?}, before the idle timeout"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_request_cap_closes_the_connection_after_its_last_answer() {
    let limits = Limits {
        max_requests: 3,
        ..Limits::default()
    };
    let server = start_server(limits).await;
    let mut c = TcpStream::connect(server.addr).await.expect("connect");
    for i in 1..=3 {
        c.write_all(b"GET /health HTTP/1.1\r\nHost: k\r\n\r\n")
            .await
            .expect("send");
        let a = read_answer(&mut c).await;
        assert_eq!(a.status, 200);
        let expected = (i == 3).then_some("close");
        assert_eq!(a.header("connection"), expected, "answer {i}");
    }
    let took = closed_within(&mut c, Duration::from_secs(1))
        .await
        .expect("the connection closes after the capped answer, not after the idle timeout");
    assert!(took < Duration::from_secs(1));
    server.stop().await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_makes_room_for_a_probe() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let server = start_server(limits).await;
    let mut kept = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(server.addr).await.expect("connect");
        c.write_all(b"GET /health HTTP/1.1\r\nHost: k\r\n\r\n")
            .await
            .expect("send");
        assert_eq!(read_answer(&mut c).await.status, 200);
        kept.push(c);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Both slots hold idle kept-alive connections; a probe still gets through.
    assert_eq!(get(server.addr, "GET", "/health").await.status, 200);
    assert!(
        closed_within(&mut kept[0], Duration::from_secs(1))
            .await
            .is_some(),
        "the connection idle the longest was closed to make room"
    );
    server.stop().await;
}

#[tokio::test]
async fn stop_is_quick_with_64_slowloris_connections() {
    let server = start_server(Limits::default()).await;
    let mut held = Vec::new();
    for i in 0..health::MAX_CONNECTIONS {
        let mut c = TcpStream::connect(server.addr).await.expect("connect");
        c.write_all(format!("GET /health HTTP/1.1\r\nX-Slow-{i}: ").as_bytes())
            .await
            .expect("send part of a head");
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "stop took {:?} with {} dribbling clients",
        started.elapsed(),
        held.len()
    );
    for c in &mut held {
        assert!(
            closed_within(c, Duration::from_secs(1)).await.is_some(),
            "every dribbling connection is closed"
        );
    }
}

/// A client reusing one connection every 250 ms across the connection deadline (3 s here) is
/// never cut under a request: the answers of the deadline's last idle timeout say
/// `Connection: close`, and the client opens a new connection then. Every request is answered.
/// (Before, the deadline closed the connection without a word, and the next request got EOF.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connections_are_told_before_the_deadline_closes_them() {
    let limits = Limits {
        connection_deadline: std::time::Duration::from_secs(3),
        idle_timeout: std::time::Duration::from_secs(1),
        ..Limits::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, Readiness::new(), limits, async {
        let _ = stopped.await;
    }));
    let client = tokio::task::spawn_blocking(move || {
        let mut conn: Option<std::net::TcpStream> = None;
        let (mut answered, mut announced) = (0, 0);
        for i in 0..32 {
            let s = conn.get_or_insert_with(|| std::net::TcpStream::connect(addr).unwrap());
            std::io::Write::write_all(s, b"GET /health HTTP/1.1\r\nHost: k\r\n\r\n").unwrap();
            let (status, connection, _) = crate::test_support::http_answer::read_kept_alive_answer(
                s,
                std::time::Duration::from_secs(5),
            )
            .unwrap_or_else(|| panic!("request {i}: the connection closed under it"));
            assert_eq!(status, 200, "request {i}");
            answered += 1;
            if connection.as_deref() == Some("close") {
                announced += 1;
                conn = None;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        (answered, announced)
    });
    let (answered, announced) = client.await.unwrap();
    println!("{answered} requests answered, {announced} connections closed with notice");
    assert_eq!(answered, 32);
    assert!(announced >= 1, "8 s of reuse spans the 3 s deadline");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Requests that are already there when their connection is accepted (what a probe's usually
/// is) are read and answered with plain system calls, before the socket is ever registered
/// with the runtime: a pipelined pair, one followed by the client's FIN, one answered before
/// its body comes, and one whose client reset the connection meanwhile. Each gets its own outcome, and the server goes on. (The
/// test's runtime runs the server only when the test waits, so all four are queued first.)
#[tokio::test]
async fn requests_already_there_at_accept_are_answered_and_a_reset_ends_only_its_own() {
    use std::io::Write;
    let server = start_server(Limits::default()).await;
    let connect = || std::net::TcpStream::connect(server.addr).expect("connect");
    let mut pipelined = connect();
    pipelined
        .write_all(
            b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /livez HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .expect("send two requests");
    let mut half_closed = connect();
    half_closed
        .write_all(b"GET /health HTTP/1.1\r\nHost: b\r\n\r\n")
        .expect("send");
    half_closed
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let mut reset = connect();
    reset
        .write_all(b"GET /health HTTP/1.1\r\nHost: c\r\n\r\n")
        .expect("send");
    nix::sys::socket::setsockopt(
        &reset,
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .expect("SO_LINGER 0");
    drop(reset);
    // Answered before its body comes: the body's read blocks and registers the socket in the
    // middle of hyper's work, and the answer must still go out (the runtime does not know yet
    // that the new registration can write, so hyper's first write of it waits a turn).
    let mut early = connect();
    early
        .write_all(b"POST /health HTTP/1.1\r\nHost: e\r\nContent-Length: 10\r\n\r\n")
        .expect("send");
    let mut probe = connect();
    probe
        .write_all(b"GET /health HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        .expect("send");
    let read_all = |c: std::net::TcpStream| {
        tokio::task::spawn_blocking(move || {
            let mut c = c;
            c.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut c, &mut buf).expect("read to the server's close");
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let (pipelined, half_closed, early, probe) = (
        read_all(pipelined).await.expect("reader"),
        read_all(half_closed).await.expect("reader"),
        read_all(early).await.expect("reader"),
        read_all(probe).await.expect("reader"),
    );
    assert!(
        early.starts_with("HTTP/1.1 405 Method Not Allowed"),
        "answered without its body: {early:?}"
    );
    assert_eq!(
        pipelined.matches("HTTP/1.1 200 OK").count(),
        2,
        "both pipelined requests answered: {pipelined:?}"
    );
    assert!(pipelined.contains(HEALTH_BODY), "{pipelined:?}");
    assert!(
        half_closed.starts_with("HTTP/1.1 200 OK") && half_closed.ends_with(HEALTH_BODY),
        "answered after the client's FIN: {half_closed:?}"
    );
    assert!(probe.starts_with("HTTP/1.1 200 OK"), "{probe:?}");
    assert_eq!(get(server.addr, "GET", "/health").await.status, 200);
    server.stop().await;
}

/// A kept-alive connection's `/health` answers, which it gives without hyper
/// ([`crate::connections::Quick`]), are byte for byte hyper's (but for the date): `GET` and
/// `HEAD`, kept alive and closing.
#[tokio::test]
async fn kept_alive_health_answers_are_the_bytes_hyper_gives() {
    /// One answer's bytes: the head, and the body unless it answers `HEAD`.
    async fn raw_answer(conn: &mut TcpStream, head_only: bool) -> Vec<u8> {
        let mut got = Vec::new();
        let mut byte = [0];
        let read = async {
            loop {
                if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    let len = if head_only {
                        0
                    } else {
                        parse_answer(&got[..end + 4])
                            .header("content-length")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0)
                    };
                    if got.len() == end + 4 + len {
                        return;
                    }
                }
                let n = conn.read(&mut byte).await.expect("read the answer");
                assert_eq!(n, 1, "closed before a full answer: {got:?}");
                got.push(byte[0]);
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("an answer within 5 s");
        got
    }
    /// The answer with its date's value blanked.
    fn undated(raw: &[u8]) -> String {
        let text = String::from_utf8_lossy(raw).into_owned();
        let at = text.find("\r\ndate: ").expect("a date header") + 8;
        let end = at + text[at..].find("\r\n").expect("the header's end");
        format!("{}{}", &text[..at], &text[end..])
    }
    let server = start_server(Limits::default()).await;
    for (method, connection) in [
        ("GET", ""),
        ("HEAD", ""),
        ("GET", "Connection: close\r\n"),
        ("HEAD", "Connection: close\r\n"),
    ] {
        let request = format!("{method} /health HTTP/1.1\r\nHost: t\r\n{connection}\r\n");
        let head_only = method == "HEAD";
        // hyper answers a connection's first requests.
        let mut fresh = TcpStream::connect(server.addr).await.expect("connect");
        fresh.write_all(request.as_bytes()).await.expect("send");
        let hypers = raw_answer(&mut fresh, head_only).await;
        let mut kept = TcpStream::connect(server.addr).await.expect("connect");
        for _ in 0..2 {
            let get = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n";
            kept.write_all(get).await.expect("send");
            raw_answer(&mut kept, false).await;
        }
        // Kept alive once it waits for its next request.
        tokio::time::sleep(Duration::from_millis(20)).await;
        kept.write_all(request.as_bytes()).await.expect("send");
        let quick = raw_answer(&mut kept, head_only).await;
        assert_eq!(undated(&quick), undated(&hypers), "{method} {connection:?}");
        if !connection.is_empty() {
            for c in [&mut fresh, &mut kept] {
                assert!(closed_within(c, Duration::from_secs(2)).await.is_some());
            }
        }
    }
    server.stop().await;
}
