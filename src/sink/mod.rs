//! `butler-agent sink`: a minimal PostHog-compatible capture endpoint on this machine.
//!
//! For end-to-end tests, for inspecting what the agent sends in an air-gapped site, and for the
//! compose stack. It validates requests by PostHog's rules ([`capture`]), answers as PostHog
//! does, and writes each accepted event as one JSON line to stdout (and appends it to a file
//! when asked). Nothing is forwarded anywhere.
//!
//! Routes and answers are capture's ([`capture::route`], [`capture::handle`]):
//! - `GET`/`POST` on `/i/v0/e`, `/e`, `/track`, `/engage`, `/capture`, `/batch` (each with or
//!   without one trailing slash): `200 {"status":"Ok"}`, `204` with `beacon=1`, or capture's
//!   refusal as `text/plain` with its message; another method: 405.
//! - `GET /`, `/_readiness`, `/_liveness` (capture's status routes; `/_liveness` is also the
//!   sink's own health check): `200 capture`. `/health` is not capture's: 404.
//! - CORS as capture's layer: origin mirrored, credentials allowed; every `OPTIONS` (on any
//!   path) is a preflight answered 200, empty.
//! - anything else: 404, empty.

pub mod capture;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;
#[cfg(test)]
use tokio::sync::mpsc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::connections::{self, Limits, Progress};
use crate::error::Failure;
use crate::shutdown::{self, Signals};

/// Where accepted events go.
#[derive(Default)]
pub struct Output {
    /// Print each event as one JSON line on stdout.
    pub stdout: bool,
    /// Append each event as one JSON line to this file.
    pub file: Option<PathBuf>,
    /// Hand each event to a channel (unit tests only: not in the shipped binary).
    #[cfg(test)]
    pub(crate) channel: Option<mpsc::UnboundedSender<Value>>,
}

struct Shared {
    output: Output,
    /// Serializes writers so lines never interleave.
    lock: Mutex<()>,
    /// Bytes of request bodies being held, across all connections ([`BODY_BUDGET`]).
    budget: Arc<Semaphore>,
    /// The thread that decodes, checks and prints requests, one at a time ([`Decoder`]).
    decoder: Decoder,
}

impl Shared {
    fn emit(&self, event: Value) {
        let line = serde_json::to_string(&event).expect("serializing a JSON value cannot fail");
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.output.stdout {
            // Never waits: a stdout nobody reads (or a closed one, `| head`) must not stop
            // the sink; see `crate::output`.
            match crate::output::stdout() {
                Some(out) => {
                    out.write_owned(format!("{line}\n").into_bytes());
                }
                None => tracing::warn!("sink: no stdout writer; event not printed"),
            }
        }
        if let Some(path) = &self.output.file {
            let r = crate::files::append_existing(path).and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = r {
                tracing::warn!("sink: cannot append to {}: {e}", path.display());
            }
        }
        #[cfg(test)]
        if let Some(tx) = &self.output.channel {
            let _ = tx.send(event);
        }
    }
}

/// The sink's connection limits: the health server's (see [`crate::connections`]), with
/// room for more clients and larger headers, kept-alive connections renewed every 60 s, and
/// every connection served on the one thread that accepted it.
pub fn limits() -> Limits {
    Limits {
        max_connections: 256,
        max_header_bytes: 16 * 1024,
        connection_deadline: Duration::from_secs(60),
        // Bodies are decoded one at a time anyway; a second serving thread is the health
        // server's.
        second_thread: false,
        ..Limits::default()
    }
}

