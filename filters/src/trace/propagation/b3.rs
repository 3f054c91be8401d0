//! Zipkin B3: the single `b3` header and the multi `x-b3-*` headers.
//!
//! Single: `{traceid}-{spanid}[-{sampled}[-{parentspanid}]]`, or just a
//! sampling decision (`0`, `1`, `d`). Multi: `x-b3-traceid`, `x-b3-spanid`,
//! `x-b3-sampled` (`1`/`0`, or the legacy `true`/`false`), `x-b3-flags`
//! (`1` = debug, which implies sampled). 64-bit trace ids are left-padded to
//! 128 bits. The proxy answers in the multi form (the one every B3 reader
//! understands) and also rewrites `b3` when the request carried it.

use http::{HeaderMap, HeaderValue};

use super::{header_value, headers, single, Encoded, Extracted, InjectContext, Propagator};
use crate::trace::context::{SpanId, TraceId};

/// A parsed B3 context; ids are absent for a sampling-only header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct B3 {
    /// Trace and span id, when present.
    pub ids: Option<(TraceId, SpanId)>,
    /// The sampling decision, when made (debug counts as sampled).
    pub sampled: Option<bool>,
}

/// Parses a `b3` single-header value; `None` when malformed.
pub fn parse_single(v: &[u8]) -> Option<B3> {
    if v.len() == 1 {
        return Some(B3 {
            ids: None,
            sampled: Some(parse_sampling(v)?),
        });
    }
    let mut parts = v.split(|&b| b == b'-');
    let trace_id = TraceId::from_hex(parts.next()?)?;
    let span_id = SpanId::from_hex(parts.next()?)?;
    let sampled = match parts.next() {
        None => None,
        Some(s) => Some(parse_sampling(s)?),
    };
    if let Some(parent) = parts.next() {
        SpanId::from_hex(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(B3 {
        ids: Some((trace_id, span_id)),
        sampled,
    })
}

fn parse_sampling(v: &[u8]) -> Option<bool> {
    match v {
        b"1" | b"d" => Some(true),
        b"0" => Some(false),
        _ => None,
    }
}

/// Parses the multi-header form from its four values; `None` when
/// malformed, `Some` with no ids and no decision when all are absent.
pub fn parse_multi(
    trace_id: Option<&[u8]>,
    span_id: Option<&[u8]>,
    sampled: Option<&[u8]>,
    flags: Option<&[u8]>,
) -> Option<B3> {
    let ids = match (trace_id, span_id) {
        (Some(t), Some(s)) => Some((TraceId::from_hex(t)?, SpanId::from_hex(s)?)),
        (None, None) => None,
        _ => return None,
    };
    let debug = match flags {
        None => false,
        Some(b"1") => true,
        Some(b"0") => false,
        Some(_) => return None,
    };
    let sampled = match sampled {
        None => None,
        Some(b"1" | b"true") => Some(true),
        Some(b"0" | b"false") => Some(false),
        Some(_) => return None,
    };
    Some(B3 {
        ids,
        sampled: if debug { Some(true) } else { sampled },
    })
}

/// Reads B3 into `out` (single header first, as Zipkin does).
pub(super) fn extract(headers: &HeaderMap, out: &mut Extracted) {
    let parsed = match single(headers, &headers::B3) {
        Err(()) => None,
        Ok(Some(v)) => parse_single(v.as_bytes()),
        Ok(None) => {
            let get = |name| match single(headers, name) {
                Ok(v) => Ok(v.map(HeaderValue::as_bytes)),
                Err(()) => Err(()),
            };
            match (
                get(&headers::X_B3_TRACEID),
                get(&headers::X_B3_SPANID),
                get(&headers::X_B3_SAMPLED),
                get(&headers::X_B3_FLAGS),
            ) {
                (Ok(None), Ok(None), Ok(None), Ok(None)) => return,
                (Ok(t), Ok(s), Ok(d), Ok(f)) => parse_multi(t, s, d, f),
                _ => None,
            }
        }
    };
    let Some(b3) = parsed else {
        out.errors.add(Propagator::B3);
        return;
    };
    if let Some((trace_id, span_id)) = b3.ids {
        out.trace_id = Some(trace_id);
        out.parent_span_id = Some(span_id);
        out.format = Some(Propagator::B3);
    }
    if out.sampled.is_none() {
        out.sampled = b3.sampled;
    }
}

/// Writes `x-b3-*` (and `b3` when the request carried the single form).
pub(super) fn inject(headers: &mut HeaderMap, cx: &InjectContext<'_>, encoded: &Encoded) {
    let sampled = if cx.sampled { "1" } else { "0" };
    if headers.contains_key(headers::B3) {
        let mut buf = [0u8; 32 + 1 + 16 + 2];
        buf[..32].copy_from_slice(&cx.trace_id.to_hex());
        buf[32] = b'-';
        buf[33..49].copy_from_slice(&cx.span_id.to_hex());
        buf[49] = b'-';
        buf[50] = sampled.as_bytes()[0];
        headers.insert(headers::B3, header_value(&buf));
    }
    headers.insert(headers::X_B3_TRACEID, encoded.trace_hex());
    headers.insert(headers::X_B3_SPANID, encoded.span_hex());
    headers.insert(headers::X_B3_SAMPLED, HeaderValue::from_static(sampled));
    // Our span's parent is not the upstream's parent, and debug became a
    // plain sampled flag.
    headers.remove(headers::X_B3_PARENTSPANID);
    headers.remove(headers::X_B3_FLAGS);
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const S: &str = "e457b5a2e4d86bd1";

    #[test]
    fn single_table() {
        // (input, Some((has ids, sampled)) or None when malformed)
        type Row = (String, Option<(bool, Option<bool>)>);
        let table: Vec<Row> = vec![
            (
                format!("{T}-{S}-1-05e3ac9a4f6e3b90"),
                Some((true, Some(true))),
            ),
            (format!("{T}-{S}-1"), Some((true, Some(true)))),
            (format!("{T}-{S}-d"), Some((true, Some(true)))),
            (format!("{T}-{S}-0"), Some((true, Some(false)))),
            (format!("{T}-{S}"), Some((true, None))),
            (format!("64fe8b2a57d3eff7-{S}-1"), Some((true, Some(true)))),
            ("0".into(), Some((false, Some(false)))),
            ("1".into(), Some((false, Some(true)))),
            ("d".into(), Some((false, Some(true)))),
            ("x".into(), None),
            (format!("{T}-{S}-2"), None),
            (format!("{T}-{S}-1-zz"), None),
            (format!("{T}-{S}-1-05e3ac9a4f6e3b90-x"), None),
            (T.to_string(), None),
            (format!("{T}-0000000000000000-1"), None),
            (format!("abc-{S}-1"), None),
            (String::new(), None),
        ];
        for (input, want) in table {
            let got = parse_single(input.as_bytes()).map(|b| (b.ids.is_some(), b.sampled));
            assert_eq!(got, want, "{input}");
        }
        let short = parse_single(format!("64fe8b2a57d3eff7-{S}").as_bytes()).unwrap();
        assert_eq!(
            short.ids.unwrap().0.to_string(),
            "000000000000000064fe8b2a57d3eff7"
        );
    }

    #[test]
    fn multi_table() {
        type Row<'a> = (
            Option<&'a [u8]>,
            Option<&'a [u8]>,
            Option<&'a [u8]>,
            Option<&'a [u8]>,
            Option<(bool, Option<bool>)>,
        );
        let (t, s) = (Some(T.as_bytes()), Some(S.as_bytes()));
        let table: Vec<Row<'_>> = vec![
            (t, s, Some(b"1"), None, Some((true, Some(true)))),
            (t, s, Some(b"true"), None, Some((true, Some(true)))),
            (t, s, Some(b"0"), None, Some((true, Some(false)))),
            (t, s, Some(b"false"), None, Some((true, Some(false)))),
            (t, s, None, Some(b"1"), Some((true, Some(true)))),
            (t, s, Some(b"0"), Some(b"1"), Some((true, Some(true)))),
            (t, s, None, None, Some((true, None))),
            (None, None, Some(b"0"), None, Some((false, Some(false)))),
            (t, None, None, None, None),
            (None, s, None, None, None),
            (t, s, Some(b"yes"), None, None),
            (t, s, None, Some(b"2"), None),
            (Some(b"xyz"), s, None, None, None),
        ];
        for (i, (t, s, d, f, want)) in table.into_iter().enumerate() {
            let got = parse_multi(t, s, d, f).map(|b| (b.ids.is_some(), b.sampled));
            assert_eq!(got, want, "row {i}");
        }
    }
}
