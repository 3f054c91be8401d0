//! W3C Trace Context: `traceparent` and `tracestate`.
//!
//! `traceparent` is `version-traceid-parentid-flags`, lower-case hex:
//! `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`. Version `00`
//! must be exactly 55 bytes; a later version may append `-...` fields, which
//! are ignored; version `ff` is invalid. `tracestate` is kept verbatim when
//! it is well formed (at most 32 `key=value` members, 512 bytes) and only
//! when `traceparent` was valid, as the spec requires.

use http::HeaderMap;

use super::{headers, single, Encoded, Extracted, InjectContext, Propagator};
use crate::trace::context::{decode_hex, decode_hex_byte, SpanId, TraceId};

/// A parsed `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// Trace id.
    pub trace_id: TraceId,
    /// The caller's span id.
    pub parent_id: SpanId,
    /// Trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

/// Largest `tracestate` kept (the spec's propagation minimum).
pub const MAX_TRACESTATE_BYTES: usize = 512;
/// Most `tracestate` members allowed by the spec.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

/// Parses a `traceparent` value; `None` when malformed.
pub fn parse_traceparent(v: &[u8]) -> Option<TraceParent> {
    if v.len() < 55 {
        return None;
    }
    let version = decode_hex_byte(&v[0..2], true)?;
    if version == 0xff {
        return None;
    }
    if version == 0 && v.len() != 55 {
        return None;
    }
    if v.len() > 55 && v[55] != b'-' {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id = TraceId(decode_hex::<16>(&v[3..35], true)?);
    let parent_id = SpanId(decode_hex::<8>(&v[36..52], true)?);
    let flags = decode_hex_byte(&v[53..55], true)?;
    if !trace_id.is_valid() || !parent_id.is_valid() {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        flags,
    })
}

/// Whether a `tracestate` value is well formed enough to forward verbatim:
/// within size limits, comma-separated `key=value` members (empty members
/// allowed), keys of `a-z0-9_-*/@`, values of printable ASCII without `,`
/// and `=`, and no duplicate-free check beyond that.
pub fn valid_tracestate(v: &[u8]) -> bool {
    if v.len() > MAX_TRACESTATE_BYTES {
        return false;
    }
    let mut members = 0;
    for member in v.split(|&b| b == b',') {
        let member = trim_ows(member);
        if member.is_empty() {
            continue;
        }
        members += 1;
        if members > MAX_TRACESTATE_MEMBERS {
            return false;
        }
        let Some(eq) = member.iter().position(|&b| b == b'=') else {
            return false;
        };
        let (key, value) = (&member[..eq], &member[eq + 1..]);
        let key_ok = !key.is_empty()
            && key.len() <= 256
            && key.iter().all(|&b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'-' | b'*' | b'/' | b'@')
            });
        let value_ok = !value.is_empty()
            && value.len() <= 256
            && value
                .iter()
                .all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
            && value.last() != Some(&b' ');
        if !key_ok || !value_ok {
            return false;
        }
    }
    true
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Reads `traceparent` (and `tracestate` with it) into `out`.
pub(super) fn extract(headers: &HeaderMap, out: &mut Extracted) {
    let tp = match single(headers, &headers::TRACEPARENT) {
        Ok(Some(v)) => v,
        Ok(None) => return,
        Err(()) => {
            out.errors.add(Propagator::TraceContext);
            return;
        }
    };
    let Some(tp) = parse_traceparent(tp.as_bytes()) else {
        out.errors.add(Propagator::TraceContext);
        return;
    };
    out.trace_id = Some(tp.trace_id);
    out.parent_span_id = Some(tp.parent_id);
    out.sampled = Some(tp.flags & 1 == 1);
    out.format = Some(Propagator::TraceContext);
    let mut states = headers.get_all(headers::TRACESTATE).iter();
    let Some(first) = states.next() else {
        return;
    };
    let state = match states.next() {
        // The common case: one header, kept as it came (a refcount).
        None => first.clone(),
        // Several headers are one list (RFC 9110 field combination): the
        // rare case pays for one joined copy.
        Some(second) => {
            let mut joined = first.as_bytes().to_vec();
            for v in std::iter::once(second).chain(states) {
                joined.push(b',');
                joined.extend_from_slice(v.as_bytes());
            }
            match http::HeaderValue::from_bytes(&joined) {
                Ok(v) => v,
                Err(_) => {
                    out.errors.add(Propagator::TraceContext);
                    return;
                }
            }
        }
    };
    if valid_tracestate(state.as_bytes()) {
        out.tracestate = Some(state);
    } else {
        out.errors.add(Propagator::TraceContext);
    }
}

/// Writes `traceparent`, and `tracestate` when one came in valid.
pub(super) fn inject(headers: &mut HeaderMap, cx: &InjectContext<'_>, encoded: &Encoded) {
    headers.insert(headers::TRACEPARENT, encoded.traceparent());
    match &cx.extracted.tracestate {
        Some(state) => {
            headers.insert(headers::TRACESTATE, state.clone());
        }
        None => {
            // A tracestate that came without a valid traceparent belongs to
            // a trace that is not this one.
            headers.remove(headers::TRACESTATE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_table() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let table: &[(&str, Option<u8>)] = &[
            (ok, Some(1)),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                Some(0),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
                Some(9),
            ),
            // A future version may carry more fields after a dash.
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                Some(1),
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                None,
            ),
            // Version 00 has exactly four fields.
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                None,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                None,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                None,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                None,
            ),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", None),
            ("", None),
            ("garbage", None),
            (
                "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                None,
            ),
        ];
        for (input, flags) in table {
            let got = parse_traceparent(input.as_bytes());
            assert_eq!(got.map(|t| t.flags), *flags, "{input}");
        }
        let tp = parse_traceparent(ok.as_bytes()).unwrap();
        assert_eq!(tp.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id.to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn tracestate_table() {
        let long = format!("k={}", "v".repeat(600));
        let many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        let table: &[(&str, bool)] = &[
            ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", true),
            ("rojo=00f067aa0ba902b7 , congo=t61rcWkgMzE", true),
            ("tenant@vendor=x", true),
            ("", true),
            (",,", true),
            ("novalue", false),
            ("Upper=1", false),
            ("k=", false),
            ("k=a,b", false),
            (&long, false),
            (&many, false),
        ];
        for (input, ok) in table {
            assert_eq!(valid_tracestate(input.as_bytes()), *ok, "{input}");
        }
    }
}
