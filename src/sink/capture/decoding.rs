//! Reading the payload out of a request: query string, form, base64, gzip, lz-string
//! (`rust/capture/src/payload/`, `rust/capture/src/utils.rs`).

use std::io::Read;

use base64::Engine as _;
use serde::{Deserialize, Deserializer};

use super::routes::is_legacy_path;
use super::{CaptureError, Request};

/// The gzip magic capture looks for (`rust/capture/src/v0_request.rs`).
pub(super) const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];
/// Capture's form content type, matched exactly (`rust/capture/src/utils.rs`).
pub(super) const FORM_MIME_TYPE: &str = "application/x-www-form-urlencoded";
/// How much of a payload capture inspects to guess base64 or a form (`rust/capture/src/utils.rs`).
const MAX_CHARS_TO_CHECK: usize = 128;
/// Capture reads gzip output in chunks of this size (`rust/capture/src/payload/decompression.rs`).
const GZIP_CHUNK: usize = 8192;

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
pub(super) struct EventQuery {
    compression: Option<Compression>,
    data: Option<String>,
    #[serde(alias = "_")]
    pub(super) sent_at: Option<i64>,
    #[serde(default, deserialize_with = "beacon")]
    pub(super) beacon: bool,
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

/// Parses the query string as axum's `Query<EventQuery>` does.
pub(super) fn parse_query(query: Option<&str>) -> Result<EventQuery, CaptureError> {
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
pub(super) fn extract_payload(
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
pub(super) fn gunzip(compressed: &[u8], limit: usize) -> Result<Vec<u8>, CaptureError> {
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
pub(super) fn lz64_to_string(payload: &[u8], limit: usize) -> Result<String, CaptureError> {
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
pub(super) enum Lz64Error {
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
pub(super) fn lz64_decode(text: &str, limit: usize) -> Result<Vec<u16>, Lz64Error> {
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
pub(super) fn decompress(
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
