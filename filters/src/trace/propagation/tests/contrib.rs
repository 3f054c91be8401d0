//! The built-in formats against the maintained contrib propagators, byte
//! for byte: `opentelemetry-aws`'s X-Ray propagator (built on the same
//! `opentelemetry` version as sidetrace) and `opentelemetry-jaeger-propagator`
//! (the newest release is built on the previous `opentelemetry` minor
//! version; the header text it reads and writes is what is compared). The
//! contrib X-Ray propagator also runs through the OpenTelemetry extension
//! point, as a user would add it.

use std::{collections::HashMap, sync::Arc};

use http::HeaderMap;
use opentelemetry::{
    propagation::TextMapPropagator,
    trace::{SpanContext, TraceContextExt, TraceFlags, TraceState},
    Context,
};
use opentelemetry_aws::trace::XrayPropagator;

use super::super::{custom::CustomPropagators, *};
use super::map;

/// (trace id, span id, sampled) samples, 128-bit ids with both halves set,
/// a 64-bit one, and ids with leading zeros.
const SAMPLES: &[(&str, &str, bool)] = &[
    ("640cfd8d00000000abcdefab12345678", "1111111111111111", true),
    (
        "5759e988bd862e3fe1be46a994272793",
        "53995c3f42cd8ad8",
        false,
    ),
    ("000000000000004d0000000000000016", "0000000000017c29", true),
    (
        "0000000000000000a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        false,
    ),
];

fn ours(format: Propagator, trace: &str, span: &str, sampled: bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let ex = Extracted::default();
    inject(
        &Propagators::new(&[format]),
        &mut headers,
        &InjectContext {
            trace_id: TraceId::from_hex(trace.as_bytes()).unwrap(),
            span_id: SpanId::from_hex(span.as_bytes()).unwrap(),
            sampled,
            extracted: &ex,
        },
    );
    headers
}

fn otel_context(trace: &str, span: &str, sampled: bool, state: TraceState) -> Context {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let sc = SpanContext::new(
        opentelemetry::trace::TraceId::from_hex(trace).unwrap(),
        opentelemetry::trace::SpanId::from_hex(span).unwrap(),
        flags,
        true,
        state,
    );
    Context::new().with_remote_span_context(sc)
}

#[test]
fn xray_inject_matches_the_aws_propagator() {
    for &(trace, span, sampled) in SAMPLES {
        let mut theirs = HashMap::new();
        XrayPropagator::default().inject_context(
            &otel_context(trace, span, sampled, TraceState::default()),
            &mut theirs,
        );
        let headers = ours(Propagator::XRay, trace, span, sampled);
        assert_eq!(
            headers["x-amzn-trace-id"].to_str().unwrap(),
            theirs["x-amzn-trace-id"],
            "{trace} {span} {sampled}"
        );
    }
}

#[test]
fn xray_extract_and_rewrite_match_the_aws_propagator() {
    let headers = [
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
        "Root=1-5759e988-bd862e3fe1be46a994272793",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=?",
        "Parent=53995c3f42cd8ad8;Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Self=1-67891234-12456789abcdef012345678;Lineage=a87bd80c:1|68fd508a:5",
    ];
    let proxy_span = "1111111111111111";
    for value in headers {
        let ex = extract(
            &Propagators::new(&[Propagator::XRay]),
            &map(&[("x-amzn-trace-id", value)]),
        );
        let cx = XrayPropagator::default().extract(&HashMap::from([(
            "x-amzn-trace-id".to_string(),
            value.to_string(),
        )]));
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(
            ex.trace_id.map(|t| t.to_string()),
            Some(sc.trace_id().to_string()),
            "{value}"
        );
        let parent = sc.span_id();
        assert_eq!(
            ex.parent_span_id.map(|p| p.to_string()),
            (parent != opentelemetry::trace::SpanId::INVALID).then(|| parent.to_string()),
            "{value}"
        );
        // The contrib marks "no decision" with a private deferred flag.
        let deferred = sc.trace_flags().to_u8() & 0x02 != 0;
        let theirs = (!deferred).then(|| sc.is_sampled());
        assert_eq!(ex.sampled, theirs, "{value}");

        // Rewritten with the proxy span: the same bytes, extra fields too.
        let sampled = ex.sampled.unwrap_or(true);
        let mut rewritten = map(&[("x-amzn-trace-id", value)]);
        inject(
            &Propagators::new(&[Propagator::XRay]),
            &mut rewritten,
            &InjectContext {
                trace_id: ex.trace_id.unwrap(),
                span_id: SpanId::from_hex(proxy_span.as_bytes()).unwrap(),
                sampled,
                extracted: &ex,
            },
        );
        let mut theirs = HashMap::new();
        XrayPropagator::default().inject_context(
            &otel_context(
                &sc.trace_id().to_string(),
                proxy_span,
                sampled,
                sc.trace_state().clone(),
            ),
            &mut theirs,
        );
        assert_eq!(
            rewritten["x-amzn-trace-id"].to_str().unwrap(),
            theirs["x-amzn-trace-id"],
            "{value}"
        );
    }
}

