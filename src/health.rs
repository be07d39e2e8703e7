//! The health server: what Docker's HEALTHCHECK, compose and Kubernetes probes ask.
//!
//! # Endpoints
//! - `GET`/`HEAD /health`: 200 `{"statusCode":200,"status":"ok"}`, byte for byte what Butler's
//!   fastify-healthcheck answers, so checks written for Butler keep passing.
//! - `/livez`: 200 while the process serves requests (Kubernetes liveness).
//! - `/readyz`: 200 while every [`Readiness`] check passes (the config file loads, host facts
//!   and instance ID are known, the listener accepts, and with `requireButler` Butler answers:
//!   see [`crate::butler::ready`]), else 503 (Kubernetes readiness and startup).
//! - `?verbose` on `/livez` and `/readyz`: one `[+]name ok` / `[-]name failed: why` line per check,
//!   then `livez check passed` (or `failed`), as kube-apiserver prints them. A failing check
//!   always prints the list, so `kubectl describe` shows why.
//! - Any other path: 404. Any other method on a known path: 405 with `Allow: GET, HEAD`.
//!
//! Telemetry never feeds into these answers: a PostHog outage must not restart the container.
//! Butler feeds only `/readyz`, never `/livez` or `/health`: a Butler outage must not either.
//!
//! # Limits
//! A probe must get its answer even while a slow or hostile client is connected: the
//! connection budget of [`crate::connections`] (shared with the sink) applies, with keep-alive
//! for monitors and scrapers that reuse connections, fair per-source eviction when all
//! [`MAX_CONNECTIONS`] slots are taken, a header timeout, 431 above [`MAX_HEADER_BYTES`], an
//! idle timeout, a request cap and a deadline per connection. Memory is bounded by about
//! `MAX_CONNECTIONS × 16 KiB`.
//!
//! [`serve`] takes the listener and the shutdown trigger as parameters (as mini-redis does), so
//! tests bind port 0 and stop the server themselves. Routing ([`respond`]) is pure.

use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use tokio::net::TcpListener;

use crate::connections;
pub(crate) use crate::connections::Limits;
pub use crate::connections::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_HEADER_BYTES};

/// Butler's `/health` body (fastify-healthcheck's default answer).
pub const HEALTH_BODY: &str = r#"{"statusCode":200,"status":"ok"}"#;

/// `/health` as a kept-alive connection answers it without hyper
/// ([`crate::connections::Quick`]): the bytes [`respond`] gives (a test compares them).
const QUICK: connections::Quick = connections::Quick {
    path: "/health",
    headers: "content-type: application/json; charset=utf-8\r\ncache-control: no-store\r\n",
    body: HEALTH_BODY,
};

/// The kernel's queue of connections not yet accepted. The usual 128 overflows during a burst
/// of a few hundred connections, and a probe whose SYN is dropped then waits a full second for
/// the retransmission; the kernel caps this at `net.core.somaxconn`.
pub(crate) const LISTEN_BACKLOG: u32 = 1024;

/// What `/readyz` checks, shared by the agent, the scheduler and the health server. Each flag
/// is set where its fact becomes known, and can turn back: the config check fails while the
/// config file no longer loads (the scheduler keeps the last good config meanwhile), the
/// listener check once the server stops accepting.
#[derive(Debug, Clone, Default)]
pub(crate) struct Readiness(Arc<Flags>);

#[derive(Debug, Default)]
struct Flags {
    started: AtomicBool,
    config_invalid: AtomicBool,
    listening: AtomicBool,
    butler: Mutex<ButlerCheck>,
}

/// The `butler` check (with `requireButler`): the latest answer of Butler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum ButlerCheck {
    /// Not required: not listed.
    #[default]
    Off,
    /// Required, not asked yet.
    Pending,
    Ok,
    /// Why Butler did not answer (names the endpoint and the setting, never the URL).
    Failed(Arc<str>),
}

/// One reading of the [`Readiness`] flags, for the pure [`respond`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    /// Host facts and the instance ID are known.
    pub(crate) started: bool,
    /// The config file loads (true until a re-read fails).
    pub(crate) config_valid: bool,
    /// The health listener accepts connections.
    pub(crate) listening: bool,
    pub(crate) butler: ButlerCheck,
}

impl Readiness {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Marks start-up complete: host facts and the instance ID are known.
    pub(crate) fn release(&self) {
        self.0.started.store(true, Ordering::Release);
    }

    /// Records whether the config file loaded on its latest read.
    pub(crate) fn set_config_valid(&self, valid: bool) {
        self.0.config_invalid.store(!valid, Ordering::Release);
    }

    fn set_listening(&self, listening: bool) {
        self.0.listening.store(listening, Ordering::Release);
    }

    /// Records the `butler` check's latest result ([`ButlerCheck::Pending`] turns it on).
    pub(crate) fn set_butler(&self, check: ButlerCheck) {
        *self.0.butler.lock().unwrap_or_else(|p| p.into_inner()) = check;
    }

