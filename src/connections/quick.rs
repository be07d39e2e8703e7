//! Quick answers: a kept-alive connection's plain `GET`/`HEAD` of one fixed path, answered
//! without hyper.
//!
//! A monitor or load balancer that keeps its connection open asks the same thing again and
//! again, and for the health server's `/health` the answer never changes but for its `Date`.
//! hyper spends most of such a request's user-space time on what this request does not use:
//! a request and a response with their header maps, a URI, and its general dispatcher (about
//! 10,900 instructions a request, callgrind; nginx about 7,200). So once a connection is kept
//! alive ([`super::spare::KEPT_AFTER`] requests), its server hands it here when it has a
//! [`Quick`] answer: requests are parsed with httparse (as hyper parses them), and one that is
//! exactly a `GET` or `HEAD` of [`Quick::path`] in HTTP/1.1, without a body or anything that
//! asks for more (`Content-Length`, `Transfer-Encoding`, `Expect`, `Upgrade`, or a
//! `Connection` token other than `close` and `keep-alive`), gets the bytes hyper would have
//! sent (a test compares them). Anything else — another path or method, HTTP/1.0, a malformed
//! or oversized head — goes back to hyper with every byte read so far, and the connection
//! stays with hyper from then on. The connection's limits are the same as with hyper: its
//! request count and deadline (answers say `Connection: close` as hyper's do), the idle time
//! that bounds a head, eviction, stalled writes and the stop.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::stream::Stream;
use super::{Conn, Limits, STOP_HEAD_GRACE, later};

/// A fixed answer to a `GET` (or `HEAD`) of one path: `200 OK` with these headers and body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quick {
    /// The request target, exactly (a query or any other form goes to hyper).
    pub(crate) path: &'static str,
    /// Header lines as hyper writes them (lower case, each ending in CRLF), without
    /// `connection`, `content-length` and `date`, which are added as hyper adds them.
    pub(crate) headers: &'static str,
    pub(crate) body: &'static str,
}

/// How a connection left the quick answers.
pub(super) enum Outcome {
    /// It is over (closed by the client, a limit, eviction or the stop); dropping the stream
    /// closes the socket.
    Ended,
    /// A request that is not a quick one: hyper serves the rest, starting with every byte read
    /// and not answered (they are the stream's unread bytes).
    Hyper(Stream),
}

/// Bytes of requests held at once. A head that does not fit is not a probe's: hyper takes it
/// (and its own limit, 431, applies).
const BUFFER: usize = 4096;
/// Headers a quick request may have; more go to hyper (whose limit is higher).
const MAX_HEADERS: usize = 32;
/// Answers in a row before the task lets others run, as hyper yields after 16.
const PER_TURN: usize = 16;

/// One request at the start of the buffer, as far as quick answers are concerned.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// A quick request of `len` bytes.
    Quick {
        len: usize,
        head: bool,
        closes: bool,
    },
    /// Its head is not complete yet.
    Partial,
    /// Anything else, complete or not: hyper's to answer.
    Other,
}

fn parse(buf: &[u8], path: &str) -> Parsed {
    // Not initialized first (httparse fills what it uses): a kilobyte less to write per request.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if req.version != Some(1) || req.path != Some(path) {
        return Parsed::Other;
    }
    let head = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Parsed::Other,
    };
    let mut closes = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    closes = true;
                } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                    return Parsed::Other;
                }
            }
        } else if [
            &b"content-length"[..],
            b"transfer-encoding",
            b"expect",
            b"upgrade",
        ]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
        {
            return Parsed::Other;
        }
    }
    Parsed::Quick { len, head, closes }
}

/// The answer's bytes up to the date, once per connection: kept alive, and closing.
struct Answers {
    keep: Vec<u8>,
    close: Vec<u8>,
    body: &'static [u8],
}

impl Answers {
    fn new(quick: &Quick) -> Self {
        let start = format!("HTTP/1.1 200 OK\r\n{}", quick.headers);
        let end = format!("content-length: {}\r\ndate: ", quick.body.len());
        Answers {
            keep: format!("{start}{end}").into_bytes(),
            close: format!("{start}connection: close\r\n{end}").into_bytes(),
            body: quick.body.as_bytes(),
        }
    }

