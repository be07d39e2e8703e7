//! The one recording HTTP server of the process-level tests: a capture endpoint on a loopback
//! port that reads each request (head and `Content-Length` body), records it, and answers as
//! its [`Fault`] says, one thread per connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the server answers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Fault {
    /// Answers 200 like PostHog capture.
    Healthy,
    /// Accepts and reads, never answers.
    Blackhole,
    /// Answers 200, one byte a second.
    Slow,
    /// Always 500.
    ServerError,
    /// 429 with `Retry-After: 1` to the first two connections, then 200.
    RateLimited,
    /// Always 503 with `Retry-After: 8`.
    Unavailable,
}

/// PostHog capture's answer to an accepted event.
pub(crate) const OK: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{\"status\":\"Ok\"}";

/// A running recording server.
#[derive(Clone)]
pub(crate) struct Recorder {
    pub(crate) addr: SocketAddr,
    /// When each connection came.
    pub(crate) connections: Arc<Mutex<Vec<Instant>>>,
    /// The body of each request read whole.
    pub(crate) bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    /// `http://ADDR`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests were read whole.
    pub(crate) fn requests(&self) -> usize {
        self.bodies.lock().expect("bodies lock").len()
    }
}

/// Starts a server that answers as `fault` says.
pub(crate) fn recording_server(fault: Fault) -> Recorder {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let recorder = Recorder {
        addr: listener
            .local_addr()
            .expect("bound listener has an address"),
        connections: Arc::default(),
        bodies: Arc::default(),
    };
    let r = recorder.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let n = {
                let mut c = r.connections.lock().expect("connections lock");
                c.push(Instant::now());
                c.len()
            };
            let bodies = Arc::clone(&r.bodies);
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let Some((head_len, request)) = read_request(&mut s) else {
                    return;
                };
                bodies
                    .lock()
                    .expect("bodies lock")
                    .push(request[head_len..].to_vec());
                answer(&mut s, fault, n);
            });
        }
    });
    recorder
}

/// Writes the answer `fault` gives to the `n`th connection.
pub(crate) fn answer(s: &mut impl Write, fault: Fault, n: usize) {
    match fault {
        Fault::Healthy => {
            let _ = s.write_all(OK.as_bytes());
        }
        Fault::Blackhole => std::thread::sleep(Duration::from_secs(30)),
        Fault::Slow => {
            for b in OK.bytes() {
                if s.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Fault::ServerError => {
            let _ = s.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
        Fault::RateLimited if n <= 2 => {
            let _ = s.write_all(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
        Fault::RateLimited => {
            let _ = s.write_all(OK.as_bytes());
        }
        Fault::Unavailable => {
            let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 8\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    }
}

/// Reads one request head and its `Content-Length` body: the head's length (with its blank
/// line) and all the bytes; `None` when the connection ends or fails first.
pub(crate) fn read_request(s: &mut impl Read) -> Option<(usize, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((head_end, buf))
}
