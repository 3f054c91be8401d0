use std::{sync::Arc, time::Duration};

use filters::trace::{span::Route, Outcome, SpanKind};
use http::Method;

use super::*;

fn span(kind: SpanKind, trace: TraceId, status: u16, ms: u64) -> SpanRecord {
    let mut s = SpanRecord::start(kind, trace, Method::GET);
    s.sampled = true;
    s.path = Some("/api".parse().unwrap());
    s.finish(&Outcome {
        status: Some(StatusCode::from_u16(status).unwrap()),
        ..Outcome::default()
    });
    s.end_unix_nanos = s.start_unix_nanos + Duration::from_millis(ms).as_nanos() as u64;
    s
}

fn routed(mut s: SpanRecord, name: &str) -> SpanRecord {
    s.route = Some(Arc::new(Route {
        index: 0,
        name: Arc::from(name),
        sample: None,
        generation: 0,
    }));
    s
}

fn body(r: (StatusCode, &'static str, Bytes)) -> (StatusCode, serde_json::Value) {
    assert_eq!(r.1, JSON);
    (r.0, serde_json::from_slice(&r.2).unwrap())
}

fn ids(v: &serde_json::Value) -> Vec<String> {
    v["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_byte_bound_evicts_the_oldest_traces_first() {
    let one = span(SpanKind::Server, TraceId::random(), 200, 1).approx_size();
    // Room for three plain spans, not four.
    let store = TraceStore::with_max_bytes(1000, one * 3 + one / 2, "checkout");
    let traces: Vec<TraceId> = (0..6).map(|_| TraceId::random()).collect();
    for id in &traces {
        store.insert([span(SpanKind::Server, *id, 200, 1)]);
    }
    assert_eq!(store.len(), 3);
    assert_eq!(store.bytes(), one * 3);
    let (_, v) = body(store.render_traces(""));
    let want: Vec<String> = traces[3..].iter().rev().map(|t| t.to_string()).collect();
    assert_eq!(ids(&v), want);

    // A large span (a captured 10 kB header) pushes out as many as it takes,
    // but the newest trace stays even when it alone is over the bound.
    let mut big = span(SpanKind::Server, TraceId::random(), 200, 1);
    big.user_agent = Some(http::HeaderValue::from_str(&"x".repeat(10_000)).unwrap());
    assert!(big.approx_size() > 10_000);
    let big_id = big.trace_id;
    store.insert([big]);
    assert_eq!(store.len(), 1);
    let (_, v) = body(store.render_traces(""));
    assert_eq!(ids(&v), vec![big_id.to_string()]);

    // Spans of a stored trace count too.
    let store = TraceStore::with_max_bytes(1000, one * 3 + one / 2, "checkout");
    let (a, b) = (TraceId::random(), TraceId::random());
    store.insert([span(SpanKind::Server, a, 200, 1)]);
    store.insert([span(SpanKind::Server, b, 200, 1)]);
    store.insert([span(SpanKind::Client, b, 200, 1)]);
    store.insert([span(SpanKind::Client, b, 200, 1)]);
    assert_eq!(store.len(), 1, "b's three spans leave no room for a");
    assert_eq!(store.bytes(), one * 3);
}

#[test]
fn ring_buffer_keeps_the_newest_traces() {
    let store = TraceStore::new(3, "checkout");
    let traces: Vec<TraceId> = (0..5).map(|_| TraceId::random()).collect();
    for id in &traces {
        store.insert([span(SpanKind::Server, *id, 200, 1)]);
    }
    assert_eq!(store.len(), 3);
    let (status, v) = body(store.render_traces(""));
    assert_eq!(status, StatusCode::OK);
    let want: Vec<String> = traces[2..].iter().rev().map(|t| t.to_string()).collect();
    assert_eq!(ids(&v), want);
    assert_eq!(
        (v["stored"].as_u64(), v["capacity"].as_u64()),
        (Some(3), Some(3))
    );
    let (status, _) = body(store.render_trace(&traces[0].to_string()));
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn spans_group_by_trace_and_orphans_are_flagged() {
    let store = TraceStore::new(10, "checkout");
    let t = TraceId::random();
    let server = routed(span(SpanKind::Server, t, 200, 10), "orders");
    let mut client = span(SpanKind::Client, t, 503, 4);
    client.parent_span_id = Some(server.span_id);
    client.upstream = Some("payments.svc:9000".parse().unwrap());
    // The CLIENT span ends first, so it reaches the store first.
    store.insert([client, server.clone()]);
    let orphan_trace = TraceId::random();
    let mut orphan = span(SpanKind::Client, orphan_trace, 200, 2);
    orphan.upstream = Some("payments.svc:9000".parse().unwrap());
    store.insert([orphan]);
    let (_, v) = body(store.render_trace(&t.to_string()));
    assert_eq!(v["span_count"], 2);
    assert_eq!(v["orphan"], false);
    assert_eq!(v["root"], "GET orders");
    assert_eq!(v["route"], "orders");
    assert_eq!(v["path"], "/api");
    assert_eq!(v["kind"], "SERVER");
    assert_eq!(v["http_status"], 200);
    assert_eq!(v["failure_category"], serde_json::Value::Null);
    assert_eq!(v["failed_spans"], 1, "the outbound 503");
    assert_eq!(v["error"], true, "a failed CLIENT span is an error");
    assert_eq!(v["peers"], serde_json::json!(["payments.svc"]));
    assert_eq!(v["spans"][1]["attributes"]["url.path"], "/api");
    assert_eq!(v["spans"][0]["parent_span_id"], server.span_id.to_string());
    let (_, v) = body(store.render_trace(&orphan_trace.to_string()));
    assert_eq!(v["orphan"], true);
    assert_eq!(v["kind"], "CLIENT");
    assert_eq!(v["spans"][0]["kind"], "CLIENT");
}

#[test]
fn filters() {
    let store = TraceStore::new(10, "checkout");
    store.insert([routed(
        span(SpanKind::Server, TraceId::random(), 200, 5),
        "orders",
    )]);
    store.insert([routed(
        span(SpanKind::Server, TraceId::random(), 503, 50),
        "orders",
    )]);
    store.insert([span(SpanKind::Server, TraceId::random(), 404, 7)]);
    let mut out = span(SpanKind::Client, TraceId::random(), 200, 1);
    out.upstream = Some("payments.svc:9000".parse().unwrap());
    store.insert([out]);
    let count = |q: &str| {
        let (status, v) = body(store.render_traces(q));
        assert_eq!(status, StatusCode::OK, "{q}: {v}");
        let n = v["traces"].as_array().unwrap().len();
        if !q.contains("limit") {
            assert_eq!(v["matched"].as_u64(), Some(n as u64), "{q}");
        }
        n
    };
    assert_eq!(count(""), 4);
    assert_eq!(count("error=true"), 1, "only the 503 is a server error");
    assert_eq!(count("error=false"), 3);
    assert_eq!(count("failed=true"), 2, "the 503 and the 404");
    assert_eq!(count("failed=false"), 2);
    assert_eq!(count("category=VALIDATION"), 1);
    assert_eq!(count("category=network"), 1);
    assert_eq!(count("category=INTERNAL"), 0);
    assert_eq!(count("min_duration_ms=10"), 1);
    assert_eq!(count("service=checkout"), 4);
    assert_eq!(count("service=payments.svc"), 1, "by peer");
    assert_eq!(count("service=nobody"), 0);
    assert_eq!(count("route=orders"), 2);
    assert_eq!(count("route="), 1, "the SERVER span that matched no route");
    assert_eq!(count("route=orders&duration_gt_ms=5&duration_le_ms=50"), 1);
    assert_eq!(count("route=orders&duration_le_ms=5"), 1, "le is inclusive");
    assert_eq!(
        count("duration_gt_ms=6"),
        2,
        "without route=, the root span"
    );
    assert_eq!(count("kind=server"), 3);
    assert_eq!(count("kind=CLIENT&service=payments.svc"), 1);
    let (_, v) = body(store.render_traces("limit=2"));
    assert_eq!(v["traces"].as_array().unwrap().len(), 2);
    assert_eq!(v["matched"], 4, "matched counts past the limit");
    assert_eq!(v["service"], "checkout");
    assert_eq!(
        v["facets"],
        serde_json::json!({"services": ["checkout", "payments.svc"], "routes": ["", "orders"]})
    );
    let (_, v) = body(store.render_traces("spans=false"));
    assert!(v["traces"][0].get("spans").is_none());
    let (_, v) = body(store.render_traces(""));
    assert!(v["traces"][0]["spans"].is_array());
    for bad in ["min_duration_ms=x", "error=maybe", "limit=0", "colour=red"] {
        let (status, v) = body(store.render_traces(bad));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(v["error"].is_string());
    }
}

#[test]
fn search_by_trace_id() {
    let store = TraceStore::new(10, "s");
    let a: TraceId = TraceId::from_hex(b"0af7651916cd43dd8448eb211c80319c").unwrap();
    let b: TraceId = TraceId::from_hex(b"4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    store.insert([span(SpanKind::Server, a, 200, 1)]);
    store.insert([span(SpanKind::Server, b, 200, 1)]);
    let (_, v) = body(store.render_traces("trace_id=43DD"));
    assert_eq!(ids(&v), ["0af7651916cd43dd8448eb211c80319c"]);
    let (_, v) = body(store.render_traces("trace_id=4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!(ids(&v), ["4bf92f3577b34da6a3ce929d0e0e4736"]);
}

#[test]
fn root_status_and_failure() {
    let store = TraceStore::new(10, "s");
    let t = TraceId::random();
    let mut s = span(SpanKind::Server, t, 200, 3);
    s.grpc = true;
    s.path = Some("/pkg.Svc/Get".parse().unwrap());
    s.finish(&Outcome {
        status: Some(StatusCode::OK),
        grpc: Some(filters::classify::GrpcCode(5)),
        ..Outcome::default()
    });
    store.insert([s]);
    let (_, v) = body(store.render_trace(&t.to_string()));
    assert_eq!(v["root"], "pkg.Svc/Get");
    assert_eq!(v["route"], serde_json::Value::Null);
    assert_eq!(v["grpc_status"], "NOT_FOUND");
    assert_eq!(v["failure_category"], "VALIDATION");
    assert_eq!(v["error_type"], "NOT_FOUND");
    assert_eq!(
        v["error"], false,
        "VALIDATION is not an error on a SERVER span"
    );
}

#[test]
fn routing() {
    let store = TraceStore::new(10, "checkout");
    let s = span(SpanKind::Server, TraceId::random(), 500, 3);
    let id = s.trace_id.to_string();
    store.insert([s]);
    assert_eq!(
        store.handle("/debug/traces", Some("error=true")).0,
        StatusCode::OK
    );
    assert_eq!(store.handle("/debug/traces/", None).0, StatusCode::OK);
    assert_eq!(
        store.handle(&format!("/debug/traces/{id}"), None).0,
        StatusCode::OK
    );
    assert_eq!(
        store.handle("/debug/traces/xyz", None).0,
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn spans_per_trace_are_capped() {
    let store = TraceStore::new(2, "s");
    let t = TraceId::random();
    store.insert((0..MAX_SPANS_PER_TRACE + 10).map(|_| span(SpanKind::Server, t, 200, 1)));
    let (_, v) = body(store.render_trace(&t.to_string()));
    assert_eq!(v["span_count"], MAX_SPANS_PER_TRACE);
}
