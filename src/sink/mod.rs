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
//! - `GET /`, `/_readiness`, `/_liveness` (capture's) and `/health` (the sink's own): `200
//!   capture`.
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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::connections::{self, Limits};
use crate::error::Failure;
use crate::shutdown::{self, Signals};

/// Where accepted events go.
#[derive(Default)]
pub struct Output {
    /// Print each event as one JSON line on stdout.
    pub stdout: bool,
    /// Append each event as one JSON line to this file.
    pub file: Option<PathBuf>,
    /// Hand each event to a channel (tests).
    pub channel: Option<mpsc::UnboundedSender<Value>>,
}

struct Shared {
    output: Output,
    /// Serializes writers so lines never interleave.
    lock: Mutex<()>,
    /// Bytes of request bodies being held, across all connections ([`BODY_BUDGET`]).
    budget: Arc<Semaphore>,
    /// Held while a request is decoded: one at a time.
    decoding: tokio::sync::Mutex<()>,
}

impl Shared {
    fn emit(&self, event: Value) {
        let line = serde_json::to_string(&event).expect("serializing a JSON value cannot fail");
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.output.stdout {
            let mut out = std::io::stdout().lock();
            // A closed stdout (e.g. `| head`) must not stop the sink.
            let _ = writeln!(out, "{line}").and_then(|_| out.flush());
        }
        if let Some(path) = &self.output.file {
            let r = crate::files::append_existing(path).and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = r {
                tracing::warn!("sink: cannot append to {}: {e}", path.display());
            }
        }
        if let Some(tx) = &self.output.channel {
            let _ = tx.send(event);
        }
    }
}

/// The sink's connection limits: the health server's (see [`crate::connections`]), with
/// room for more clients, larger headers and the time a 100 MiB batch may take.
pub fn limits() -> Limits {
    Limits {
        max_connections: 256,
        max_header_bytes: 16 * 1024,
        connection_deadline: Duration::from_secs(60),
        ..Limits::default()
    }
}

/// The whole body must arrive within this time once it may be read. capture times out a body
/// that stops arriving and answers `408 client stopped sending data`
/// (`rust/capture/src/extractors.rs`, `BodyReadTimeout`); the sink bounds the whole body, so a
/// client dribbling a byte every few seconds loses its slot too. 20 MiB in 10 s is 16 Mbit/s,
/// far below loopback, a LAN or a compose network; telemetry bodies are a few KiB.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Request bodies held at once, across all connections: 64 MiB, three bodies at capture's
/// 20 MiB cap. Without it 256 connections could hold 5 GiB of bodies. A request reserves its
/// `Content-Length` before its body is read (a chunked one reserves each chunk as it comes)
/// and keeps it until answered; while the budget is taken it waits up to
/// [`BUDGET_WAIT`] — unread, so TCP slows the client down — then gets `503 service
/// unavailable` (retryable, as capture answers when it cannot take a request). Decoding (gzip
/// up to 100 MiB, then the JSON) happens one request at a time, so the sink's memory stays
/// about this budget plus one decoded request. A sink that is not overloaded answers exactly
/// as capture does.
pub const BODY_BUDGET: usize = 64 * 1024 * 1024;
/// How long a request waits for [`BODY_BUDGET`] before it is answered 503.
pub const BUDGET_WAIT: Duration = Duration::from_secs(30);

