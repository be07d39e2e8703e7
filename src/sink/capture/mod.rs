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
//! 10. Sending (`rust/capture/src/sinks/kafka.rs`): an event over the Kafka producer's
//!     1,000,000-byte message limit is refused 413 (see [`validation`] for the order: the sink
//!     checks it first, so it never decodes a larger event).
//! 11. Answers (`rust/capture/src/api.rs`): `200 {"status":"Ok"}` (JSON), `204` with
//!     `beacon=1`; every error is `text/plain; charset=utf-8` with capture's message.
//!
//! Memory: capture parses the payload into trees; the sink does not (see [`validation`]), and
//! decodes gzip, base64 and lz-string with the cap enforced while decoding ([`decoding`]), so
//! one request takes at most about the 100 MiB payload, whatever its shape.
//!
//! What capture decides from its own state (billing quotas, token drop lists, event
//! restrictions, rate limits) is not modelled: with none configured capture answers 200, and
//! so does the sink. A 200 therefore never proves an event was stored.
//!
//! The rules live by concern: [`routes`], [`decoding`] (query, form, base64, gzip, lz-string),
//! [`validation`] (shapes, tokens, events) and [`answers`] (refusals and their words).

mod answers;
mod decoding;
mod routes;
#[cfg(test)]
mod tests;
mod validation;

use serde_json::{Map, Value};

pub use answers::CaptureError;
pub(crate) use answers::{OK_BODY, TEXT, body_too_big};
pub(crate) use decoding::check_query;
use decoding::{decompress, extract_payload, parse_query};
pub(crate) use routes::{Route, route};
pub(crate) use validation::Scanned;
use validation::{batch_sent_at_ms, query_sent_at_ms};

/// Largest body on every event route ("the wire cap", capture's `BATCH_BODY_SIZE`, 20 MiB).
/// Older versions set 2 MiB on the event routes and 20 MiB on `/batch` with axum's
/// `DefaultBodyLimit`, which capture's streaming `Body` extractor never obeyed; the current one
/// holds every v0 route to one cap (`rust/capture/tests/integration_wire_body_limits.rs`,
/// `rust/capture/src/extractors.rs`).
pub const WIRE_LIMIT: usize = 20 * 1024 * 1024;
/// Largest payload once decompressed or decoded: five times the wire cap
/// (`event_payload_size_limit`, `rust/capture/src/server.rs`).
pub(crate) const PAYLOAD_LIMIT: usize = 5 * WIRE_LIMIT;

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
    /// The events that pass on (after dropping `$performance_event`), read one at a time
    /// ([`Handled::events`]); `None` when none is left.
    pub(crate) events: Option<Scanned>,
    /// `beacon=1`: answer 204 without a body.
    pub(crate) beacon: bool,
    /// `sent_at` from the batch body or the query, as Unix milliseconds, when capture can
    /// read it (for the sink's log: how far the sender's clock is off).
    pub(crate) sent_at_ms: Option<i64>,
}

impl Handled {
    /// The accepted events, as received, one at a time.
    pub(crate) fn events(&self) -> impl Iterator<Item = Accepted> + '_ {
        self.events.iter().flat_map(Scanned::events)
    }
}

/// An accepted event: the object as received, and the values capture derives from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub event: Map<String, Value>,
    pub token: String,
    pub distinct_id: String,
}

/// Handles a routed capture request: the events capture accepts, or its refusal.
pub(crate) fn handle(req: &Request) -> Result<Handled, CaptureError> {
    let mut query = parse_query(req.query)?;
    if req.body.len() > WIRE_LIMIT {
        return Err(body_too_big());
    }
    let (bytes, compression) = extract_payload(req, &mut query)?;
    let text = decompress(bytes, compression, PAYLOAD_LIMIT, req.path)?;
    let events = validation::scan(text, req.path)?;
    let sent_at_ms = events
        .as_ref()
        .and_then(|e| batch_sent_at_ms(e.sent_at.as_deref()));
    Ok(Handled {
        beacon: events.is_some() && query.beacon,
        sent_at_ms: sent_at_ms.or(query_sent_at_ms(query.sent_at)),
        events,
    })
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
    .map(|h| h.events.iter().flat_map(Scanned::events).collect())
}