/// A body that brings no new bytes for this long is answered capture's `408 client stopped
/// sending data` (`rust/capture/src/extractors.rs`, `extract_body_with_timeout`). capture reads
/// this per-chunk timeout from `BODY_CHUNK_READ_TIMEOUT_MS`, unset by default (no timeout,
/// `rust/capture/src/config.rs`); the sink cannot leave it unset, since a body that stops
/// would hold its slot for ever, so it takes 10 s. There is no whole-body deadline, as in
/// capture: a slow client that keeps sending is served. Under slot pressure, a body with no
/// new bytes for a second makes its connection evictable ([`crate::connections::STALLED`]).
pub const BODY_CHUNK_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Request bodies held at once beyond each body's first [`SMALL_BODY`], across all
/// connections: 64 MiB, three bodies at capture's 20 MiB cap. Without it 256 connections could
/// hold 5 GiB of bodies. A body takes from it once its bytes go past [`SMALL_BODY`] (then its
/// whole announced length, or, chunked, what has come), never for what it only announces, so
/// connections that announce 20 MiB and send nothing hold nothing; when it is taken, a body
/// waits up to [`BUDGET_WAIT`] — unread, so TCP slows the client down — then gets `503 service
/// unavailable` (retryable, as capture answers when it cannot take a request). The first
/// [`SMALL_BODY`] of every body is outside it, so a small event never waits behind large ones
/// (256 connections × 64 KiB is 16 MiB at most). Requests are then decoded, checked and
/// printed one at a time ([`Decoder`]), each in at most capture's 100 MiB decoded payload plus
/// where its events sit (8 bytes an event) and one event's tree at a time (an event is at most
/// capture's 1,000,000-byte Kafka limit; see `capture::validation`). So the sink stays under
/// 256 MiB: measured, 107 MiB (release build) for 100 KB of gzip decoding to 100 MiB.
pub const BODY_BUDGET: usize = 64 * 1024 * 1024;
/// How long a body waits for [`BODY_BUDGET`] before it is answered 503.
pub const BUDGET_WAIT: Duration = Duration::from_secs(30);
/// The first bytes of every body, outside [`BODY_BUDGET`].
pub const SMALL_BODY: usize = 64 * 1024;
/// capture answers an oversized body 413 at once and reads the rest of it, up to twice its
/// cap, so the connection stays usable for the next request. The sink does the same
/// ([`drain`]), and keeps every bound of its own: drained bytes are discarded (no memory, no
/// [`BODY_BUDGET`]); a drain is bounded by this, by [`BODY_CHUNK_READ_TIMEOUT`] per chunk, and,
/// since the connection counts as idle once answered, by the idle timeout, and it is evictable
/// under slot pressure like any idle connection. Draining thus costs bandwidth only, at most
/// 40 MiB a connection, the same as a client sending two bodies at the cap. A body announced
/// larger than this is refused at once and its connection closed.
pub const DRAIN_LIMIT: usize = 2 * capture::WIRE_LIMIT;

/// Why a body was not read whole.
struct Unread {
    error: capture::CaptureError,
    /// The rest of the body is still on the connection: it must close after the answer.
    close: bool,
    /// An oversized body to read to its end after the answer ([`drain`]).
    drain: Option<(Incoming, usize)>,
}

/// Reads and discards the rest of an oversized body, `seen` bytes of it already read, up to
/// [`DRAIN_LIMIT`] in all: hyper serves the connection's next request once it has ended. One
/// that goes beyond, or stops for [`BODY_CHUNK_READ_TIMEOUT`], is dropped, and hyper closes the
/// connection.
async fn drain(mut body: Incoming, mut seen: usize) {
    while seen <= DRAIN_LIMIT {
        match tokio::time::timeout(BODY_CHUNK_READ_TIMEOUT, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                seen += frame.data_ref().map_or(0, Bytes::len);
            }
            _ => return,
        }
    }
}

