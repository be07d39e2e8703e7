//! Delivery against real sockets on 127.0.0.1: a recording server, the sink, and servers that
//! fail in every way the transport must survive. Retry counts are checked here; retry spacing
//! is checked with tokio's paused clock in the unit tests of `telemetry::sender`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::config::{LoadedConfig, MapEnv};
use crate::host::syscalls::FakeSyscalls;
use crate::host::{self, Roots};
use crate::instance_id::{self, IdConfig};
use crate::shutdown;
use crate::sink::{self, capture};
use crate::telemetry::cycle;
use crate::telemetry::retry::{Attempt, GiveUpReason, RetryPolicy};
use crate::telemetry::schedule::{self, ScheduleContext};
use crate::telemetry::sender::{self, HttpTransport, Transport};
use crate::test_support::Logs;

fn config(env: &MapEnv) -> LoadedConfig {
    LoadedConfig::defaults(env).expect("valid test settings")
}

fn fast_policy(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        ..RetryPolicy::new(max_retries)
    }
}

/// A host tree with just an os-release, so the event does not depend on this machine.
fn host_tree() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc")).unwrap();
    std::fs::write(
        d.path().join("etc/os-release"),
        "NAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nVERSION_CODENAME=jammy\n",
    )
    .unwrap();
    d
}

/// Syscalls that know one interface (also the first external one) and no Docker engine.
fn fake_sys(name: &str, mac: &str, ip: [u8; 4]) -> Arc<FakeSyscalls> {
    Arc::new(FakeSyscalls::default().interface(name, mac, ip))
}

fn plain_sys() -> Arc<FakeSyscalls> {
    fake_sys("eth9", "02:00:5e:10:00:01", [198, 51, 100, 9])
}

/// One raw HTTP request as a server saw it.
#[derive(Debug)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

/// Reads one HTTP/1.1 request (head + Content-Length body).
async fn read_request(s: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen { head, body })
}

#[derive(Clone, Copy)]
enum Fault {
    Status(u16, Option<&'static str>),
    NeverAnswer,
    Reset,
    Garbage,
    CloseEarly,
}

/// A server that answers every connection with `fault`, counting connections.
async fn faulty(fault: Fault) -> (String, Arc<AtomicU32>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&count);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let _ = read_request(&mut s).await;
            match fault {
                Fault::Status(code, retry_after) => {
                    let extra = retry_after
                        .map(|r| format!("Retry-After: {r}\r\n"))
                        .unwrap_or_default();
                    // As capture answers: its message as text.
                    let body = format!("capture refused it\r\nwith {code}");
                    let resp = format!(
                        "HTTP/1.1 {code} X\r\n{extra}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                }
                Fault::NeverAnswer => held.push(s),
                Fault::Reset => {
                    let _ = s.set_zero_linger();
                    drop(s);
                }
                Fault::Garbage => {
                    let _ = s
                        .write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\xff garbage\r\n\r\n")
                        .await;
                }
                Fault::CloseEarly => {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"sta")
                        .await;
                }
            }
        }
    });
    (format!("http://{addr}"), count)
}

fn transport(host: &str, timeout: &str) -> HttpTransport {
    let env = MapEnv::new([
        ("BUTLER_POSTHOG_HOST", host),
        ("BUTLER_TELEMETRY_TIMEOUT", timeout),
    ]);
    HttpTransport::new(&config(&env).agent).expect("client builds")
}

