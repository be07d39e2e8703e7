//! PostHog's capture rules, as pure functions from a request to the answer capture gives.
//!
//! Reimplements the observable behaviour of PostHog's Rust capture service (the `rust/capture`
//! crate of the PostHog/posthog repository, and `rust/common/types/src/event.rs`), rule by
//! rule; each rule names the file that decides it (read at PostHog/posthog commits 027cd531 for
//! `payload/` and `utils.rs`, 14b6bb00 for `token.rs`, 024dbbe0 for `event.rs`). In order, as
//! capture applies them:
//!
//! 1. Routes (`rust/capture/src/router.rs`): see [`route`].
//! 2. Query string (`rust/capture/src/payload/types.rs`, `EventQuery`, read by axum's `Query`):
//!    `compression`, `data`, `sent_at` (alias `_`, integer milliseconds), `beacon`; a value of
//!    the wrong type is `400 Failed to deserialize query string: …`.
//! 3. Body read (`rust/capture/src/extractors.rs`): over [`WIRE_LIMIT`] is 413.
//! 4. Payload (`rust/capture/src/payload/common.rs`, `rust/capture/src/utils.rs`): a non-empty
//!    `data` query parameter wins over the body; neither → 400 `request missing data payload`;
//!    a payload that looks like base64 (and not like a form) is decoded; with `Content-Type:
//!    application/x-www-form-urlencoded` the body must be a form and its `data` field is the
//!    payload; the compression hint comes from the query, the form, then `Content-Encoding`.
//! 5. Decompression (`rust/capture/src/payload/decompression.rs`): gzip when hinted or when
//!    the payload starts with the gzip magic; lz-string when hinted; otherwise UTF-8 text; all
//!    bounded by the limit while decoding;
//!    on the legacy paths (`/e`, `/capture`, `/track`, `/engage`) a still-base64 payload is
//!    unwrapped once more.
//! 6. Shape (`rust/capture/src/v0_request.rs`, `RawRequest`, untagged): an array of events, a
//!    batch `{"api_key"|"token", "batch": [...]}`, one event, or (no `event` name) an engage
//!    update, which only `/engage` accepts (as `$identify`). Field types are those of
//!    `RawEvent` (`rust/common/types/src/event.rs`); one aliased field given twice (`token`
//!    with `api_key`) or a wrong type fails the whole shape.
//! 7. Events (`rust/capture/src/v0_request.rs`): none → `request holds no event`;
//!    `$performance_event`s are dropped, and a request left empty is answered 200.
//! 8. Token (`rust/capture/src/utils.rs`, `rust/capture/src/token.rs`): the batch's, else the
//!    event's `token`/`$token`/`api_key`, else `properties.token`; all events must agree; it is
//!    trimmed and must be non-empty, at most 64 bytes, ASCII, not a personal `phx_` key and
//!    without NUL. Every token problem is 401.
//! 9. Each event (`rust/capture/src/events/analytics.rs`): a non-empty `event`, a
//!    `distinct_id` ([`distinct_id`]), a boolean `$cookieless_mode` when present.
//! 10. Answers (`rust/capture/src/api.rs`): `200 {"status":"Ok"}` (JSON), `204` with
//!     `beacon=1`; every error is `text/plain; charset=utf-8` with capture's message.
//!
//! What capture decides from its own state (billing quotas, token drop lists, event
//! restrictions, rate limits) is not modelled: with none configured capture answers 200, and
//! so does the sink. A 200 therefore never proves an event was stored.

use std::io::Read;

use base64::Engine as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// Largest body on every event route ("the wire cap", capture's `BATCH_BODY_SIZE`, 20 MiB).
/// Older versions set 2 MiB on the event routes and 20 MiB on `/batch` with axum's
/// `DefaultBodyLimit`, which capture's streaming `Body` extractor never obeyed; the current one
/// holds every v0 route to one cap (`rust/capture/tests/integration_wire_body_limits.rs`,
/// `rust/capture/src/extractors.rs`).
pub const WIRE_LIMIT: usize = 20 * 1024 * 1024;
/// Largest payload once decompressed or decoded: five times the wire cap
/// (`event_payload_size_limit`, `rust/capture/src/server.rs`).
pub(crate) const PAYLOAD_LIMIT: usize = 5 * WIRE_LIMIT;
/// Longest project key capture accepts (`rust/capture/src/token.rs`).
pub(crate) const MAX_TOKEN_LEN: usize = 64;
/// `distinct_id` is cut to this many characters (`rust/common/types/src/event.rs`).
pub(crate) const MAX_DISTINCT_ID_CHARS: usize = 200;
/// The gzip magic capture looks for (`rust/capture/src/v0_request.rs`).
const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];
/// Capture's form content type, matched exactly (`rust/capture/src/utils.rs`).
const FORM_MIME_TYPE: &str = "application/x-www-form-urlencoded";
/// How much of a payload capture inspects to guess base64 or a form (`rust/capture/src/utils.rs`).
const MAX_CHARS_TO_CHECK: usize = 128;
/// Capture reads gzip output in chunks of this size (`rust/capture/src/payload/decompression.rs`).
const GZIP_CHUNK: usize = 8192;

/// `text/plain; charset=utf-8`: what axum gives capture's `(StatusCode, String)` errors.
pub(crate) const TEXT: &str = "text/plain; charset=utf-8";
/// capture's success body (`CaptureResponse { status: Ok }`, `rust/capture/src/api.rs`).
pub(crate) const OK_BODY: &str = r#"{"status":"Ok"}"#;

/// Why a request is refused: capture's `CaptureError` variants that a request alone can cause
/// (`rust/capture/src/api.rs`). `Display` is capture's message, word for word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureError {
    RequestDecoding(String),
    RequestParsing(String),
    RequestHydration(String),
    EmptyBatch,
    EmptyPayload,
    MissingEventName,
    MissingDistinctId,
    InvalidCookielessMode,
    NoToken,
    MultipleTokens,
    InvalidToken(&'static str),
    TooBig(String),
    /// axum's `Query` extractor refusing the query string (before capture's handler runs).
    Query(String),
    /// The body did not arrive in time (`rust/capture/src/extractors.rs`): 408.
    BodyReadTimeout,
    /// capture cannot take the request now; retry later: 503.
    ServiceUnavailable(String),
}