/// Reads a body of at most [`capture::WIRE_LIMIT`] bytes, each chunk within
/// [`BODY_CHUNK_READ_TIMEOUT`], holding its bytes beyond [`SMALL_BODY`] in `budget`. Returns
/// the body and the permit to keep until answered. A body over the limit is drained up to
/// [`DRAIN_LIMIT`] and refused.
async fn read_body(
    mut body: Incoming,
    declared: Option<u64>,
    budget: &Arc<Semaphore>,
    progress: &Progress,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), Unread> {
    use capture::CaptureError;
    let refuse = |error, close| Unread {
        error,
        close,
        drain: None,
    };
    let busy = || {
        CaptureError::ServiceUnavailable("too many request bodies at once, retry later".to_string())
    };
    match declared {
        Some(n) if n > DRAIN_LIMIT as u64 => return Err(refuse(capture::body_too_big(), true)),
        Some(n) if n > capture::WIRE_LIMIT as u64 => {
            return Err(Unread {
                error: capture::body_too_big(),
                close: false,
                drain: Some((body, 0)),
            });
        }
        _ => {}
    }
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut buf = bytes::BytesMut::with_capacity(capacity.min(SMALL_BODY));
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut seen = 0usize;
    /// Says the body is being read while alive: a body that stops arriving makes its
    /// connection evictable; once read, the request is being answered, and is not.
    struct Reading<'a>(&'a Progress);
    impl Drop for Reading<'_> {
        fn drop(&mut self) {
            self.0.reading(false);
        }
    }
    progress.reading(true);
    let _reading = Reading(progress);
    loop {
        let frame = match tokio::time::timeout(BODY_CHUNK_READ_TIMEOUT, body.frame()).await {
            Err(_) => return Err(refuse(CaptureError::BodyReadTimeout, true)),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                let e = CaptureError::RequestDecoding(format!("Error reading request body: {e}"));
                return Err(refuse(e, true));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        progress.moved();
        seen += data.len();
        if seen > capture::WIRE_LIMIT || declared.is_some_and(|n| n > capture::WIRE_LIMIT as u64) {
            // Refused now; the rest is read after the answer, not kept.
            return Err(Unread {
                error: capture::body_too_big(),
                close: false,
                drain: Some((body, seen)),
            });
        }
        let need = seen.saturating_sub(SMALL_BODY);
        let have = held.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
        if need > have {
            // Beyond the first SMALL_BODY: a body with a length takes the rest of it at once
            // (bodies taking the budget piece by piece could each hold a part and all wait for
            // more); a chunked one takes what has come.
            let rest = declared.map_or(need, |n| (n as usize).saturating_sub(SMALL_BODY));
            let more = u32::try_from(rest.max(need) - have).unwrap_or(u32::MAX);
            let permit = match budget.clone().try_acquire_many_owned(more) {
                Ok(permit) => permit,
                Err(_) => {
                    let wait = budget.clone().acquire_many_owned(more);
                    match tokio::time::timeout(BUDGET_WAIT, wait).await {
                        Ok(Ok(permit)) => permit,
                        _ => return Err(refuse(busy(), true)),
                    }
                }
            };
            match &mut held {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
        }
        buf.extend_from_slice(&data);
    }
    Ok((buf.freeze(), held))
}

/// One thread that decodes, checks and prints requests, one at a time: a decoded payload and
/// its events are the sink's largest allocations, so the total stays one request's worth (see
/// [`BODY_BUDGET`]); and the runtime's threads, which read bodies and answer probes, never wait
/// for a decode. (One thread rather than the blocking pool: each pool thread keeps its own
/// malloc arena, and 16 concurrent 16 MiB bodies peaked at 216 MiB there against 140 MiB on
/// one thread.)
struct Decoder {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl Decoder {
    fn start() -> std::io::Result<Decoder> {
        let (jobs, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new()
            .name("sink-decode".into())
            .spawn(move || {
                // Ends when the sink is dropped (every sender gone).
                for job in rx {
                    job();
                }
            })?;
        Ok(Decoder { jobs })
    }

    /// Runs `work` on the decoding thread; `None` if that thread is gone.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            let _ = tx.send(work());
        });
        self.jobs.send(job).ok()?;
        rx.await.ok()
    }
}

