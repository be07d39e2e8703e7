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
/// The units are kept as they come in CESU-8 (UTF-8 with each surrogate on its own, 1 to 3
/// bytes a unit, where a `Vec<u16>` takes 2), then joined into UTF-8 in place: so a payload at
/// the unit cap takes at most 1.5 times the byte cap, never the 2 + 1 times of units plus a copy.
pub(super) fn lz64_to_string(payload: &[u8], limit: usize) -> Result<String, CaptureError> {
    let text = std::str::from_utf8(payload).unwrap_or("INVALID_UTF8");
    let too_big = || CaptureError::TooBig("lz64 request payload size limit exceeded".into());
    let cesu = match lz64_decode(text, limit) {
        Ok(cesu) => cesu,
        Err(Lz64Error::TooLarge) => {
            return Err(CaptureError::TooBig(format!(
                "Decompressed LZ64 payload would exceed {limit} bytes"
            )));
        }
        Err(Lz64Error::TooManyBytes) => return Err(too_big()),
        Err(Lz64Error::Invalid) => {
            return Err(CaptureError::RequestDecoding(
                "decompress_lz64: failed decompress to UTF16".into(),
            ));
        }
    };
    let s = cesu_to_utf8(cesu).ok_or_else(|| {
        CaptureError::RequestDecoding("decompress_lz64: failed UTF16 to UTF8 conversion".into())
    })?;
    if s.len() > limit {
        return Err(too_big());
    }
    Ok(s)
}

/// A UTF-16 unit as CESU-8: 1 to 3 bytes, a surrogate as the 3 bytes of its own value.
pub(super) fn push_unit(out: &mut Vec<u8>, u: u16) {
    match u {
        0..0x80 => out.push(u as u8),
        0x80..0x800 => out.extend_from_slice(&[0xC0 | (u >> 6) as u8, 0x80 | (u & 0x3F) as u8]),
        _ => out.extend_from_slice(&[
            0xE0 | (u >> 12) as u8,
            0x80 | ((u >> 6) & 0x3F) as u8,
            0x80 | (u & 0x3F) as u8,
        ]),
    }
}

/// The length of the unit whose first byte is `b` in [`push_unit`]'s encoding.
fn unit_len(b: u8) -> usize {
    match b {
        0..0x80 => 1,
        0xC0..0xE0 => 2,
        _ => 3,
    }
}

/// [`push_unit`]'s bytes as UTF-8, in place: each high surrogate followed by a low one becomes
/// their character (6 bytes become 4); `None` for a lone surrogate, as `String::from_utf16`.
pub(super) fn cesu_to_utf8(mut b: Vec<u8>) -> Option<String> {
    let surrogate = |b: &[u8], i: usize| -> Option<u32> {
        (b.len() >= i + 3 && b[i] == 0xED && b[i + 1] >= 0xA0).then(|| {
            (u32::from(b[i] & 0x0F) << 12)
                | (u32::from(b[i + 1] & 0x3F) << 6)
                | u32::from(b[i + 2] & 0x3F)
        })
    };
    let (mut read, mut write) = (0, 0);
    while read < b.len() {
        match surrogate(&b, read) {
            Some(high @ 0xD800..0xDC00) => {
                let low = surrogate(&b, read + 3).filter(|l| (0xDC00..0xE000).contains(l))?;
                let c = char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))?;
                c.encode_utf8(&mut b[write..write + 4]);
                (read, write) = (read + 6, write + 4);
            }
            Some(_) => return None,
            None => {
                let n = unit_len(b[read]);
                b.copy_within(read..read + n, write);
                (read, write) = (read + n, write + n);
            }
        }
    }
    b.truncate(write);
    b.shrink_to_fit();
    String::from_utf8(b).ok()
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Lz64Error {
    Invalid,
    /// More units than the limit.
    TooLarge,
    /// More than 1.5 times the limit in bytes: more than the limit once in UTF-8.
    TooManyBytes,
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

/// lz-string's LZW decoding, refusing output beyond `limit` UTF-16 units before producing it,
/// in [`push_unit`]'s bytes, also refused beyond 1.5 × `limit` bytes (UTF-8 takes at least two
/// thirds of them, so more cannot fit the limit once joined). Dictionary entries are ranges of
/// the output, so memory stays proportional to the output.
pub(super) fn lz64_decode(text: &str, limit: usize) -> Result<Vec<u8>, Lz64Error> {
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
    // (start, bytes, units) in `out` (u32: the output is capped far below 4 GiB, and a
    // dictionary of millions of entries stays small).
    type Piece = (u32, u32, u32);
    let n = |x: usize| x as u32;
    let max_bytes = limit.saturating_add(limit / 2).min(u32::MAX as usize);
    let limit = limit.min(u32::MAX as usize);
    let mut out: Vec<u8> = Vec::new();
    // A piece of the output appended again; `units` already out.
    let emit = |out: &mut Vec<u8>, (start, len, count): Piece, units: usize| {
        if units + count as usize > limit {
            return Err(Lz64Error::TooLarge);
        }
        if out.len() + len as usize > max_bytes {
            return Err(Lz64Error::TooManyBytes);
        }
        out.extend_from_within(start as usize..(start + len) as usize);
        Ok(())
    };
    let literal = |bits: &mut Lz64Bits, code: u32| -> Result<u16, Lz64Error> {
        let v = bits.bits(if code == 0 { 8 } else { 16 })?;
        u16::try_from(v).map_err(|_| Lz64Error::Invalid)
    };
    // A literal unit appended to `out`: its piece.
    let push = |out: &mut Vec<u8>, u: u16, units: usize| -> Result<Piece, Lz64Error> {
        if units + 1 > limit {
            return Err(Lz64Error::TooLarge);
        }
        let start = out.len();
        push_unit(out, u);
        if out.len() > max_bytes {
            return Err(Lz64Error::TooManyBytes);
        }
        Ok((n(start), n(out.len() - start), 1))
    };
    // Codes 0 and 1 introduce a literal (8 or 16 bits), 2 ends the stream; entries from 3 on.
    let unit = match bits.bits(2)? {
        c @ (0 | 1) => literal(&mut bits, c)?,
        2 => return Ok(out),
        _ => return Err(Lz64Error::Invalid),
    };
    let mut w = push(&mut out, unit, 0)?;
    let mut total = 1usize;
    // Three placeholders keep the codes aligned.
    let mut dict: Vec<Piece> = vec![(0, 0, 0), (0, 0, 0), (0, 0, 0), w];
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
        let code = bits.bits(width)? as usize;
        let entry = match code {
            0 | 1 => {
                let u = literal(&mut bits, code as u32)?;
                let piece = push(&mut out, u, total)?;
                total += 1;
                dict.push(piece);
                count_down(&mut until_wider, &mut width);
                piece
            }
            2 => return Ok(out),
            _ => {
                let before = out.len();
                if let Some(&piece) = dict.get(code) {
                    emit(&mut out, piece, total)?;
                    total += piece.2 as usize;
                    (n(before), piece.1, piece.2)
                } else if code == dict.len() {
                    // The entry being defined: w and w's first unit.
                    let first = (w.0, n(unit_len(out[w.0 as usize])), 1);
                    emit(&mut out, w, total)?;
                    emit(&mut out, first, total + w.2 as usize)?;
                    total += w.2 as usize + 1;
                    (n(before), w.1 + first.1, w.2 + 1)
                } else {
                    return Err(Lz64Error::Invalid);
                }
            }
        };
        // w followed by the entry's first unit, which sits right after w in `out`.
        let first = n(unit_len(out[entry.0 as usize]));
        dict.push((w.0, w.1 + first, w.2 + 1));
        count_down(&mut until_wider, &mut width);
        w = entry;
    }
}

