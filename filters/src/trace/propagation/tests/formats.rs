//! X-Ray, Jaeger and Datadog through extract and inject: round trips,
//! precedence among formats, and what each keeps of the caller's headers.

use http::{HeaderMap, HeaderValue};

use super::super::*;
use super::map;

const TRACE: &str = "640cfd8d00000000abcdefab12345678";
const XRAY_ROOT: &str = "1-640cfd8d-00000000abcdefab12345678";
const PARENT: &str = "00f067aa0ba902b7";

fn trace() -> TraceId {
    TraceId::from_hex(TRACE.as_bytes()).unwrap()
}

fn span() -> SpanId {
    SpanId::from_hex(b"1111111111111111").unwrap()
}

/// Injects the proxy span (`span()`) of `ex`'s trace with `sampled`.
fn inject_into(
    p: &Propagators,
    headers: &mut HeaderMap,
    ex: &Extracted,
    sampled: bool,
) -> HeaderValue {
    inject(
        p,
        headers,
        &InjectContext {
            trace_id: ex.trace_id.unwrap_or_else(trace),
            span_id: span(),
            sampled,
            extracted: ex,
        },
    )
}

#[test]
fn each_format_round_trips_ids_and_sampled() {
    for format in [
        Propagator::XRay,
        Propagator::Jaeger,
        Propagator::Datadog,
        Propagator::TraceContext,
        Propagator::B3,
    ] {
        let only = Propagators::new(&[format]);
        for sampled in [true, false] {
            let mut headers = HeaderMap::new();
            inject_into(&only, &mut headers, &Extracted::default(), sampled);
            let back = extract(&only, &headers);
            assert_eq!(back.trace_id, Some(trace()), "{format} {sampled}");
            assert_eq!(back.parent_span_id, Some(span()), "{format} {sampled}");
            assert_eq!(back.sampled, Some(sampled), "{format} {sampled}");
            assert_eq!(back.format, Some(format));
            assert!(!back.errors.any(), "{format}: {:?}", back.errors);
        }
    }
}

#[test]
fn what_each_format_writes() {
    let mut headers = HeaderMap::new();
    inject_into(
        &Propagators::all(),
        &mut headers,
        &Extracted::default(),
        true,
    );
    assert_eq!(
        headers["x-amzn-trace-id"],
        format!("Root={XRAY_ROOT};Parent=1111111111111111;Sampled=1")
    );
    assert_eq!(
        headers["uber-trace-id"],
        format!("{TRACE}:1111111111111111:0:1")
    );
    // The Datadog mapping of a 128-bit id: low half in decimal, high half
    // in `_dd.p.tid`.
    assert_eq!(headers["x-datadog-trace-id"], "12379814468735227512");
    assert_eq!(headers["x-datadog-parent-id"], "1229782938247303441");
    assert_eq!(headers["x-datadog-sampling-priority"], "1");
    assert_eq!(headers["x-datadog-tags"], "_dd.p.tid=640cfd8d00000000");
    assert_eq!(
        headers["traceparent"],
        format!("00-{TRACE}-1111111111111111-01")
    );
}