/// `butler-agent sink`: checks `--out`, listens on `listen`, prints each accepted event on
/// stdout (and appends it to `out`), until SIGINT or SIGTERM.
pub(crate) fn run(listen: SocketAddr, out: Option<PathBuf>) -> Result<(), Failure> {
    // Opened as the agent's own files are (see [`crate::files::open_append`]): 0600, never
    // through a symbolic link, only a regular file or a character device.
    if let Some(path) = &out
        && let Err(source) = crate::files::append_existing(path)
    {
        return Err(Failure::SinkOut {
            path: path.clone(),
            source,
        });
    }
    shutdown::block_on(async {
        let mut signals = Signals::install()?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| Failure::SinkBind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().unwrap_or(listen);
        tracing::info!("sink: listening on http://{addr} (POST /i/v0/e/, GET /_liveness)");
        let output = Output {
            stdout: true,
            file: out,
            #[cfg(test)]
            channel: None,
        };
        let stop = async move {
            let sig = signals.recv().await;
            tracing::info!("sink: {sig} received: stopping");
        };
        serve(listener, output, stop).await.map_err(Failure::Sink)
    })
}

/// Serves until `shutdown` completes, under [`limits`]. Connections are served
/// concurrently; a broken connection only ends itself.
pub async fn serve(
    listener: TcpListener,
    output: Output,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        output,
        lock: Mutex::new(()),
        budget: Arc::new(Semaphore::new(BODY_BUDGET)),
        decoder: Decoder::start()?,
    });
    connections::serve(
        listener,
        limits(),
        "sink",
        None,
        shutdown,
        move |req, peer, progress| {
            let shared = Arc::clone(&shared);
            // Boxed: the connection polls its answer as an `Unpin` future.
            Box::pin(async move { route(req, peer, progress, shared).await })
        },
    )
    .await
}

/// One answer: status, content type, body, and capture's extra headers.
struct Answer {
    status: u16,
    content_type: Option<&'static str>,
    body: Bytes,
    allow: Option<&'static str>,
    /// Part of the request is still unread: `Connection: close`.
    close: bool,
}

impl Answer {
    fn new(status: u16, content_type: Option<&'static str>, body: impl Into<Bytes>) -> Self {
        Answer {
            status,
            content_type,
            body: body.into(),
            allow: None,
            close: false,
        }
    }

    fn refusal(err: &capture::CaptureError) -> Self {
        Answer::new(err.status(), Some(capture::TEXT), err.to_string())
    }
}

/// The CORS headers of capture's `CorsLayer` (`rust/capture/src/router.rs`, tower-http):
/// origin mirrored when sent, credentials allowed, `Vary`; on a preflight — every `OPTIONS`,
/// on any path, which the layer answers itself, 200 and empty — also the methods
/// `GET,POST,OPTIONS` and the requested headers mirrored.
fn cors(req: &hyper::HeaderMap, preflight: bool, r: &mut Response<Full<Bytes>>) {
    use hyper::header::{self, HeaderValue};
    let h = r.headers_mut();
    if let Some(origin) = req.get(header::ORIGIN) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    h.append(
        header::VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
    if preflight {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET,POST,OPTIONS"),
        );
        if let Some(v) = req.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
    }
}

/// A header as capture reads it: absent or not visible ASCII counts as absent.
fn header(req: &hyper::HeaderMap, name: hyper::header::HeaderName) -> Option<&str> {
    req.get(name).and_then(|v| v.to_str().ok())
}

