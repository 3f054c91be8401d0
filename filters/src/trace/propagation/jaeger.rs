//! Jaeger: `uber-trace-id` and `uberctx-*` baggage, as the Jaeger client
//! libraries send them.
//!
//! `uber-trace-id: {trace-id}:{span-id}:{parent-span-id}:{flags}`, lower or
//! upper hex. Ids may be shorter than 32 / 16 digits (left-padded with
//! zeros), the parent span id is deprecated (`0`), and `flags` is one or two
//! hex digits whose bit `0x01` is `sampled` (`0x02`, debug, only comes with
//! it). Some clients URL-encode the value (`%3A` for `:`); that is accepted.
//! The proxy writes `{32 hex}:{16 hex}:0:{1|0}`, as the OpenTelemetry Jaeger
//! propagator does; the debug flag is not passed on.
//!
//! Baggage travels as one `uberctx-{key}: {value}` header per entry. Those
//! headers always reach the upstream as they came. With `baggage` configured
//! too, each entry is also added to the W3C `baggage` header (values
//! percent-encoded where W3C requires it, names that W3C already carries
//! left alone), and each W3C entry is also written as `uberctx-{key}` unless
//! the request already has that header: an old Jaeger service and a W3C one
//! behind the proxy see the same baggage. W3C baggage properties (`;p=1`)
//! have no Jaeger form.

use bytes::{BufMut, BytesMut};
use http::{header::HeaderName, HeaderMap, HeaderValue};

use super::{
    baggage::{is_value_char, members, valid_baggage},
    headers, single, Encoded, Extracted, InjectContext, Propagator,
};
use crate::trace::context::{SpanId, TraceId};

/// A parsed `uber-trace-id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jaeger {
    /// The trace id (left-padded).
    pub trace_id: TraceId,
    /// The caller's span id (left-padded).
    pub span_id: SpanId,
    /// Flag `0x01`.
    pub sampled: bool,
}

/// The prefix of a Jaeger baggage header.
pub const BAGGAGE_PREFIX: &str = "uberctx-";

/// Longest `uber-trace-id` read (a 32-digit trace id, two 16-digit span ids,
/// two flag digits and three `%3A` separators fit well within it).
const MAX_LEN: usize = 96;

/// Bytes [`encode`] writes: `{32}:{16}:0:{1}`.
pub(super) const ENCODED_LEN: usize = 32 + 1 + 16 + 3 + 1;

/// Decodes 1..=2N hex digits, left-padded to N bytes.
fn padded_hex<const N: usize>(src: &[u8]) -> Option<[u8; N]> {
    if src.is_empty() || src.len() > 2 * N || !src.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    // 2N hex digits, zero-padded on the left; N is at most 16.
    let mut digits = [b'0'; 32];
    let digits = &mut digits[..2 * N];
    digits[2 * N - src.len()..].copy_from_slice(src);
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = ((hi << 4) | lo) as u8;
    }
    Some(out)
}

