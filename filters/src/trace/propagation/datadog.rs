//! Datadog: `x-datadog-trace-id`, `x-datadog-parent-id`,
//! `x-datadog-sampling-priority` and `x-datadog-tags`, as Datadog's tracers
//! send them.
//!
//! Datadog ids are 64-bit unsigned decimals. A 128-bit trace id travels as
//! its low 64 bits in `x-datadog-trace-id` and its high 64 bits as 16 lower
//! hex digits in the `_dd.p.tid` member of `x-datadog-tags`; without that tag
//! the high half is zero. That is the mapping Datadog's own tracers use when
//! they meet W3C ids, so a trace crossing the proxy keeps one id on both
//! sides:
//!
//! | W3C trace id | `x-datadog-trace-id` | `x-datadog-tags` |
//! |---|---|---|
//! | `640cfd8d00000000abcdefab12345678` | `12379814468735227512` | `_dd.p.tid=640cfd8d00000000` |
//! | `0000000000000000abcdefab12345678` | `12379814468735227512` | (none) |
//!
//! The sampling priority (`-1` user reject, `0` auto reject, `1` auto keep,
//! `2` user keep) decides `sampled` (above zero). The proxy passes the
//! caller's priority on unchanged while its decision agrees, and writes `1`
//! or `0` when it decided otherwise. Other `_dd.p.*` tags are kept;
//! `x-datadog-origin` is left as it came. A trace id whose low 64 bits are
//! all zero has no Datadog form: the Datadog headers are then removed rather
//! than left describing another trace.

use bytes::{BufMut, BytesMut};
use http::{HeaderMap, HeaderValue};

use super::{headers, single, Encoded, Extracted, InjectContext, Propagator};
use crate::trace::context::{decode_hex, SpanId, TraceId};

/// Largest `x-datadog-tags` read or written (the tracers' default limit).
pub const MAX_TAGS_BYTES: usize = 512;

/// The tag carrying the high 64 bits of the trace id.
const TID: &[u8] = b"_dd.p.tid";

/// A parsed Datadog context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datadog {
    /// The trace id: `_dd.p.tid` (or zero) and `x-datadog-trace-id`.
    pub trace_id: TraceId,
    /// `x-datadog-parent-id`, when present and not zero.
    pub parent_id: Option<SpanId>,
    /// The sampling priority, when present.
    pub priority: Option<i32>,
}

/// Parses a non-zero unsigned 64-bit decimal (1 to 20 digits, no sign).
pub fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Parses a sampling priority: an optionally negative decimal integer.
pub fn parse_priority(v: &[u8]) -> Option<i32> {
    let (negative, digits) = match v {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, v),
    };
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0i32, |n, &b| n * 10 + i32::from(b - b'0'));
    Some(if negative { -n } else { n })
}

/// The `key=value` members of `x-datadog-tags`.
fn tags(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').filter(|m| !m.is_empty())
}

/// Checks `x-datadog-tags` and returns the high 64 bits from `_dd.p.tid`
/// (zero without it); `None` when malformed: over [`MAX_TAGS_BYTES`], a
/// member that is not `key=value` of printable ASCII, or a `_dd.p.tid` that
/// is not 16 lower-case hex digits.
pub fn parse_tags(v: &[u8]) -> Option<[u8; 8]> {
    if v.len() > MAX_TAGS_BYTES {
        return None;
    }
    let mut high = [0u8; 8];
    for member in tags(v) {
        let eq = member.iter().position(|&b| b == b'=')?;
        let (key, value) = (&member[..eq], &member[eq + 1..]);
        let key_ok = !key.is_empty() && key.iter().all(|&b| (0x21..=0x7e).contains(&b));
        let value_ok = value.iter().all(|&b| (0x20..=0x7e).contains(&b));
        if !key_ok || !value_ok {
            return None;
        }
        if key == TID {
            high = decode_hex::<8>(value, true)?;
        }
    }
    Some(high)
}

