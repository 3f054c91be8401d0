use http::{HeaderMap, HeaderValue};

use super::*;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn map(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn extract_table() {
    // (headers, trace id, parent?, sampled, format, errors)
    type Row = (
        Vec<(&'static str, &'static str)>,
        Option<&'static str>,
        bool,
        Option<bool>,
        Option<Propagator>,
        &'static [Propagator],
    );
    let table: Vec<Row> = vec![
        (vec![], None, false, None, None, &[]),
        (
            vec![("traceparent", TP)],
            Some(TRACE),
            true,
            Some(true),
            Some(Propagator::TraceContext),
            &[],
        ),
        (
            vec![("traceparent", "00-bad")],
            None,
            false,
            None,
            None,
            &[Propagator::TraceContext],
        ),
        (
            vec![("traceparent", TP), ("traceparent", TP)],
            None,
            false,
            None,
            None,
            &[Propagator::TraceContext],
        ),
        // A malformed traceparent falls through to B3.
        (
            vec![
                ("traceparent", "garbage"),
                ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0"),
            ],
            Some("80f198ee56343ba864fe8b2a57d3eff7"),
            true,
            Some(false),
            Some(Propagator::B3),
            &[Propagator::TraceContext],
        ),
        (
            vec![
                ("x-b3-traceid", "64fe8b2a57d3eff7"),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
                ("x-b3-sampled", "1"),
            ],
            Some("000000000000000064fe8b2a57d3eff7"),
            true,
            Some(true),
            Some(Propagator::B3),
            &[],
        ),
        (
            vec![("x-b3-traceid", "64fe8b2a57d3eff7")],
            None,
            false,
            None,
            None,
            &[Propagator::B3],
        ),
        (vec![("b3", "0")], None, false, Some(false), None, &[]),
        (
            vec![("x-request-id", "4bf92f35-77b3-4da6-a3ce-929d0e0e4736")],
            Some(TRACE),
            false,
            None,
            Some(Propagator::Legacy),
            &[],
        ),
        (
            vec![("x-trace-id", TRACE)],
            Some(TRACE),
            false,
            None,
            Some(Propagator::Legacy),
            &[],
        ),
        (
            vec![("x-trace-id", "nope")],
            None,
            false,
            None,
            None,
            &[Propagator::Legacy],
        ),
        (
            vec![("baggage", "k")],
            None,
            false,
            None,
            None,
            &[Propagator::Baggage],
        ),
        // traceparent wins over the legacy id.
        (
            vec![
                ("x-trace-id", "0af7651916cd43dd8448eb211c80319c"),
                ("traceparent", TP),
            ],
            Some(TRACE),
            true,
            Some(true),
            Some(Propagator::TraceContext),
            &[],
        ),
    ];
    for (i, (headers, trace, parent, sampled, format, errors)) in table.into_iter().enumerate() {
        let got = extract(&Propagators::default(), &map(&headers));
        assert_eq!(
            got.trace_id.map(|t| t.to_string()).as_deref(),
            trace,
            "row {i}"
        );
        assert_eq!(got.parent_span_id.is_some(), parent, "row {i}");
        assert_eq!(got.sampled, sampled, "row {i}");
        assert_eq!(got.format, format, "row {i}");
        assert_eq!(got.errors.iter().collect::<Vec<_>>(), errors, "row {i}");
    }
}

#[test]
fn configured_order_decides() {
    let headers = map(&[
        ("traceparent", TP),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
    ]);
    let b3_first = Propagators::new(&[Propagator::B3, Propagator::TraceContext]);
    let got = extract(&b3_first, &headers);
    assert_eq!(got.format, Some(Propagator::B3));
    let only_legacy = Propagators::new(&[Propagator::Legacy]);
    assert_eq!(extract(&only_legacy, &headers).trace_id, None);
}

#[test]
fn other_request_id_is_kept_for_the_span() {
    let got = extract(&Propagators::default(), &map(&[("x-request-id", "req-42")]));
    assert_eq!(got.trace_id, None);
    assert_eq!(got.request_id.unwrap(), "req-42");
    assert!(!got.errors.any());
}

#[test]
fn tracestate_and_baggage_are_kept_verbatim() {
    let headers = map(&[
        ("traceparent", TP),
        ("tracestate", "rojo=00f067aa0ba902b7"),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("baggage", "userId=alice"),
    ]);
    let ex = extract(&Propagators::default(), &headers);
    assert_eq!(
        ex.tracestate.as_ref().unwrap(),
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    );
    assert_eq!(ex.baggage.as_ref().unwrap(), "userId=alice");

    let mut out = headers.clone();
    let span = SpanId::from_hex(b"1111111111111111").unwrap();
    inject(
        &Propagators::default(),
        &mut out,
        &InjectContext {
            trace_id: ex.trace_id.unwrap(),
            span_id: span,
            sampled: true,
            extracted: &ex,
        },
    );
    assert_eq!(
        out["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"
    );
    assert_eq!(out.get_all("tracestate").iter().count(), 1);
    assert_eq!(out["tracestate"], "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    assert_eq!(out["baggage"], "userId=alice");
    assert_eq!(out["x-b3-traceid"], TRACE);
    assert_eq!(out["x-b3-spanid"], "1111111111111111");
    assert_eq!(out["x-b3-sampled"], "1");
    assert_eq!(out["x-trace-id"], TRACE);
    assert_eq!(out["x-request-id"], "4bf92f35-77b3-4da6-a3ce-929d0e0e4736");
}

#[test]
fn inject_rewrites_single_b3_and_keeps_request_id() {
    let headers = map(&[
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d"),
        ("x-b3-flags", "1"),
        ("x-request-id", "mine"),
        ("tracestate", "orphan=1"),
        ("baggage", "bad value"),
    ]);
    let ex = extract(&Propagators::default(), &headers);
    let mut out = headers.clone();
    let span = SpanId::from_hex(b"2222222222222222").unwrap();
    inject(
        &Propagators::default(),
        &mut out,
        &InjectContext {
            trace_id: ex.trace_id.unwrap(),
            span_id: span,
            sampled: false,
            extracted: &ex,
        },
    );
    assert_eq!(
        out["b3"],
        "80f198ee56343ba864fe8b2a57d3eff7-2222222222222222-0"
    );
    assert!(!out.contains_key("x-b3-flags"));
    assert_eq!(out["x-request-id"], "mine");
    assert!(
        !out.contains_key("tracestate"),
        "tracestate of another trace"
    );
    assert!(!out.contains_key("baggage"), "malformed baggage is dropped");
    assert!(out["traceparent"].to_str().unwrap().ends_with("-00"));
}

#[test]
fn no_propagators_writes_only_request_id() {
    let mut out = HeaderMap::new();
    let ex = Extracted::default();
    inject(
        &Propagators::NONE,
        &mut out,
        &InjectContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            sampled: true,
            extracted: &ex,
        },
    );
    assert_eq!(out.len(), 1);
    assert!(out.contains_key("x-request-id"));
}

#[test]
fn otel_propagators_env() {
    let p = Propagators::from_otel_env("tracecontext, baggage,b3multi").unwrap();
    assert_eq!(
        p.iter().collect::<Vec<_>>(),
        vec![
            Propagator::TraceContext,
            Propagator::Baggage,
            Propagator::B3
        ]
    );
    assert_eq!(
        Propagators::from_otel_env("none").unwrap(),
        Propagators::NONE
    );
    let legacy = Propagators::from_otel_env("xray,jaeger,datadog,tracecontext").unwrap();
    assert_eq!(
        legacy.iter().collect::<Vec<_>>(),
        vec![
            Propagator::XRay,
            Propagator::Jaeger,
            Propagator::Datadog,
            Propagator::TraceContext
        ]
    );
    let err = Propagators::from_otel_env("tracecontext,ottrace").unwrap_err();
    assert!(err.contains("\"ottrace\""), "{err}");
    let dup = Propagators::new(&[Propagator::B3, Propagator::B3]);
    assert_eq!(dup.iter().count(), 1);
}

#[test]
fn garbage_never_panics() {
    let samples: &[&[u8]] = &[
        b"",
        b"-",
        b"--------------------------------------------------------",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\xff",
        b"\xff\xfe",
        b"0-0-0-0",
    ];
    for s in samples {
        let _ = w3c::parse_traceparent(s);
        let _ = w3c::valid_tracestate(s);
        let _ = b3::parse_single(s);
        let _ = b3::parse_multi(Some(s), Some(s), Some(s), Some(s));
        let _ = legacy::parse_id(s);
        let _ = baggage::valid_baggage(s);
        let _ = xray::parse(s);
        let _ = jaeger::parse(s);
        let _ = datadog::parse(s, Some(s), Some(s), Some(s));
        if let Ok(v) = HeaderValue::from_bytes(s) {
            let mut h = HeaderMap::new();
            for name in [
                "traceparent",
                "tracestate",
                "b3",
                "x-b3-traceid",
                "baggage",
                "x-trace-id",
                "x-amzn-trace-id",
                "uber-trace-id",
                "uberctx-k",
                "x-datadog-trace-id",
                "x-datadog-tags",
            ] {
                h.insert(name, v.clone());
            }
            let ex = extract(&Propagators::all(), &h);
            assert!(ex.trace_id.is_none_or(|t| t.is_valid()));
        }
    }
}

mod contrib;
mod formats;