async fn deliver_to(host: &str, timeout: &str, retries: u32) -> sender::Delivery {
    let t = transport(host, timeout);
    let body = Bytes::from_static(br#"{"api_key":"k","event":"e","distinct_id":"d"}"#);
    sender::deliver(&t, &body, &fast_policy(retries), std::future::pending()).await
}

/// The `_` query parameter (milliseconds) of a request head.
fn sent_at_of(head: &str) -> u128 {
    let target = head.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("_="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sent_at in {head}"))
}

/// Every attempt carries its own sending time, outside the body, which stays byte-identical.
#[tokio::test]
async fn each_attempt_carries_its_own_sent_at_and_the_same_body() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("http://{}", l.local_addr().unwrap());
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for answer in ["503 Busy", "503 Busy", "200 OK"] {
            let (mut s, _) = l.accept().await.unwrap();
            let seen = read_request(&mut s).await.unwrap();
            let resp = format!(
                "HTTP/1.1 {answer}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
            let _ = s.write_all(resp.as_bytes()).await;
            tx.send(seen).unwrap();
        }
    });
    let t = transport(&host, "5s");
    let body = Bytes::from_static(br#"{"api_key":"k","event":"e","distinct_id":"d"}"#);
    let d = sender::deliver(&t, &body, &fast_policy(3), std::future::pending()).await;
    assert!(d.delivered());
    let mut times = Vec::new();
    for _ in 0..3 {
        let seen = rx.recv().await.unwrap();
        assert_eq!(seen.body, body.as_ref());
        times.push(sent_at_of(&seen.head));
    }
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(times[0] < times[2], "a retry is sent later: {times:?}");
}

#[tokio::test]
async fn the_request_is_what_posthog_capture_accepts() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("http://{}", l.local_addr().unwrap());
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let seen = read_request(&mut s).await.unwrap();
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"status\":\"Ok\"}")
            .await;
        tx.send(seen).unwrap();
    });
    let tree = host_tree();
    let env = MapEnv::new([("BUTLER_POSTHOG_HOST", host.as_str())]);
    let cfg = config(&env);
    let body = cycle::prepare(&cfg, &Roots::at(tree.path()), &*plain_sys(), "16.0.4")
        .body
        .expect("event passes the guard");
    let t = HttpTransport::new(&cfg.agent).unwrap();
    let before = sender::sent_at_millis(std::time::SystemTime::now());
    let tried = t.send(&body).await;
    let after = sender::sent_at_millis(std::time::SystemTime::now());
    assert_eq!(tried.attempt, Attempt::Delivered { status: 200 });

    let seen = rx.recv().await.unwrap();
    let head = seen.head.to_ascii_lowercase();
    // The sending time rides in the query (`_`, milliseconds), where capture reads `sent_at`.
    let sent_at = sent_at_of(&seen.head);
    assert!(before <= sent_at && sent_at <= after, "{}", seen.head);
    assert!(
        seen.head
            .starts_with(&format!("POST /i/v0/e/?_={sent_at} HTTP/1.1\r\n")),
        "{}",
        seen.head
    );
    assert!(
        head.contains("content-type: application/json\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!(
            "user-agent: butler-agent/{}\r\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{head}"
    );
    assert!(
        !head.contains("content-encoding"),
        "the body is sent plain: {head}"
    );
    assert_eq!(
        seen.body,
        body.as_ref(),
        "the guarded bytes are exactly the bytes sent"
    );

    // PostHog's own rules accept it, and the fields have the types capture expects.
    let accepted = capture::accept(&seen.body, capture::WIRE_LIMIT).expect("capture accepts");
    assert_eq!(accepted.len(), 1);
    let e = &accepted[0].event;
    assert_eq!(accepted[0].token, crate::config::DEFAULT_POSTHOG_KEY);
    assert_eq!(e["event"], "telemetry sent");
    let id = e["distinct_id"].as_str().unwrap();
    assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    let uuid = uuid::Uuid::parse_str(e["uuid"].as_str().unwrap()).unwrap();
    assert_eq!(uuid.get_version_num(), 7);
    assert!(humantime::parse_rfc3339(e["timestamp"].as_str().unwrap()).is_ok());
    let p = e["properties"].as_object().unwrap();
    assert_eq!(p["$lib"], "butler-agent");
    assert_eq!(p["$process_person_profile"], false);
    assert_eq!(p["$geoip_disable"], true);
    assert_eq!(p["system_distro"], "Ubuntu");
}

