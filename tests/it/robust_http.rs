//! Hostile clients against the real `butler-agent run`'s `/health`: a flood of idle
//! connections, slowloris, 64 KB header lines, garbage, HTTP/1.0, pipelining, half-closed
//! sockets. Throughout each case a well-behaved probe asks `/health` every 50 ms and must get
//! 200 within [`PROBE_BOUND`] (a starvation bound, generous for a loaded 2-core machine), and the
//! agent's resident memory must stay under `robust_support::RSS_BOUND_KIB`. The limits
//! checked are the ones `src/health.rs` documents.

use crate::robust_support;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::robust_support::{
    Prober, Summary, agent, closed_by_server, memory_problem, raise_fd_limit, statuses,
    stop_problem,
};
use butler_agent::health::{HEADER_READ_TIMEOUT, HEALTH_BODY, MAX_CONNECTIONS};

const CLASS: &str = "hostile-http";
const PROBE_BOUND: Duration = Duration::from_millis(100);
/// The slowest probe while 2,000 connections are being opened at once.
const BURST_PROBE_BOUND: Duration = Duration::from_secs(1);
const PROBE_EVERY: Duration = Duration::from_millis(50);
const IDLE_CONNECTIONS: usize = 2_000;
const HALF_CLOSE_TRIES: usize = 1_500;

