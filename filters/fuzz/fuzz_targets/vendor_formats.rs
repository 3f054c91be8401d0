//! X-Ray, Jaeger and Datadog values: never panic; parsed ids are valid, and
//! a parsed X-Ray or Jaeger context survives the proxy's own encoding.
#![no_main]

use filters::trace::propagation::{datadog, jaeger, xray};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(x) = xray::parse(data) {
        assert!(x.trace_id.is_valid());
        assert!(x.parent_id.is_none_or(|p| p.is_valid()));
        let count = xray::extra_fields(data).count();
        assert_eq!(x.has_extra, count > 0);
    }
    if let Some(j) = jaeger::parse(data) {
        assert!(j.trace_id.is_valid() && j.span_id.is_valid());
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let again = format!("{}:{}:0:{}", hex(&j.trace_id.0), hex(&j.span_id.0), u8::from(j.sampled));
        assert_eq!(jaeger::parse(again.as_bytes()), Some(j));
    }
    // The four Datadog values, split at 0xff bytes.
    let mut parts = data.split(|&b| b == 0xff);
    if let Some(trace) = parts.next() {
        let (p, s, t) = (parts.next(), parts.next(), parts.next());
        if let Some(d) = datadog::parse(trace, p, s, t) {
            assert!(d.trace_id.is_valid());
            assert!(d.parent_id.is_none_or(|p| p.is_valid()));
        }
    }
});
