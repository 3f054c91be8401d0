//! Legacy ids: `x-trace-id` and `x-request-id`.
//!
//! A value that is a UUID (`8-4-4-4-12` hex) or 32 hex digits becomes the
//! trace id (no parent span: the proxy's span is the first one of the trace
//! that sidetrace sees). Any other `x-request-id` is kept so the span records
//! it as `http.request.header.x-request-id`; any other `x-trace-id` is
//! malformed. The proxy writes `x-trace-id` as 32 hex digits.

use http::HeaderMap;

use super::{headers, single, Encoded, Extracted, Propagator};
use crate::trace::context::TraceId;

/// Parses a UUID or 32 hex digits into a trace id; `None` otherwise (and
/// for the all-zero id).
pub fn parse_id(v: &[u8]) -> Option<TraceId> {
    match v.len() {
        32 => TraceId::from_hex(v),
        36 => {
            if v[8] != b'-' || v[13] != b'-' || v[18] != b'-' || v[23] != b'-' {
                return None;
            }
            let mut hex = [0u8; 32];
            hex[0..8].copy_from_slice(&v[0..8]);
            hex[8..12].copy_from_slice(&v[9..13]);
            hex[12..16].copy_from_slice(&v[14..18]);
            hex[16..20].copy_from_slice(&v[19..23]);
            hex[20..32].copy_from_slice(&v[24..36]);
            TraceId::from_hex(&hex)
        }
        _ => None,
    }
}

/// Reads `x-trace-id`, then `x-request-id`, into `out`.
pub(super) fn extract(headers: &HeaderMap, out: &mut Extracted) {
    match single(headers, &headers::X_TRACE_ID) {
        Ok(None) => {}
        Ok(Some(v)) => match parse_id(v.as_bytes()) {
            Some(id) => {
                if out.trace_id.is_none() {
                    out.trace_id = Some(id);
                    out.format = Some(Propagator::Legacy);
                }
            }
            None => out.errors.add(Propagator::Legacy),
        },
        Err(()) => out.errors.add(Propagator::Legacy),
    }
    if let Some(v) = headers.get(headers::X_REQUEST_ID) {
        match parse_id(v.as_bytes()) {
            Some(id) if out.trace_id.is_none() => {
                out.trace_id = Some(id);
                out.format = Some(Propagator::Legacy);
            }
            Some(_) => {}
            None => out.request_id = Some(v.clone()),
        }
    }
}

/// Writes `x-trace-id`.
pub(super) fn inject(headers: &mut HeaderMap, encoded: &Encoded) {
    headers.insert(headers::X_TRACE_ID, encoded.trace_hex());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_table() {
        let table: &[(&str, Option<&str>)] = &[
            (
                "4bf92f3577b34da6a3ce929d0e0e4736",
                Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            ),
            (
                "4BF92F35-77B3-4DA6-A3CE-929D0E0E4736",
                Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            ),
            (
                "4bf92f35-77b3-4da6-a3ce-929d0e0e4736",
                Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            ),
            ("4bf92f35-77b3-4da6-a3ce929d-0e0e4736", None),
            ("00000000-0000-0000-0000-000000000000", None),
            ("00000000000000000000000000000000", None),
            ("req-12345", None),
            ("4bf92f3577b34da6", None),
            ("", None),
            ("4bf92f35x77b3-4da6-a3ce-929d0e0e4736", None),
        ];
        for (input, want) in table {
            let got = parse_id(input.as_bytes()).map(|t| t.to_string());
            assert_eq!(got.as_deref(), *want, "{input}");
        }
    }
}
