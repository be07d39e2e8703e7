//! capture's answers: its refusals, their statuses and words (`rust/capture/src/api.rs`).

use super::WIRE_LIMIT;

/// `text/plain; charset=utf-8`: what axum gives capture's `(StatusCode, String)` errors.
pub(crate) const TEXT: &str = "text/plain; charset=utf-8";
/// capture's success body (`CaptureResponse { status: Ok }`, `rust/capture/src/api.rs`).
pub(crate) const OK_BODY: &str = r#"{"status":"Ok"}"#;

/// Why a request is refused: capture's `CaptureError` variants that a request alone can cause
/// (`rust/capture/src/api.rs`). `Display` is capture's message, word for word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    #[error("failed to decode request: {0}")]
    RequestDecoding(String),
    #[error("failed to parse request: {0}")]
    RequestParsing(String),
    #[error("failed to hydrate events from request: {0}")]
    RequestHydration(String),
    #[error("request holds no event")]
    EmptyBatch,
    #[error("request missing data payload")]
    EmptyPayload,
    #[error("event submitted with an empty event name")]
    MissingEventName,
    #[error("event submitted without a distinct_id")]
    MissingDistinctId,
    #[error("event submitted with invalid cookieless mode")]
    InvalidCookielessMode,
    #[error("event submitted without an api_key")]
    NoToken,
    #[error("batch submitted with inconsistent api_key values")]
    MultipleTokens,
    #[error("API key is not valid: {0}")]
    InvalidToken(&'static str),
    #[error("maximum event size exceeded: {0}")]
    TooBig(String),
    /// axum's `Query` extractor refusing the query string (before capture's handler runs).
    #[error("Failed to deserialize query string: {0}")]
    Query(String),
    /// The body did not arrive in time (`rust/capture/src/extractors.rs`): 408.
    #[error("client stopped sending data")]
    BodyReadTimeout,
    /// capture cannot take the request now; retry later: 503.
    #[error("service unavailable: {0}")]
    ServiceUnavailable(String),
}

impl CaptureError {
    /// The HTTP status capture answers with (`rust/capture/src/api.rs`): every token problem,
    /// including two tokens in one request, is 401; an oversized payload 413; a body that does not
    /// arrive in time 408; a request capture cannot take now 503; the rest 400.
    pub(crate) fn status(&self) -> u16 {
        match self {
            CaptureError::NoToken
            | CaptureError::MultipleTokens
            | CaptureError::InvalidToken(_) => 401,
            CaptureError::TooBig(_) => 413,
            CaptureError::BodyReadTimeout => 408,
            CaptureError::ServiceUnavailable(_) => 503,
            _ => 400,
        }
    }

    /// A short tag for the sink's own log lines (capture's metric tags, `rust/capture/src/api.rs`).
    pub(crate) fn tag(&self) -> &'static str {
        match self {
            CaptureError::RequestDecoding(_) => "req_decoding",
            CaptureError::RequestParsing(_) => "req_parsing",
            CaptureError::RequestHydration(_) => "req_hydration",
            CaptureError::EmptyBatch => "empty_batch",
            CaptureError::EmptyPayload => "empty_payload",
            CaptureError::MissingEventName => "no_event_name",
            CaptureError::MissingDistinctId => "no_distinct_id",
            CaptureError::InvalidCookielessMode => "invalid_cookieless",
            CaptureError::NoToken => "no_token",
            CaptureError::MultipleTokens => "multiple_tokens",
            CaptureError::InvalidToken(_) => "invalid_token",
            CaptureError::TooBig(_) => "oversize_event",
            CaptureError::Query(_) => "query_string",
            CaptureError::BodyReadTimeout => "body_read_timeout",
            CaptureError::ServiceUnavailable(_) => "service_unavailable",
        }
    }
}

/// capture's refusal of a body over [`WIRE_LIMIT`] (`rust/capture/src/extractors.rs`).
pub(crate) fn body_too_big() -> CaptureError {
    CaptureError::TooBig(format!("Request body exceeds limit of {WIRE_LIMIT} bytes"))
}