#[tokio::test]
async fn delivers_to_the_sink() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("http://{}", l.local_addr().unwrap());
    let (tx, mut events) = mpsc::unbounded_channel();
    let (_stop, stop_rx) = shutdown::stop_channel();
    let output = sink::Output {
        channel: Some(tx),
        ..Default::default()
    };
    tokio::spawn(sink::serve(l, output, stop_rx.wait()));
    let tree = host_tree();
    let env = MapEnv::new([("BUTLER_POSTHOG_HOST", host.as_str())]);
    let cfg = config(&env);
    let body = cycle::prepare(&cfg, &Roots::at(tree.path()), &*plain_sys(), "16.0.4")
        .body
        .unwrap();
    let d = deliver_to_body(&cfg, &body).await;
    assert!(d.delivered(), "{d:?}");
    let got = events.recv().await.unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(got, sent);
}

async fn deliver_to_body(cfg: &LoadedConfig, body: &Bytes) -> sender::Delivery {
    let t = HttpTransport::new(&cfg.agent).unwrap();
    sender::deliver(&t, body, &fast_policy(2), std::future::pending()).await
}

#[tokio::test]
async fn transient_statuses_are_retried_to_the_bound() {
    for code in [408, 429, 500, 502, 503, 504] {
        let (host, count) = faulty(Fault::Status(code, None)).await;
        let d = deliver_to(&host, "5s", 2).await;
        assert_eq!(d.attempts, 3, "{code}");
        assert_eq!(count.load(Ordering::SeqCst), 3, "{code}");
        assert_eq!(d.gave_up, Some(GiveUpReason::RetriesExhausted));
        assert_eq!(d.last.status(), Some(code));
        assert_eq!(d.sent.len(), 3, "each try's body left the machine");
    }
}

#[tokio::test]
async fn rejections_are_sent_once_and_say_why() {
    for (code, words) in [
        (400, "refused the event"),
        (401, "project key is invalid"),
        (403, "does not answer 403"),
        (413, "too big"),
    ] {
        let (host, count) = faulty(Fault::Status(code, None)).await;
        let d = deliver_to(&host, "5s", 3).await;
        assert_eq!(count.load(Ordering::SeqCst), 1, "{code}");
        assert_eq!(d.gave_up, Some(GiveUpReason::Rejected));
        let text = d.last.describe();
        // capture's own text, on the same line.
        let said = format!("the destination said: \"capture refused it with {code}\"");
        assert!(
            text.contains(words) && text.contains(&said) && !text.contains('\n'),
            "{code}: {text}"
        );
    }
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (host, count) = faulty(Fault::Status(429, Some("1"))).await;
    let start = std::time::Instant::now();
    let d = deliver_to(&host, "5s", 1).await;
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(d.gave_up, Some(GiveUpReason::RetriesExhausted));
    // The computed backoff here is at most 50 ms: a pause of a second is the server's.
    assert!(start.elapsed() >= Duration::from_millis(950));
    // A Retry-After beyond the bound ends the cycle instead of waiting.
    let (host, count) = faulty(Fault::Status(503, Some("86400"))).await;
    let d = deliver_to(&host, "5s", 3).await;
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(d.gave_up, Some(GiveUpReason::RetryAfterTooLong));
}

#[tokio::test]
async fn broken_servers_are_transient_and_bounded() {
    for (fault, words) in [
        (Fault::NeverAnswer, "timed out"),
        (Fault::Reset, ""),
        (Fault::Garbage, ""),
        (Fault::CloseEarly, ""),
    ] {
        let (host, count) = faulty(fault).await;
        let d = deliver_to(&host, "300ms", 2).await;
        assert_eq!(d.attempts, 3, "{}", d.last.describe());
        assert_eq!(count.load(Ordering::SeqCst), 3);
        assert!(matches!(d.last, Attempt::Transient { .. }), "{:?}", d.last);
        assert!(d.last.describe().contains(words), "{}", d.last.describe());
    }
}