/// Answers one request as capture does ([`capture::route`], then [`capture::handle`]).
async fn route(
    req: Request<Incoming>,
    peer: SocketAddr,
    progress: Progress,
    shared: Arc<Shared>,
) -> Response<Full<Bytes>> {
    let headers = req.headers().clone();
    let method = req.method().clone();
    let preflight = capture::route(method.as_str(), req.uri().path()) == capture::Route::Preflight;
    let answer = if preflight {
        Answer::new(200, None, Bytes::new())
    } else {
        answer(req, peer, progress, shared).await
    };
    let head = method == Method::HEAD;
    let mut r = Response::new(Full::new(if head {
        Bytes::new()
    } else {
        answer.body.clone()
    }));
    *r.status_mut() = StatusCode::from_u16(answer.status).expect("capture statuses are valid");
    if let Some(ct) = answer.content_type {
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(ct),
        );
    }
    if head {
        // HEAD is GET without the body: the length stays that of GET's answer.
        r.headers_mut()
            .insert(hyper::header::CONTENT_LENGTH, answer.body.len().into());
    }
    if answer.close {
        r.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    if let Some(allow) = answer.allow {
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static(allow),
        );
    }
    cors(&headers, preflight, &mut r);
    r
}

async fn answer(
    req: Request<Incoming>,
    peer: SocketAddr,
    progress: Progress,
    shared: Arc<Shared>,
) -> Answer {
    let path = req.uri().path().to_string();
    let path = match capture::route(req.method().as_str(), &path) {
        capture::Route::Capture(p) => p,
        capture::Route::Preflight => return Answer::new(200, None, Bytes::new()),
        capture::Route::Status => return Answer::new(200, Some(capture::TEXT), "capture"),
        capture::Route::MethodNotAllowed(allow) => {
            return Answer {
                allow: Some(allow),
                ..Answer::new(405, None, Bytes::new())
            };
        }
        capture::Route::NotFound => return Answer::new(404, None, Bytes::new()),
    };
    let query = req.uri().query().map(str::to_string);
    // axum parses the query string before capture's handler reads the body.
    if let Err(err) = capture::check_query(query.as_deref()) {
        return refuse(err, peer);
    }
    let header = |name| header(req.headers(), name).map(str::to_string);
    let content_type = header(hyper::header::CONTENT_TYPE);
    let content_encoding = header(hyper::header::CONTENT_ENCODING);
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let read = read_body(req.into_body(), declared, &shared.budget, &progress).await;
    let (body, held) = match read {
        Ok(read) => read,
        Err(unread) => {
            if let Some((body, seen)) = unread.drain {
                tokio::spawn(drain(body, seen));
            }
            return Answer {
                close: unread.close,
                ..refuse(unread.error, peer)
            };
        }
    };
    let work = Arc::clone(&shared);
    let decoded = shared.decoder.run(move || {
        let request = capture::Request {
            path,
            query: query.as_deref(),
            content_type: content_type.as_deref(),
            content_encoding: content_encoding.as_deref(),
            body: &body,
        };
        let handled = capture::handle(&request);
        drop((body, held));
        handled.map(|handled| {
            if let Some(ms) = handled.sent_at_ms {
                tracing::debug!(sent_at_ms = ms, "sink: the sender's clock at sending");
            }
            for a in handled.events() {
                tracing::info!(
                    event = a.event.get("event").and_then(serde_json::Value::as_str).unwrap_or(""),
                    uuid = a.event.get("uuid").and_then(serde_json::Value::as_str).unwrap_or(""),
                    distinct_id = %a.distinct_id,
                    "sink: accepted an event from {peer}"
                );
                work.emit(Value::Object(a.event));
            }
            handled.beacon
        })
    });
    match decoded.await {
        Some(Ok(true)) => Answer::new(204, None, Bytes::new()),
        Some(Ok(false)) => Answer::new(200, Some("application/json"), capture::OK_BODY),
        Some(Err(err)) => refuse(err, peer),
        None => refuse(
            capture::CaptureError::ServiceUnavailable("the sink is stopping".into()),
            peer,
        ),
    }
}

/// capture's refusal, logged with its reason.
fn refuse(err: capture::CaptureError, peer: SocketAddr) -> Answer {
    tracing::warn!(
        reason = err.tag(),
        "sink: refused a request from {peer}: {} {err}",
        err.status()
    );
    Answer::refusal(&err)
}