/// Standard base64 that decodes to UTF-8, decoded in the buffer's own memory (the output is
/// shorter than the input and written behind it), so a 100 MiB payload never has a second copy.
/// First checked, chunk by chunk, without keeping the output: `Err` gives the buffer back
/// untouched when it is not base64 or not UTF-8 once decoded, which is when decoding it whole
/// would fail (padding only at the very end; a character split across chunks is carried over).
fn unwrap_base64_in_place(mut buf: Vec<u8>) -> Result<String, Vec<u8>> {
    const CHUNK: usize = 4096; // a multiple of 4: chunks hold whole quanta
    let engine = &base64::engine::general_purpose::STANDARD;
    let mut out = [0u8; CHUNK / 4 * 3];
    let mut carry: Vec<u8> = Vec::with_capacity(CHUNK);
    let chunks = buf.len().div_ceil(CHUNK);
    for (i, chunk) in buf.chunks(CHUNK).enumerate() {
        if i + 1 < chunks && chunk.contains(&b'=') {
            return Err(buf);
        }
        let Ok(n) = engine.decode_slice(chunk, &mut out) else {
            return Err(buf);
        };
        carry.extend_from_slice(&out[..n]);
        match std::str::from_utf8(&carry) {
            Ok(_) => carry.clear(),
            Err(e) if e.error_len().is_none() => {
                carry.drain(..e.valid_up_to());
            }
            Err(_) => return Err(buf),
        }
    }
    if !carry.is_empty() {
        return Err(buf);
    }
    let (mut read, mut write) = (0, 0);
    while read < buf.len() {
        let end = (read + CHUNK).min(buf.len());
        let Ok(n) = engine.decode_slice(&buf[read..end], &mut out) else {
            return Err(buf); // checked above: not reached
        };
        buf[write..write + n].copy_from_slice(&out[..n]);
        (read, write) = (end, write + n);
    }
    buf.truncate(write);
    buf.shrink_to_fit();
    String::from_utf8(buf).map_err(std::string::FromUtf8Error::into_bytes)
}

/// `decompress_payload` (`rust/capture/src/payload/decompression.rs`).
pub(super) fn decompress(
    bytes: Vec<u8>,
    compression: Compression,
    limit: usize,
    path: &str,
) -> Result<String, CaptureError> {
    let mut payload = if compression == Compression::Gzip || bytes.starts_with(&GZIP_MAGIC) {
        let decoded = gunzip(&bytes, limit)?;
        drop(bytes);
        String::from_utf8(decoded)
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
        // A failed unwrap keeps the payload as it was. (The decoded text is shorter than the
        // payload, which is within the limit; capture's check after it cannot fail.)
        payload = match unwrap_base64_in_place(payload.into_bytes()) {
            Ok(text) => text,
            // Given back untouched: the payload's bytes, so UTF-8.
            Err(bytes) => String::from_utf8(bytes).unwrap_or_default(),
        };
    }
    Ok(payload)
}
