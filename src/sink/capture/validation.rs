//! The request shapes and the rules on tokens and events (`rust/capture/src/v0_request.rs`,
//! `rust/capture/src/utils.rs`, `rust/capture/src/token.rs`, `rust/common/types/src/event.rs`).

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::CaptureError;

/// Longest project key capture accepts (`rust/capture/src/token.rs`).
pub(crate) const MAX_TOKEN_LEN: usize = 64;
/// `distinct_id` is cut to this many characters (`rust/common/types/src/event.rs`).
pub(crate) const MAX_DISTINCT_ID_CHARS: usize = 200;

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
pub(super) struct RawEvent {
    #[serde(alias = "$token", alias = "api_key")]
    pub(super) token: Option<String>,
    #[serde(alias = "$distinct_id")]
    pub(super) distinct_id: Option<Value>,
    #[serde(default, deserialize_with = "uuid_or_empty")]
    pub(super) uuid: Option<String>,
    pub(super) event: String,
    #[serde(default)]
    pub(super) properties: Map<String, Value>,
    /// Any string passes: ingestion parses it later, and an unparseable one falls back to the
    /// capture time (`rust/common/types/src/event.rs`; capture's `InvalidTimestamp` is no
    /// longer raised for analytics events).
    pub(super) timestamp: Option<String>,
    pub(super) offset: Option<i64>,
    #[serde(rename = "$set")]
    pub(super) set: Option<Map<String, Value>>,
    #[serde(rename = "$set_once")]
    pub(super) set_once: Option<Map<String, Value>>,
}

/// An event without a name: a person update, only for `/engage`.
#[derive(Deserialize)]
#[allow(dead_code)]
pub(super) struct RawEngageEvent {
    #[serde(alias = "$token", alias = "api_key")]
    pub(super) token: Option<String>,
    #[serde(alias = "$distinct_id")]
    pub(super) distinct_id: Option<Value>,
    #[serde(default, deserialize_with = "uuid_or_empty")]
    pub(super) uuid: Option<String>,
    #[serde(default)]
    pub(super) properties: Map<String, Value>,
    pub(super) timestamp: Option<String>,
    pub(super) offset: Option<i64>,
    #[serde(rename = "$set")]
    pub(super) set: Option<Map<String, Value>>,
    #[serde(rename = "$set_once")]
    pub(super) set_once: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
pub(super) struct BatchedRequest {
    #[serde(alias = "api_key")]
    pub(super) token: String,
    pub(super) historical_migration: Option<bool>,
    pub(super) sent_at: Option<String>,
    pub(super) batch: Vec<RawEvent>,
}

/// The name matters: serde's refusal names the enum ("… untagged enum RawRequest").
#[derive(Deserialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)]
pub(super) enum RawRequest {
    Array(Vec<RawEvent>),
    Batch(BatchedRequest),
    One(Box<RawEvent>),
    Engage(Box<RawEngageEvent>),
}

/// One event as capture sees it: its token (if any), name, distinct_id, properties.
pub(super) struct Event {
    pub(super) token: Option<String>,
    pub(super) name: String,
    pub(super) distinct_id: Option<Value>,
    pub(super) properties: Map<String, Value>,
    /// The object as received (for printing).
    pub(super) raw: Map<String, Value>,
}

impl Event {
    pub(super) fn from_raw(e: RawEvent, raw: Value) -> Event {
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
    pub(super) fn token(&self) -> Option<String> {
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
pub(super) fn batch_sent_at_ms(value: Option<&str>) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(value?).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

/// `sent_at` (or `_`) in the query: milliseconds, ignored unless after 2020
/// (`rust/capture/src/payload/types.rs`).
pub(super) fn query_sent_at_ms(value: Option<i64>) -> Option<i64> {
    // 2021-01-01T00:00:00Z
    value.filter(|ms| *ms >= 1_609_459_200_000 && *ms <= 253_402_300_799_999)
}
