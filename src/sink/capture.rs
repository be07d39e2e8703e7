//! PostHog's capture rules, as a pure function from request bytes to accepted events or the
//! error PostHog would answer with.
//!
//! Modelled on PostHog's Rust capture service (`rust/capture/src/v0_request.rs`, `api.rs`,
//! `token.rs`, and `RawEvent` in `rust/common/types/src/event.rs`):
//! - a body starting with the gzip magic bytes is gunzipped whatever the headers say;
//! - the JSON is an array of events, a `{"batch": [...]}` object, or one event;
//! - the project key comes from `api_key`, `token` or `$token`; missing → 401
//!   `ingest_key_required`; malformed (empty, over 64 characters, not ASCII, a personal `phx_`
//!   key, a NUL byte) → 403 `ingest_key_unknown`; an array naming two keys → 400;
//! - `event` must be a non-empty string; `distinct_id` (or `$distinct_id`, or
//!   `properties.distinct_id`) must be present and non-empty — numbers and objects are
//!   stringified, longer values are cut to 200 characters; `uuid` must be a UUID when given
//!   (an empty string counts as absent); `timestamp` must parse when given;
//! - bodies over 2 MB (20 MB on `/batch`) → 413.
//!
//! Errors are answered as capture does: `{"status": <code>, "code": "...", "error": "..."}`.

use std::io::Read;

use serde_json::{Map, Value};

/// Largest body on the event routes (capture's `EVENT_BODY_SIZE`).
pub const EVENT_BODY_LIMIT: usize = 2 * 1024 * 1024;
/// Largest body on `/batch` (capture's `BATCH_BODY_SIZE`).
pub(crate) const BATCH_BODY_LIMIT: usize = 20 * 1024 * 1024;
/// Longest project key capture accepts.
pub(crate) const MAX_TOKEN_LEN: usize = 64;
/// `distinct_id` is cut to this many characters.
pub(crate) const MAX_DISTINCT_ID_CHARS: usize = 200;
const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 8];

/// Why a request is refused; mirrors capture's `CaptureError` variants that apply here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureError {
    RequestDecoding(String),
    RequestParsing(String),
    EmptyBatch,
    MissingEventName,
    MissingDistinctId,
    InvalidTimestamp,
    NoToken,
    MultipleTokens,
    InvalidToken(&'static str),
    TooBig(String),
}

impl CaptureError {
    pub(crate) fn status(&self) -> u16 {
        match self {
            CaptureError::NoToken => 401,
            CaptureError::InvalidToken(_) => 403,
            CaptureError::TooBig(_) => 413,
            _ => 400,
        }
    }

    pub(crate) fn code(&self) -> &'static str {
        match self {
            CaptureError::RequestDecoding(_) => "request_decoding_error",
            CaptureError::RequestParsing(_) => "request_parsing_error",
            CaptureError::EmptyBatch => "empty_batch",
            CaptureError::MissingEventName => "missing_event_name",
            CaptureError::MissingDistinctId => "missing_distinct_id",
            CaptureError::InvalidTimestamp => "invalid_timestamp",
            CaptureError::NoToken => "ingest_key_required",
            CaptureError::MultipleTokens => "unroutable_events",
            CaptureError::InvalidToken(_) => "ingest_key_unknown",
            CaptureError::TooBig(_) => "payload_too_large",
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            CaptureError::RequestDecoding(m) => format!("failed to decode request: {m}"),
            CaptureError::RequestParsing(m) => format!("failed to parse request: {m}"),
            CaptureError::EmptyBatch => "request holds no event".into(),
            CaptureError::MissingEventName => "event submitted with an empty event name".into(),
            CaptureError::MissingDistinctId => "event submitted without a distinct_id".into(),
            CaptureError::InvalidTimestamp => "event submitted with invalid timestamp".into(),
            CaptureError::NoToken => "event submitted without an api_key".into(),
            CaptureError::MultipleTokens => {
                "batch submitted with inconsistent api_key values".into()
            }
            CaptureError::InvalidToken(why) => format!("API key is not valid: {why}"),
            CaptureError::TooBig(m) => format!("maximum event size exceeded: {m}"),
        }
    }

    /// The JSON body capture answers with.
    pub(crate) fn body(&self) -> Value {
        serde_json::json!({
            "status": self.status(),
            "code": self.code(),
            "error": self.message(),
        })
    }
}

/// An accepted event: the object as received, and the values capture derives from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub event: Map<String, Value>,
    pub token: String,
    pub distinct_id: String,
}

/// Checks a project key's shape (capture's `validate_token`); returns it trimmed.
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