/// Parses the four headers' values; `None` when malformed (a trace id that
/// is not a non-zero u64, a bad parent id, priority or tags).
pub fn parse(
    trace_id: &[u8],
    parent_id: Option<&[u8]>,
    priority: Option<&[u8]>,
    tags: Option<&[u8]>,
) -> Option<Datadog> {
    let low = parse_u64(trace_id).filter(|&n| n != 0)?;
    let parent_id = match parent_id {
        None => None,
        // `0` is what a trace's first hop (e.g. synthetics) sends: no parent.
        Some(v) => Some(parse_u64(v)?).filter(|&n| n != 0),
    };
    let priority = match priority {
        None => None,
        Some(v) => Some(parse_priority(v)?),
    };
    let high = match tags {
        None => [0; 8],
        Some(v) => parse_tags(v)?,
    };
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&high);
    id[8..].copy_from_slice(&low.to_be_bytes());
    Some(Datadog {
        trace_id: TraceId(id),
        parent_id: parent_id.map(|n| SpanId(n.to_be_bytes())),
        priority,
    })
}

/// Reads the Datadog headers into `out`.
pub(super) fn extract(headers: &HeaderMap, out: &mut Extracted) {
    let one = |name| single(headers, name);
    let (trace, parent, priority, tags) = match (
        one(&headers::X_DATADOG_TRACE_ID),
        one(&headers::X_DATADOG_PARENT_ID),
        one(&headers::X_DATADOG_SAMPLING_PRIORITY),
        one(&headers::X_DATADOG_TAGS),
    ) {
        (Ok(None), ..) => return,
        (Ok(Some(t)), Ok(p), Ok(s), Ok(g)) => (t, p, s, g),
        _ => {
            out.errors.add(Propagator::Datadog);
            return;
        }
    };
    let Some(dd) = parse(
        trace.as_bytes(),
        parent.map(HeaderValue::as_bytes),
        priority.map(HeaderValue::as_bytes),
        tags.map(HeaderValue::as_bytes),
    ) else {
        out.errors.add(Propagator::Datadog);
        return;
    };
    out.trace_id = Some(dd.trace_id);
    out.parent_span_id = dd.parent_id;
    if out.sampled.is_none() {
        out.sampled = dd.priority.map(|p| p > 0);
    }
    out.format = Some(Propagator::Datadog);
    out.datadog_priority = priority.cloned();
    out.datadog_tags = tags.cloned();
}

fn low(trace_id: TraceId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&trace_id.0[8..]);
    u64::from_be_bytes(b)
}

fn put_decimal(buf: &mut BytesMut, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.put_slice(&digits[i..]);
}

/// Bytes the `encode_*` functions write, at most.
pub(super) fn encoded_len(cx: &InjectContext<'_>) -> usize {
    let incoming = cx
        .extracted
        .datadog_tags
        .as_ref()
        .map_or(0, HeaderValue::len);
    20 + 20 + incoming + 1 + TID.len() + 1 + 16
}

/// `x-datadog-trace-id`: the low 64 bits in decimal (nothing when zero).
pub(super) fn encode_trace_id(buf: &mut BytesMut, cx: &InjectContext<'_>) {
    let n = low(cx.trace_id);
    if n != 0 {
        put_decimal(buf, n);
    }
}

/// `x-datadog-parent-id`: the proxy span in decimal.
pub(super) fn encode_parent_id(buf: &mut BytesMut, cx: &InjectContext<'_>) {
    put_decimal(buf, u64::from_be_bytes(cx.span_id.0));
}

/// `x-datadog-tags`: the caller's tags less `_dd.p.tid`, then `_dd.p.tid`
/// of this trace when its high half is not zero.
pub(super) fn encode_tags(buf: &mut BytesMut, cx: &InjectContext<'_>) {
    let start = buf.len();
    if let Some(incoming) = &cx.extracted.datadog_tags {
        for member in tags(incoming.as_bytes()) {
            if member.starts_with(TID) && member.get(TID.len()) == Some(&b'=') {
                continue;
            }
            if buf.len() > start {
                buf.put_u8(b',');
            }
            buf.put_slice(member);
        }
    }
    let high = &cx.trace_id.to_hex()[..16];
    if high != b"0000000000000000" {
        if buf.len() > start {
            buf.put_u8(b',');
        }
        buf.put_slice(TID);
        buf.put_u8(b'=');
        buf.put_slice(high);
    }
}

