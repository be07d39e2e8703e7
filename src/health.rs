//! The health server: what Docker's HEALTHCHECK, compose and Kubernetes probes ask.
//!
//! # Endpoints
//! - `GET`/`HEAD /health`: 200 `{"statusCode":200,"status":"ok"}`, byte for byte what Butler's
//!   fastify-healthcheck answers, so checks written for Butler keep passing.
//! - `/livez`: 200 while the process serves requests (Kubernetes liveness).
//! - `/readyz`: 503 until the [`Readiness`] latch is released (config loaded, host facts and
//!   instance ID known), then 200 (Kubernetes readiness and startup).
//! - `?verbose` on `/livez` and `/readyz`: one `[+]name ok` / `[-]name failed: why` line per check,
//!   then `livez check passed` (or `failed`), as kube-apiserver prints them. A failing check
//!   always prints the list, so `kubectl describe` shows why.
//! - Any other path: 404. Any other method on a known path: 405 with `Allow: GET, HEAD`.
//!
//! Telemetry never feeds into these answers: a PostHog outage must not restart the container.
//!
//! # Limits
//! A probe must get its answer even while a slow or hostile client is connected, so each
//! connection runs in its own task, serves exactly one request (probes do not reuse
//! connections), must send its headers within [`HEADER_READ_TIMEOUT`] and is dropped after
//! [`CONNECTION_DEADLINE`]; headers above [`MAX_HEADER_BYTES`] get 431; at most
//! [`MAX_CONNECTIONS`] are open at once. When all are taken, the oldest connection that has not
//! yet sent a complete request is closed to make room for the new one (nginx reuses idle
//! connections the same way), so a flood of idle or dribbling connections cannot lock probes
//! out; a request being answered is never cut. Only when every open connection is being
//! answered is a further one closed at accept. Memory is therefore bounded by about
//! `MAX_CONNECTIONS × 16 KiB`.
//!
//! [`serve`] takes the listener and the shutdown trigger as parameters (as mini-redis does), so
//! tests bind port 0 and stop the server themselves. Routing ([`respond`]) is pure.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};

/// Butler's `/health` body (fastify-healthcheck's default answer).
pub const HEALTH_BODY: &str = r#"{"statusCode":200,"status":"ok"}"#;

/// Kubelet, Docker and a few humans probe at once; 64 leaves ample room and bounds memory.
pub const MAX_CONNECTIONS: usize = 64;
/// Kubelet's default probe timeout is 1 s and Butler's probe allows 2 s; a client that has not
/// sent its headers in 5 s is not a probe and loses its slot.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on one connection's life, whatever the client does.
pub(crate) const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Probes send a few hundred bytes of headers; more than 8 KiB is refused with 431.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// The kernel's queue of connections not yet accepted. The usual 128 overflows during a burst
/// of a few hundred connections, and a probe whose SYN is dropped then waits a full second for
/// the retransmission; the kernel caps this at `net.core.somaxconn`.
pub(crate) const LISTEN_BACKLOG: u32 = 1024;
/// hyper's read buffer per connection (its minimum is 8 KiB; headers must fit with room).
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// The readiness latch: released once, when the agent knows what it needs to answer `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks start-up complete; `/readyz` answers 200 from now on.
    pub fn release(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The server's limits; [`Limits::default`] holds the production values, tests shrink them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub connection_deadline: Duration,
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            connection_deadline: CONNECTION_DEADLINE,
            max_header_bytes: MAX_HEADER_BYTES,
        }
    }
}

/// Binds the health listener with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as `std` does, so a
/// restart does not wait for old connections in TIME_WAIT).
pub(crate) fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves health requests on `listener` until `shutdown` completes, then stops accepting, lets
/// requests in flight finish (idle connections are closed at once) and returns.
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut waiting = Waiting::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning on a failing accept.
                    tracing::warn!("health server: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) if waiting.evict_oldest() => {
                tracing::debug!(
                    "health server: {max} connections open, closed the oldest idle one"
                );
                // The evicted task frees its slot as soon as it runs; a slot still taken after
                // this wait belongs to a task that has just started answering.
                tokio::time::timeout(EVICTION_WAIT, slots.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(slot) = slot else {
            tracing::debug!("health server: {max} connections open, closing the one from {peer}");
            drop(stream);
            continue;
        };
        let idle = waiting.push(max);
        let readiness = readiness.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let answering = Arc::clone(&idle);
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                answering.answering.store(true, Ordering::Release);
                let answer = respond(
                    req.method(),
                    req.uri().path(),
                    req.uri().query(),
                    readiness.is_ready(),
                );
                async move { Ok::<_, Infallible>(answer) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(READ_BUFFER_BYTES.max(limits.max_header_bytes + 1024))
                .max_header_size(limits.max_header_bytes)
                // A client may shut its sending side once the request is out (HTTP/1.0
                // clients and `nc -N` do); without this hyper can see the EOF first and
                // close without answering.
                .half_close(true)
                .keep_alive(false);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let work = async {
                tokio::select! {
                    r = conn.as_mut() => r,
                    _ = idle.evicted() => Ok(()),
                    _ = async { stop.wait_for(|stopped| *stopped).await.map(|_| ()) } => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                }
            };
            match tokio::time::timeout(limits.connection_deadline, work).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("health server: connection from {peer}: {e}"),
                Err(_) => tracing::debug!("health server: connection from {peer} timed out"),
            }
            drop(slot);
        });
    }
    drop(listener);
    // Receivers may all be gone already (no connection open); nothing to tell then.
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends, so holding all slots means all have ended.
    // Each connection is bounded by its deadline, so this wait is too.
    let _all = slots
        .acquire_many(u32::try_from(max).unwrap_or(u32::MAX))
        .await;
}

