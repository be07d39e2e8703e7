//! The sink's connections under load and reuse, against the real binary on loopback (and the
//! shared connection layer through the health server, whose deadline is short): bodies that
//! are announced and never sent, connections that stop mid-body, kept-alive clients near the
//! connection deadline, rotating source addresses, and capture's own connection behaviour
//! (an oversized body drained and answered 413 on a connection that stays usable, a
//! per-chunk body timeout and no whole-body deadline, `/_liveness` and no `/health`).
//! Timings are asserted with generous bounds; the figures are printed (`--nocapture`).

use crate::common;
use crate::common::QuietSink;
use crate::common::http_answer::read_kept_alive_answer;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const EVENT: &str = r#"{"api_key":"phc_test","event":"e","distinct_id":"d"}"#;

fn start_sink() -> QuietSink {
    QuietSink::spawn(common::sink_command())
}

fn post(body: &str) -> String {
    format!(
        "POST /i/v0/e/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A 1 KiB event on a new connection: its status and how long the answer took.
fn small_event(addr: SocketAddr) -> (Option<u16>, Duration) {
    let pad = "p".repeat(1024 - EVENT.len() - 20);
    let body = format!(
        r#"{{"api_key":"phc_test","event":"e","distinct_id":"d","properties":{{"p":"{pad}"}}}}"#
    );
    let t = Instant::now();
    let status = TcpStream::connect(addr).ok().and_then(|mut s| {
        s.write_all(post(&body).as_bytes()).ok()?;
        read_kept_alive_answer(&mut s, Duration::from_secs(60)).map(|a| a.0)
    });
    (status, t.elapsed())
}

/// Connections that announce 20 MiB bodies and send nothing hold none of the body budget: a
/// 1 KiB event sent meanwhile is answered at once, with 4, 8 or 12 of them held (before: 9.5 s,
/// 19 s, 20–29 s, as each waited for the budget they had reserved).
#[test]
fn announced_bodies_do_not_delay_a_small_event() {
    let sink = start_sink();
    let mut held = Vec::new();
    for n in [4, 8, 12] {
        while held.len() < n {
            let mut s = TcpStream::connect(sink.socket()).unwrap();
            s.write_all(b"POST /i/v0/e/ HTTP/1.1\r\nHost: x\r\nContent-Length: 20971520\r\n\r\n")
                .unwrap();
            held.push(s);
        }
        std::thread::sleep(Duration::from_millis(300));
        let (status, took) = small_event(sink.socket());
        println!("{n} announced 20 MiB bodies held: a 1 KiB event answered {status:?} in {took:?}");
        assert_eq!(status, Some(200), "with {n} held");
        assert!(took < Duration::from_secs(3), "with {n} held: {took:?}");
    }
}

/// 256 connections that each send a request head and one body byte, then nothing, hold every
/// slot; once their bodies have stalled they are evicted when new clients need the slots, so
/// events keep being answered (before: every new connection was closed at accept until the
/// bodies' read time ran out).
#[test]
fn stalled_bodies_are_evicted_for_new_clients() {
    let sink = start_sink();
    let mut held = Vec::new();
    for _ in 0..256 {
        let mut s = TcpStream::connect(sink.socket()).unwrap();
        s.write_all(b"POST /i/v0/e/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            .unwrap();
        held.push(s);
    }
    // Past the stall time (1 s), well before the per-chunk body timeout (10 s).
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    for i in 0..20 {
        let (status, took) = small_event(sink.socket());
        assert_eq!(status, Some(200), "event {i}, after {took:?}");
    }
    let took = started.elapsed();
    println!("256 stalled bodies held: 20 events answered in {took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
}

/// Connects to `to` from `from` (a loopback address of its own).
async fn connect_from(
    from: std::net::Ipv4Addr,
    to: SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(SocketAddr::from((from, 0)))?;
    s.connect(to).await
}

/// Many new source addresses (127.1.x.y, which all route to `lo`), each holding nothing, arrive
/// faster than the slots turn over; a monitor reusing one kept-alive connection once a second
/// from 127.0.0.1 loses no request (before: each new source could take the oldest idle
/// connection of any other, and the monitor's went every few seconds).
#[test]
fn rotating_sources_do_not_take_a_kept_alive_monitor() {
    let sink = start_sink();
    let addr = sink.socket();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooding = std::sync::Arc::clone(&stop);
    let flood = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut ring = std::collections::VecDeque::new();
            let started = Instant::now();
            let mut opened = 0u32;
            // Bounded in count and time.
            while opened < 30_000
                && started.elapsed() < Duration::from_secs(20)
                && !flooding.load(std::sync::atomic::Ordering::Relaxed)
            {
                let from = std::net::Ipv4Addr::new(127, 1, (opened >> 8) as u8, opened as u8);
                opened += 1;
                if let Ok(s) = connect_from(from, addr).await {
                    ring.push_back(s);
                }
                if ring.len() > 300 {
                    ring.pop_front();
                }
            }
            opened
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut monitor = TcpStream::connect(addr).unwrap();
    let mut lost = Vec::new();
    for i in 0..8 {
        let ok = monitor
            .write_all(b"GET /_liveness HTTP/1.1\r\nHost: m\r\n\r\n")
            .ok()
            .and_then(|_| read_kept_alive_answer(&mut monitor, Duration::from_secs(5)));
        match ok {
            Some((200, _, _)) => {}
            other => {
                lost.push((i, other));
                monitor = TcpStream::connect(addr).unwrap();
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = flood.join().unwrap();
    println!(
        "{opened} connections from rotating sources; monitor lost {} of 8: {lost:?}",
        lost.len()
    );
    assert!(
        opened > 1000,
        "the flood must press on the 256 slots: {opened}"
    );
    assert!(lost.is_empty(), "{lost:?}");
}

/// capture drains a body over its 20 MiB cap (up to twice the cap) and answers 413 on a
/// connection that stays usable: the next request on it is answered.
#[test]
fn an_oversized_body_is_drained_and_the_connection_stays_usable() {
    let sink = start_sink();
    let mut s = TcpStream::connect(sink.socket()).unwrap();
    let over = 20 * 1024 * 1024 + 4096;
    s.write_all(
        format!("POST /batch/ HTTP/1.1\r\nHost: x\r\nContent-Length: {over}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let chunk = vec![b' '; 1024 * 1024];
    let mut sent = 0;
    while sent < over {
        let n = chunk.len().min(over - sent);
        s.write_all(&chunk[..n]).unwrap();
        sent += n;
    }
    let (status, connection, body) =
        read_kept_alive_answer(&mut s, Duration::from_secs(30)).expect("an answer");
    assert_eq!(
        (status, body.as_str()),
        (
            413,
            "maximum event size exceeded: Request body exceeds limit of 20971520 bytes"
        )
    );
    assert_eq!(connection, None, "the connection stays open");
    s.write_all(post(EVENT).as_bytes()).unwrap();
    let (status, _, body) =
        read_kept_alive_answer(&mut s, Duration::from_secs(10)).expect("a second answer");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"Ok"}"#));
    // Announced beyond twice the cap: refused at once, and the connection closes.
    let mut s = TcpStream::connect(sink.socket()).unwrap();
    s.write_all(b"POST /e/ HTTP/1.1\r\nHost: x\r\nContent-Length: 41943041\r\n\r\n")
        .unwrap();
    let (status, connection, _) =
        read_kept_alive_answer(&mut s, Duration::from_secs(10)).expect("an answer");
    assert_eq!((status, connection.as_deref()), (413, Some("close")));
}

/// No whole-body deadline, as in capture: a body that keeps coming, 5 bytes a second for 13 s
/// (past the old 10 s body deadline), is read and accepted.
#[test]
fn a_slow_body_that_keeps_coming_is_accepted() {
    let sink = start_sink();
    let mut s = TcpStream::connect(sink.socket()).unwrap();
    s.write_all(
        format!(
            "POST /i/v0/e/ HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            EVENT.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let started = Instant::now();
    for piece in EVENT.as_bytes().chunks(EVENT.len().div_ceil(13)) {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_secs(1));
    }
    let answer = read_kept_alive_answer(&mut s, Duration::from_secs(10));
    assert!(started.elapsed() > Duration::from_secs(10));
    assert_eq!(
        answer.map(|a| (a.0, a.2)),
        Some((200, r#"{"status":"Ok"}"#.to_string()))
    );
}

/// capture's status routes: `/_liveness` and `/_readiness` answer `200 capture`; `/health` is
/// not one of them (404).
#[test]
fn status_routes_are_captures() {
    let sink = start_sink();
    assert_eq!(common::get_status(sink.socket(), "/_liveness"), Ok(200));
    assert_eq!(common::get_status(sink.socket(), "/_readiness"), Ok(200));
    assert_eq!(common::get_status(sink.socket(), "/health"), Ok(404));
}
