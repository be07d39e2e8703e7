//! The request shapes and the rules on tokens and events (`rust/capture/src/v0_request.rs`,
//! `rust/capture/src/utils.rs`, `rust/capture/src/token.rs`, `rust/common/types/src/event.rs`).
//!
//! capture parses the payload into its serde types (`RawRequest`, untagged), which first
//! buffers the whole document as a tree, then checks the events. A tree of a 100 MiB payload
//! takes gigabytes, so the sink gets the same answers another way, in bounded memory:
//! 1. [`scan`] reads the payload once, as text, without building a tree: the shape and the
//!    field types of every event are checked on borrowed slices (`RawValue`), and each event is
//!    kept as where it sits in the payload (8 bytes an event);
//! 2. an event over capture's Kafka limit ([`EVENT_LIMIT`]) is refused before its fields are
//!    read, so no event larger than that is ever decoded;
//! 3. each event's values (token, name, `distinct_id`) are then read from that event alone, a
//!    tree of at most one event at a time ([`Scanned::check`]);
//! 4. the accepted events are handed out one at a time ([`Scanned::events`]).

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{Accepted, CaptureError};

/// Longest project key capture accepts (`rust/capture/src/token.rs`).
pub(crate) const MAX_TOKEN_LEN: usize = 64;
/// `distinct_id` is cut to this many characters (`rust/common/types/src/event.rs`).
pub(crate) const MAX_DISTINCT_ID_CHARS: usize = 200;
/// Largest event capture passes on: its Kafka producer's `message.max.bytes`
/// (`KAFKA_PRODUCER_MESSAGE_MAX_BYTES`, default 1,000,000, `rust/capture/src/config.rs`). A
/// larger event is refused by the producer and the request answered 413 `Event rejected by
/// kafka during send` (`rust/capture/src/sinks/kafka.rs`; "if a single event is still too
/// big, we'll drop it at kafka send time", `rust/capture/src/server.rs`). capture measures
/// the Kafka message (the event with a small envelope); the sink measures the event as one
/// JSON line, which is what it prints, so it bounds every line on stdout and in `--out`.
pub(crate) const EVENT_LIMIT: usize = 1_000_000;

/// The words capture answers an event over [`EVENT_LIMIT`] with.
pub(crate) fn event_too_big() -> CaptureError {
    CaptureError::TooBig("Event rejected by kafka during send".into())
}

// ---------------------------------------------------------------------------------------------
// The request shapes: capture's serde types (`RawRequest`, `BatchedRequest`, `RawEvent`,
// `RawEngageEvent`), field for field, so the same JSON fails the same shape; each field is kept
// as its text, and its type checked on that text ([`EventShape::is_raw_event`]).

/// `RawEvent`'s fields (`rust/common/types/src/event.rs`), each as its JSON text. `Option`
/// reads `null` as absent, as capture's `Option` fields do; `properties` keeps `null` (capture's
/// `#[serde(default)] properties: Map` refuses it).
#[derive(Deserialize)]
struct EventShape<'a> {
    #[serde(borrow, alias = "$token", alias = "api_key")]
    token: Option<&'a RawValue>,
    /// Any JSON value; read only so that `distinct_id` with `$distinct_id` is a duplicate.
    #[serde(borrow, alias = "$distinct_id")]
    #[allow(dead_code)]
    distinct_id: Option<&'a RawValue>,
    #[serde(borrow)]
    uuid: Option<&'a RawValue>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    properties: Option<&'a RawValue>,
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    offset: Option<&'a RawValue>,
    #[serde(borrow, rename = "$set")]
    set: Option<&'a RawValue>,
    #[serde(borrow, rename = "$set_once")]
    set_once: Option<&'a RawValue>,
}

/// A field that is present, `null` included.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn is_string(v: &RawValue) -> bool {
    v.get().starts_with('"')
}

fn is_object(v: &RawValue) -> bool {
    v.get().starts_with('{')
}