#[tokio::test]
async fn refused_connection_and_dns_failure_are_transient() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let d = deliver_to(&closed, "2s", 1).await;
    assert_eq!(d.attempts, 2);
    assert!(
        d.last.describe().contains("could not connect"),
        "{}",
        d.last.describe()
    );
    assert!(d.sent.is_empty(), "nothing left the machine");

    let d = deliver_to("http://capture.butler-agent.invalid", "3s", 1).await;
    assert_eq!(d.attempts, 2);
    assert!(
        matches!(d.last, Attempt::Transient { status: None, .. }),
        "{:?}",
        d.last
    );
    assert!(d.sent.is_empty() || d.last.describe().contains("timed out"));
}

#[tokio::test]
async fn a_bad_ca_file_is_a_clear_setup_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("corp-ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let env = MapEnv::new([("BUTLER_CA_FILE", ca.to_str().unwrap())]);
    let err = HttpTransport::new(&config(&env).agent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("BUTLER_CA_FILE") && err.contains("corp-ca.pem"),
        "{err}"
    );
    let env = MapEnv::new([("BUTLER_CA_FILE", "/nonexistent/ca.pem")]);
    let err = HttpTransport::new(&config(&env).agent)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read"), "{err}");
}

/// The schedule end to end: first event after the start delay, to the sink, audited and
/// recorded; shutdown returns promptly.
#[tokio::test]
async fn schedule_delivers_audits_and_stops() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("http://{}", l.local_addr().unwrap());
    let (tx, mut events) = mpsc::unbounded_channel();
    let (_sink_stop, sink_rx) = shutdown::stop_channel();
    tokio::spawn(sink::serve(
        l,
        sink::Output {
            channel: Some(tx),
            ..Default::default()
        },
        sink_rx.wait(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let state = dir.path().join("state");
    let env = MapEnv::new([
        ("BUTLER_POSTHOG_HOST", host.as_str()),
        ("BUTLER_TELEMETRY_START_DELAY", "0"),
        ("BUTLER_TELEMETRY_INTERVAL", "1m"),
        ("BUTLER_TELEMETRY_AUDIT_LOG", audit.to_str().unwrap()),
        ("BUTLER_STATE_DIR", state.to_str().unwrap()),
    ]);
    let tree = host_tree();
    let ctx = schedule_context(env, &tree);
    let (stop, stop_rx) = shutdown::stop_channel();
    let task = tokio::spawn(schedule::run(ctx, stop_rx.wait()));
    let got = tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .expect("an event within seconds")
        .unwrap();
    assert_eq!(got["event"], "telemetry sent");
    // The audit line and the state file are written right after the answer.
    let mut line = String::new();
    for _ in 0..100 {
        line = std::fs::read_to_string(&audit).unwrap_or_default();
        if !line.is_empty() && state.join("telemetry-state.json").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rec: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["event"]["uuid"], got["uuid"]);
    let last: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("telemetry-state.json")).unwrap())
            .unwrap();
    assert_eq!(last["result"], "delivered");
    assert_eq!(last["httpStatus"], 200);

    stop.stop();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("run returns promptly on shutdown")
        .unwrap();
}

