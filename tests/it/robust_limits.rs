//! Connection limits against the real binaries: a flood from one address cannot push a slow
//! probe from another out (fair eviction), SIGTERM is quick whatever dribbling clients hold,
//! and `butler-agent sink` keeps its own `/_liveness` under 1,000 idle connections. The cases
//! load the machine, so they run one at a time, never beside each other.

use crate::robust_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::robust_support::{
    RSS_BOUND_KIB, Summary, agent, closed_by_server, memory_problem, raise_fd_limit, statuses,
    stop_problem,
};
use butler_agent::health::MAX_CONNECTIONS;

const CLASS: &str = "hostile-http";

/// Held by each case for its whole run.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens idle connections from `source` to `target` at about `per_second`, holding the newest
/// `hold` of them, until `stop` is set or `limit` has passed; returns how many it opened.
fn idle_flood(
    source: std::net::IpAddr,
    target: SocketAddr,
    per_second: u32,
    hold: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    limit: Duration,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds");
        rt.block_on(async move {
            let started = Instant::now();
            let mut held = std::collections::VecDeque::with_capacity(hold);
            let mut opened = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && started.elapsed() < limit {
                let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
                    break;
                };
                // Let connect() pick the port: bind() searching for one is slow once thousands
                // are in TIME_WAIT.
                let _ = nix::sys::socket::setsockopt(
                    &socket,
                    nix::sys::socket::sockopt::IpBindAddressNoPort,
                    &true,
                );
                if socket.bind(SocketAddr::new(source, 0)).is_err() {
                    break;
                }
                if let Ok(Ok(c)) =
                    tokio::time::timeout(Duration::from_secs(1), socket.connect(target)).await
                {
                    held.push_back(c);
                    if held.len() > hold {
                        held.pop_front();
                    }
                }
                opened += 1;
                // Keep to the rate: sleep whenever ahead of schedule.
                let due = Duration::from_secs_f64(f64::from(opened) / f64::from(per_second));
                if let Some(ahead) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(ahead).await;
                }
            }
            opened as usize
        })
    })
}

/// An idle flood from `source` (3,000 connections a second, the newest 400 held, at most
/// 30 s, until `stop`), started 300 ms ago: long enough to have taken every slot.
fn flood_every_slot(
    source: std::net::IpAddr,
    target: SocketAddr,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    let flood = idle_flood(
        source,
        target,
        3_000,
        400,
        std::sync::Arc::clone(stop),
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(300));
    flood
}

/// `count` probes one after another ([`strict_probe`], 1 s each, `think` before the request):
/// how many were answered 200, and the other outcomes (repeats merged).
fn probes(addr: SocketAddr, count: usize, think: Duration) -> (usize, Vec<String>) {
    let mut answered = 0;
    let mut failures = Vec::new();
    for _ in 0..count {
        match strict_probe(addr, Duration::from_secs(1), think) {
            Ok(200) => answered += 1,
            other => failures.push(format!("{other:?}")),
        }
    }
    failures.dedup();
    (answered, failures)
}

