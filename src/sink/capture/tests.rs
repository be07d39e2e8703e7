//! capture's rules, rule by rule.

use std::io::Write;

use base64::Engine as _;

use super::decoding::*;
use super::routes::*;
use super::validation::EVENT_LIMIT;
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
        CaptureError::RequestHydration("non-engage request missing event name attribute".into())
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
    assert_eq!(handle(&r).unwrap().events().count(), 1);
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
    assert_eq!(h.events().next().unwrap().event["event"], "$identify");
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

#[test]
fn legacy_base64_is_unwrapped_in_place_or_kept() {
    let json = format!(r#"{{"api_key":"{KEY}","event":"é","distinct_id":"d"}}"#);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&json);
    let twice = base64::engine::general_purpose::STANDARD.encode(&b64);
    assert_eq!(
        decompress(twice.into_bytes(), Compression::Unsupported, 1 << 20, "/e/"),
        Ok(b64.clone())
    );
    // Longer than one chunk, a character split across chunks.
    let long = "é".repeat(5000);
    let b = base64::engine::general_purpose::STANDARD.encode(&long);
    assert_eq!(
        decompress(b.into_bytes(), Compression::Unsupported, 1 << 20, "/e/"),
        Ok(long)
    );
    // Not UTF-8 once decoded, padding in the middle, or not base64: kept as it was.
    let not_text = base64::engine::general_purpose::STANDARD.encode([0xff; 3000]);
    let mut padded = base64::engine::general_purpose::STANDARD.encode("ab");
    padded.push_str(&"AAAA".repeat(2000));
    for kept in [not_text, padded, "abc!".repeat(10)] {
        assert_eq!(
            decompress(
                kept.clone().into_bytes(),
                Compression::Unsupported,
                1 << 20,
                "/e/"
            ),
            Ok(kept)
        );
    }
}

#[test]
fn lz64_surrogates_join_or_fail() {
    let mut cesu = Vec::new();
    for u in "a😀é".encode_utf16() {
        push_unit(&mut cesu, u);
    }
    assert_eq!(cesu.len(), 1 + 6 + 2);
    assert_eq!(cesu_to_utf8(cesu).as_deref(), Some("a😀é"));
    for lone in [&[0xD83Du16][..], &[0xDE00], &[0xD83D, 0x61]] {
        let mut cesu = Vec::new();
        for u in lone {
            push_unit(&mut cesu, *u);
        }
        assert_eq!(cesu_to_utf8(cesu), None, "{lone:x?}");
    }
}

/// An event over capture's Kafka limit is refused before its fields are read; the limit is
/// on the event as one line, so whitespace around its tokens does not count.
#[test]
fn events_over_the_kafka_limit_are_refused() {
    let event = |pad: usize, spaces: usize| {
        format!(
            r#"{{"api_key":"{KEY}","event":"e","distinct_id":"d",{}"properties":{{"p":"{}"}}}}"#,
            " ".repeat(spaces),
            "x".repeat(pad)
        )
    };
    let base = event(0, 0).len();
    assert_eq!(ok(&event(EVENT_LIMIT - base, 0)).len(), 1);
    assert_eq!(ok(&event(EVENT_LIMIT - base, 5_000_000)).len(), 1);
    let over = err(&event(EVENT_LIMIT - base + 1, 0));
    assert_eq!(
        (over.status(), over.to_string()),
        (
            413,
            "maximum event size exceeded: Event rejected by kafka during send".into()
        )
    );
    // In an array or a batch too, and before the other events' problems.
    let small = format!(r#"{{"event":"e","distinct_id":"d","api_key":"{KEY}"}}"#);
    let big = event(EVENT_LIMIT, 0);
    assert_eq!(err(&format!("[{small},{big}]")), over);
    assert_eq!(
        err(&format!(
            r#"{{"api_key":"k","batch":[{big},{{"event":""}}]}}"#
        )),
        over
    );
    // A `$performance_event` is dropped, never sent: no limit.
    let perf = format!(
        r#"{{"event":"$performance_event","p":"{}"}}"#,
        "x".repeat(EVENT_LIMIT)
    );
    assert_eq!(ok(&format!("[{small},{perf}]")).len(), 1);
}

/// A payload of millions of values is checked without a tree of it: the answers are capture's.
#[test]
fn many_small_values_and_events() {
    let zeros = format!(
        r#"{{"api_key":"{KEY}","event":"e","distinct_id":"d","properties":{{"z":[{}0]}}}}"#,
        "0,".repeat(400_000)
    );
    assert_eq!(ok(&zeros).len(), 1);
    let one = r#"{"event":"e","distinct_id":"d","token":"t"},"#;
    let many = format!("[{}{}]", one.repeat(200_000), &one[..one.len() - 1]);
    let accepted = accept(many.as_bytes(), WIRE_LIMIT).unwrap();
    assert_eq!(accepted.len(), 200_001);
    assert_eq!(accepted[200_000].token, "t");
    // The last event's problem is still found.
    let bad = format!(
        "[{}{}]",
        one.repeat(200_000),
        r#"{"event":"e","token":"t"}"#
    );
    assert_eq!(err(&bad), CaptureError::MissingDistinctId);
    // Trailing characters after a good shape, and a syntax error deep in the payload.
    assert_eq!(
        err(&format!("{} x", &many[..many.len()])),
        CaptureError::RequestParsing(format!(
            "trailing characters at line 1 column {}",
            many.len() + 2
        ))
    );
    let broken = format!("[{}{{\"event\":]", one.repeat(3));
    assert!(
        matches!(err(&broken), CaptureError::RequestParsing(m) if m.starts_with("expected value at line 1")),
    );
}