/// Off means off through the schedule: many cycles, not one connection.
#[tokio::test(start_paused = true)]
async fn schedule_opens_no_socket_when_off() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("http://{}", l.local_addr().unwrap());
    let count = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&count);
    tokio::spawn(async move {
        while l.accept().await.is_ok() {
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    let env = MapEnv::new([
        ("BUTLER_POSTHOG_HOST", host.as_str()),
        ("DO_NOT_TRACK", "1"),
        ("BUTLER_TELEMETRY_INTERVAL", "1m"),
    ]);
    let tree = host_tree();
    let ctx = schedule_context(env, &tree);
    let (stop, stop_rx) = shutdown::stop_channel();
    let task = tokio::spawn(schedule::run(ctx, stop_rx.wait()));
    // Two simulated hours: over a hundred cycles.
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    stop.stop();
    task.await.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 0);
}

/// The schedule on a host tree, with the plain fake syscalls and no SIGHUP.
fn schedule_context(env: MapEnv, tree: &tempfile::TempDir) -> ScheduleContext {
    ScheduleContext {
        initial: config(&env),
        env: Arc::new(env),
        roots: Roots::at(tree.path()),
        hangups: crate::signals::Hangups::none(),
        sys: plain_sys(),
        readiness: crate::health::Readiness::new(),
    }
}

/// A cycle that tried once.
fn sent_once(delivered: bool) -> cycle::CycleOutcome {
    cycle::CycleOutcome::Sent {
        delivered,
        attempts: 1,
        interrupted: false,
        reread: None,
    }
}

/// The destination goes away for several cycles and comes back: one warning for the whole
/// outage, a bounded number of tries per cycle, one pending event at most, one recovery line.
#[tokio::test]
async fn outage_gives_one_warning_then_one_recovery_line() {
    let logs = Logs::default();
    let _guard = logs.capture(tracing::Level::INFO);

    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let host = format!("http://{addr}");
    let env = MapEnv::new([
        ("BUTLER_POSTHOG_HOST", host.as_str()),
        ("BUTLER_TELEMETRY_RETRIES", "0"),
    ]);
    let tree = host_tree();
    let roots = Roots::at(tree.path());
    let mut runner = cycle::Runner::new(config(&env));
    let inputs = cycle::Inputs {
        env: Arc::new(env.clone()),
        roots: roots.clone(),
        sys: plain_sys(),
        limit: cycle::CYCLE_TIME_LIMIT,
    };
    for _ in 0..5 {
        let out = runner
            .cycle(&inputs, std::future::pending(), HttpTransport::new)
            .await;
        assert_eq!(out, sent_once(false));
        assert_eq!(runner.outbox.len(), 1);
    }
    // The sink comes back on the same address.
    let l = TcpListener::bind(addr).await.unwrap();
    let (stop, stop_rx) = shutdown::stop_channel();
    tokio::spawn(sink::serve(l, sink::Output::default(), stop_rx.wait()));
    let out = runner
        .cycle(&inputs, std::future::pending(), HttpTransport::new)
        .await;
    assert_eq!(out, sent_once(true));
    assert_eq!(runner.outbox.len(), 0);
    stop.stop();

    let text = logs.text();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(warnings[0].contains("could not connect"), "{text}");
    let recovered: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("delivered again"))
        .collect();
    assert_eq!(recovered.len(), 1, "{text}");
    assert!(recovered[0].contains("after 5 failed cycle(s)"), "{text}");
}

/// The pipeline reads interface addresses through the `Syscalls` it is given, never this
/// machine's: the event's ID is the one the fake's addresses give, and another fake's
/// addresses give another ID.
#[test]
fn prepare_uses_the_syscalls_it_is_given() {
    let tree = host_tree();
    let roots = Roots::at(tree.path());
    let env = MapEnv::new([("BUTLER_POSTHOG_HOST", "http://127.0.0.1:9")]);
    let cfg = config(&env);
    let id_of = |sys: &FakeSyscalls| {
        let body = cycle::prepare(&cfg, &roots, sys, "16.0.4")
            .body
            .expect("event passes the guard");
        let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
        event["distinct_id"].as_str().unwrap().to_string()
    };
    let a = fake_sys("eth7", "02:42:ac:11:00:07", [10, 1, 2, 3]);
    let b = fake_sys("eth7", "02:42:ac:11:00:08", [10, 1, 2, 4]);
    let from_a = id_of(&a);
    assert!(a.asked() > 0, "the fake was asked");
    let expected = instance_id::derive_with(
        &roots,
        &host::detect_with(&roots, &*a),
        IdConfig::default(),
        &*a,
    );
    assert_eq!(from_a, expected.id.id);
    assert_ne!(from_a, id_of(&b), "other addresses, other ID");
}