    pub(crate) fn status(&self) -> Status {
        Status {
            started: self.0.started.load(Ordering::Acquire),
            config_valid: !self.0.config_invalid.load(Ordering::Acquire),
            listening: self.0.listening.load(Ordering::Acquire),
            butler: self
                .0
                .butler
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
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

/// Serves health requests on `listener` until `shutdown` completes, then stops accepting,
/// closes idle connections at once, lets answers in flight finish and returns. `/readyz` fails
/// its listener check from the moment `shutdown` completes. Fails only at the start, if the
/// listener cannot be taken over.
pub(crate) async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    readiness.set_listening(true);
    let closing = readiness.clone();
    let shutdown = async move {
        shutdown.await;
        closing.set_listening(false);
    };
    connections::serve(
        listener,
        limits,
        "health server",
        Some(QUICK),
        shutdown,
        move |req, _peer, _progress| {
            let answer = respond(req.method(), req.uri().path(), req.uri().query(), || {
                readiness.status()
            });
            std::future::ready(answer)
        },
    )
    .await
}

/// [`serve`] on a thread and runtime of its own ([`crate::runtime::on_own_thread`]): takes a
/// listener bound on the caller's runtime and returns a future that completes, `true`, when
/// the server has stopped (`false` if it ended abnormally).
pub(crate) fn serve_on_own_thread(
    listener: TcpListener,
    readiness: Readiness,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<impl Future<Output = bool> + Send + 'static> {
    // Moved between runtimes as the plain socket it is.
    let listener = listener.into_std()?;
    crate::runtime::on_own_thread("health", move || async move {
        let served = match TcpListener::from_std(listener) {
            Ok(listener) => serve(listener, readiness, limits, shutdown).await,
            Err(e) => Err(e),
        };
        if let Err(e) = served {
            tracing::error!("health server: cannot take its listener: {e}");
        }
    })
    .map(|(_, ended)| ended)
    .map_err(std::io::Error::other)
}

/// What one check reports for the verbose listing.
struct Check {
    name: &'static str,
    failure: Option<Cow<'static, str>>,
}

/// The answer to one request. Pure: method, path, query and the readiness flags in, response
/// out. The flags are read only for `/readyz` (they take a lock; `/health` and `/livez` never
/// depend on them).
pub(crate) fn respond(
    method: &Method,
    path: &str,
    query: Option<&str>,
    status: impl FnOnce() -> Status,
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
            // A copy of headers made once: cheaper than hashing them in for every probe.
            static HEADERS: LazyLock<HeaderMap> = LazyLock::new(|| {
                let mut r = Response::new(());
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=utf-8"),
                );
                no_store(&mut r);
                r.into_parts().0.headers
            });
            *r.headers_mut() = HEADERS.clone();
            return r;
        }
        Endpoint::Livez => vec![Check {
            name: "ping",
            failure: None,
        }],
        Endpoint::Readyz => {
            let status = status();
            let mut checks = vec![
                Check {
                    name: "ping",
                    failure: None,
                },
                Check {
                    name: "config",
                    failure: (!status.config_valid).then_some(Cow::Borrowed(
                        "the config file no longer loads (the log says why); the last good \
                         config stays in use",
                    )),
                },
                Check {
                    name: "startup",
                    failure: (!status.started)
                        .then_some(Cow::Borrowed("host facts and instance ID not yet known")),
                },
                Check {
                    name: "listener",
                    failure: (!status.listening).then_some(Cow::Borrowed(
                        "the health listener no longer accepts connections: stopping",
                    )),
                },
            ];
            let butler = match &status.butler {
                ButlerCheck::Off => None,
                ButlerCheck::Ok => Some(None),
                ButlerCheck::Pending => Some(Some(Cow::Borrowed("Butler not asked yet"))),
                ButlerCheck::Failed(why) => Some(Some(Cow::Owned(why.to_string()))),
            };
            if let Some(failure) = butler {
                checks.push(Check {
                    name: "butler",
                    failure,
                });
            }
            checks
        }
    };
    let name = if endpoint == Endpoint::Livez {
        "livez"
    } else {
        "readyz"
    };
    let passed = checks.iter().all(|c| c.failure.is_none());
    let code = if passed {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if passed && !wants_verbose(query) {
        return text(code, "ok".to_string());
    }
    let mut body = String::new();
    for c in &checks {
        match &c.failure {
            None => body.push_str(&format!("[+]{} ok\n", c.name)),
            Some(why) => body.push_str(&format!("[-]{} failed: {why}\n", c.name)),
        }
    }
    let verdict = if passed { "passed" } else { "failed" };
    body.push_str(&format!("{name} check {verdict}\n"));
    text(code, body)
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
fn no_store<B>(r: &mut Response<B>) {
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests;