// The Jaeger project deprecates its format in favour of W3C, and the
// propagator carries that deprecation; it is still the reference for what
// Jaeger clients send.
#[allow(deprecated)]
#[test]
fn jaeger_inject_and_extract_match_the_jaeger_propagator() {
    use opentelemetry_0_32::{
        propagation::TextMapPropagator as _,
        trace::{
            SpanContext as SpanContext32, SpanId as SpanId32, TraceContextExt as _,
            TraceFlags as TraceFlags32, TraceId as TraceId32, TraceState as TraceState32,
        },
        Context as Context32,
    };
    let jaeger = opentelemetry_jaeger_propagator::Propagator::new();
    for &(trace, span, sampled) in SAMPLES {
        let flags = if sampled {
            TraceFlags32::SAMPLED
        } else {
            TraceFlags32::default()
        };
        let sc = SpanContext32::new(
            TraceId32::from_hex(trace).unwrap(),
            SpanId32::from_hex(span).unwrap(),
            flags,
            true,
            TraceState32::default(),
        );
        let mut theirs = HashMap::new();
        jaeger.inject_context(&Context32::new().with_remote_span_context(sc), &mut theirs);
        let headers = ours(Propagator::Jaeger, trace, span, sampled);
        let value = headers["uber-trace-id"].to_str().unwrap();
        assert_eq!(value, theirs["uber-trace-id"], "{trace} {span}");

        // Each reads what the other wrote, short ids included.
        let short = value.trim_start_matches('0');
        for v in [value, short] {
            let cx = jaeger.extract(&HashMap::from([(
                "uber-trace-id".to_string(),
                v.to_string(),
            )]));
            let their = cx.span().span_context().clone();
            let ex = extract(
                &Propagators::new(&[Propagator::Jaeger]),
                &map(&[("uber-trace-id", v)]),
            );
            assert_eq!(
                ex.trace_id.map(|t| t.to_string()),
                Some(their.trace_id().to_string()),
                "{v}"
            );
            assert_eq!(
                ex.parent_span_id.map(|s| s.to_string()),
                Some(their.span_id().to_string()),
                "{v}"
            );
            assert_eq!(ex.sampled, Some(their.is_sampled()), "{v}");
        }
    }
}

#[test]
fn a_contrib_propagator_added_through_the_opentelemetry_api() {
    // Only W3C built in; X-Ray comes from the contrib crate.
    let builtin = Propagators::new(&[Propagator::TraceContext]);
    let custom = CustomPropagators::default().with(Arc::new(XrayPropagator::default()));
    let value = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
    let mut headers = map(&[("x-amzn-trace-id", value)]);
    let mut ex = extract(&builtin, &headers);
    assert_eq!(ex.trace_id, None, "not a built-in format here");
    custom.extract(&headers, &mut ex);
    assert_eq!(
        ex.trace_id.unwrap().to_string(),
        "5759e988bd862e3fe1be46a994272793"
    );
    assert_eq!(ex.parent_span_id.unwrap().to_string(), "53995c3f42cd8ad8");
    assert_eq!(ex.sampled, Some(true));

    let cx = InjectContext {
        trace_id: ex.trace_id.unwrap(),
        span_id: SpanId::from_hex(b"1111111111111111").unwrap(),
        sampled: true,
        extracted: &ex,
    };
    inject(&builtin, &mut headers, &cx);
    assert_eq!(custom.inject(&mut headers, &cx), 0);
    assert_eq!(
        headers["x-amzn-trace-id"],
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=1111111111111111;Sampled=1"
    );
    assert_eq!(
        headers["traceparent"],
        "00-5759e988bd862e3fe1be46a994272793-1111111111111111-01"
    );
    // The same bytes as the built-in X-Ray format writes.
    let built_in = ours(
        Propagator::XRay,
        "5759e988bd862e3fe1be46a994272793",
        "1111111111111111",
        true,
    );
    assert_eq!(headers["x-amzn-trace-id"], built_in["x-amzn-trace-id"]);
}