/// A JSON string's value, when it is short (a long one cannot be any of the values asked for).
fn short_string(v: &RawValue, max: usize) -> Option<String> {
    if v.get().len() > max {
        return None;
    }
    serde_json::from_str(v.get()).ok()
}

impl EventShape<'_> {
    /// Whether the fields have `RawEvent`'s types (`engage`: `RawEngageEvent`'s, which has no
    /// `event`).
    fn is_raw_event(&self, engage: bool) -> bool {
        let opt = |f: Option<&RawValue>, ok: fn(&RawValue) -> bool| f.is_none_or(ok);
        // An empty string is no uuid; anything else must parse (`rust/common/types/src/util.rs`).
        // A uuid is 36 characters, each at most a 6-byte escape.
        let uuid = |v: &RawValue| {
            short_string(v, 2 + 6 * 36)
                .is_some_and(|s| s.is_empty() || uuid::Uuid::parse_str(&s).is_ok())
        };
        let offset = |v: &RawValue| serde_json::from_str::<i64>(v.get()).is_ok();
        (engage || self.event.is_some_and(is_string))
            && opt(self.token, is_string)
            && opt(self.uuid, uuid)
            && opt(self.properties, is_object)
            && opt(self.timestamp, is_string)
            && opt(self.offset, offset)
            && opt(self.set, is_object)
            && opt(self.set_once, is_object)
    }

    /// Whether the event is a `$performance_event`, which capture drops.
    fn is_performance(&self) -> bool {
        // "$performance_event" is 17 characters, each at most a 6-byte escape.
        self.event
            .and_then(|v| short_string(v, 2 + 6 * 17))
            .is_some_and(|n| n == "$performance_event")
    }
}

/// `BatchedRequest` (`rust/capture/src/v0_request.rs`): `token` (alias `api_key`, not
/// `$token`) is required, `batch` an array of `RawEvent`s.
#[derive(Deserialize)]
struct BatchShape<'a> {
    #[serde(alias = "api_key")]
    token: String,
    #[allow(dead_code)] // read only to check its type, as capture does
    historical_migration: Option<bool>,
    sent_at: Option<String>,
    #[serde(borrow)]
    batch: &'a RawValue,
}

/// Where an event sits in the payload: its start and length in bytes. (The payload is at most
/// capture's 100 MiB, so 32 bits each.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span(u32, u32);

impl Span {
    fn of(text: &str, v: &RawValue) -> Span {
        let start = v.get().as_ptr() as usize - text.as_ptr() as usize;
        let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
        Span(n(start), n(v.get().len()))
    }

    fn get(self, text: &str) -> &str {
        let start = self.0 as usize;
        text.get(start..start + self.1 as usize).unwrap_or("")
    }
}

/// What the shape says: where the events are, and what the request holds besides.
struct Shape {
    /// Every event but the `$performance_event`s.
    events: Vec<Span>,
    /// Events in the request, `$performance_event`s included.
    total: usize,
    batch_token: Option<String>,
    sent_at: Option<String>,
    /// An update without an event name (`RawEngageEvent`).
    engage: bool,
}

/// The elements of a JSON array as `RawEvent`s, in order: `None` when `v` is not an array or
/// one element is not a `RawEvent`.
fn event_array(text: &str, v: &RawValue, shape: &mut Shape) -> Option<()> {
    struct Events<'s, 't> {
        text: &'t str,
        shape: &'s mut Shape,
    }
    impl<'de, 's, 't> serde::de::Visitor<'de> for Events<'s, 't> {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of events")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            let mut all = true;
            while let Some(raw) = seq.next_element::<&'de RawValue>()? {
                let e: Option<EventShape> = serde_json::from_str(raw.get()).ok();
                match e {
                    Some(e) if all && e.is_raw_event(false) => {
                        self.shape.total += 1;
                        if !e.is_performance() {
                            self.shape.events.push(Span::of(self.text, raw));
                        }
                    }
                    _ => all = false,
                }
            }
            Ok(all)
        }
    }
    if !v.get().starts_with('[') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(v.get());
    let events = Events { text, shape };
    let all = serde::Deserializer::deserialize_seq(&mut de, events).ok()?;
    all.then_some(())
}