impl std::fmt::Display for CaptureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaptureError::RequestDecoding(m) => write!(f, "failed to decode request: {m}"),
            CaptureError::RequestParsing(m) => write!(f, "failed to parse request: {m}"),
            CaptureError::RequestHydration(m) => {
                write!(f, "failed to hydrate events from request: {m}")
            }
            CaptureError::EmptyBatch => f.write_str("request holds no event"),
            CaptureError::EmptyPayload => f.write_str("request missing data payload"),
            CaptureError::MissingEventName => {
                f.write_str("event submitted with an empty event name")
            }
            CaptureError::MissingDistinctId => f.write_str("event submitted without a distinct_id"),
            CaptureError::InvalidCookielessMode => {
                f.write_str("event submitted with invalid cookieless mode")
            }
            CaptureError::NoToken => f.write_str("event submitted without an api_key"),
            CaptureError::MultipleTokens => {
                f.write_str("batch submitted with inconsistent api_key values")
            }
            CaptureError::InvalidToken(why) => write!(f, "API key is not valid: {why}"),
            CaptureError::TooBig(m) => write!(f, "maximum event size exceeded: {m}"),
            CaptureError::Query(m) => write!(f, "Failed to deserialize query string: {m}"),
            CaptureError::BodyReadTimeout => f.write_str("client stopped sending data"),
            CaptureError::ServiceUnavailable(m) => write!(f, "service unavailable: {m}"),
        }
    }
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

// ---------------------------------------------------------------------------------------------
// Routing

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
const EVENT_PATHS: [&str; 12] = [
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
fn is_legacy_path(path: &str) -> bool {
    path == "/e"
        || path.starts_with("/e/")
        || path.starts_with("/capture")
        || path.starts_with("/engage")
        || path.starts_with("/track")
}

// ---------------------------------------------------------------------------------------------
// Query string and form

/// A compression hint; any value deserializes (unknown ones are `Unsupported`), as in
/// `rust/capture/src/payload/types.rs`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    #[default]
    Unsupported,
    Gzip,
    LzString,
    Base64,
}

impl Compression {
    fn from_hint(value: &str) -> Self {
        match value.to_lowercase().as_str() {
            "gzip" | "gzip-js" => Compression::Gzip,
            "lz64" | "lz-string" => Compression::LzString,
            "base64" | "b64" => Compression::Base64,
            _ => Compression::Unsupported,
        }
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(String::deserialize(d)
            .map(|v| Compression::from_hint(&v))
            .unwrap_or_default())
    }
}

/// capture's `EventQuery`: the same field names and types, so a wrong value is refused with
/// the same words.
#[derive(Debug, Default, Deserialize)]
struct EventQuery {
    compression: Option<Compression>,
    data: Option<String>,
    #[serde(alias = "_")]
    sent_at: Option<i64>,
    #[serde(default, deserialize_with = "beacon")]
    beacon: bool,
}

fn beacon<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<i32>::deserialize(d)? == Some(1))
}

/// capture's `EventFormData`.
#[derive(Debug, Default, Deserialize)]
struct EventFormData {
    data: Option<String>,
    compression: Option<Compression>,
}

/// The parts of a request capture reads, after routing.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Request<'a> {
    /// The matched route, e.g. `/i/v0/e/`.
    pub(crate) path: &'a str,
    /// The raw query string, without `?`.
    pub(crate) query: Option<&'a str>,
    /// `Content-Type`, when present and visible ASCII.
    pub(crate) content_type: Option<&'a str>,
    /// `Content-Encoding`, when present and visible ASCII.
    pub(crate) content_encoding: Option<&'a str>,
    pub(crate) body: &'a [u8],
}

/// What capture accepted from one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Handled {
    /// The events that pass on (after dropping `$performance_event`), as received.
    pub(crate) events: Vec<Accepted>,
    /// `beacon=1`: answer 204 without a body.
    pub(crate) beacon: bool,
    /// `sent_at` from the batch body or the query, as Unix milliseconds, when capture can
    /// read it (for the sink's log: how far the sender's clock is off).
    pub(crate) sent_at_ms: Option<i64>,
}

/// An accepted event: the object as received, and the values capture derives from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub event: Map<String, Value>,
    pub token: String,
    pub distinct_id: String,
}

/// Parses the query string as axum's `Query<EventQuery>` does.
fn parse_query(query: Option<&str>) -> Result<EventQuery, CaptureError> {
    let q = query.unwrap_or("");
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| CaptureError::Query(e.to_string()))
}

/// Whether axum's `Query<EventQuery>` accepts the query string (checked before the body).
pub(crate) fn check_query(query: Option<&str>) -> Result<(), CaptureError> {
    parse_query(query).map(drop)
}

/// `is_likely_urlencoded_form` (`rust/capture/src/utils.rs`).
fn looks_like_form(payload: &[u8]) -> bool {
    let prefix = &payload[..payload.len().min(MAX_CHARS_TO_CHECK)];
    [&b"data="[..], b"_=", b"ip=", b"compression="]
        .iter()
        .any(|t| {
            prefix.starts_with(t)
                || prefix
                    .windows(t.len() + 1)
                    .any(|w| w[0] == b'&' && &w[1..] == *t)
        })
}

/// `is_likely_base64` (`rust/capture/src/utils.rs`); `loose` also allows spaces (a form value
/// whose `+` became a space).
fn looks_like_base64(payload: &[u8], loose: bool) -> bool {
    !payload.is_empty()
        && payload.len() % 4 == 0
        && payload.iter().take(MAX_CHARS_TO_CHECK).all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=') || (loose && *b == b' ')
        })
}

fn decode_base64(payload: &[u8]) -> Result<Vec<u8>, CaptureError> {
    base64::engine::general_purpose::STANDARD
        .decode(payload)
        .map_err(|_| CaptureError::RequestDecoding("attempting to decode base64".into()))
}