/// Writes the Datadog headers (see the module docs).
pub(super) fn inject(headers: &mut HeaderMap, cx: &InjectContext<'_>, encoded: &Encoded) {
    let trace = encoded.datadog_trace_id();
    if trace.is_empty() {
        for name in [
            headers::X_DATADOG_TRACE_ID,
            headers::X_DATADOG_PARENT_ID,
            headers::X_DATADOG_SAMPLING_PRIORITY,
            headers::X_DATADOG_TAGS,
        ] {
            headers.remove(name);
        }
        return;
    }
    headers.insert(headers::X_DATADOG_TRACE_ID, trace);
    headers.insert(headers::X_DATADOG_PARENT_ID, encoded.datadog_parent_id());
    let caller = cx
        .extracted
        .datadog_priority
        .as_ref()
        .filter(|p| parse_priority(p.as_bytes()).is_some_and(|p| (p > 0) == cx.sampled));
    let priority = match (caller, cx.sampled) {
        (Some(p), _) => p.clone(),
        (None, true) => HeaderValue::from_static("1"),
        (None, false) => HeaderValue::from_static("0"),
    };
    headers.insert(headers::X_DATADOG_SAMPLING_PRIORITY, priority);
    match encoded.datadog_tags() {
        Some(tags) if tags.len() <= MAX_TAGS_BYTES => {
            headers.insert(headers::X_DATADOG_TAGS, tags);
        }
        // Over the limit only when the caller's tags already nearly were:
        // the tracers drop the whole header then, and so does the proxy.
        _ => {
            headers.remove(headers::X_DATADOG_TAGS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_table() {
        let table: &[(&str, Option<u64>)] = &[
            ("1234", Some(1234)),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("00000000000000000001", Some(1)),
            ("000000000000000000001", None),
            ("-1", None),
            ("+1", None),
            ("12a", None),
            ("", None),
        ];
        for (input, want) in table {
            assert_eq!(parse_u64(input.as_bytes()), *want, "{input}");
        }
        let mut buf = BytesMut::new();
        for n in [0, 7, 1234, u64::MAX] {
            buf.clear();
            put_decimal(&mut buf, n);
            assert_eq!(&buf[..], n.to_string().as_bytes());
        }
    }

    #[test]
    fn priority_table() {
        let table: &[(&str, Option<i32>)] = &[
            ("1", Some(1)),
            ("2", Some(2)),
            ("0", Some(0)),
            ("-1", Some(-1)),
            ("-", None),
            ("1.0", None),
            ("", None),
            ("9999999999", None),
        ];
        for (input, want) in table {
            assert_eq!(parse_priority(input.as_bytes()), *want, "{input}");
        }
    }

    #[test]
    fn parse_table() {
        type Row<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Option<(&'a str, Option<&'a str>, Option<i32>)>,
        );
        let table: &[Row<'_>] = &[
            (
                "12379814468735227512",
                Some("67667974448284343"),
                Some("1"),
                Some("_dd.p.dm=-4,_dd.p.tid=640cfd8d00000000"),
                Some((
                    "640cfd8d00000000abcdefab12345678",
                    Some("00f067aa0ba902b7"),
                    Some(1),
                )),
            ),
            (
                "1234",
                Some("12"),
                Some("-1"),
                None,
                Some((
                    "000000000000000000000000000004d2",
                    Some("000000000000000c"),
                    Some(-1),
                )),
            ),
            (
                "1234",
                Some("0"),
                None,
                Some("_dd.p.dm=-4"),
                Some(("000000000000000000000000000004d2", None, None)),
            ),
            (
                "1234",
                None,
                None,
                None,
                Some(("000000000000000000000000000004d2", None, None)),
            ),
            ("0", Some("12"), Some("1"), None, None),
            ("garbage", Some("12"), None, None, None),
            ("1234", Some("x"), None, None, None),
            ("1234", Some("12"), Some("yes"), None, None),
            (
                "1234",
                Some("12"),
                None,
                Some("_dd.p.tid=640CFD8D00000000"),
                None,
            ),
            ("1234", Some("12"), None, Some("_dd.p.tid=640cfd8d"), None),
            ("1234", Some("12"), None, Some("novalue"), None),
            ("1234", Some("12"), None, Some("=v"), None),
        ];
        for (i, (trace, parent, priority, tags, want)) in table.iter().enumerate() {
            let got = parse(
                trace.as_bytes(),
                parent.map(str::as_bytes),
                priority.map(str::as_bytes),
                tags.map(str::as_bytes),
            )
            .map(|d| {
                (
                    d.trace_id.to_string(),
                    d.parent_id.map(|p| p.to_string()),
                    d.priority,
                )
            });
            let want = want.map(|(t, p, s)| (t.to_string(), p.map(str::to_string), s));
            assert_eq!(got, want, "row {i}");
        }
        let big = format!("k={}", "v".repeat(MAX_TAGS_BYTES));
        assert_eq!(parse_tags(big.as_bytes()), None);
    }
}