/// The untagged `RawRequest` (`rust/capture/src/v0_request.rs`), tried in capture's order: an
/// array of events, a batch, one event, an engage update. Syntax errors are serde_json's words
/// at their place in the payload; a document of no shape is serde's refusal, which names the
/// enum; trailing characters after a good shape are refused as serde_json refuses them.
fn shape(text: &str) -> Result<Shape, CaptureError> {
    let parsing = |e: serde_json::Error| CaptureError::RequestParsing(e.to_string());
    let mut de = serde_json::Deserializer::from_str(text);
    let top = <&RawValue>::deserialize(&mut de).map_err(parsing)?;
    let mut shape = Shape {
        events: Vec::new(),
        total: 0,
        batch_token: None,
        sent_at: None,
        engage: false,
    };
    let matched = if top.get().starts_with('[') {
        event_array(text, top, &mut shape).is_some()
    } else if is_object(top) {
        let batch = serde_json::from_str::<BatchShape>(top.get())
            .ok()
            .and_then(|b| {
                event_array(text, b.batch, &mut shape)?;
                shape.batch_token = Some(b.token);
                shape.sent_at = b.sent_at;
                Some(())
            });
        if batch.is_some() {
            true
        } else {
            shape.events.clear();
            shape.total = 0;
            match serde_json::from_str::<EventShape>(top.get()) {
                Ok(e) if e.is_raw_event(false) => {
                    shape.total = 1;
                    if !e.is_performance() {
                        shape.events.push(Span::of(text, top));
                    }
                    true
                }
                Ok(e) if e.is_raw_event(true) => {
                    shape.total = 1;
                    shape.engage = true;
                    shape.events.push(Span::of(text, top));
                    true
                }
                _ => false,
            }
        }
    } else {
        false
    };
    if !matched {
        return Err(CaptureError::RequestParsing(
            "data did not match any variant of untagged enum RawRequest".into(),
        ));
    }
    de.end().map_err(parsing)?;
    Ok(shape)
}

/// The length of a JSON text without the whitespace between its tokens: the event as one line.
fn compact_len(text: &str) -> usize {
    let (mut n, mut in_string, mut escaped) = (0, false, false);
    for &b in text.as_bytes() {
        if in_string {
            n += 1;
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            n += 1;
            in_string = b == b'"';
        }
    }
    n
}

/// A request's payload whose shape and events capture accepts: the events are read from it
/// one at a time ([`Scanned::events`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scanned {
    text: String,
    events: Vec<Span>,
    engage: bool,
    token: String,
    /// `sent_at` of a batch body, as sent.
    pub(crate) sent_at: Option<String>,
}

/// Checks a payload as capture does after decoding it, in capture's order: the shape
/// (`rust/capture/src/v0_request.rs`), an engage update only on `/engage`, no event at all,
/// `$performance_event`s dropped, then ([`Scanned::check`]) the token and each event.
/// `Ok(None)`: nothing left once the `$performance_event`s are dropped (answered 200).
pub(crate) fn scan(text: String, path: &str) -> Result<Option<Scanned>, CaptureError> {
    let shape = shape(&text)?;
    if shape.engage && !path.starts_with("/engage") {
        return Err(CaptureError::RequestHydration(
            "non-engage request missing event name attribute".into(),
        ));
    }
    if shape.total == 0 {
        return Err(CaptureError::EmptyBatch);
    }
    if shape.events.is_empty() {
        return Ok(None);
    }
    let find_token = shape.batch_token.is_none();
    let scanned = Scanned {
        text,
        events: shape.events,
        engage: shape.engage,
        token: shape.batch_token.unwrap_or_default(),
        sent_at: shape.sent_at,
    };
    scanned.check(find_token).map(Some)
}