/// `extract_payload_bytes` (`rust/capture/src/payload/common.rs`): the payload and its
/// compression hint.
fn extract_payload(
    req: &Request,
    query: &mut EventQuery,
) -> Result<(Vec<u8>, Compression), CaptureError> {
    let raw: Vec<u8> = match query.data.take().filter(|d| !d.is_empty()) {
        Some(d) => d.into_bytes(),
        None if !req.body.is_empty() => req.body.to_vec(),
        None => return Err(CaptureError::EmptyPayload),
    };
    let payload = if !looks_like_form(&raw) && looks_like_base64(&raw, false) {
        decode_base64(&raw).unwrap_or(raw)
    } else {
        raw
    };
    // capture reads the header as "unknown" when absent or not visible ASCII.
    let form = if req.content_type == Some(FORM_MIME_TYPE) {
        if !looks_like_form(&payload) {
            return Err(CaptureError::RequestDecoding(
                "expected form data in POST request payload".into(),
            ));
        }
        let mut form: EventFormData = serde_urlencoded::from_bytes(&payload)
            .map_err(|_| CaptureError::RequestDecoding("invalid urlencoded form data".into()))?;
        // A base64 `data` whose `+` were decoded to spaces gets them back.
        if let Some(d) = &mut form.data
            && looks_like_base64(d.as_bytes(), true)
        {
            *d = d.replace(' ', "+");
        }
        form
    } else {
        EventFormData::default()
    };
    // `extract_compression` (`rust/capture/src/utils.rs`): query, form, then the header.
    let hinted = |c: Option<Compression>| c.filter(|c| *c != Compression::Unsupported);
    let compression = hinted(query.compression)
        .or(hinted(form.compression))
        .unwrap_or(match req.content_encoding {
            Some("gzip" | "gzip-js") => Compression::Gzip,
            Some("lz64" | "lz-string") => Compression::LzString,
            Some("base64" | "b64") => Compression::Base64,
            _ => Compression::Unsupported,
        });
    Ok((
        form.data.map(String::into_bytes).unwrap_or(payload),
        compression,
    ))
}

/// `decompress_gzip_to_bytes` (`rust/capture/src/payload/decompression.rs`): chunked, so the
/// size in capture's message is the same.
fn gunzip(compressed: &[u8], limit: usize) -> Result<Vec<u8>, CaptureError> {
    let mut z = flate2::read::GzDecoder::new(compressed);
    let mut chunk = vec![0u8; GZIP_CHUNK];
    let mut out = Vec::new();
    loop {
        let got = z
            .read(&mut chunk)
            .map_err(|_| CaptureError::RequestDecoding("invalid GZIP data".into()))?;
        if got == 0 {
            return Ok(out);
        }
        if out.len() + got > limit {
            return Err(CaptureError::TooBig(format!(
                "Decompressed payload would exceed {limit} bytes (got {} bytes)",
                out.len() + got
            )));
        }
        out.extend_from_slice(&chunk[..got]);
    }
}

/// `decompress_lz64_to_string` (`rust/capture/src/payload/decompression.rs`): lz-string's
/// `compressToBase64` format, as old posthog-js versions send it, capped at `limit` UTF-16
/// units while decoding (`rust/common/compression/src/lz64.rs`), then at `limit` UTF-8 bytes.
fn lz64_to_string(payload: &[u8], limit: usize) -> Result<String, CaptureError> {
    let text = std::str::from_utf8(payload).unwrap_or("INVALID_UTF8");
    let units = match lz64_decode(text, limit) {
        Ok(units) => units,
        Err(Lz64Error::TooLarge) => {
            return Err(CaptureError::TooBig(format!(
                "Decompressed LZ64 payload would exceed {limit} bytes"
            )));
        }
        Err(Lz64Error::Invalid) => {
            return Err(CaptureError::RequestDecoding(
                "decompress_lz64: failed decompress to UTF16".into(),
            ));
        }
    };
    let s = String::from_utf16(&units).map_err(|_| {
        CaptureError::RequestDecoding("decompress_lz64: failed UTF16 to UTF8 conversion".into())
    })?;
    if s.len() > limit {
        return Err(CaptureError::TooBig(
            "lz64 request payload size limit exceeded".into(),
        ));
    }
    Ok(s)
}

#[derive(Debug, PartialEq, Eq)]
enum Lz64Error {
    Invalid,
    TooLarge,
}

/// Bits of lz-string's base64 text: six per character, most significant first; characters
/// outside the alphabet are skipped. As in capture's decoder, a read that empties the last
/// character fails (there is no next one to load).
struct Lz64Bits<'a> {
    chars: std::iter::FilterMap<std::str::Chars<'a>, fn(char) -> Option<u16>>,
    current: u16,
    mask: u16,
}

impl Lz64Bits<'_> {
    fn value(c: char) -> Option<u16> {
        let v = match c {
            'A'..='Z' => c as u32 - 'A' as u32,
            'a'..='z' => c as u32 - 'a' as u32 + 26,
            '0'..='9' => c as u32 - '0' as u32 + 52,
            '+' => 62,
            '/' => 63,
            '=' => 64,
            _ => return None,
        };
        Some(v as u16)
    }

    fn bit(&mut self) -> Option<u32> {
        let bit = u32::from(self.current & self.mask != 0);
        self.mask >>= 1;
        if self.mask == 0 {
            self.mask = 1 << 5;
            self.current = self.chars.next()?;
        }
        Some(bit)
    }

    /// `n` bits, least significant first.
    fn bits(&mut self, n: u32) -> Result<u32, Lz64Error> {
        let mut v = 0;
        for i in 0..n {
            v |= self.bit().ok_or(Lz64Error::Invalid)? << i;
        }
        Ok(v)
    }
}