/// 2,000 connections that send nothing: the probe is still answered at once, at most
/// `MAX_CONNECTIONS` of them are held open, each held one is cut after the header timeout,
/// and memory stays bounded.
#[test]
fn idle_flood_does_not_starve_the_probe() {
    let mut summary = Summary::new(CLASS, "idle_flood_does_not_starve_the_probe");
    let agent = agent();
    let limit = raise_fd_limit();
    // Room for the agent's and this process's own descriptors.
    let count = IDLE_CONNECTIONS.min(usize::try_from(limit.saturating_sub(64)).unwrap_or(0));
    eprintln!("idle flood: {count} connections (open-files limit {limit})");
    let rss_before = agent.rss_kib();
    let burst_prober = Prober::start(agent.health, PROBE_EVERY);
    let opened = Instant::now();
    let mut idle = Vec::with_capacity(count);
    let mut refused = 0;
    for _ in 0..count {
        match TcpStream::connect(agent.health) {
            Ok(c) => idle.push(c),
            Err(_) => refused += 1,
        }
    }
    let connecting = opened.elapsed();
    // Let the agent work through the connections queued in the kernel.
    std::thread::sleep(Duration::from_millis(300));
    let burst = burst_prober.finish();
    // The flood is now held open: probes must get through it at once.
    let held_prober = Prober::start(agent.health, PROBE_EVERY);
    std::thread::sleep(Duration::from_millis(1200));
    let held = held_prober.finish();
    let rss_flood = agent.rss_kib();
    let open = idle.iter().filter(|c| !closed_by_server(c)).count();
    eprintln!(
        "idle flood: {count} opened in {connecting:?} ({refused} refused by the kernel), {open} \
         still open 1.5 s later; probes during the burst: {} ok, median {:?}, max {:?}; while \
         held: {} ok, median {:?}, max {:?}; VmRSS {rss_before} → {rss_flood} KiB",
        burst.latencies.len(),
        burst.median(),
        burst.max(),
        held.latencies.len(),
        held.median(),
        held.max()
    );
    // A probe that arrives in the middle of the burst queues behind up to a thousand
    // connections the agent has not yet accepted (~100 ms in a debug build, more on a loaded
    // machine), so there the median is held to the probe bound and the slowest to 1 s, which
    // a dropped SYN (retransmitted after 1 s) or a lock-out (the 5 s header timeout) exceeds.
    summary.case(
        "probe during the 2,000-connection burst",
        burst.problem_within(PROBE_BOUND, BURST_PROBE_BOUND),
    );
    summary.case(
        "probe while 2,000 idle connections are held",
        held.problem(PROBE_BOUND),
    );
    summary.case(
        "connection cap",
        (open > MAX_CONNECTIONS)
            .then(|| format!("{open} idle connections held open, cap {MAX_CONNECTIONS}")),
    );
    summary.case(
        "memory during the idle flood",
        memory_problem(&agent, "during the flood"),
    );

    // Every connection still held is cut once the header timeout has passed.
    let deadline = opened + HEADER_READ_TIMEOUT + Duration::from_secs(2);
    let mut still_open = usize::MAX;
    while Instant::now() < deadline {
        still_open = idle.iter().filter(|c| !closed_by_server(c)).count();
        if still_open == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    summary.case(
        "header timeout closes idle connections",
        (still_open != 0).then(|| {
            format!(
                "{still_open} idle connections still open {:?} after opening",
                opened.elapsed()
            )
        }),
    );
    drop(idle);
    summary.case(
        "probe after the flood",
        match robust_support::probe(agent.health, Duration::from_secs(2)) {
            Ok((200, _)) => None,
            other => Some(format!("{other:?}")),
        },
    );
    let mut agent = agent;
    summary.case("stops with exit 0", stop_problem(&mut agent));
    summary.assert_all_passed();
}

/// Several clients dribble their headers one byte a second: the probe is unaffected and each
/// dribbler is cut off by the header timeout.
#[test]
fn slowloris_is_cut_off_by_the_header_timeout() {
    const CLIENTS: usize = 8;
    let mut summary = Summary::new(CLASS, "slowloris_is_cut_off_by_the_header_timeout");
    let mut agent = agent();
    let prober = Prober::start(agent.health, PROBE_EVERY);
    let addr = agent.health;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            std::thread::spawn(move || -> Result<Duration, String> {
                let request = format!("GET /health HTTP/1.1\r\nHost: slow\r\nX-Client: {i}");
                let mut c = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
                let started = Instant::now();
                for b in request.bytes().cycle() {
                    if c.write_all(&[b]).is_err() || closed_by_server(&c) {
                        return Ok(started.elapsed());
                    }
                    if started.elapsed() > HEADER_READ_TIMEOUT * 3 {
                        return Err("still connected after 3 header timeouts".into());
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                unreachable!("cycle() never ends")
            })
        })
        .collect();
    let cut: Vec<_> = clients
        .into_iter()
        .map(|t| t.join().expect("a slowloris thread does not panic"))
        .collect();
    let report = prober.finish();
    eprintln!(
        "slowloris: {CLIENTS} clients cut after {cut:?}; probes median {:?}, max {:?}",
        report.median(),
        report.max()
    );
    summary.case("probe during slowloris", report.problem(PROBE_BOUND));
    for (i, c) in cut.iter().enumerate() {
        // Cut at the header timeout, give or take the one-second dribble step.
        let problem = match c {
            Ok(d) if *d + Duration::from_millis(1500) < HEADER_READ_TIMEOUT => {
                Some(format!("cut after {d:?}, before the header timeout"))
            }
            Ok(d) if *d > HEADER_READ_TIMEOUT + Duration::from_secs(3) => {
                Some(format!("cut only after {d:?}"))
            }
            Ok(_) => None,
            Err(e) => Some(e.clone()),
        };
        summary.case(&format!("slowloris client {i}"), problem);
    }
    summary.case(
        "memory after slowloris",
        memory_problem(&agent, "after slowloris"),
    );
    summary.case("stops with exit 0", stop_problem(&mut agent));
    summary.assert_all_passed();
}

/// Deterministic junk (xorshift), so a failure can be replayed.
fn junk(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Malformed, old-fashioned and unusual requests each get a prompt, sensible answer (or a
/// prompt close), and none of them disturbs the probe.
#[test]
fn malformed_and_unusual_requests() {
    let mut summary = Summary::new(CLASS, "malformed_and_unusual_requests");
    let mut agent = agent();
    let addr = agent.health;
    let prober = Prober::start(addr, PROBE_EVERY);
    let quick = Duration::from_secs(3);

    // 64 KB header line: refused (431) or cut; never served, never a hang.
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: big\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let r = robust_support::common::http_exchange(addr, big.as_bytes(), false, quick);
    summary.case(
        "64 KB header line",
        match &r {
            Ok(a) if statuses(a).first().is_some_and(|s| *s == 431) => None,
            Ok(a) if a.is_empty() => None,
            Err(e) if e.starts_with("read: ") => None,
            other => Some(format!(
                "{:?}",
                other
                    .as_ref()
                    .map(|a| String::from_utf8_lossy(a).to_string())
            )),
        },
    );
    // 64 KB of one header line without an end: the same, and no waiting for the header timeout.
    let started = Instant::now();
    let endless = format!(
        "GET /health HTTP/1.1\r\nX-Filler: {}",
        "b".repeat(64 * 1024)
    );
    let r = robust_support::common::http_exchange(addr, endless.as_bytes(), false, quick);
    summary.case(
        "64 KB unfinished header line",
        match &r {
            Ok(a) if statuses(a).iter().all(|s| *s != 200) && started.elapsed() < quick => None,
            Err(e) if e.starts_with("read: ") => None,
            other => Some(format!(
                "{:?}",
                other
                    .as_ref()
                    .map(|a| String::from_utf8_lossy(a).to_string())
            )),
        },
    );

    // Garbage: binary junk, a TLS ClientHello start, NULs, a bare CRLF storm, bad versions.
    let mut garbage: Vec<(String, Vec<u8>)> = (1..=6u64)
        .map(|seed| (format!("random bytes (seed {seed})"), junk(seed, 4096)))
        .collect();
    garbage.push((
        "TLS ClientHello".into(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".repeat(20),
    ));
    garbage.push(("NUL bytes".into(), vec![0u8; 2048]));
    garbage.push(("CRLF storm".into(), b"\r\n".repeat(4096)));
    garbage.push((
        "HTTP/9.9".into(),
        b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
    ));
    garbage.push(("no version".into(), b"GET /health\r\n\r\n".to_vec()));
    garbage.push((
        "space in path".into(),
        b"GET /hea lth HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ));
    garbage.push((
        "header without colon".into(),
        b"GET /health HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
    ));
    garbage.push((
        "bad content-length".into(),
        b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
    ));
    garbage.push((
        "two content-lengths".into(),
        b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
            .to_vec(),
    ));
    for (name, bytes) in garbage {
        let started = Instant::now();
        let r = robust_support::common::http_exchange(addr, &bytes, false, quick);
        let problem = match &r {
            Ok(a) if statuses(a).contains(&200) => {
                Some(format!("served: {:?}", String::from_utf8_lossy(a)))
            }
            Ok(_) | Err(_) if started.elapsed() >= quick => {
                Some(format!("took {:?}: {r:?}", started.elapsed()))
            }
            Ok(_) => None,
            Err(e) if e.starts_with("read: ") => None,
            Err(e) => Some(e.clone()),
        };
        summary.case(&format!("garbage: {name}"), problem);
    }

    // HTTP/1.0, with and without Host: Butler's body, then the connection closes.
    for (name, req) in [
        ("HTTP/1.0", "GET /health HTTP/1.0\r\n\r\n"),
        (
            "HTTP/1.0 with Host",
            "GET /health HTTP/1.0\r\nHost: old\r\n\r\n",
        ),
        ("HTTP/1.0 HEAD", "HEAD /health HTTP/1.0\r\n\r\n"),
    ] {
        let r = robust_support::common::http_exchange(addr, req.as_bytes(), false, quick);
        let problem = match &r {
            Ok(a) => {
                let text = String::from_utf8_lossy(a);
                let head_only = req.starts_with("HEAD");
                (statuses(a) != [200] || (!head_only && !text.ends_with(HEALTH_BODY)))
                    .then(|| format!("{text:?}"))
            }
            Err(e) => Some(e.clone()),
        };
        summary.case(name, problem);
    }

    // Pipelining: every request is answered in order on the kept-alive connection, and the
    // last one's `Connection: close` ends it; no hang.
    let pipelined = "GET /health HTTP/1.1\r\nHost: p\r\n\r\nGET /livez HTTP/1.1\r\nHost: p\r\n\r\nGET /health HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n";
    let r = robust_support::common::http_exchange(addr, pipelined.as_bytes(), false, quick);
    summary.case(
        "pipelined requests",
        match &r {
            Ok(a)
                if statuses(a) == [200, 200, 200]
                    && String::from_utf8_lossy(a).ends_with(HEALTH_BODY) =>
            {
                None
            }
            other => Some(format!(
                "{:?}",
                other
                    .as_ref()
                    .map(|a| String::from_utf8_lossy(a).to_string())
            )),
        },
    );

    // Half-closed: the client shuts its sending side after the request and still gets the answer.
    for (name, req) in [
        ("half-closed GET", "GET /health HTTP/1.1\r\nHost: h\r\n\r\n"),
        ("half-closed HTTP/1.0", "GET /health HTTP/1.0\r\n\r\n"),
    ] {
        let r = robust_support::common::http_exchange(addr, req.as_bytes(), true, quick);
        summary.case(
            name,
            match &r {
                Ok(a)
                    if statuses(a) == [200]
                        && String::from_utf8_lossy(a).ends_with(HEALTH_BODY) =>
                {
                    None
                }
                other => Some(format!(
                    "{:?}",
                    other
                        .as_ref()
                        .map(|a| String::from_utf8_lossy(a).to_string())
                )),
            },
        );
    }
    // Regression: hyper without `half_close` sometimes saw the EOF before answering and closed
    // silently (about 1 in 200 under concurrency); many quick tries from two threads catch it.
    let tries = 2 * HALF_CLOSE_TRIES;
    let lost: usize = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                (0..HALF_CLOSE_TRIES)
                    .filter(|_| {
                        let r = robust_support::common::http_exchange(
                            addr,
                            b"GET /health HTTP/1.0\r\n\r\n",
                            true,
                            quick,
                        );
                        !matches!(&r, Ok(a) if statuses(a) == [200])
                    })
                    .count()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("a half-close thread does not panic"))
        .sum();
    summary.case(
        "half-closed HTTP/1.0, many at once",
        (lost > 0).then(|| format!("{lost} of {tries} got no answer")),
    );
    // Half-closed before the request is complete: closed promptly, not held to the timeout.
    let started = Instant::now();
    let r = robust_support::common::http_exchange(
        addr,
        b"GET /health HTTP/1.1\r\nHost: h\r\n",
        true,
        quick,
    );
    summary.case(
        "half-closed mid-request",
        match &r {
            Ok(a) if statuses(a).contains(&200) => Some("served an incomplete request".into()),
            _ if started.elapsed() >= quick => Some(format!("held for {:?}", started.elapsed())),
            _ => None,
        },
    );

    let report = prober.finish();
    eprintln!(
        "malformed: probes median {:?}, max {:?}",
        report.median(),
        report.max()
    );
    summary.case(
        "probe during malformed requests",
        report.problem(PROBE_BOUND),
    );
    summary.case(
        "memory after malformed requests",
        memory_problem(&agent, "after the malformed requests"),
    );
    summary.case("stops with exit 0", stop_problem(&mut agent));
    summary.assert_all_passed();
}