/// Extract with `p` from `pairs`, then inject the proxy span with the
/// caller's decision (or sampled).
fn hop(p: &Propagators, pairs: &[(&'static str, &str)]) -> (Extracted, HeaderMap) {
    let mut headers = map(pairs);
    let ex = extract(p, &headers);
    let sampled = ex.sampled.unwrap_or(true);
    inject_into(p, &mut headers, &ex, sampled);
    (ex, headers)
}

#[test]
fn xray_from_a_load_balancer_and_from_an_sdk() {
    let p = Propagators::new(&[Propagator::TraceContext, Propagator::XRay]);
    // A load balancer's header: a root, no parent, no decision.
    let (ex, out) = hop(&p, &[("x-amzn-trace-id", &format!("Root={XRAY_ROOT}"))]);
    assert_eq!(ex.trace_id, Some(trace()));
    assert_eq!((ex.parent_span_id, ex.sampled), (None, None));
    assert_eq!(
        out["traceparent"],
        format!("00-{TRACE}-1111111111111111-01")
    );
    // An SDK's, with a parent, a decision and fields the proxy keeps.
    let (ex, out) = hop(
        &p,
        &[(
            "x-amzn-trace-id",
            &format!("Self=1-67891234-12456789abcdef012345678;Root={XRAY_ROOT};Parent={PARENT};Sampled=0;Lineage=a87bd80c:1"),
        )],
    );
    assert_eq!(ex.parent_span_id.unwrap().to_string(), PARENT);
    assert_eq!(ex.sampled, Some(false));
    assert_eq!(
        out["x-amzn-trace-id"],
        format!(
            "Root={XRAY_ROOT};Parent=1111111111111111;Sampled=0;Self=1-67891234-12456789abcdef012345678;Lineage=a87bd80c:1"
        )
    );
    assert!(out["traceparent"].to_str().unwrap().ends_with("-00"));
}

#[test]
fn documented_precedence_with_a_load_balancer_in_front() {
    // The load balancer's X-Ray root and the app client's traceparent name
    // different traces; the configured order decides, W3C first by default.
    let pairs = [
        ("x-amzn-trace-id", format!("Root={XRAY_ROOT}")),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        ),
    ];
    let pairs: Vec<(&'static str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let w3c_first = Propagators::new(&[Propagator::TraceContext, Propagator::XRay]);
    let (ex, out) = hop(&w3c_first, &pairs);
    assert_eq!(ex.format, Some(Propagator::TraceContext));
    assert_eq!(ex.parent_span_id.unwrap().to_string(), PARENT);
    assert_eq!(
        out["x-amzn-trace-id"],
        "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=1111111111111111;Sampled=1",
        "the X-Ray header now carries the W3C trace"
    );
    let xray_first = Propagators::new(&[Propagator::XRay, Propagator::TraceContext]);
    let (ex, out) = hop(&xray_first, &pairs);
    assert_eq!(ex.format, Some(Propagator::XRay));
    assert_eq!(ex.trace_id, Some(trace()));
    assert_eq!(ex.parent_span_id, None);
    assert_eq!(
        out["traceparent"],
        format!("00-{TRACE}-1111111111111111-01")
    );
}

#[test]
fn a_malformed_format_falls_through_to_the_next() {
    let p = Propagators::new(&[Propagator::XRay, Propagator::Jaeger, Propagator::Datadog]);
    let ex = extract(
        &p,
        &map(&[
            ("x-amzn-trace-id", "Root=1-bad"),
            ("uber-trace-id", "nope"),
            ("x-datadog-trace-id", "1234"),
            ("x-datadog-parent-id", "12"),
        ]),
    );
    assert_eq!(ex.format, Some(Propagator::Datadog));
    assert_eq!(
        ex.errors.iter().collect::<Vec<_>>(),
        vec![Propagator::XRay, Propagator::Jaeger]
    );
}

#[test]
fn datadog_keeps_the_callers_priority_while_it_agrees() {
    let p = Propagators::new(&[Propagator::Datadog]);
    let caller = [
        ("x-datadog-trace-id", "12379814468735227512"),
        ("x-datadog-parent-id", "67667974448284343"),
        ("x-datadog-sampling-priority", "2"),
        ("x-datadog-tags", "_dd.p.dm=-4,_dd.p.tid=640cfd8d00000000"),
        ("x-datadog-origin", "synthetics"),
    ];
    let (ex, out) = hop(&p, &caller);
    assert_eq!(ex.trace_id, Some(trace()));
    assert_eq!(ex.parent_span_id.unwrap().to_string(), PARENT);
    assert_eq!(ex.sampled, Some(true));
    assert_eq!(out["x-datadog-sampling-priority"], "2", "user keep stays");
    assert_eq!(
        out["x-datadog-tags"],
        "_dd.p.dm=-4,_dd.p.tid=640cfd8d00000000"
    );
    assert_eq!(out["x-datadog-origin"], "synthetics");
    assert_eq!(out["x-datadog-parent-id"], "1229782938247303441");

    // The proxy decided otherwise (a route's `never`): 0, not the caller's 2.
    let mut headers = map(&caller);
    inject_into(&p, &mut headers, &ex, false);
    assert_eq!(headers["x-datadog-sampling-priority"], "0");

    // A 64-bit Datadog trace: no high half, no tid tag.
    let (ex, out) = hop(
        &p,
        &[
            ("x-datadog-trace-id", "1234"),
            ("x-datadog-parent-id", "12"),
            ("x-datadog-sampling-priority", "-1"),
        ],
    );
    assert_eq!(
        ex.trace_id.unwrap().to_string(),
        "000000000000000000000000000004d2"
    );
    assert_eq!(ex.sampled, Some(false));
    assert_eq!(out["x-datadog-trace-id"], "1234");
    assert_eq!(out["x-datadog-sampling-priority"], "-1");
    assert!(!out.contains_key("x-datadog-tags"));
}

#[test]
fn datadog_headers_go_when_the_trace_has_no_datadog_form() {
    let p = Propagators::new(&[Propagator::TraceContext, Propagator::Datadog]);
    let (_, out) = hop(
        &p,
        &[
            (
                "traceparent",
                "00-4bf92f3577b34da60000000000000000-00f067aa0ba902b7-01",
            ),
            ("x-datadog-trace-id", "1234"),
            ("x-datadog-parent-id", "12"),
        ],
    );
    assert!(!out.contains_key("x-datadog-trace-id"), "{out:?}");
    assert!(!out.contains_key("x-datadog-parent-id"));
}

#[test]
fn jaeger_baggage_meets_w3c_baggage() {
    let p = Propagators::new(&[Propagator::Jaeger, Propagator::Baggage]);
    let (ex, out) = hop(
        &p,
        &[
            ("uber-trace-id", "4d0000000000000016:17c29:0:1"),
            ("uberctx-tenant", "acme corp"),
            ("uberctx-user", "alice"),
            ("baggage", "user=bob,region=eu;p=1"),
        ],
    );
    assert_eq!(
        ex.trace_id.unwrap().to_string(),
        "000000000000004d0000000000000016"
    );
    // uberctx entries join W3C baggage (W3C wins a name both carry) ...
    assert_eq!(out["baggage"], "user=bob,region=eu;p=1,tenant=acme%20corp");
    // ... and W3C-only entries become uberctx headers; existing ones stay.
    assert_eq!(out["uberctx-region"], "eu");
    assert_eq!(out["uberctx-user"], "alice");
    assert_eq!(out["uberctx-tenant"], "acme corp");
    assert_eq!(
        out["uber-trace-id"],
        "000000000000004d0000000000000016:1111111111111111:0:1"
    );

    // Without `baggage` configured, uberctx headers pass untouched.
    let jaeger_only = Propagators::new(&[Propagator::Jaeger]);
    let (_, out) = hop(&jaeger_only, &[("uberctx-tenant", "acme corp")]);
    assert!(!out.contains_key("baggage"));
    assert_eq!(out["uberctx-tenant"], "acme corp");
}

#[test]
fn jaeger_baggage_beyond_w3c_limits_is_counted_not_merged() {
    let p = Propagators::new(&[Propagator::Jaeger, Propagator::Baggage]);
    let big = "v".repeat(9000);
    let ex = extract(&p, &map(&[("uberctx-big", &big), ("baggage", "k=v")]));
    assert_eq!(ex.baggage.unwrap(), "k=v");
    assert!(ex.errors.contains(Propagator::Jaeger));
}

#[test]
fn repeated_single_valued_headers_are_malformed() {
    for (name, value, format) in [
        (
            "x-amzn-trace-id",
            format!("Root={XRAY_ROOT}"),
            Propagator::XRay,
        ),
        (
            "uber-trace-id",
            "4d:17c29:0:1".to_string(),
            Propagator::Jaeger,
        ),
        (
            "x-datadog-trace-id",
            "1234".to_string(),
            Propagator::Datadog,
        ),
    ] {
        let ex = extract(&Propagators::all(), &map(&[(name, &value), (name, &value)]));
        assert_eq!(ex.trace_id, None, "{name}");
        assert!(ex.errors.contains(format), "{name}");
    }
}

#[test]
fn unconfigured_formats_are_neither_read_nor_written() {
    let headers = map(&[
        ("x-amzn-trace-id", &format!("Root={XRAY_ROOT}")),
        ("uber-trace-id", "4d:17c29:0:1"),
        ("x-datadog-trace-id", "1234"),
    ]);
    let ex = extract(&Propagators::default(), &headers);
    assert_eq!(ex.trace_id, None);
    let mut out = headers.clone();
    inject_into(&Propagators::default(), &mut out, &ex, true);
    assert_eq!(out["x-amzn-trace-id"], format!("Root={XRAY_ROOT}"));
    assert_eq!(out["uber-trace-id"], "4d:17c29:0:1");
    assert_eq!(out["x-datadog-trace-id"], "1234");
}