/// Gunzips (when the body starts with the gzip magic) and checks the size limit, also on the
/// decompressed size so a small bomb cannot grow past it.
pub(crate) fn decode(body: &[u8], limit: usize) -> Result<String, CaptureError> {
    let bytes = if body.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|_| CaptureError::RequestDecoding("invalid gzip data".into()))?;
        if out.len() > limit {
            return Err(CaptureError::TooBig(format!(
                "more than {limit} bytes after gunzip"
            )));
        }
        out
    } else {
        if body.len() > limit {
            return Err(CaptureError::TooBig(format!("more than {limit} bytes")));
        }
        body.to_vec()
    };
    String::from_utf8(bytes)
        .map_err(|_| CaptureError::RequestDecoding("invalid body encoding".into()))
}

/// Validates a capture request body and returns its events.
pub fn accept(body: &[u8], limit: usize) -> Result<Vec<Accepted>, CaptureError> {
    let text = decode(body, limit)?;
    let parsed: Value =
        serde_json::from_str(&text).map_err(|e| CaptureError::RequestParsing(e.to_string()))?;
    let (batch_token, events) = match parsed {
        Value::Array(events) => (None, events),
        Value::Object(mut o) if o.contains_key("batch") => {
            let token = ["api_key", "token"]
                .iter()
                .find_map(|k| o.get(*k))
                .map(|t| {
                    t.as_str().map(str::to_string).ok_or_else(|| {
                        CaptureError::RequestParsing("api_key must be a string".into())
                    })
                })
                .transpose()?;
            match o.remove("batch") {
                Some(Value::Array(events)) => (token, events),
                _ => {
                    return Err(CaptureError::RequestParsing(
                        "batch must be an array".into(),
                    ));
                }
            }
        }
        one @ Value::Object(_) => (None, vec![one]),
        _ => {
            return Err(CaptureError::RequestParsing(
                "expected an event object, an array of events or a batch".into(),
            ));
        }
    };
    if events.is_empty() {
        return Err(CaptureError::EmptyBatch);
    }
    let mut objects = Vec::with_capacity(events.len());
    for e in events {
        match e {
            Value::Object(o) => objects.push(o),
            _ => {
                return Err(CaptureError::RequestParsing(
                    "an event must be an object".into(),
                ));
            }
        }
    }

    // The project key: the batch's, else the one all events agree on.
    let token = match batch_token {
        Some(t) => t,
        None => {
            let mut tokens = Vec::<String>::new();
            for o in &objects {
                if let Some(t) = event_token(o)?
                    && !tokens.contains(&t)
                {
                    tokens.push(t);
                }
            }
            match tokens.len() {
                0 => return Err(CaptureError::NoToken),
                1 => tokens.remove(0),
                _ => return Err(CaptureError::MultipleTokens),
            }
        }
    };
    let token = validate_token(&token)?.to_string();

    objects
        .into_iter()
        .map(|event| {
            let distinct_id = check_event(&event)?;
            Ok(Accepted {
                event,
                token: token.clone(),
                distinct_id,
            })
        })
        .collect()
}

fn event_token(o: &Map<String, Value>) -> Result<Option<String>, CaptureError> {
    for key in ["token", "$token", "api_key"] {
        match o.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => return Ok(Some(s.clone())),
            Some(_) => {
                return Err(CaptureError::RequestParsing(format!(
                    "{key} must be a string"
                )));
            }
        }
    }
    Ok(None)
}

/// Checks one event; returns its distinct_id as capture derives it.
fn check_event(o: &Map<String, Value>) -> Result<String, CaptureError> {
    match o.get("event") {
        Some(Value::String(name)) if name.is_empty() => return Err(CaptureError::MissingEventName),
        Some(Value::String(_)) => {}
        None => return Err(CaptureError::RequestParsing("missing field `event`".into())),
        Some(_) => {
            return Err(CaptureError::RequestParsing(
                "`event` must be a string".into(),
            ));
        }
    }
    match o.get("properties") {
        None | Some(Value::Object(_)) => {}
        Some(_) => {
            return Err(CaptureError::RequestParsing(
                "`properties` must be an object".into(),
            ));
        }
    }
    match o.get("uuid") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) => {
            uuid::Uuid::parse_str(s)
                .map_err(|e| CaptureError::RequestParsing(format!("invalid uuid: {e}")))?;
        }
        Some(_) => {
            return Err(CaptureError::RequestParsing(
                "`uuid` must be a string".into(),
            ));
        }
    }
    match o.get("timestamp") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if humantime::parse_rfc3339_weak(t).is_ok() => {}
        Some(_) => return Err(CaptureError::InvalidTimestamp),
    }
    distinct_id(o).ok_or(CaptureError::MissingDistinctId)
}