/// lz-string's LZW decoding, refusing output beyond `limit` UTF-16 units before producing it.
/// Dictionary entries are ranges of the output, so memory stays proportional to the output.
fn lz64_decode(text: &str, limit: usize) -> Result<Vec<u16>, Lz64Error> {
    let mut chars = text
        .chars()
        .filter_map(Lz64Bits::value as fn(char) -> Option<u16>);
    let Some(first) = chars.next() else {
        return Ok(Vec::new());
    };
    let mut bits = Lz64Bits {
        chars,
        current: first,
        mask: 1 << 5,
    };
    let mut out: Vec<u16> = Vec::new();
    let emit = |out: &mut Vec<u16>, start: usize, len: usize| -> Result<(), Lz64Error> {
        if out.len() + len > limit {
            return Err(Lz64Error::TooLarge);
        }
        out.extend_from_within(start..start + len);
        Ok(())
    };
    let literal = |bits: &mut Lz64Bits, code: u32| -> Result<u16, Lz64Error> {
        let v = bits.bits(if code == 0 { 8 } else { 16 })?;
        u16::try_from(v).map_err(|_| Lz64Error::Invalid)
    };
    // Codes 0 and 1 introduce a literal (8 or 16 bits), 2 ends the stream; entries from 3 on.
    let unit = match bits.bits(2)? {
        c @ (0 | 1) => literal(&mut bits, c)?,
        2 => return Ok(out),
        _ => return Err(Lz64Error::Invalid),
    };
    if limit == 0 {
        return Err(Lz64Error::TooLarge);
    }
    out.push(unit);
    // (start, len) in `out` (u32: the output is capped far below 4 Gi units, and a dictionary
    // of millions of entries stays half the size); three placeholders keep the codes aligned.
    let limit = limit.min(u32::MAX as usize);
    let mut dict: Vec<(u32, u32)> = vec![(0, 0), (0, 0), (0, 0), (0, 1)];
    let span = |start: usize, len: usize| (start as u32, len as u32);
    let mut w = (0usize, 1usize);
    let mut width = 3u32;
    let mut until_wider: u64 = 4;
    let count_down = |until_wider: &mut u64, width: &mut u32| {
        *until_wider -= 1;
        if *until_wider == 0 {
            *until_wider = 1 << *width;
            *width += 1;
        }
    };
    loop {
        if width > 31 {
            return Err(Lz64Error::Invalid);
        }
        let mut code = bits.bits(width)? as usize;
        let mut fresh = None;
        match code {
            0 | 1 => {
                let u = literal(&mut bits, code as u32)?;
                dict.push(span(out.len(), 1));
                code = dict.len() - 1;
                fresh = Some(u);
                count_down(&mut until_wider, &mut width);
            }
            2 => return Ok(out),
            _ => {}
        }
        let entry = if let Some(u) = fresh {
            if out.len() + 1 > limit {
                return Err(Lz64Error::TooLarge);
            }
            out.push(u);
            (out.len() - 1, 1)
        } else if let Some(&(start, len)) = dict.get(code) {
            let (start, len) = (start as usize, len as usize);
            emit(&mut out, start, len)?;
            (out.len() - len, len)
        } else if code == dict.len() {
            // The entry being defined: w and w's first unit.
            emit(&mut out, w.0, w.1)?;
            emit(&mut out, w.0, 1)?;
            (out.len() - w.1 - 1, w.1 + 1)
        } else {
            return Err(Lz64Error::Invalid);
        };
        // w followed by the entry's first unit, which sits right after w in `out`.
        dict.push(span(w.0, w.1 + 1));
        count_down(&mut until_wider, &mut width);
        w = entry;
    }
}

/// `decompress_payload` (`rust/capture/src/payload/decompression.rs`).
fn decompress(
    bytes: Vec<u8>,
    compression: Compression,
    limit: usize,
    path: &str,
) -> Result<String, CaptureError> {
    let mut payload = if compression == Compression::Gzip || bytes.starts_with(&GZIP_MAGIC) {
        String::from_utf8(gunzip(&bytes, limit)?)
            .map_err(|_| CaptureError::RequestDecoding("invalid gzip data".into()))?
    } else if compression == Compression::LzString {
        lz64_to_string(&bytes, limit)?
    } else {
        let s = String::from_utf8(bytes)
            .map_err(|_| CaptureError::RequestDecoding("invalid UTF8 in request payload".into()))?;
        if s.len() > limit {
            return Err(CaptureError::TooBig(format!(
                "Uncompressed payload size limit {limit} exceeded: {}",
                s.len()
            )));
        }
        s
    };
    if is_legacy_path(path) && looks_like_base64(payload.as_bytes(), false) {
        // A failed unwrap keeps the payload as it was.
        if let Ok(text) = decode_base64(payload.as_bytes()).map(String::from_utf8)
            && let Ok(text) = text
        {
            if text.len() > limit {
                return Err(CaptureError::TooBig(format!(
                    "decompress_payload: payload size limit {limit} exceeded after post-decode \
                     base64 unwrap: {}",
                    text.len()
                )));
            }
            payload = text;
        }
    }
    Ok(payload)
}

// ---------------------------------------------------------------------------------------------
// The request shapes: capture's serde types, field for field, so the same JSON is refused with
// the same words (`rust/capture/src/v0_request.rs`, `rust/common/types/src/event.rs`).

/// An empty string is no uuid; anything else must parse (`rust/common/types/src/util.rs`).
fn uuid_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => uuid::Uuid::parse_str(&s)
            .map(|_| Some(s))
            .map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

#[derive(Deserialize)]
#[allow(dead_code)] // read only to check their types, as capture does
struct RawEvent {
    #[serde(alias = "$token", alias = "api_key")]
    token: Option<String>,
    #[serde(alias = "$distinct_id")]
    distinct_id: Option<Value>,
    #[serde(default, deserialize_with = "uuid_or_empty")]
    uuid: Option<String>,
    event: String,
    #[serde(default)]
    properties: Map<String, Value>,
    /// Any string passes: ingestion parses it later, and an unparseable one falls back to the
    /// capture time (`rust/common/types/src/event.rs`; capture's `InvalidTimestamp` is no
    /// longer raised for analytics events).
    timestamp: Option<String>,
    offset: Option<i64>,
    #[serde(rename = "$set")]
    set: Option<Map<String, Value>>,
    #[serde(rename = "$set_once")]
    set_once: Option<Map<String, Value>>,
}