/// One event's values, read from its own text (a tree of one event, at most [`EVENT_LIMIT`]).
fn event_values(text: &str, engage: bool) -> Map<String, Value> {
    let mut event = match serde_json::from_str(text) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    };
    if engage {
        // capture turns a nameless update on /engage into `$identify`.
        event.insert("event".into(), Value::String("$identify".into()));
    }
    event
}

/// `RawEvent::extract_token`: the field (`token`, `$token` or `api_key`), else a string
/// `properties.token`.
fn event_token(e: &Map<String, Value>) -> Option<String> {
    ["token", "$token", "api_key"]
        .iter()
        .find_map(|k| e.get(*k).and_then(Value::as_str))
        .or_else(|| properties(e).get("token").and_then(Value::as_str))
        .map(str::to_string)
}

fn properties(e: &Map<String, Value>) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    e.get("properties")
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

fn event_distinct_id(e: &Map<String, Value>) -> Option<String> {
    let top = e.get("distinct_id").or_else(|| e.get("$distinct_id"));
    distinct_id(top, properties(e))
}

impl Scanned {
    /// The token and each event, in capture's order: an event over [`EVENT_LIMIT`] first
    /// (the sink's one difference: capture would refuse it only when sending, after the checks
    /// below; refusing it first means no larger event is ever decoded), then
    /// `extract_and_verify_token` (`rust/capture/src/utils.rs`; `find_token`: the events'
    /// tokens unless the batch has one), then `process_single_event`
    /// (`rust/capture/src/events/analytics.rs`) for each event in order.
    fn check(mut self, find_token: bool) -> Result<Scanned, CaptureError> {
        for span in &self.events {
            let text = span.get(&self.text);
            if text.len() > EVENT_LIMIT && compact_len(text) > EVENT_LIMIT {
                return Err(event_too_big());
            }
        }
        let mut token: Option<String> = None;
        let mut several = false;
        let mut first_problem = None;
        for span in &self.events {
            let e = event_values(span.get(&self.text), self.engage);
            if find_token && let Some(t) = event_token(&e) {
                match &token {
                    None => token = Some(t),
                    Some(first) => several |= *first != t,
                }
            }
            if first_problem.is_none() {
                first_problem = event_problem(&e);
            }
        }
        if find_token {
            self.token = match (token, several) {
                (None, _) => return Err(CaptureError::NoToken),
                (Some(_), true) => return Err(CaptureError::MultipleTokens),
                (Some(t), false) => t,
            };
        }
        self.token = validate_token(&self.token)?.to_string();
        match first_problem {
            Some(problem) => Err(problem),
            None => Ok(self),
        }
    }

    /// The accepted events, one at a time: each is read from the payload when asked for.
    pub(crate) fn events(&self) -> impl Iterator<Item = Accepted> + '_ {
        self.events.iter().map(|span| {
            let event = event_values(span.get(&self.text), self.engage);
            let distinct_id = event_distinct_id(&event).unwrap_or_default();
            Accepted {
                event,
                token: self.token.clone(),
                distinct_id,
            }
        })
    }
}

/// `process_single_event` (`rust/capture/src/events/analytics.rs`): a non-empty `event`, a
/// `distinct_id` ([`distinct_id`]), a boolean `$cookieless_mode` when present.
fn event_problem(e: &Map<String, Value>) -> Option<CaptureError> {
    if e.get("event")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        return Some(CaptureError::MissingEventName);
    }
    if event_distinct_id(e).is_none() {
        return Some(CaptureError::MissingDistinctId);
    }
    match properties(e).get("$cookieless_mode") {
        None | Some(Value::Bool(_)) => None,
        Some(_) => Some(CaptureError::InvalidCookielessMode),
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
