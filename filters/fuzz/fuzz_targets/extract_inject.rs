//! Whole headers through extract and inject in every format: never panic,
//! and what is injected parses back to the same trace.
#![no_main]

use filters::trace::{
    propagation::{extract, inject, w3c, InjectContext, Propagators},
    SpanId, TraceId,
};
use http::{header::HeaderName, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 18] = [
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-trace-id",
    "x-request-id",
    "x-amzn-trace-id",
    "uber-trace-id",
    "uberctx-tenant",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "x-datadog-tags",
    "x-datadog-origin",
];

fuzz_target!(|data: &[u8]| {
    // Each 0xff-separated chunk is one header: first byte picks the name.
    let mut headers = HeaderMap::new();
    for chunk in data.split(|&b| b == 0xff) {
        let Some((&pick, value)) = chunk.split_first() else {
            continue;
        };
        let name = HeaderName::from_static(NAMES[usize::from(pick) % NAMES.len()]);
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(name, v);
        }
    }
    let all = Propagators::all();
    let ex = extract(&all, &headers);
    let trace_id = ex.trace_id.unwrap_or_else(TraceId::random);
    assert!(trace_id.is_valid());
    let span_id = SpanId::random();
    inject(
        &all,
        &mut headers,
        &InjectContext {
            trace_id,
            span_id,
            sampled: ex.sampled.unwrap_or(true),
            extracted: &ex,
        },
    );
    let tp = w3c::parse_traceparent(headers["traceparent"].as_bytes()).expect("own traceparent");
    assert_eq!(tp.trace_id, trace_id);
    assert_eq!(tp.parent_id, span_id);
    let again = extract(&all, &headers);
    assert_eq!(again.trace_id, Some(trace_id));
});