    fn write(&self, out: &mut Vec<u8>, date: &str, head: bool, closes: bool) {
        out.extend_from_slice(if closes { &self.close } else { &self.keep });
        out.extend_from_slice(date.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        if !head {
            out.extend_from_slice(self.body);
        }
    }
}

thread_local! {
    /// The `Date` value of the current second (formatted once a second, as hyper does).
    static DATE: std::cell::RefCell<(u64, String)> = const {
        std::cell::RefCell::new((u64::MAX, String::new()))
    };
}

/// Runs `f` with the current `Date` value.
fn with_date<T>(f: impl FnOnce(&str) -> T) -> T {
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, date)| {
        if *at != second {
            *at = second;
            *date = httpdate::fmt_http_date(now);
        }
        f(date)
    })
}

/// Serves `stream` (a kept-alive connection, between two requests) with quick answers until it
/// ends or a request needs hyper.
pub(super) async fn serve(
    mut stream: Stream,
    quick: &Quick,
    state: &Conn,
    limits: &Limits,
    name: &str,
) -> Outcome {
    let answers = Answers::new(quick);
    let mut buf = vec![0; BUFFER];
    // The bytes read and not answered yet.
    let (mut start, mut end) = (0, 0);
    let mut out: Vec<u8> = Vec::new();
    let mut sent = 0;
    // Close once `out` has gone out: its last answer said so, or eviction or the stop came.
    let mut ending = false;
    let mut eof = false;
    let mut evict_seen = false;
    let mut stop_at: Option<Instant> = None;
    let mut past_deadline = false;
    let idle_limit = limits.idle_timeout.min(limits.header_read_timeout);
    let announce_from = limits
        .connection_deadline
        .saturating_sub(limits.idle_timeout);
    let max_requests = limits.max_requests.max(1);
    let mut deadline = later(state.accepted, limits.connection_deadline);
    let mut due = deadline.min(later(state.idle_since(), idle_limit));
    let timer = tokio::time::sleep_until(due);
    tokio::pin!(timer);
    // `Some`: hyper takes over, with these bytes read and not answered.
    let left: Option<Bytes> = std::future::poll_fn(|cx| {
        state.waker.register(cx.waker());
        let mut answered = 0;
        loop {
            if !evict_seen && state.evicting.load(Ordering::Acquire) {
                evict_seen = true;
                if state.evictable() {
                    return Poll::Ready(None);
                }
                // Its answer is going out: close once it has.
                ending = true;
            }
            if stop_at.is_none() && state.stopping.load(Ordering::Acquire) {
                let now = Instant::now();
                stop_at = Some(now);
                // A head still arriving gets the grace.
                due = due.min(later(now, STOP_HEAD_GRACE));
                timer.as_mut().reset(due);
            }
            // Send what is waiting to go out.
            if sent < out.len() {
                match Pin::new(&mut stream).poll_write(cx, &out[sent..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(None),
                    Poll::Ready(Ok(n)) => {
                        sent += n;
                        continue;
                    }
                    Poll::Ready(Err(e)) => {
                        tracing::debug!("{name}: a connection ended: {e}");
                        return Poll::Ready(None);
                    }
                    Poll::Pending => {}
                }
            } else {
                if !out.is_empty() {
                    out.clear();
                    sent = 0;
                    state.mark_idle();
                }
                if ending || (start == end && (eof || stop_at.is_some())) {
                    // As hyper ends: the sending side shut down (a FIN after the answers), then
                    // the close.
                    let _ = Pin::new(&mut stream).poll_shutdown(cx);
                    return Poll::Ready(None);
                }
                if answered >= PER_TURN {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                // Answer the complete requests at the start of the buffer.
                while answered < PER_TURN && !ending {
                    match parse(&buf[start..end], quick.path) {
                        Parsed::Quick { len, head, closes } => {
                            state.busy.store(true, Ordering::Release);
                            let served = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
                            let closes = closes
                                || served >= max_requests
                                || state.accepted.elapsed() >= announce_from
                                || stop_at.is_some()
                                || past_deadline;
                            if closes {
                                state.mark_closing();
                                ending = true;
                            }
                            with_date(|d| answers.write(&mut out, d, head, closes));
                            start += len;
                            answered += 1;
                        }
                        Parsed::Partial => break,
                        Parsed::Other if out.is_empty() => {
                            let rest = Bytes::copy_from_slice(&buf[start..end]);
                            return Poll::Ready(Some(rest));
                        }
                        // Answer the quick ones before it first.
                        Parsed::Other => break,
                    }
                }
                if !out.is_empty() {
                    continue;
                }
                if eof {
                    // A head cut off by the client's end: hyper says what it says to that.
                    let rest = Bytes::copy_from_slice(&buf[start..end]);
                    return Poll::Ready(Some(rest));
                }
                // Read more: room is made at the front, and a head the buffer cannot hold is
                // hyper's.
                if start > 0 {
                    buf.copy_within(start..end, 0);
                    end -= start;
                    start = 0;
                }
                if end == BUFFER {
                    let rest = Bytes::from(std::mem::take(&mut buf));
                    return Poll::Ready(Some(rest));
                }
                let mut read = ReadBuf::new(&mut buf[end..]);
                match Pin::new(&mut stream).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        end += n;
                        eof = n == 0;
                        continue;
                    }
                    Poll::Ready(Err(e)) => {
                        tracing::debug!("{name}: a connection ended: {e}");
                        return Poll::Ready(None);
                    }
                    Poll::Pending => {}
                }
            }
            // Waiting for the socket: the timer decides whether to go on waiting.
            loop {
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let now = Instant::now();
                let busy = sent < out.len();
                if tokio::time::Instant::from_std(now) >= deadline {
                    if past_deadline || !busy {
                        tracing::debug!("{name}: a connection reached its deadline");
                        return Poll::Ready(None);
                    }
                    // Its answers are still going out: they may, until twice the deadline.
                    past_deadline = true;
                    ending = true;
                    deadline = later(now, limits.connection_deadline);
                }
                let quiet_until = state.quiet_until(busy, now, idle_limit, stop_at);
                if !busy && quiet_until <= tokio::time::Instant::from_std(now) {
                    tracing::debug!("{name}: a connection closed while idle");
                    return Poll::Ready(None);
                }
                due = deadline.min(quiet_until);
                timer.as_mut().reset(due);
            }
        }
    })
    .await;
    match left {
        None => Outcome::Ended,
        Some(rest) => Outcome::Hyper(stream.unread_first(rest)),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use super::super::test_server::{Server, answer, ask, request};
    use super::*;

    /// The quick answer of the test server; its hyper answers name the path and the thread.
    const Q: Quick = Quick {
        path: "/q",
        headers: "x-by: quick\r\n",
        body: "quick",
    };

    fn parsed(raw: &str) -> Parsed {
        parse(raw.as_bytes(), Q.path)
    }

    fn quick(len: usize, head: bool, closes: bool) -> Parsed {
        Parsed::Quick { len, head, closes }
    }

    #[test]
    fn only_a_plain_get_or_head_of_the_path_is_quick() {
        let get = "GET /q HTTP/1.1\r\nHost: t\r\n\r\n";
        assert_eq!(parsed(get), quick(get.len(), false, false));
        // Only the first request counts: a pipelined one after it is the next.
        assert_eq!(
            parsed(&format!("{get}GET /x")),
            quick(get.len(), false, false)
        );
        let head = "HEAD /q HTTP/1.1\r\n\r\n";
        assert_eq!(parsed(head), quick(head.len(), true, false));
        let close = "GET /q HTTP/1.1\r\nconnection: Keep-Alive, CLOSE\r\n\r\n";
        assert_eq!(parsed(close), quick(close.len(), false, true));
        let kept = "GET /q HTTP/1.1\r\nConnection: keep-alive\r\n\r\n";
        assert_eq!(parsed(kept), quick(kept.len(), false, false));
        for partial in [
            "",
            "G",
            "GET /q HTTP/1.1\r\nHost: t\r\n",
            "GET /q HTTP/1.1\r\n\r",
        ] {
            assert_eq!(parsed(partial), Parsed::Partial, "{partial:?}");
        }
        let many = format!(
            "GET /q HTTP/1.1\r\n{}\r\n",
            "a: b\r\n".repeat(MAX_HEADERS + 1)
        );
        for other in [
            "POST /q HTTP/1.1\r\n\r\n",
            "get /q HTTP/1.1\r\n\r\n",
            "GET /q?x HTTP/1.1\r\n\r\n",
            "GET /qq HTTP/1.1\r\n\r\n",
            "GET http://t/q HTTP/1.1\r\n\r\n",
            "GET /q HTTP/1.0\r\n\r\n",
            "GET /q HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET /q HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /q HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /q HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET /q HTTP/1.1\r\nConnection: close, te\r\n\r\n",
            "GET /q HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET /q HTTP/2.0\r\n\r\n",
            &many,
        ] {
            assert_eq!(parsed(other), Parsed::Other, "{other:?}");
        }
    }

    /// Reads one answer's head (up to the blank line), byte by byte: for `HEAD`, and to see
    /// the `connection` header.
    fn head_of(c: &mut std::net::TcpStream) -> Option<String> {
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut got = Vec::new();
        let mut byte = [0];
        while !got.ends_with(b"\r\n\r\n") {
            match c.read(&mut byte) {
                Ok(1) => got.push(byte[0]),
                _ => return None,
            }
        }
        Some(String::from_utf8_lossy(&got).into_owned())
    }

    /// Whether the server closes `c` within 2 s, with nothing more to read: the end of the
    /// stream, or a reset (a close with the client's bytes unread).
    fn closed(c: &mut std::net::TcpStream) -> bool {
        c.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        match c.read(&mut [0; 64]) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    /// Two requests with hyper, then quick answers, on either thread; anything else goes to
    /// hyper for the rest of the connection.
    #[test]
    fn kept_alive_connections_get_quick_answers_until_a_request_needs_hyper() {
        let server = Server::start(Default::default(), Some(Q));
        let mut one = server.connect();
        let mut two = server.connect();
        for c in [&mut one, &mut two] {
            assert_eq!(ask(c, &request("/q")).as_deref(), Some("/q first"));
            assert_eq!(ask(c, &request("/q")).as_deref(), Some("/q first"));
        }
        for c in [&mut one, &mut two] {
            assert_eq!(ask(c, &request("/q")).as_deref(), Some("quick"));
            c.write_all(b"HEAD /q HTTP/1.1\r\nHost: t\r\n\r\n")
                .expect("send");
            let head = head_of(c).expect("an answer to HEAD");
            assert!(
                head.contains("\r\nx-by: quick\r\ncontent-length: 5\r\n"),
                "{head}"
            );
            assert_eq!(ask(c, &request("/q")).as_deref(), Some("quick"));
        }
        // The second moved: hyper answers its other requests there.
        assert_eq!(ask(&mut one, &request("/x")).as_deref(), Some("/x first"));
        assert_eq!(
            ask(&mut two, &request("/x")).as_deref(),
            Some("/x health-2")
        );
        assert_eq!(ask(&mut one, &request("/q")).as_deref(), Some("/q first"));
        assert_eq!(
            ask(&mut two, &request("/q")).as_deref(),
            Some("/q health-2")
        );
        assert!(server.stop());
        assert!(closed(&mut one) && closed(&mut two), "closed at the stop");
    }

    /// Pipelined requests are answered in order, more than a turn's worth, with a request for
    /// hyper among them; a head in pieces is waited for; one too big for the buffer is hyper's.
    #[test]
    fn pipelined_split_and_oversized_heads_are_answered_in_order() {
        let server = Server::start(Default::default(), Some(Q));
        let mut c = server.connect();
        for _ in 0..2 {
            assert!(ask(&mut c, &request("/q")).is_some());
        }
        let many = 3 * PER_TURN + 1;
        let batch = format!("{}{}", request("/q").repeat(many), request("/x"));
        std::thread::sleep(Duration::from_millis(10));
        c.write_all(batch.as_bytes()).expect("send");
        // Read one byte at a time: the answers arrive together.
        for i in 0..many {
            head_of(&mut c).unwrap_or_else(|| panic!("answer {i}"));
            assert_eq!(answer_body(&mut c), "quick", "answer {i}");
        }
        let head = head_of(&mut c).expect("hyper's answer");
        assert!(head.contains("content-length: 8\r\n"), "{head}");
        let mut body = [0; 8];
        c.read_exact(&mut body).expect("its body");
        assert_eq!(&body, b"/x first");

        let mut c = server.connect();
        for _ in 0..2 {
            assert!(ask(&mut c, &request("/q")).is_some());
        }
        std::thread::sleep(Duration::from_millis(10));
        for piece in ["GET /q", " HTTP/1.1\r\nHo", "st: t\r\n", "\r\n"] {
            c.write_all(piece.as_bytes()).expect("send");
            std::thread::sleep(Duration::from_millis(30));
        }
        assert_eq!(answer(&mut c).as_deref(), Some("quick"));
        let big = format!(
            "GET /q HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "b".repeat(BUFFER + 100)
        );
        // hyper's answer, on whichever thread the connection is.
        let answered = ask(&mut c, &big).expect("an answer");
        assert!(answered.starts_with("/q "), "{answered}");
        assert!(server.stop());
    }

    /// Quick answers count toward the request cap and say `Connection: close` on the last, as
    /// they do when the client asks to close; the server then closes. Requests followed by
    /// the client's end are answered before the close; a head cut off by it is not.
    #[test]
    fn the_request_cap_the_clients_close_and_its_end_close_as_with_hyper() {
        let server = Server::start(
            super::super::Limits {
                max_requests: 4,
                ..Default::default()
            },
            Some(Q),
        );
        let mut capped = server.connect();
        for _ in 0..2 {
            assert!(ask(&mut capped, &request("/q")).is_some());
        }
        std::thread::sleep(Duration::from_millis(10));
        capped
            .write_all(request("/q").repeat(2).as_bytes())
            .expect("send");
        let third = head_of(&mut capped).expect("the third answer");
        assert!(!third.contains("connection:"), "{third}");
        assert_eq!(answer_body(&mut capped), "quick");
        let last = head_of(&mut capped).expect("the last answer");
        assert!(last.contains("\r\nconnection: close\r\n"), "{last}");
        assert_eq!(answer_body(&mut capped), "quick");
        assert!(closed(&mut capped), "closed after its last answer");

        let mut asks = server.connect();
        for _ in 0..2 {
            assert!(ask(&mut asks, &request("/q")).is_some());
        }
        std::thread::sleep(Duration::from_millis(10));
        asks.write_all(b"GET /q HTTP/1.1\r\nConnection: close\r\n\r\n")
            .expect("send");
        let head = head_of(&mut asks).expect("an answer");
        assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
        assert_eq!(answer_body(&mut asks), "quick");
        assert!(closed(&mut asks));

        let mut ends = server.connect();
        for _ in 0..2 {
            assert!(ask(&mut ends, &request("/q")).is_some());
        }
        std::thread::sleep(Duration::from_millis(10));
        ends.write_all(format!("{}GET /q HTTP/1.1\r\nHo", request("/q")).as_bytes())
            .expect("send");
        ends.shutdown(std::net::Shutdown::Write).expect("end");
        assert_eq!(answer(&mut ends).as_deref(), Some("quick"));
        assert!(closed(&mut ends), "the cut-off head is not answered");
        assert!(server.stop());
    }

    /// The body of an answer whose head [`head_of`] has read (all quick bodies are 5 bytes).
    fn answer_body(c: &mut std::net::TcpStream) -> String {
        let mut body = [0; 5];
        c.read_exact(&mut body).expect("the body");
        String::from_utf8_lossy(&body).into_owned()
    }

    /// A kept-alive client that pipelines quick requests and never reads: once nothing of its
    /// answers has gone out for [`super::super::STALLED`], it is evictable, and a newcomer
    /// gets its slot (the only one). Its answers (256 KiB each here) fill the sockets'
    /// buffers long before the request cap; `/health`'s few hundred bytes would not on
    /// loopback, whose buffers grow to megabytes.
    #[test]
    fn a_client_that_never_reads_its_quick_answers_makes_room_once_stalled() {
        let body: &'static str = String::leak("x".repeat(256 << 10));
        let big = Quick {
            path: "/q",
            headers: "",
            body,
        };
        let server = Server::start(
            super::super::Limits {
                max_connections: 1,
                ..Default::default()
            },
            Some(big),
        );
        let mut hog = server.connect();
        for _ in 0..2 {
            assert_eq!(ask(&mut hog, &request("/q")).as_deref(), Some("/q first"));
        }
        std::thread::sleep(Duration::from_millis(10));
        hog.write_all(request("/q").repeat(400).as_bytes())
            .expect("send");
        std::thread::sleep(super::super::STALLED + Duration::from_millis(300));
        let mut newcomer = server.connect();
        assert_eq!(
            ask(&mut newcomer, &request("/x")).as_deref(),
            Some("/x first"),
            "the stalled connection made room"
        );
        drop(hog);
        assert!(server.stop());
    }

    /// A quick connection closes when idle, makes room when every slot is taken, and at the
    /// stop a head still arriving gets the grace and an answer that closes.
    #[test]
    fn idle_time_eviction_and_the_stop_reach_quick_connections() {
        let idle = Duration::from_millis(300);
        let server = Server::start(
            super::super::Limits {
                idle_timeout: idle,
                ..Default::default()
            },
            Some(Q),
        );
        let mut c = server.connect();
        for _ in 0..3 {
            assert!(ask(&mut c, &request("/q")).is_some());
        }
        let asked = std::time::Instant::now();
        assert!(closed(&mut c), "closed when idle");
        assert!(asked.elapsed() >= idle - Duration::from_millis(50));
        // A head dribbled a byte every 50 ms does not keep it open: the idle time bounds it.
        let mut c = server.connect();
        for _ in 0..3 {
            assert!(ask(&mut c, &request("/q")).is_some());
        }
        let asked = std::time::Instant::now();
        let mut dribble = c.try_clone().expect("a second handle");
        let dribbler = std::thread::spawn(move || {
            for b in b"GET /q HTTP/1.1\r\nX-Slow: "
                .iter()
                .chain([b'a'; 100].iter())
            {
                if dribble.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        assert!(closed(&mut c), "closed with its head unfinished");
        let took = asked.elapsed();
        // The dribble would last 6 s; slack for a loaded machine.
        assert!(took < idle + Duration::from_secs(2), "{took:?}");
        drop(c);
        dribbler.join().expect("the dribbler");
        assert!(server.stop());

        let server = Server::start(
            super::super::Limits {
                max_connections: 2,
                ..Default::default()
            },
            Some(Q),
        );
        let mut kept = server.connect();
        for _ in 0..3 {
            assert!(ask(&mut kept, &request("/q")).is_some());
        }
        let mut other = server.connect();
        assert!(ask(&mut other, &request("/q")).is_some());
        let mut newcomer = server.connect();
        assert!(ask(&mut newcomer, &request("/q")).is_some());
        assert!(
            closed(&mut kept),
            "the quick one, idle the longest, made room"
        );
        assert_eq!(ask(&mut other, &request("/q")).as_deref(), Some("/q first"));

        for _ in 0..2 {
            assert!(ask(&mut newcomer, &request("/q")).is_some());
        }
        std::thread::sleep(Duration::from_millis(10));
        newcomer.write_all(b"GET /q HTTP/1.1\r\n").expect("send");
        std::thread::sleep(Duration::from_millis(30));
        let stopping = std::thread::spawn(move || server.stop());
        std::thread::sleep(Duration::from_millis(50));
        newcomer.write_all(b"Host: t\r\n\r\n").expect("send");
        let head = head_of(&mut newcomer).expect("answered during the stop");
        assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
        assert_eq!(answer_body(&mut newcomer), "quick");
        assert!(closed(&mut newcomer));
        assert!(stopping.join().expect("stop"));
    }
}