/// An event without a name: a person update, only for `/engage`.
#[derive(Deserialize)]
#[allow(dead_code)]
struct RawEngageEvent {
    #[serde(alias = "$token", alias = "api_key")]
    token: Option<String>,
    #[serde(alias = "$distinct_id")]
    distinct_id: Option<Value>,
    #[serde(default, deserialize_with = "uuid_or_empty")]
    uuid: Option<String>,
    #[serde(default)]
    properties: Map<String, Value>,
    timestamp: Option<String>,
    offset: Option<i64>,
    #[serde(rename = "$set")]
    set: Option<Map<String, Value>>,
    #[serde(rename = "$set_once")]
    set_once: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct BatchedRequest {
    #[serde(alias = "api_key")]
    token: String,
    historical_migration: Option<bool>,
    sent_at: Option<String>,
    batch: Vec<RawEvent>,
}

/// The name matters: serde's refusal names the enum ("… untagged enum RawRequest").
#[derive(Deserialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)]
enum RawRequest {
    Array(Vec<RawEvent>),
    Batch(BatchedRequest),
    One(Box<RawEvent>),
    Engage(Box<RawEngageEvent>),
}

/// One event as capture sees it: its token (if any), name, distinct_id, properties.
struct Event {
    token: Option<String>,
    name: String,
    distinct_id: Option<Value>,
    properties: Map<String, Value>,
    /// The object as received (for printing).
    raw: Map<String, Value>,
}

impl Event {
    fn from_raw(e: RawEvent, raw: Value) -> Event {
        Event {
            token: e.token,
            name: e.event,
            distinct_id: e.distinct_id,
            properties: e.properties,
            raw: match raw {
                Value::Object(o) => o,
                _ => Map::new(),
            },
        }
    }