/// How long the accept loop waits for an evicted connection to give its slot back.
const EVICTION_WAIT: Duration = Duration::from_millis(100);

/// One connection's state as the accept loop sees it.
#[derive(Debug, Default)]
struct Connection {
    /// Set once a complete request head has arrived: from then on it is never evicted.
    answering: AtomicBool,
    evict: Notify,
}

impl Connection {
    /// Completes when the accept loop evicts this connection before its request came.
    async fn evicted(&self) {
        loop {
            self.evict.notified().await;
            if !self.answering.load(Ordering::Acquire) {
                return;
            }
        }
    }
}

/// Open connections in accept order, for eviction. Owned by the accept loop alone; a
/// connection that has ended leaves a dead entry, pruned as the queue grows.
#[derive(Debug, Default)]
struct Waiting(VecDeque<Weak<Connection>>);

impl Waiting {
    /// Registers a new connection; at most `max` are alive, so pruning keeps this bounded.
    fn push(&mut self, max: usize) -> Arc<Connection> {
        if self.0.len() >= 2 * max {
            self.0.retain(|c| c.strong_count() > 0);
        }
        let c = Arc::new(Connection::default());
        self.0.push_back(Arc::downgrade(&c));
        c
    }

    /// Tells the oldest connection still waiting for its request to close; false if none is.
    fn evict_oldest(&mut self) -> bool {
        while let Some(c) = self.0.pop_front() {
            if let Some(c) = c.upgrade() {
                if !c.answering.load(Ordering::Acquire) {
                    // notify_one keeps the wake-up even if the task has not been polled yet.
                    c.evict.notify_one();
                    return true;
                }
            }
        }
        false
    }
}

/// What one check reports for the verbose listing.
struct Check {
    name: &'static str,
    failure: Option<&'static str>,
}

/// The answer to one request. Pure: method, path, query and the latch in, response out.
pub(crate) fn respond(
    method: &Method,
    path: &str,
    query: Option<&str>,
    ready: bool,
) -> Response<Full<Bytes>> {
    let endpoint = match path {
        "/health" => Endpoint::Health,
        "/livez" => Endpoint::Livez,
        "/readyz" => Endpoint::Readyz,
        _ => return text(StatusCode::NOT_FOUND, format!("not found: {path}\n")),
    };
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed; use GET or HEAD\n"),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let checks = match endpoint {
        Endpoint::Health => {
            let mut r = Response::new(Full::new(Bytes::from_static(HEALTH_BODY.as_bytes())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            no_store(&mut r);
            return r;
        }
        Endpoint::Livez => vec![Check {
            name: "ping",
            failure: None,
        }],
        Endpoint::Readyz => vec![
            Check {
                name: "ping",
                failure: None,
            },
            Check {
                name: "config",
                failure: None,
            },
            Check {
                name: "startup",
                failure: (!ready).then_some("host facts and instance ID not yet known"),
            },
        ],
    };
    let name = if endpoint == Endpoint::Livez {
        "livez"
    } else {
        "readyz"
    };
    let passed = checks.iter().all(|c| c.failure.is_none());
    let status = if passed {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if passed && !wants_verbose(query) {
        return text(status, "ok".to_string());
    }
    let mut body = String::new();
    for c in &checks {
        match c.failure {
            None => body.push_str(&format!("[+]{} ok\n", c.name)),
            Some(why) => body.push_str(&format!("[-]{} failed: {why}\n", c.name)),
        }
    }
    let verdict = if passed { "passed" } else { "failed" };
    body.push_str(&format!("{name} check {verdict}\n"));
    text(status, body)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Health,
    Livez,
    Readyz,
}

/// `?verbose`, `?verbose=1`, `?a=b&verbose`: any `verbose` key counts, as in kube-apiserver.
fn wants_verbose(query: Option<&str>) -> bool {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .any(|pair| pair.split('=').next() == Some("verbose"))
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    no_store(&mut r);
    r
}

/// A cached health answer is a wrong health answer.
fn no_store(r: &mut Response<Full<Bytes>>) {
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

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

    #[test]
    fn health_is_butlers_body() {
        let r = respond(&Method::GET, "/health", None, false);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json; charset=utf-8");
        assert_eq!(body(r), HEALTH_BODY);
    }

    #[test]
    fn readyz_follows_the_latch() {
        let before = respond(&Method::GET, "/readyz", None, false);
        assert_eq!(before.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body(before),
            "[+]ping ok\n[+]config ok\n[-]startup failed: host facts and instance ID not yet known\nreadyz check failed\n"
        );
        let after = respond(&Method::GET, "/readyz", None, true);
        assert_eq!(after.status(), StatusCode::OK);
        assert_eq!(body(after), "ok");
    }

    #[test]
    fn verbose_lists_checks() {
        let r = respond(&Method::GET, "/livez", Some("verbose"), false);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r), "[+]ping ok\nlivez check passed\n");
        let r = respond(&Method::GET, "/readyz", Some("x=1&verbose=true"), true);
        assert_eq!(
            body(r),
            "[+]ping ok\n[+]config ok\n[+]startup ok\nreadyz check passed\n"
        );
        assert!(!wants_verbose(Some("verbosex")));
        assert!(!wants_verbose(None));
    }

    #[test]
    fn unknown_paths_and_methods() {
        assert_eq!(
            respond(&Method::GET, "/", None, true).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            respond(&Method::POST, "/nothing", None, true).status(),
            StatusCode::NOT_FOUND
        );
        let r = respond(&Method::POST, "/health", None, true);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
        assert_eq!(
            respond(&Method::HEAD, "/livez", None, false).status(),
            StatusCode::OK
        );
    }
}