/// `distinct_id`, else `$distinct_id`, else `properties.distinct_id`; stringified, NUL bytes
/// replaced, cut to 200 characters. `None` when absent, null or empty.
pub(crate) fn distinct_id(o: &Map<String, Value>) -> Option<String> {
    let value = o
        .get("distinct_id")
        .or_else(|| o.get("$distinct_id"))
        .filter(|v| !v.is_null())
        .or_else(|| o.get("properties")?.get("distinct_id"))
        .filter(|v| !v.is_null())?;
    let s = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let s = s.replace('\0', "\u{FFFD}");
    if s.is_empty() {
        return None;
    }
    Some(s.chars().take(MAX_DISTINCT_ID_CHARS).collect())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const KEY: &str = "phc_5cmKiX9OubQjsSfOZuaolWaxo2z7WXqd295eB0uOtTb";

    fn ok(body: &str) -> Vec<Accepted> {
        accept(body.as_bytes(), EVENT_BODY_LIMIT).expect(body)
    }
    fn err(body: &str) -> CaptureError {
        accept(body.as_bytes(), EVENT_BODY_LIMIT).expect_err(body)
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
        assert_eq!(err(r#"{"event":"e","distinct_id":"d"}"#).status(), 401);
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
            assert_eq!(e.status(), 403);
            assert_eq!(e.code(), "ingest_key_unknown");
        }
        // Surrounding whitespace is trimmed, as capture does.
        assert_eq!(
            ok(r#"{"$token":" phc_x\n","event":"e","distinct_id":"d"}"#)[0].token,
            "phc_x"
        );
        assert_eq!(
            err(
                r#"[{"token":"a","event":"e","distinct_id":"d"},{"token":"b","event":"e","distinct_id":"d"}]"#
            ),
            CaptureError::MultipleTokens
        );
    }

    #[test]
    fn event_rules() {
        assert_eq!(
            err(r#"{"token":"t","event":"","distinct_id":"d"}"#),
            CaptureError::MissingEventName
        );
        assert_eq!(
            err(r#"{"token":"t","distinct_id":"d"}"#).code(),
            "request_parsing_error"
        );
        for d in [r#""#, r#","distinct_id":null"#, r#","distinct_id":"""#] {
            assert_eq!(
                err(&format!(r#"{{"token":"t","event":"e"{d}}}"#)),
                CaptureError::MissingDistinctId
            );
        }
        let long = ok(&format!(
            r#"{{"token":"t","event":"e","distinct_id":"{}"}}"#,
            "z".repeat(222)
        ));
        assert_eq!(long[0].distinct_id.len(), 200);
        assert_eq!(
            ok(r#"{"token":"t","event":"e","properties":{"distinct_id":"p"}}"#)[0].distinct_id,
            "p"
        );
        assert_eq!(
            err(r#"{"token":"t","event":"e","distinct_id":"d","uuid":"not-a-uuid"}"#).code(),
            "request_parsing_error"
        );
        ok(r#"{"token":"t","event":"e","distinct_id":"d","uuid":""}"#);
        assert_eq!(
            err(r#"{"token":"t","event":"e","distinct_id":"d","timestamp":"yesterday"}"#),
            CaptureError::InvalidTimestamp
        );
        assert_eq!(err("[]"), CaptureError::EmptyBatch);
        assert_eq!(err("not json").status(), 400);
        assert_eq!(err("42").status(), 400);
    }

    #[test]
    fn gzip_and_size() {
        let json = format!(r#"{{"api_key":"{KEY}","event":"e","distinct_id":"d"}}"#);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(json.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(accept(&gz, EVENT_BODY_LIMIT).unwrap().len(), 1);
        // Broken gzip, non-UTF-8, and a bomb that inflates past the limit.
        let mut broken = gz.clone();
        broken.truncate(12);
        assert_eq!(
            accept(&broken, EVENT_BODY_LIMIT).unwrap_err().code(),
            "request_decoding_error"
        );
        assert_eq!(
            accept(&[0xff, 0xfe], EVENT_BODY_LIMIT).unwrap_err().code(),
            "request_decoding_error"
        );
        let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        bomb.write_all(&vec![b' '; 3 * 1024 * 1024]).unwrap();
        let bomb = bomb.finish().unwrap();
        assert!(bomb.len() < 64 * 1024);
        let e = accept(&bomb, EVENT_BODY_LIMIT).unwrap_err();
        assert_eq!((e.status(), e.code()), (413, "payload_too_large"));
        let big = vec![b' '; EVENT_BODY_LIMIT + 1];
        assert_eq!(accept(&big, EVENT_BODY_LIMIT).unwrap_err().status(), 413);
    }

    #[test]
    fn error_body_shape() {
        assert_eq!(
            CaptureError::NoToken.body(),
            serde_json::json!({"status": 401, "code": "ingest_key_required", "error": "event submitted without an api_key"})
        );
    }
}
