//! `butler-agent sink`: a minimal PostHog-compatible capture endpoint on this machine.
//!
//! For end-to-end tests, for inspecting what the agent sends in an air-gapped site, and for the
//! compose stack. It validates requests by PostHog's rules ([`capture`]), answers as PostHog
//! does, and writes each accepted event as one JSON line to stdout (and appends it to a file
//! when asked). Nothing is forwarded anywhere.
//!
//! Endpoints (one `match` in [`route`]):
//! - `POST /i/v0/e/`, `/e/`, `/capture/`, `/track/` (with or without the trailing slash):
//!   events, bodies up to 2 MB; `/batch/`: up to 20 MB. `200 {"status":"Ok"}` or capture's
//!   error body. `GET` on them is treated like `POST` (capture does the same), `OPTIONS` is 200.
//! - `GET /health`, `/`, `/_readiness`, `/_liveness`: 200, for health checks.
//! - anything else: 404.

pub mod capture;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

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
            let r = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = r {
                tracing::warn!("sink: cannot append to {}: {e}", path.display());
            }
        }
        if let Some(tx) = &self.output.channel {
            let _ = tx.send(event);
        }
    }
}

/// `butler-agent sink`: checks `--out`, listens on `listen`, prints each accepted event on
/// stdout (and appends it to `out`), until SIGINT or SIGTERM.
pub(crate) fn run(listen: SocketAddr, out: Option<PathBuf>) -> Result<(), Failure> {
    if let Some(path) = &out
        && let Err(source) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
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

/// Serves until `shutdown` completes. Connections are served concurrently; a broken
/// connection only ends itself.
pub async fn serve(
    listener: TcpListener,
    output: Output,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    let shared = Arc::new(Shared {
        output,
        lock: Mutex::new(()),
    });
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: log, breathe, go on.
                    tracing::warn!("sink: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(route(req, peer, &shared).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("sink: connection from {peer} ended: {e}");
            }
        });
    }
}

fn json(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

async fn route(req: Request<Incoming>, peer: SocketAddr, shared: &Shared) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_end_matches('/');
    let limit = match path {
        "/i/v0/e" | "/e" | "/capture" | "/track" => capture::EVENT_BODY_LIMIT,
        "/batch" => capture::BATCH_BODY_LIMIT,
        "" | "/health" | "/_readiness" | "/_liveness" => {
            return match *req.method() {
                Method::GET | Method::HEAD => text(StatusCode::OK, "capture"),
                _ => text(StatusCode::METHOD_NOT_ALLOWED, ""),
            };
        }
        _ => return text(StatusCode::NOT_FOUND, ""),
    };
    match *req.method() {
        Method::POST | Method::GET => {}
        Method::OPTIONS => return json(StatusCode::OK, &serde_json::json!({"status": "Ok"})),
        _ => return text(StatusCode::METHOD_NOT_ALLOWED, ""),
    }
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let err = if e.is::<http_body_util::LengthLimitError>() {
                capture::CaptureError::TooBig(format!("more than {limit} bytes"))
            } else {
                capture::CaptureError::RequestDecoding("the body could not be read".into())
            };
            tracing::warn!("sink: refused a request from {peer}: {}", err.message());
            return json(
                StatusCode::from_u16(err.status()).expect("capture statuses are valid"),
                &err.body(),
            );
        }
    };
    match capture::accept(&body, limit) {
        Ok(events) => {
            for a in events {
                tracing::info!(
                    event = a.event.get("event").and_then(serde_json::Value::as_str).unwrap_or(""),
                    uuid = a.event.get("uuid").and_then(serde_json::Value::as_str).unwrap_or(""),
                    distinct_id = %a.distinct_id,
                    "sink: accepted an event from {peer}"
                );
                shared.emit(Value::Object(a.event));
            }
            json(StatusCode::OK, &serde_json::json!({"status": "Ok"}))
        }
        Err(err) => {
            tracing::warn!(
                code = err.code(),
                "sink: refused a request from {peer}: {}",
                err.message()
            );
            json(
                StatusCode::from_u16(err.status()).expect("capture statuses are valid"),
                &err.body(),
            )
        }
    }
}