    /// `RawEvent::extract_token`: the field, else a string `properties.token`.
    fn token(&self) -> Option<String> {
        self.token.clone().or_else(|| {
            self.properties
                .get("token")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
    }
}

/// `RawEvent::extract_distinct_id` (`rust/common/types/src/event.rs`): the top-level value
/// (`distinct_id` or `$distinct_id`) unless null, else `properties.distinct_id` unless null;
/// strings as they are, anything else as JSON; NUL replaced by U+FFFD; `None` when it is empty
/// or only whitespace (older versions let a whitespace-only id through; a non-empty value
/// keeps its whitespace); cut to 200 characters.
pub(crate) fn distinct_id(top: Option<&Value>, properties: &Map<String, Value>) -> Option<String> {
    let value = match top {
        None | Some(Value::Null) => match properties.get("distinct_id") {
            None | Some(Value::Null) => return None,
            Some(v) => v,
        },
        Some(v) => v,
    };
    let s = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
    .replace('\0', "\u{FFFD}");
    if s.trim().is_empty() {
        return None;
    }
    if s.len() <= MAX_DISTINCT_ID_CHARS {
        return Some(s);
    }
    Some(s.chars().take(MAX_DISTINCT_ID_CHARS).collect())
}

/// Checks a project key's shape (`rust/capture/src/token.rs`); returns it trimmed. (Older
/// versions did not trim, so `"phc_…\n"` passed the shape check and then matched no project;
/// the current one trims first, so a whitespace-only key is `empty`.)
pub(crate) fn validate_token(token: &str) -> Result<&str, CaptureError> {
    let t = token.trim();
    if t.is_empty() {
        return Err(CaptureError::InvalidToken("empty"));
    }
    if t.len() > MAX_TOKEN_LEN {
        return Err(CaptureError::InvalidToken("too_long"));
    }
    if !t.is_ascii() {
        return Err(CaptureError::InvalidToken("not_ascii"));
    }
    if t.starts_with("phx_") {
        return Err(CaptureError::InvalidToken("personal_api_key"));
    }
    if t.contains('\0') {
        return Err(CaptureError::InvalidToken("null_byte"));
    }
    Ok(t)
}

/// `sent_at` in a batch body: ISO 8601 (`rust/capture/src/v0_request.rs`).
fn batch_sent_at_ms(value: Option<&str>) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(value?).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

/// `sent_at` (or `_`) in the query: milliseconds, ignored unless after 2020
/// (`rust/capture/src/payload/types.rs`).
fn query_sent_at_ms(value: Option<i64>) -> Option<i64> {
    // 2021-01-01T00:00:00Z
    value.filter(|ms| *ms >= 1_609_459_200_000 && *ms <= 253_402_300_799_999)
}

/// Handles a routed capture request: the events capture accepts, or its refusal.
pub(crate) fn handle(req: &Request) -> Result<Handled, CaptureError> {
    let mut query = parse_query(req.query)?;
    if req.body.len() > WIRE_LIMIT {
        return Err(body_too_big());
    }
    let (bytes, compression) = extract_payload(req, &mut query)?;
    let text = decompress(bytes, compression, PAYLOAD_LIMIT, req.path)?;
    let parsed: RawRequest =
        serde_json::from_str(&text).map_err(|e| CaptureError::RequestParsing(e.to_string()))?;
    // The same text parsed untyped keeps each event exactly as it came, for printing.
    let raw: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let mut sent_at_ms = None;
    let (batch_token, events) = match (parsed, raw) {
        (RawRequest::Array(events), Value::Array(raws)) => (
            None,
            events
                .into_iter()
                .zip(raws)
                .map(|(e, r)| Event::from_raw(e, r))
                .collect(),
        ),
        (RawRequest::Batch(b), Value::Object(mut o)) => {
            sent_at_ms = batch_sent_at_ms(b.sent_at.as_deref());
            let raws = match o.remove("batch") {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            };
            (
                Some(b.token),
                b.batch
                    .into_iter()
                    .zip(raws)
                    .map(|(e, r)| Event::from_raw(e, r))
                    .collect(),
            )
        }
        (RawRequest::One(e), raw) => (None, vec![Event::from_raw(*e, raw)]),
        (RawRequest::Engage(e), raw) => {
            if !req.path.starts_with("/engage") {
                return Err(CaptureError::RequestHydration(
                    "non-engage request missing event name attribute".into(),
                ));
            }
            // capture turns a nameless update on /engage into `$identify`.
            let mut raw = match raw {
                Value::Object(o) => o,
                _ => Map::new(),
            };
            raw.insert("event".into(), Value::String("$identify".into()));
            let e = *e;
            (
                None,
                vec![Event {
                    token: e.token,
                    name: "$identify".into(),
                    distinct_id: e.distinct_id,
                    properties: e.properties,
                    raw,
                }],
            )
        }
        _ => (None, Vec::new()),
    };
    let mut events: Vec<Event> = events;
    if events.is_empty() {
        return Err(CaptureError::EmptyBatch);
    }
    events.retain(|e| e.name != "$performance_event");
    if events.is_empty() {
        // capture drops these silently and answers 200.
        return Ok(Handled {
            events: Vec::new(),
            beacon: false,
            sent_at_ms,
        });
    }

    // `extract_and_verify_token` (`rust/capture/src/utils.rs`).
    let token = match batch_token {
        Some(t) => t,
        None if events.len() == 1 => events[0].token().ok_or(CaptureError::NoToken)?,
        None => {
            let mut distinct: Vec<String> = Vec::new();
            for t in events.iter().filter_map(Event::token) {
                if !distinct.contains(&t) {
                    distinct.push(t);
                }
            }
            match distinct.len() {
                0 => return Err(CaptureError::NoToken),
                1 => distinct.remove(0),
                _ => return Err(CaptureError::MultipleTokens),
            }
        }
    };
    let token = validate_token(&token)?.to_string();

    // `process_single_event` (`rust/capture/src/events/analytics.rs`), in order, per event.
    let mut accepted = Vec::with_capacity(events.len());
    for e in events {
        if e.name.is_empty() {
            return Err(CaptureError::MissingEventName);
        }
        let id = distinct_id(e.distinct_id.as_ref(), &e.properties)
            .ok_or(CaptureError::MissingDistinctId)?;
        match e.properties.get("$cookieless_mode") {
            None | Some(Value::Bool(_)) => {}
            Some(_) => return Err(CaptureError::InvalidCookielessMode),
        }
        accepted.push(Accepted {
            event: e.raw,
            token: token.clone(),
            distinct_id: id,
        });
    }
    Ok(Handled {
        events: accepted,
        beacon: query.beacon,
        sent_at_ms: sent_at_ms.or(query_sent_at_ms(query.sent_at)),
    })
}

/// capture's refusal of a body over [`WIRE_LIMIT`] (`rust/capture/src/extractors.rs`).
pub(crate) fn body_too_big() -> CaptureError {
    CaptureError::TooBig(format!("Request body exceeds limit of {WIRE_LIMIT} bytes"))
}

/// Validates a JSON body as a `POST /i/v0/e/` without query string would be: the events
/// capture accepts, or its refusal. (`limit` bounds the body; capture's own is
/// [`PAYLOAD_LIMIT`].)
pub fn accept(body: &[u8], limit: usize) -> Result<Vec<Accepted>, CaptureError> {
    if body.len() > limit.min(PAYLOAD_LIMIT) {
        return Err(body_too_big());
    }
    handle(&Request {
        path: "/i/v0/e/",
        content_type: Some("application/json"),
        body,
        ..Request::default()
    })
    .map(|h| h.events)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const KEY: &str = "phc_5cmKiX9OubQjsSfOZuaolWaxo2z7WXqd295eB0uOtTb";

    fn ok(body: &str) -> Vec<Accepted> {
        accept(body.as_bytes(), WIRE_LIMIT).expect(body)
    }
    fn err(body: &str) -> CaptureError {
        accept(body.as_bytes(), WIRE_LIMIT).expect_err(body)
    }
    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn single_event_array_and_batch() {
        let one = ok(&format!(
            r#"{{"api_key":"{KEY}","event":"telemetry sent","distinct_id":"abc","uuid":"019b6f4e-0000-7000-8000-000000000000","timestamp":"2026-01-01T00:00:00.000Z","properties":{{}}}}"#
        ));
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].token, KEY);
        assert_eq!(one[0].distinct_id, "abc");
        let arr = ok(
            r#"[{"token":"t1","event":"a","distinct_id":"x"},{"token":"t1","event":"b","$distinct_id":"y"}]"#,
        );
        assert_eq!(arr.len(), 2);
        assert_eq!(arr[1].distinct_id, "y");
        assert_eq!(arr[1].event["event"], "b");
        let batch = ok(r#"{"api_key":"batched","batch":[{"event":"a","distinct_id":1}]}"#);
        assert_eq!(batch[0].token, "batched");
        assert_eq!(batch[0].distinct_id, "1");
    }

    #[test]
    fn token_rules() {
        assert_eq!(
            err(r#"{"event":"e","distinct_id":"d"}"#),
            CaptureError::NoToken
        );
        for (token, why) in [
            ("", "empty"),
            ("   ", "empty"),
            (&"x".repeat(65)[..], "too_long"),
            ("phx_personal", "personal_api_key"),
            ("clé", "not_ascii"),
            ("a\\u0000b", "null_byte"),
        ] {
            let e = err(&format!(
                r#"{{"api_key":"{token}","event":"e","distinct_id":"d"}}"#
            ));
            assert_eq!(e, CaptureError::InvalidToken(why), "{token:?}");
            assert_eq!(e.status(), 401);
        }
        assert_eq!(
            ok(&format!(
                r#"{{"api_key":"{}","event":"e","distinct_id":"d"}}"#,
                "x".repeat(64)
            ))
            .len(),
            1
        );
        // Surrounding whitespace is trimmed.
        assert_eq!(
            ok(r#"{"$token":" phc_x\n","event":"e","distinct_id":"d"}"#)[0].token,
            "phc_x"
        );
        // The fallback to properties.token, only when the field is absent.
        assert_eq!(
            ok(r#"{"event":"e","distinct_id":"d","properties":{"token":"p"}}"#)[0].token,
            "p"
        );
        assert_eq!(
            err(r#"{"event":"e","distinct_id":"d","properties":{"token":5}}"#),
            CaptureError::NoToken
        );
        let two = r#"[{"token":"a","event":"e","distinct_id":"d"},{"token":"b","event":"e","distinct_id":"d"}]"#;
        assert_eq!(err(two), CaptureError::MultipleTokens);
        assert_eq!(err(two).status(), 401);
        // Events without a token do not count against the one that has it.
        assert_eq!(
            ok(r#"[{"token":"a","event":"e","distinct_id":"d"},{"event":"e","distinct_id":"d"}]"#)
                .len(),
            2
        );
        // A batch needs its own token: without it, the body is an engage update.
        assert_eq!(
            err(r#"{"batch":[{"token":"a","event":"e","distinct_id":"d"}]}"#),
            CaptureError::RequestHydration(
                "non-engage request missing event name attribute".into()
            )
        );
    }

    #[test]
    fn duplicate_aliases_and_field_types_fail_the_shape() {
        let untagged = "data did not match any variant of untagged enum RawRequest";
        for body in [
            r#"{"api_key":"k","token":"k","event":"e","distinct_id":"d"}"#,
            r#"{"api_key":"k","event":"e","distinct_id":"d","$distinct_id":"d"}"#,
            r#"{"api_key":"k","event":"e","distinct_id":"d","uuid":"x"}"#,
            r#"{"api_key":"k","event":"e","distinct_id":"d","offset":"1"}"#,
            r#"{"api_key":"k","event":"e","distinct_id":"d","$set":[1]}"#,
            r#"{"api_key":"k","event":"e","distinct_id":"d","$set_once":"x"}"#,
            r#"{"api_key":"k","event":"e","distinct_id":"d","properties":null}"#,
            r#"{"api_key":5,"event":"e","distinct_id":"d"}"#,
            r#"{"api_key":"k","event":"e","distinct_id":"d","timestamp":5}"#,
            "42",
        ] {
            assert_eq!(
                err(body),
                CaptureError::RequestParsing(untagged.into()),
                "{body}"
            );
        }
        // An unparseable timestamp string is passed through.
        assert_eq!(
            ok(r#"{"api_key":"k","event":"e","distinct_id":"d","timestamp":"yesterday"}"#).len(),
            1
        );
        // Null optional fields are absent; an empty uuid is no uuid.
        ok(r#"{"api_key":"k","event":"e","distinct_id":"d","uuid":"","offset":null,"$set":null}"#);
        assert_eq!(
            err("not json"),
            CaptureError::RequestParsing("expected ident at line 1 column 2".into())
        );
    }

    #[test]
    fn event_and_distinct_id_rules() {
        assert_eq!(
            err(r#"{"token":"t","event":"","distinct_id":"d"}"#),
            CaptureError::MissingEventName
        );
        for d in [
            r#""#,
            r#","distinct_id":null"#,
            r#","distinct_id":"""#,
            r#","distinct_id":"  \t""#,
        ] {
            assert_eq!(
                err(&format!(r#"{{"token":"t","event":"e"{d}}}"#)),
                CaptureError::MissingDistinctId,
                "{d}"
            );
        }
        let long = ok(&format!(
            r#"{{"token":"t","event":"e","distinct_id":"{}"}}"#,
            "é".repeat(222)
        ));
        assert_eq!(long[0].distinct_id.chars().count(), 200);
        assert_eq!(
            ok(r#"{"token":"t","event":"e","distinct_id":" d "}"#)[0].distinct_id,
            " d "
        );
        assert_eq!(
            ok(r#"{"token":"t","event":"e","distinct_id":["a",1]}"#)[0].distinct_id,
            r#"["a",1]"#
        );
        assert_eq!(
            ok(r#"{"token":"t","event":"e","distinct_id":"a\u0000"}"#)[0].distinct_id,
            "a\u{FFFD}"
        );
        assert_eq!(
            ok(r#"{"token":"t","event":"e","properties":{"distinct_id":"p"}}"#)[0].distinct_id,
            "p"
        );
        assert_eq!(
            ok(r#"{"token":"t","event":"e","distinct_id":null,"properties":{"distinct_id":7}}"#)[0]
                .distinct_id,
            "7"
        );
        assert_eq!(
            err(
                r#"{"token":"t","event":"e","distinct_id":"d","properties":{"$cookieless_mode":"yes"}}"#
            ),
            CaptureError::InvalidCookielessMode
        );
        assert_eq!(err("[]"), CaptureError::EmptyBatch);
        assert_eq!(
            err(r#"{"api_key":"k","batch":[]}"#),
            CaptureError::EmptyBatch
        );
        // Only $performance_event: dropped, and answered 200 without checking anything else.
        assert!(ok(r#"{"event":"$performance_event"}"#).is_empty());
    }

    fn req<'a>(
        path: &'a str,
        query: Option<&'a str>,
        ct: Option<&'a str>,
        body: &'a [u8],
    ) -> Request<'a> {
        Request {
            path,
            query,
            content_type: ct,
            content_encoding: None,
            body,
        }
    }

    #[test]
    fn payload_decoding() {
        let json = format!(r#"{{"api_key":"{KEY}","event":"e","distinct_id":"d"}}"#);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&json);
        // gzip by magic, by hint in the query, by Content-Encoding.
        assert!(handle(&req("/i/v0/e/", None, None, &gz(json.as_bytes()))).is_ok());
        let mut r = req("/batch/", Some("compression=gzip-js"), None, b"xx");
        assert_eq!(
            handle(&r),
            Err(CaptureError::RequestDecoding("invalid GZIP data".into()))
        );
        r.query = None;
        r.content_encoding = Some("gzip");
        assert_eq!(
            handle(&r),
            Err(CaptureError::RequestDecoding("invalid GZIP data".into()))
        );
        // base64 body; form body with base64 data; GET ?data=.
        assert!(handle(&req("/i/v0/e/", None, None, b64.as_bytes())).is_ok());
        let form = format!("data={}&compression=base64", b64.replace('+', "%2B"));
        assert!(handle(&req("/e/", None, Some(FORM_MIME_TYPE), form.as_bytes())).is_ok());
        assert_eq!(
            handle(&req("/e/", None, Some(FORM_MIME_TYPE), json.as_bytes())),
            Err(CaptureError::RequestDecoding(
                "expected form data in POST request payload".into()
            ))
        );
        let q = format!("data={}", b64.replace('+', "%2B").replace('=', "%3D"));
        assert!(handle(&req("/e/", Some(&q), None, b"")).is_ok());
        assert_eq!(
            handle(&req("/e/", None, None, b"")),
            Err(CaptureError::EmptyPayload)
        );
        // A legacy path unwraps base64 twice; /i/v0/e does not.
        let twice = base64::engine::general_purpose::STANDARD.encode(&b64);
        assert!(handle(&req("/capture", None, None, twice.as_bytes())).is_ok());
        assert!(matches!(
            handle(&req("/i/v0/e", None, None, twice.as_bytes())),
            Err(CaptureError::RequestParsing(_))
        ));
        assert_eq!(
            handle(&req("/e/", None, None, &[0xff, 0xfe])),
            Err(CaptureError::RequestDecoding(
                "invalid UTF8 in request payload".into()
            ))
        );
        // Query values of the wrong type, as axum words it.
        assert_eq!(
            handle(&req("/e/", Some("_=abc"), None, json.as_bytes())),
            Err(CaptureError::Query(
                "_: invalid digit found in string".into()
            ))
        );
        let h = handle(&req(
            "/e/",
            Some("beacon=1&_=1767225600000"),
            None,
            json.as_bytes(),
        ))
        .unwrap();
        assert!(h.beacon);
        assert_eq!(h.sent_at_ms, Some(1_767_225_600_000));
        // Seconds (older SDKs) are ignored.
        assert_eq!(
            handle(&req(
                "/e/",
                Some("sent_at=1767225600"),
                None,
                json.as_bytes()
            ))
            .unwrap()
            .sent_at_ms,
            None
        );
    }

    #[test]
    fn lz64() {
        let ev = r#"{"api_key":"phc_5cmKiX9OubQjsSfOZuaolWaxo2z7WXqd295eB0uOtTb","event":"e","distinct_id":"d"}"#;
        // lz-string's compressToBase64 of `ev`, of a non-ASCII payload, and of "a" x 200.
        let packed = "N4IghgDglg+g1gUwJ4gFwggCwMYwKzYC2A0lABoCcA8gK4BGAigFYDOAygGZUBaNYA9gBsA6mAAe/AEwAvAOzCyARwAmkingQAhAAw0qAFwAqdEABoQCAG4IAdvrQWzIZVBb6oN7PphRlDvwC+QA";
        assert_eq!(lz64_to_string(packed.as_bytes(), 1 << 20).unwrap(), ev);
        assert_eq!(
            lz64_to_string(b"N4IgpgbmB2AuIC4QEvA1BIeoZBXDIYYZ0gL5A===", 1 << 20).unwrap(),
            r#"{"event":"é€クリック"}"#
        );
        let a200 = b"IY18ZXTt/DFOS1Mg";
        assert_eq!(lz64_to_string(a200, 200).unwrap(), "a".repeat(200));
        // Refused while decoding, before the output exists.
        assert_eq!(
            lz64_decode("IY18ZXTt/DFOS1Mg", 199),
            Err(Lz64Error::TooLarge)
        );
        assert_eq!(
            lz64_to_string(a200, 100).unwrap_err().to_string(),
            "maximum event size exceeded: Decompressed LZ64 payload would exceed 100 bytes"
        );
        // Truncated streams are invalid; no alphabet characters is an empty stream.
        for bad in [&packed[..packed.len() / 2], "A"] {
            assert_eq!(lz64_decode(bad, 1 << 20), Err(Lz64Error::Invalid), "{bad}");
        }
        assert_eq!(lz64_decode("!!!!", 1 << 20), Ok(Vec::new()));
        // As posthog-js sends it: a form, the hint in the query.
        let form = format!("data={}", packed.replace('+', "%2B").replace('/', "%2F"));
        let r = Request {
            path: "/e/",
            query: Some("compression=lz64"),
            content_type: Some(FORM_MIME_TYPE),
            body: form.as_bytes(),
            ..Request::default()
        };
        assert_eq!(handle(&r).unwrap().events.len(), 1);
        let r = Request {
            content_type: None,
            body: b"{}",
            ..r
        };
        assert_eq!(
            handle(&r),
            Err(CaptureError::RequestParsing(
                "EOF while parsing a value at line 1 column 0".into()
            ))
        );
    }

    #[test]
    fn engage_only_on_engage() {
        let body = br#"{"$token":"k","$distinct_id":"d","$set":{"a":1}}"#;
        let h = handle(&req("/engage/", None, None, body)).unwrap();
        assert_eq!(h.events[0].event["event"], "$identify");
        assert_eq!(
            handle(&req("/e/", None, None, body)),
            Err(CaptureError::RequestHydration(
                "non-engage request missing event name attribute".into()
            ))
        );
    }

    #[test]
    fn gzip_bomb_and_size() {
        let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        bomb.write_all(&vec![b' '; 3 * 1024 * 1024]).unwrap();
        let bomb = bomb.finish().unwrap();
        let e = gunzip(&bomb, 1024 * 1024).unwrap_err();
        assert_eq!(e.status(), 413);
        assert!(
            e.to_string().starts_with(
                "maximum event size exceeded: Decompressed payload would exceed 1048576 bytes (got "
            ),
            "{e}"
        );
        assert_eq!(
            decompress(vec![b' '; 11], Compression::Unsupported, 10, "/e"),
            Err(CaptureError::TooBig(
                "Uncompressed payload size limit 10 exceeded: 11".into()
            ))
        );
        assert_eq!(
            body_too_big().to_string(),
            "maximum event size exceeded: Request body exceeds limit of 20971520 bytes"
        );
    }

    #[test]
    fn transport_refusals() {
        let slow = CaptureError::BodyReadTimeout;
        assert_eq!(
            (slow.status(), slow.to_string()),
            (408, "client stopped sending data".into())
        );
        let busy = CaptureError::ServiceUnavailable("retry later".into());
        assert_eq!(
            (busy.status(), busy.to_string()),
            (503, "service unavailable: retry later".into())
        );
    }

    #[test]
    fn routes() {
        for p in EVENT_PATHS {
            assert_eq!(route("POST", p), Route::Capture(p));
            assert_eq!(route("GET", p), Route::Capture(p));
            assert_eq!(route("OPTIONS", p), Route::Preflight);
            assert_eq!(
                route("PUT", p),
                Route::MethodNotAllowed("POST,GET,HEAD,OPTIONS")
            );
        }
        assert_eq!(route("POST", "/e//"), Route::NotFound);
        assert_eq!(route("OPTIONS", "/nowhere"), Route::Preflight);
        assert_eq!(route("POST", "/s/"), Route::NotFound);
        assert_eq!(route("GET", "/"), Route::Status);
        assert_eq!(
            route("POST", "/_liveness"),
            Route::MethodNotAllowed("GET,HEAD")
        );
    }
}