/// Reads a body of at most [`capture::WIRE_LIMIT`] bytes within [`BODY_READ_TIMEOUT`],
/// holding its bytes in `budget`. Returns the body and the permit to keep until answered.
async fn read_body(
    mut body: Incoming,
    declared: Option<u64>,
    budget: &Arc<Semaphore>,
) -> Result<(Bytes, OwnedSemaphorePermit), capture::CaptureError> {
    use capture::CaptureError;
    let busy = || {
        CaptureError::ServiceUnavailable("too many request bodies at once, retry later".to_string())
    };
    // `declared` is at most the wire limit (checked by the caller), which fits in u32.
    let reserve = declared.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
    let mut held = tokio::time::timeout(BUDGET_WAIT, budget.clone().acquire_many_owned(reserve))
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    let deadline = tokio::time::Instant::now() + BODY_READ_TIMEOUT;
    let mut buf = bytes::BytesMut::with_capacity(reserve as usize);
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(CaptureError::BodyReadTimeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(CaptureError::RequestDecoding(format!(
                    "Error reading request body: {e}"
                )));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if buf.len() + data.len() > capture::WIRE_LIMIT {
            return Err(capture::body_too_big());
        }
        let need = buf.len() + data.len();
        if need > held.num_permits() {
            // A chunked body: reserve what has come beyond what is held.
            let more = u32::try_from(need - held.num_permits()).unwrap_or(u32::MAX);
            let wait = tokio::time::timeout_at(deadline, budget.clone().acquire_many_owned(more));
            held.merge(wait.await.map_err(|_| busy())?.map_err(|_| busy())?);
        }
        buf.extend_from_slice(&data);
    }
    Ok((buf.freeze(), held))
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
        tracing::info!("sink: listening on http://{addr} (POST /i/v0/e/, GET /health)");
        let output = Output {
            stdout: true,
            file: out,
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
        decoding: tokio::sync::Mutex::new(()),
    });
    connections::serve(listener, limits(), "sink", shutdown, move |req, peer| {
        let shared = Arc::clone(&shared);
        async move { route(req, peer, &shared).await }
    })
    .await;
    Ok(())
}

/// One answer: status, content type, body, and capture's extra headers.
struct Answer {
    status: u16,
    content_type: Option<&'static str>,
    body: Bytes,
    allow: Option<&'static str>,
}

impl Answer {
    fn new(status: u16, content_type: Option<&'static str>, body: impl Into<Bytes>) -> Self {
        Answer {
            status,
            content_type,
            body: body.into(),
            allow: None,
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
async fn route(req: Request<Incoming>, peer: SocketAddr, shared: &Shared) -> Response<Full<Bytes>> {
    let headers = req.headers().clone();
    let method = req.method().clone();
    let preflight = capture::route(method.as_str(), req.uri().path()) == capture::Route::Preflight;
    let answer = if preflight {
        Answer::new(200, None, Bytes::new())
    } else {
        answer(req, peer, shared).await
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
    if let Some(allow) = answer.allow {
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static(allow),
        );
    }
    cors(&headers, preflight, &mut r);
    r
}

async fn answer(req: Request<Incoming>, peer: SocketAddr, shared: &Shared) -> Answer {
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
        capture::Route::NotFound if path == "/health" => {
            // The sink's own health check (not a capture route), for compose and tests.
            return Answer::new(200, Some(capture::TEXT), "capture");
        }
        capture::Route::NotFound => return Answer::new(404, None, Bytes::new()),
    };
    let query = req.uri().query().map(str::to_string);
    let refuse = |err: capture::CaptureError| {
        tracing::warn!(
            reason = err.tag(),
            "sink: refused a request from {peer}: {} {err}",
            err.status()
        );
        Answer::refusal(&err)
    };
    // axum parses the query string before capture's handler reads the body.
    if let Err(err) = capture::check_query(query.as_deref()) {
        return refuse(err);
    }
    let headers = req.headers().clone();
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > capture::WIRE_LIMIT as u64) {
        // capture would read up to the limit and then refuse; the answer is the same.
        return refuse(capture::body_too_big());
    }
    let (body, _held) = match read_body(req.into_body(), declared, &shared.budget).await {
        Ok(read) => read,
        Err(err) => return refuse(err),
    };
    // One request decodes at a time: its decoded payload and JSON trees are the sink's
    // largest allocations, so the total stays one request's worth (see [`BODY_BUDGET`]). It
    // decodes on the runtime's thread: on the blocking pool each thread keeps its own malloc
    // arena, and 16 concurrent 16 MiB bodies peaked at 216 MiB there against 140 MiB here.
    let _decoding = shared.decoding.lock().await;
    let request = capture::Request {
        path,
        query: query.as_deref(),
        content_type: header(&headers, hyper::header::CONTENT_TYPE),
        content_encoding: header(&headers, hyper::header::CONTENT_ENCODING),
        body: &body,
    };
    match capture::handle(&request) {
        Ok(handled) => {
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
                shared.emit(Value::Object(a.event));
            }
            if handled.beacon {
                Answer::new(204, None, Bytes::new())
            } else {
                Answer::new(200, Some("application/json"), capture::OK_BODY)
            }
        }
        Err(err) => refuse(err),
    }
}
