//! AWS X-Ray: `X-Amzn-Trace-Id`, as AWS load balancers, API Gateway and the
//! X-Ray SDKs send it.
//!
//! `Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1`:
//! `;`-separated `key=value` fields in any order. `Root` is the trace id,
//! version `1`, then 8 hex digits (the epoch second the trace started) and
//! 24 more: together the 32 hex digits of a W3C trace id. `Parent` is the
//! caller's segment (a span id) and is absent when a load balancer started
//! the trace; `Sampled` is `1`, `0`, or `?` / absent (no decision yet). Other
//! fields (`Self`, which a load balancer adds, `Lineage`, custom keys) are
//! kept and written back after the three the proxy rewrites. X-Ray carries
//! no `tracestate` and no baggage.
//!
//! Because the X-Ray backend rejects trace ids whose first 4 bytes are not a
//! recent epoch second, a trace the proxy starts while `xray` is configured
//! gets such an id ([`new_trace_id`]).

use bytes::{BufMut, BytesMut};
use http::{HeaderMap, HeaderValue};

use super::{headers, single, Encoded, Extracted, InjectContext, Propagator};
use crate::trace::{
    context::{SpanId, TraceId},
    span::unix_nanos,
};

/// A parsed `X-Amzn-Trace-Id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XRay {
    /// `Root`, as a W3C trace id.
    pub trace_id: TraceId,
    /// `Parent`, when present.
    pub parent_id: Option<SpanId>,
    /// `Sampled=1` / `0`; `None` for `?` or no field.
    pub sampled: Option<bool>,
    /// Whether fields other than `Root`, `Parent` and `Sampled` are present.
    pub has_extra: bool,
}

const ROOT: &[u8] = b"Root";
const PARENT: &[u8] = b"Parent";
const SAMPLED: &[u8] = b"Sampled";

/// The `;`-separated fields of a value, trimmed, empty ones skipped.
fn fields(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b';')
        .map(trim)
        .filter(|field| !field.is_empty())
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn split_field(field: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = field.iter().position(|&b| b == b'=')?;
    Some((&field[..eq], &field[eq + 1..]))
}

/// Parses `1-<8 hex>-<24 hex>`.
pub fn parse_root(v: &[u8]) -> Option<TraceId> {
    if v.len() != 35 || &v[..2] != b"1-" || v[10] != b'-' {
        return None;
    }
    let mut hex = [0u8; 32];
    hex[..8].copy_from_slice(&v[2..10]);
    hex[8..].copy_from_slice(&v[11..35]);
    TraceId::from_hex(&hex)
}

/// Parses an `X-Amzn-Trace-Id` value; `None` when malformed: no valid
/// `Root`, a bad `Parent` or `Sampled`, a repeated key, or a field without
/// `=`.
pub fn parse(v: &[u8]) -> Option<XRay> {
    let mut trace_id = None;
    let mut parent_id = None;
    let mut sampled = None;
    let mut seen_sampled = false;
    let mut has_extra = false;
    for field in fields(v) {
        let (key, value) = split_field(field)?;
        match key {
            ROOT if trace_id.is_none() => trace_id = Some(parse_root(value)?),
            PARENT if parent_id.is_none() => parent_id = Some(SpanId::from_hex(value)?),
            SAMPLED if !seen_sampled => {
                seen_sampled = true;
                sampled = match value {
                    b"1" => Some(true),
                    b"0" => Some(false),
                    b"?" => None,
                    _ => return None,
                };
            }
            ROOT | PARENT | SAMPLED => return None,
            _ if key.is_empty() => return None,
            _ => has_extra = true,
        }
    }
    Some(XRay {
        trace_id: trace_id?,
        parent_id,
        sampled,
        has_extra,
    })
}

/// The fields of `v` other than `Root`, `Parent` and `Sampled`, in order.
pub fn extra_fields(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    fields(v).filter(|field| {
        !matches!(
            split_field(field),
            Some((ROOT | PARENT | SAMPLED, _)) | None
        )
    })
}

/// A fresh trace id the X-Ray backend accepts: the current epoch second in
/// the first 4 bytes, then 12 random bytes (what the X-Ray SDKs and the
/// OpenTelemetry X-Ray id generator make).
pub fn new_trace_id() -> TraceId {
    let seconds = (unix_nanos() / 1_000_000_000) as u32;
    let mut id = TraceId::random().0;
    id[..4].copy_from_slice(&seconds.to_be_bytes());
    TraceId(id)
}

/// Reads `X-Amzn-Trace-Id` into `out`.
pub(super) fn extract(headers: &HeaderMap, out: &mut Extracted) {
    let value = match single(headers, &headers::X_AMZN_TRACE_ID) {
        Ok(Some(v)) => v,
        Ok(None) => return,
        Err(()) => {
            out.errors.add(Propagator::XRay);
            return;
        }
    };
    let Some(x) = parse(value.as_bytes()) else {
        out.errors.add(Propagator::XRay);
        return;
    };
    out.trace_id = Some(x.trace_id);
    out.parent_span_id = x.parent_id;
    if out.sampled.is_none() {
        out.sampled = x.sampled;
    }
    out.format = Some(Propagator::XRay);
    if x.has_extra {
        // Only requests carrying extra fields pay for this copy.
        let mut joined = BytesMut::with_capacity(value.len());
        for field in extra_fields(value.as_bytes()) {
            if !joined.is_empty() {
                joined.put_u8(b';');
            }
            joined.put_slice(field);
        }
        out.xray_extra = HeaderValue::from_maybe_shared(joined.freeze()).ok();
    }
}