/// Parses an `uber-trace-id` value; `None` when malformed.
pub fn parse(v: &[u8]) -> Option<Jaeger> {
    if v.len() > MAX_LEN {
        return None;
    }
    // `%3A` stands for `:` in URL-encoded values; decode on the stack.
    let mut decoded = [0u8; MAX_LEN];
    let mut len = 0;
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' {
            match v.get(i + 1..i + 3) {
                Some(b"3A" | b"3a") => {
                    decoded[len] = b':';
                    i += 3;
                }
                _ => return None,
            }
        } else {
            decoded[len] = v[i];
            i += 1;
        }
        len += 1;
    }
    let mut parts = decoded[..len].split(|&b| b == b':');
    let trace = padded_hex::<16>(parts.next()?)?;
    let span = padded_hex::<8>(parts.next()?)?;
    padded_hex::<8>(parts.next()?)?;
    let [flags] = padded_hex::<1>(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    let (trace_id, span_id) = (TraceId(trace), SpanId(span));
    if !trace_id.is_valid() || !span_id.is_valid() {
        return None;
    }
    Some(Jaeger {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// Reads `uber-trace-id` into `out`.
pub(super) fn extract(headers: &HeaderMap, out: &mut Extracted) {
    let value = match single(headers, &headers::UBER_TRACE_ID) {
        Ok(Some(v)) => v,
        Ok(None) => return,
        Err(()) => {
            out.errors.add(Propagator::Jaeger);
            return;
        }
    };
    let Some(j) = parse(value.as_bytes()) else {
        out.errors.add(Propagator::Jaeger);
        return;
    };
    out.trace_id = Some(j.trace_id);
    out.parent_span_id = Some(j.span_id);
    if out.sampled.is_none() {
        out.sampled = Some(j.sampled);
    }
    out.format = Some(Propagator::Jaeger);
}

/// `{trace}:{span}:0:{1|0}`.
pub(super) fn encode(buf: &mut BytesMut, cx: &InjectContext<'_>) {
    buf.put_slice(&cx.trace_id.to_hex());
    buf.put_u8(b':');
    buf.put_slice(&cx.span_id.to_hex());
    buf.put_slice(if cx.sampled { b":0:1" } else { b":0:0" });
}

/// Writes `uber-trace-id`, and the W3C baggage entries as `uberctx-*`
/// headers when `baggage` is configured too (the layer's extract merged the
/// `uberctx-*` entries into it, so this only adds what was W3C-only).
pub(super) fn inject(headers: &mut HeaderMap, cx: &InjectContext<'_>, encoded: &Encoded) {
    headers.insert(headers::UBER_TRACE_ID, encoded.jaeger());
    let Some(baggage) = &cx.extracted.baggage else {
        return;
    };
    let mut name = BytesMut::new();
    for (key, value) in members(baggage.as_bytes()) {
        name.clear();
        name.put_slice(BAGGAGE_PREFIX.as_bytes());
        name.put_slice(key);
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&name),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        if !headers.contains_key(&name) {
            headers.insert(name, value);
        }
    }
}

/// Adds the `uberctx-*` entries of `headers` to the W3C baggage in `out`.
/// Requests without them pay one scan of the header names; a merge that
/// would break W3C's limits is dropped and counted as a Jaeger error.
pub(super) fn merge_baggage(headers: &HeaderMap, out: &mut Extracted) {
    let mut merged: Option<BytesMut> = None;
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(BAGGAGE_PREFIX) else {
            continue;
        };
        if key.is_empty() {
            continue;
        }
        let existing = out.baggage.as_ref().map(HeaderValue::as_bytes);
        if existing.is_some_and(|b| members(b).any(|(k, _)| k.eq_ignore_ascii_case(key.as_bytes())))
        {
            continue;
        }
        let buf = merged.get_or_insert_with(|| {
            let mut buf = BytesMut::new();
            if let Some(b) = existing {
                buf.put_slice(b);
            }
            buf
        });
        if merged_duplicate(buf, key.as_bytes()) {
            continue;
        }
        if !buf.is_empty() {
            buf.put_u8(b',');
        }
        buf.put_slice(key.as_bytes());
        buf.put_u8(b'=');
        percent_encode(value.as_bytes(), buf);
    }
    let Some(merged) = merged else {
        return;
    };
    match HeaderValue::from_maybe_shared(merged.freeze()) {
        Ok(v) if valid_baggage(v.as_bytes()) => out.baggage = Some(v),
        _ => out.errors.add(Propagator::Jaeger),
    }
}

/// Whether `buf` (a baggage list being built) already names `key`: a
/// repeated `uberctx-` header.
fn merged_duplicate(buf: &[u8], key: &[u8]) -> bool {
    members(buf).any(|(k, _)| k.eq_ignore_ascii_case(key))
}

/// Copies `value` into `buf`, percent-encoding every byte W3C baggage does
/// not allow in a value (Jaeger clients URL-encode already, so this is
/// usually a plain copy).
fn percent_encode(value: &[u8], buf: &mut BytesMut) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value {
        if is_value_char(b) {
            buf.put_u8(b);
        } else {
            buf.put_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0f)]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        const T: &str = "000000000000004d0000000000000016";
        // (input, Some((trace, span, sampled)) or None)
        type Row = (&'static str, Option<(&'static str, &'static str, bool)>);
        let table: &[Row] = &[
            (
                "000000000000004d0000000000000016:0000000000017c29:0:1",
                Some((T, "0000000000017c29", true)),
            ),
            (
                "4d0000000000000016:17c29:0:1",
                Some((T, "0000000000017c29", true)),
            ),
            (
                "4d0000000000000016:17c29:0:0",
                Some((T, "0000000000017c29", false)),
            ),
            (
                "4d0000000000000016:17c29:0:3",
                Some((T, "0000000000017c29", true)),
            ),
            (
                "4d0000000000000016:17c29:0:2",
                Some((T, "0000000000017c29", false)),
            ),
            (
                "4d0000000000000016:17c29:0:0f",
                Some((T, "0000000000017c29", true)),
            ),
            (
                "4D0000000000000016:17C29:A:1",
                Some((T, "0000000000017c29", true)),
            ),
            (
                "4d0000000000000016%3A17c29%3a0%3A1",
                Some((T, "0000000000017c29", true)),
            ),
            ("4d0000000000000016:17c29:0", None),
            ("4d0000000000000016:17c29:0:1:9", None),
            ("4d0000000000000016:17c29:0:100", None),
            ("4d0000000000000016:17c29::1", None),
            ("0:17c29:0:1", None),
            ("4d0000000000000016:0:0:1", None),
            ("000000000000004d00000000000000160:17c29:0:1", None),
            ("4d0000000000000016:00000000000017c29:0:1", None),
            ("4d00000000000000zz:17c29:0:1", None),
            ("4d0000000000000016%3B17c29:0:1", None),
            ("4d0000000000000016%3", None),
            ("", None),
        ];
        for (input, want) in table {
            let got = parse(input.as_bytes())
                .map(|j| (j.trace_id.to_string(), j.span_id.to_string(), j.sampled));
            let want = want.map(|(t, s, d)| (t.to_string(), s.to_string(), d));
            assert_eq!(got, want, "{input}");
        }
        assert_eq!(parse(&[b'1'; MAX_LEN + 1]), None);
    }

    #[test]
    fn uberctx_values_are_percent_encoded_for_w3c() {
        let mut buf = BytesMut::new();
        percent_encode(b"a b,c;d%20e=f", &mut buf);
        assert_eq!(&buf[..], b"a%20b%2Cc%3Bd%20e=f");
    }
}
