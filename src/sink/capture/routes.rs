//! capture's routes (`rust/capture/src/router.rs`).

/// What capture does with a method and path (`rust/capture/src/router.rs`, events mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// `GET`/`POST` (and `HEAD`, which axum serves as `GET` without the body) on an event
    /// route; the matched path decides the legacy and `/engage` rules.
    Capture(&'static str),
    /// `OPTIONS`, on any path: capture's CORS layer (tower-http's `CorsLayer`) answers every
    /// `OPTIONS` itself as a preflight — 200, empty — so its `options` handlers, which would
    /// answer `{"status":"Ok"}`, are never reached (`rust/capture/src/router.rs`).
    Preflight,
    /// `GET`/`HEAD` on `/`, `/_readiness`, `/_liveness`: `200 capture`.
    Status,
    /// A known path with another method: `405`, empty, with `Allow`.
    MethodNotAllowed(&'static str),
    /// `404`, empty.
    NotFound,
}

/// The event routes, each with and without the trailing slash — no other spelling matches
/// (`/e//` is 404). `/s/` (recordings) and `/i/v0/ai` (multipart) are not served by the sink.
pub(super) const EVENT_PATHS: [&str; 12] = [
    "/i/v0/e",
    "/i/v0/e/",
    "/e",
    "/e/",
    "/track",
    "/track/",
    "/engage",
    "/engage/",
    "/capture",
    "/capture/",
    "/batch",
    "/batch/",
];
const STATUS_PATHS: [&str; 3] = ["/", "/_readiness", "/_liveness"];

/// Routes a request as capture's router does.
pub(crate) fn route(method: &str, path: &str) -> Route {
    if method == "OPTIONS" {
        return Route::Preflight;
    }
    if let Some(p) = EVENT_PATHS.iter().find(|p| **p == path) {
        return match method {
            "GET" | "HEAD" | "POST" => Route::Capture(p),
            // axum lists the methods in the order the routes add them.
            _ => Route::MethodNotAllowed("POST,GET,HEAD,OPTIONS"),
        };
    }
    if STATUS_PATHS.contains(&path) {
        return match method {
            "GET" | "HEAD" => Route::Status,
            _ => Route::MethodNotAllowed("GET,HEAD"),
        };
    }
    Route::NotFound
}

/// capture's `path_is_legacy_endpoint` (`rust/capture/src/v0_request.rs`).
pub(super) fn is_legacy_path(path: &str) -> bool {
    path == "/e"
        || path.starts_with("/e/")
        || path.starts_with("/capture")
        || path.starts_with("/engage")
        || path.starts_with("/track")
}