/// Bytes [`encode`] writes.
pub(super) fn encoded_len(cx: &InjectContext<'_>) -> usize {
    let extra = cx.extracted.xray_extra.as_ref().map_or(0, |e| e.len() + 1);
    74 + extra
}

/// `Root=1-<8>-<24>;Parent=<16>;Sampled=<1|0>[;<extra fields>]`.
pub(super) fn encode(buf: &mut BytesMut, cx: &InjectContext<'_>) {
    let hex = cx.trace_id.to_hex();
    buf.put_slice(b"Root=1-");
    buf.put_slice(&hex[..8]);
    buf.put_u8(b'-');
    buf.put_slice(&hex[8..]);
    buf.put_slice(b";Parent=");
    buf.put_slice(&cx.span_id.to_hex());
    buf.put_slice(if cx.sampled {
        b";Sampled=1"
    } else {
        b";Sampled=0"
    });
    if let Some(extra) = &cx.extracted.xray_extra {
        buf.put_u8(b';');
        buf.put_slice(extra.as_bytes());
    }
}

/// Writes `X-Amzn-Trace-Id`.
pub(super) fn inject(headers: &mut HeaderMap, encoded: &Encoded) {
    headers.insert(headers::X_AMZN_TRACE_ID, encoded.xray());
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_OK: &str = "1-5759e988-bd862e3fe1be46a994272793";

    #[test]
    fn parse_table() {
        // (input, Some((trace, parent, sampled, extra)) or None)
        type Row = (
            String,
            Option<(&'static str, Option<&'static str>, Option<bool>, bool)>,
        );
        let trace = "5759e988bd862e3fe1be46a994272793";
        let table: Vec<Row> = vec![
            (
                format!("Root={ROOT_OK};Parent=53995c3f42cd8ad8;Sampled=1"),
                Some((trace, Some("53995c3f42cd8ad8"), Some(true), false)),
            ),
            (
                format!("Root={ROOT_OK};Parent=53995c3f42cd8ad8;Sampled=0"),
                Some((trace, Some("53995c3f42cd8ad8"), Some(false), false)),
            ),
            (
                format!("Root={ROOT_OK};Sampled=?"),
                Some((trace, None, None, false)),
            ),
            // What a load balancer adds to a request without the header.
            (format!("Root={ROOT_OK}"), Some((trace, None, None, false))),
            // ... and to one that had it: its own Self field first.
            (
                format!("Self=1-67891234-12456789abcdef012345678;Root={ROOT_OK};Sampled=1"),
                Some((trace, None, Some(true), true)),
            ),
            (
                format!(
                    "Sampled=1; Parent=53995c3f42cd8ad8 ;Root={ROOT_OK};Lineage=a87bd80c:1|68fd508a:5;"
                ),
                Some((trace, Some("53995c3f42cd8ad8"), Some(true), true)),
            ),
            (format!("Root={ROOT_OK};Sampled=yes"), None),
            (format!("Root={ROOT_OK};Parent=53995c3f42cd8ad"), None),
            (format!("Root={ROOT_OK};Parent=0000000000000000"), None),
            (format!("Root={ROOT_OK};Root={ROOT_OK}"), None),
            (format!("Root={ROOT_OK};Sampled=1;Sampled=0"), None),
            (format!("Root={ROOT_OK};junk"), None),
            (format!("Root={ROOT_OK};=x"), None),
            ("Root=2-5759e988-bd862e3fe1be46a994272793".into(), None),
            ("Root=1-5759e988bd862e3fe1be46a994272793".into(), None),
            ("Root=1-00000000-000000000000000000000000".into(), None),
            ("Root=1-5759e98g-bd862e3fe1be46a994272793".into(), None),
            ("Parent=53995c3f42cd8ad8;Sampled=1".into(), None),
            (String::new(), None),
        ];
        for (input, want) in table {
            let got = parse(input.as_bytes()).map(|x| {
                (
                    x.trace_id.to_string(),
                    x.parent_id.map(|p| p.to_string()),
                    x.sampled,
                    x.has_extra,
                )
            });
            let want = want.map(|(t, p, s, e)| (t.to_string(), p.map(str::to_string), s, e));
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn extra_fields_in_order() {
        let v = format!("Self=1-6789-ab;Root={ROOT_OK};Parent=53995c3f42cd8ad8;Lineage=x:1;k=v");
        let got: Vec<&[u8]> = extra_fields(v.as_bytes()).collect();
        assert_eq!(got, vec![&b"Self=1-6789-ab"[..], b"Lineage=x:1", b"k=v"]);
    }

    #[test]
    fn fresh_ids_carry_the_epoch_second() {
        let now = (unix_nanos() / 1_000_000_000) as u32;
        let id = new_trace_id();
        let secs = u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]);
        assert!(secs.abs_diff(now) <= 1, "{secs} vs {now}");
        assert!(id.is_valid());
        assert_ne!(new_trace_id(), id);
    }
}