/// Kept-alive connections are shared by the health server's two threads; a flood of idle
/// connections from their own address then evicts them all, on either thread (the accept loop
/// reaches a moved connection through its shared record), while probes from another address
/// are answered throughout; memory stays bounded and SIGTERM ends it with exit 0.
#[test]
fn a_flood_evicts_kept_alive_connections_on_both_threads_and_probes_are_answered() {
    let _serial = one_at_a_time();
    const KEPT: usize = 32;
    const PROBES: usize = 100;
    let mut summary = Summary::new(
        CLASS,
        "a_flood_evicts_kept_alive_connections_on_both_threads_and_probes_are_answered",
    );
    let mut agent = agent();
    raise_fd_limit();
    const FLOODER: [u8; 4] = [127, 0, 0, 3];
    let mut kept: Vec<TcpStream> = (0..KEPT)
        .map(|_| crate::common::connect_from(FLOODER, agent.health))
        .collect();
    let mut kept_failures = Vec::new();
    for round in 0..3 {
        for (i, c) in kept.iter_mut().enumerate() {
            // A connection moves when it waits for its next request: give it the time to.
            std::thread::sleep(Duration::from_millis(2));
            let answer = c
                .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
                .ok()
                .and_then(|()| {
                    crate::common::http_answer::read_kept_alive_answer(c, Duration::from_secs(5))
                });
            if answer.as_ref().map(|a| a.0) != Some(200) {
                kept_failures.push(format!("round {round}, client {i}: {answer:?}"));
            }
        }
    }
    // Idle from now on; the server's idle timeout (5 s) would close them too: they must be
    // gone well before it.
    let idle_since = Instant::now();
    summary.case(
        "kept-alive clients answered",
        (!kept_failures.is_empty()).then(|| format!("{kept_failures:?}")),
    );
    let names = crate::common::thread_names(agent.pid);
    summary.case(
        "kept-alive connections moved to the second thread",
        (!names.iter().any(|n| n == "health-2")).then(|| format!("threads: {names:?}")),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = flood_every_slot(FLOODER.into(), agent.health, &stop);
    let (answered, failures) = probes(agent.health, PROBES, Duration::ZERO);
    // Every kept-alive connection has been idle longer than any flood connection: the flood
    // evicts them first, well before their idle timeout would close them.
    let deadline = idle_since + Duration::from_secs(3);
    let mut open = KEPT;
    while Instant::now() < deadline {
        open = kept.iter().filter(|c| !closed_by_server(c)).count();
        if open == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = flood.join().expect("the flood thread does not panic");
    eprintln!(
        "kept-alive vs idle flood: {open} of {KEPT} kept-alive connections still open; \
         {answered} of {PROBES} probes answered while 127.0.0.3 opened {opened}; \
         failures: {failures:?}"
    );
    summary.case(
        "flood really ran",
        // More than the slots: enough to have taken every one.
        (opened <= MAX_CONNECTIONS).then(|| format!("only {opened} flood connections opened")),
    );
    summary.case(
        "kept-alive connections evicted on both threads",
        (open > 0).then(|| format!("{open} of {KEPT} still open after the flood")),
    );
    end_flood_case(
        summary,
        &mut agent,
        "probes from another address answered",
        (answered, PROBES, &failures),
    );
}

/// A probe that waits 50 ms between connecting and sending its request (any probe across a
/// real network) is answered while another address floods the server with idle connections:
/// the flood evicts its own connections, never the probe's.
#[test]
fn a_slow_probe_survives_an_idle_flood_from_another_address() {
    let _serial = one_at_a_time();
    const PROBES: usize = 100;
    let mut summary = Summary::new(
        CLASS,
        "a_slow_probe_survives_an_idle_flood_from_another_address",
    );
    let mut agent = agent();
    raise_fd_limit();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = flood_every_slot(std::net::IpAddr::from([127, 0, 0, 2]), agent.health, &stop);
    let (answered, failures) = probes(agent.health, PROBES, Duration::from_millis(50));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = flood.join().expect("the flood thread does not panic");
    eprintln!(
        "slow probe vs idle flood: {answered} of {PROBES} answered while 127.0.0.2 opened \
         {opened} connections; failures: {failures:?}"
    );
    summary.case(
        "flood really ran",
        (opened < 1_000).then(|| format!("only {opened} flood connections opened")),
    );
    end_flood_case(
        summary,
        &mut agent,
        "slow probes answered",
        (answered, PROBES, &failures),
    );
}

/// The checks every flood case ends with: at least 95 % of the probes (`answered` of `sent`)
/// were answered, memory stayed bounded, and SIGTERM ends the agent with exit 0.
fn end_flood_case(
    mut summary: Summary,
    agent: &mut robust_support::Agent,
    what: &str,
    (answered, sent, failures): (usize, usize, &[String]),
) {
    summary.case(
        what,
        (answered * 100 < sent * 95)
            .then(|| format!("{answered} of {sent} answered: {failures:?}")),
    );
    summary.case(
        "memory after the flood",
        memory_problem(agent, "after the flood"),
    );
    summary.case("stops with exit 0", stop_problem(agent));
    summary.assert_all_passed();
}

/// SIGTERM with every slot held by a client dribbling its request head: the agent exits 0 in
/// well under a second instead of waiting for the header timeout.
#[test]
fn sigterm_with_64_slowloris_connections_exits_at_once() {
    let _serial = one_at_a_time();
    let mut summary = Summary::new(CLASS, "sigterm_with_64_slowloris_connections_exits_at_once");
    let mut agent = agent();
    let mut held = Vec::new();
    for i in 0..MAX_CONNECTIONS {
        if let Ok(mut c) = TcpStream::connect(agent.health) {
            let _ = c.write_all(format!("GET /health HTTP/1.1\r\nX-Slow-{i}: a").as_bytes());
            held.push(c);
        }
    }
    // One more byte each, so every connection is mid-head when the signal comes.
    std::thread::sleep(Duration::from_millis(200));
    for c in &mut held {
        let _ = c.write_all(b"b");
    }
    let started = Instant::now();
    let code = agent.stop(Duration::from_secs(10));
    let took = started.elapsed();
    eprintln!(
        "SIGTERM with {} slowloris connections: exit {code:?} after {took:?}",
        held.len()
    );
    summary.case(
        "all slots held",
        (held.len() < MAX_CONNECTIONS).then(|| format!("only {} connected", held.len())),
    );
    summary.case(
        "exit 0 in under a second",
        (code != Some(0) || took >= Duration::from_secs(1))
            .then(|| format!("exit {code:?} after {took:?}")),
    );
    summary.assert_all_passed();
}

/// `butler-agent sink` under 1,000 idle connections keeps answering its own `/_liveness`, holds
/// a bounded number of them, and does not fill its log.
#[test]
fn the_sink_answers_its_health_under_1000_idle_connections() {
    let _serial = one_at_a_time();
    use std::io::BufRead;
    const IDLE: usize = 1_000;
    let mut summary = Summary::new(
        CLASS,
        "the_sink_answers_its_health_under_1000_idle_connections",
    );
    raise_fd_limit();
    let mut cmd = robust_support::common::agent(robust_support::common::Telemetry::Off);
    cmd.args(["sink", "--listen", "127.0.0.1:0"])
        .env("BUTLER_LOG_LEVEL", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("the sink starts");
    let stderr = std::io::BufReader::new(child.stderr.take().expect("stderr is piped"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let addr: SocketAddr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the sink logs its address");
        log.push(line.clone());
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let a: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            break a.parse().expect("a socket address");
        }
    };
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        if let Ok(c) = TcpStream::connect(addr) {
            idle.push(c);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut answered = 0;
    for _ in 0..10 {
        if let Ok((200, _)) = robust_support::probe_path(addr, "/_liveness", Duration::from_secs(2))
        {
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let open = idle.iter().filter(|c| !closed_by_server(c)).count();
    let rss = robust_support::rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    log.extend(rx.try_iter());
    let warnings = log.iter().filter(|l| l.contains("WARN")).count();
    eprintln!(
        "sink under {} idle connections: {answered} of 10 health probes answered, {open} held \
         open, VmRSS {rss} KiB, {warnings} warnings",
        idle.len()
    );
    summary.case(
        "all idle connections made",
        (idle.len() < IDLE).then(|| format!("only {} connected", idle.len())),
    );
    summary.case(
        "health answered",
        (answered < 10).then(|| format!("{answered} of 10 answered")),
    );
    summary.case(
        "connections held are bounded",
        (open > butler_agent::sink::limits().max_connections).then(|| format!("{open} held open")),
    );
    summary.case(
        "quiet log",
        (warnings > 0).then(|| format!("{warnings} warnings: {log:?}")),
    );
    summary.case(
        "memory",
        (rss == 0 || rss > RSS_BOUND_KIB).then(|| format!("VmRSS {rss} KiB")),
    );
    summary.assert_all_passed();
}

/// Clients that ask the server to close after their answers, pipeline dozens of requests and
/// never read, beside connections that sit idle in every other slot: the accept loop waits a
/// short while for a slot a closing answer frees, and such clients must not turn that wait
/// into a stall. Every probe is answered, and the agent stops at once afterwards.
#[test]
fn closing_clients_that_never_read_do_not_stall_probes() {
    let _serial = one_at_a_time();
    const PROBES: usize = 20;
    let summary = Summary::new(CLASS, "closing_clients_that_never_read_do_not_stall_probes");
    let mut agent = agent();
    raise_fd_limit();
    let mut hostile = Vec::new();
    for _ in 0..MAX_CONNECTIONS + 16 {
        if let Ok(mut c) = TcpStream::connect(agent.health) {
            let _ = c.write_all(b"GET /health HTTP/1.1\r\n");
            hostile.push(c);
        }
    }
    for _ in 0..20 {
        if let Ok(mut c) = TcpStream::connect(agent.health) {
            let _ = c.write_all(
                &b"GET /health HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".repeat(50),
            );
            hostile.push(c);
        }
    }
    end_with_probes(summary, &mut agent, hostile, PROBES);
}

/// Kept-alive clients in every slot that pipeline requests for large answers (a 404 repeats
/// its 7 KB path) and never read: their answers fill the sockets' buffers and stay unsent.
/// hyper reads the next pipelined request while an answer waits to go out, so such a
/// connection counts as busy and is never idle; it must not hold its slot until its deadline
/// (10 s): once nothing of its answer has gone out for `STALLED` (1 s) it is evictable, as a
/// stalled request body makes it. Every probe is answered within 2 s.
///
/// Found 2026-12-03 as 1 or 2 of 20 probes refused at accept, before answers that stopped
/// going out counted as stalled.
#[test]
fn kept_alive_clients_that_never_read_their_answers_are_evicted_for_probes() {
    let _serial = one_at_a_time();
    const PROBES: usize = 20;
    let mut summary = Summary::new(
        CLASS,
        "kept_alive_clients_that_never_read_their_answers_are_evicted_for_probes",
    );
    let mut agent = agent();
    raise_fd_limit();
    let request = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "x".repeat(7_000));
    let pipelined = request.repeat(400);
    let mut hostile = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let Ok(mut c) =
            crate::common::connect_from_nonblocking_small_window([127, 0, 0, 2], agent.health)
        else {
            continue;
        };
        // As much as the buffers take: the server stops reading once its answers back up.
        send_what_fits(&mut c, pipelined.as_bytes());
        hostile.push(c);
    }
    // The agent answers what it has read until the answers back up (a few MiB per
    // connection: the sockets' send buffers take them), then has nothing to do; from then on
    // nothing goes out, and after `STALLED` (1 s) every such connection is stalled. Until then
    // a connection with an answer waiting is as busy as one being answered.
    let quiet = wait_until_idle(agent.pid, Duration::from_secs(30));
    summary.case(
        "the agent has answered what it read within 30 s",
        (!quiet).then(|| "still using CPU".to_string()),
    );
    std::thread::sleep(Duration::from_millis(1_200));
    end_with_probes(summary, &mut agent, hostile, PROBES);
}

/// The same attack on quick answers: kept-alive clients in every slot, each answered twice
/// (from then on its `/health` requests are answered without hyper), then pipeline far more
/// `/health` requests than the request cap (1000) and never read. The agent answers up to
/// the cap and closes each connection after its last answer (the answers, a few hundred bytes
/// each, fit the sockets' buffers on loopback: an answer that stops going out is the unit
/// test `connections::quick::tests::a_client_that_never_reads_its_quick_answers_makes_room_once_stalled`);
/// it must not spin on the unread requests or hold their bytes. Every probe is answered within
/// 2 s, and the agent stops at once.
#[test]
fn kept_alive_health_clients_that_pipeline_and_never_read_are_evicted_for_probes() {
    let _serial = one_at_a_time();
    const PROBES: usize = 20;
    let mut summary = Summary::new(
        CLASS,
        "kept_alive_health_clients_that_pipeline_and_never_read_are_evicted_for_probes",
    );
    let mut agent = agent();
    raise_fd_limit();
    let request = b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut hostile = Vec::new();
    let mut not_kept = 0;
    for _ in 0..MAX_CONNECTIONS {
        let Ok(mut c) =
            crate::common::connect_from_nonblocking_small_window([127, 0, 0, 2], agent.health)
        else {
            continue;
        };
        let kept = c.set_nonblocking(false).is_ok()
            && (0..2).all(|_| {
                c.write_all(request).is_ok()
                    && crate::common::http_answer::read_kept_alive_answer(
                        &mut c,
                        Duration::from_secs(2),
                    )
                    .is_some_and(|a| a.0 == 200)
            })
            && c.set_nonblocking(true).is_ok();
        if !kept {
            not_kept += 1;
        }
        hostile.push(c);
    }
    summary.case(
        "every client answered twice",
        (not_kept > 0).then(|| format!("{not_kept} were not")),
    );
    // Kept alive once waiting for the next request; then 40,000 requests each, as much of
    // them as the buffers take.
    std::thread::sleep(Duration::from_millis(50));
    let pipelined = request.repeat(40_000);
    for c in &mut hostile {
        send_what_fits(c, &pipelined);
    }
    let quiet = wait_until_idle(agent.pid, Duration::from_secs(30));
    summary.case(
        "the agent has answered what it read within 30 s",
        (!quiet).then(|| "still using CPU".to_string()),
    );
    std::thread::sleep(Duration::from_millis(1_200));
    end_with_probes(summary, &mut agent, hostile, PROBES);
}

/// Sends `count` probes one after another while the `hostile` clients hold their connections:
/// each must be answered 200 within 2 s. Then closes the hostile clients and stops the agent,
/// which must end at once.
fn end_with_probes(
    mut summary: Summary,
    agent: &mut robust_support::Agent,
    hostile: Vec<TcpStream>,
    count: usize,
) {
    let mut slow = Vec::new();
    for _ in 0..count {
        let started = Instant::now();
        let r = strict_probe(agent.health, Duration::from_secs(2), Duration::ZERO);
        if r != Ok(200) {
            slow.push(format!("{r:?} after {:?}", started.elapsed()));
        }
    }
    summary.case(
        "every probe answered 200 within 2 s",
        (!slow.is_empty()).then(|| format!("{} of {count}: {slow:?}", slow.len())),
    );
    drop(hostile);
    summary.case("stops at once", stop_problem(agent));
    summary.assert_all_passed();
}

/// Writes `bytes` on the non-blocking `c` until they are all out or the buffers are full.
fn send_what_fits(c: &mut TcpStream, bytes: &[u8]) {
    let mut sent = 0;
    while sent < bytes.len() {
        match c.write(&bytes[sent..]) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
}

/// Waits until process `pid` has used no CPU for 300 ms, at most `limit`; whether it did.
fn wait_until_idle(pid: u32, limit: Duration) -> bool {
    let ticks = || -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the name in parentheses: state is field 3, utime and stime fields 14 and 15.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    };
    let started = Instant::now();
    let mut last = ticks();
    while started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(300));
        let now = ticks();
        if now.is_some() && now == last {
            return true;
        }
        last = now;
    }
    false
}

/// One `GET /health` with `Connection: close`, sent `think` after connecting (a slow client),
/// connect and each read bounded by `limit`: the status of its first answer. Stricter than
/// `robust_support::probe`, which also takes an answer followed by a reset: here any read
/// error fails the probe.
fn strict_probe(addr: SocketAddr, limit: Duration, think: Duration) -> Result<u16, String> {
    let mut c = TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    if !think.is_zero() {
        std::thread::sleep(think);
    }
    c.write_all(b"GET /health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    c.read_to_end(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    statuses(&answer)
        .first()
        .copied()
        .ok_or_else(|| "closed without an answer".to_string())
}
