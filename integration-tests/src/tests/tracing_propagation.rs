//! Trace context through the proxy, one test per format: what the upstream
//! (the echo app's `/headers`) sees, what the client gets back, and what
//! the proxy's span says (read back from the embedded store).

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;

use super::tracing_common::{
    metrics, only_span, seen, stored_trace, traceparent, uuid, PARENT, TRACE,
};
use crate::{client::Client, metric_sum, proxy::Proxy, upstream::Upstream};

/// What one request through the proxy produced.
struct Hop {
    /// The `/headers` document of the echo app.
    echo: serde_json::Value,
    /// The response's `x-trace-id`.
    x_trace_id: String,
    /// The traceparent the upstream got: (trace id, proxy span id, flags).
    injected: (String, String, String),
}

/// Sends `GET /headers` with `headers` through a proxy in front of the echo
/// app, over HTTP/1.1.
async fn hop(proxy: &Proxy, headers: &[(&str, &str)]) -> Hop {
    let client = Client::http1();
    let mut req = client.request("GET", &proxy.url("/headers"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .send(req.body(Full::new(Bytes::new())).unwrap())
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let echo = resp.json();
    let x_trace_id = resp.headers["x-trace-id"].to_str().unwrap().to_string();
    let injected = traceparent(&seen(&echo, "traceparent").expect("traceparent injected"));
    Hop {
        echo,
        x_trace_id,
        injected,
    }
}

async fn proxy_to_echo() -> (Upstream, Proxy) {
    let up = Upstream::echo().await;
    let proxy = Proxy::builder().upstream(up.url()).run().await;
    (up, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w3c_traceparent_and_tracestate() {
    let (_up, proxy) = proxy_to_echo().await;
    let tracestate = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
    let h = hop(
        &proxy,
        &[
            ("traceparent", &format!("00-{TRACE}-{PARENT}-01")),
            ("tracestate", tracestate),
        ],
    )
    .await;
    let (trace, span, flags) = &h.injected;
    assert_eq!(trace, TRACE, "same trace");
    assert_ne!(span, PARENT, "the upstream's parent is the proxy span");
    assert_eq!(flags, "01", "sampled flag kept");
    assert_eq!(seen(&h.echo, "tracestate").as_deref(), Some(tracestate));
    assert_eq!(
        seen(&h.echo, "x-request-id"),
        Some(uuid(TRACE)),
        "x-request-id added when absent: {}",
        h.echo
    );
    // The other formats carry the same context.
    assert_eq!(seen(&h.echo, "x-b3-traceid").as_deref(), Some(TRACE));
    assert_eq!(seen(&h.echo, "x-b3-spanid").as_ref(), Some(span));
    assert_eq!(seen(&h.echo, "x-b3-sampled").as_deref(), Some("1"));
    assert_eq!(seen(&h.echo, "x-trace-id").as_deref(), Some(TRACE));
    assert_eq!(h.x_trace_id, TRACE);

    let stored = stored_trace(&proxy, TRACE).await;
    let s = only_span(&stored);
    assert_eq!(
        s["span_id"],
        span.as_str(),
        "the injected span is the proxy's"
    );
    assert_eq!(s["parent_span_id"], PARENT, "{s}");
    assert_eq!(s["kind"], "SERVER");
    assert_eq!(s["attributes"]["sidetrace.sampling.reason"], "parent");
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w3c_unsampled_parent_keeps_flag_00() {
    let (_up, proxy) = proxy_to_echo().await;
    let h = hop(
        &proxy,
        &[("traceparent", &format!("00-{TRACE}-{PARENT}-00"))],
    )
    .await;
    assert_eq!(h.injected.0, TRACE);
    assert_ne!(h.injected.1, PARENT);
    assert_eq!(h.injected.2, "00", "not sampled, still propagated");
    assert_eq!(seen(&h.echo, "x-b3-sampled").as_deref(), Some("0"));
    assert_eq!(h.x_trace_id, TRACE);
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baggage_is_forwarded_verbatim() {
    let (_up, proxy) = proxy_to_echo().await;
    let baggage = "userId=alice,serverNode=DF%2028,isProduction=false;p=1";
    // With a traceparent ...
    let h = hop(
        &proxy,
        &[
            ("traceparent", &format!("00-{TRACE}-{PARENT}-01")),
            ("baggage", baggage),
        ],
    )
    .await;
    assert_eq!(seen(&h.echo, "baggage").as_deref(), Some(baggage));
    assert_eq!(h.injected.0, TRACE);
    // ... and alone: baggage is no trace context, so a fresh trace starts.
    let h = hop(&proxy, &[("baggage", baggage)]).await;
    assert_eq!(seen(&h.echo, "baggage").as_deref(), Some(baggage));
    assert_eq!(h.injected.0, h.x_trace_id, "a fresh trace");
    assert_ne!(h.injected.0, TRACE);
    assert_eq!(h.injected.2, "01", "the default sampler keeps new traces");
    let stored = stored_trace(&proxy, &h.x_trace_id).await;
    assert!(
        only_span(&stored).get("parent_span_id").is_none(),
        "{stored}"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_single_header() {
    let (_up, proxy) = proxy_to_echo().await;
    let trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let span = "e457b5a2e4d86bd1";
    let h = hop(
        &proxy,
        &[("b3", &format!("{trace}-{span}-1-05e3ac9a4f6e3b90"))],
    )
    .await;
    let (t, proxy_span, flags) = &h.injected;
    assert_eq!(t, trace);
    assert_ne!(proxy_span, span);
    assert_eq!(flags, "01");
    assert_eq!(
        seen(&h.echo, "b3"),
        Some(format!("{trace}-{proxy_span}-1")),
        "b3 rewritten with the proxy span, parent dropped"
    );
    assert_eq!(seen(&h.echo, "x-b3-traceid").as_deref(), Some(trace));
    assert_eq!(seen(&h.echo, "x-b3-spanid").as_ref(), Some(proxy_span));
    assert_eq!(seen(&h.echo, "x-b3-sampled").as_deref(), Some("1"));
    assert_eq!(h.x_trace_id, trace);
    assert_eq!(seen(&h.echo, "x-request-id"), Some(uuid(trace)));
    let stored = stored_trace(&proxy, trace).await;
    let s = only_span(&stored);
    assert_eq!(s["parent_span_id"], span, "{s}");
    assert_eq!(s["span_id"], proxy_span.as_str());

    // `b3: 0` alone is a decision, not a context: fresh trace, unsampled.
    let h = hop(&proxy, &[("b3", "0")]).await;
    assert_eq!(h.injected.2, "00");
    assert_eq!(
        seen(&h.echo, "b3").unwrap(),
        format!("{}-{}-0", h.injected.0, h.injected.1)
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_multi_headers() {
    let (_up, proxy) = proxy_to_echo().await;
    let trace = "463ac35c9f6413ad48485a3953bb6124";
    let span = "a2fb4a1d1a96d312";
    let h = hop(
        &proxy,
        &[
            ("x-b3-traceid", trace),
            ("x-b3-spanid", span),
            ("x-b3-parentspanid", "0020000000000001"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    let (t, proxy_span, flags) = &h.injected;
    assert_eq!(t, trace);
    assert_ne!(proxy_span, span);
    assert_eq!(flags, "01");
    assert_eq!(seen(&h.echo, "x-b3-traceid").as_deref(), Some(trace));
    assert_eq!(seen(&h.echo, "x-b3-spanid").as_ref(), Some(proxy_span));
    assert_eq!(seen(&h.echo, "x-b3-sampled").as_deref(), Some("1"));
    assert_eq!(seen(&h.echo, "x-b3-parentspanid"), None, "{}", h.echo);
    assert_eq!(seen(&h.echo, "b3"), None, "b3 single only when it came");
    assert_eq!(h.x_trace_id, trace);
    let stored = stored_trace(&proxy, trace).await;
    assert_eq!(only_span(&stored)["parent_span_id"], span);

    // A 64-bit trace id is left-padded; `x-b3-flags: 1` (debug) is sampled.
    let h = hop(
        &proxy,
        &[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", span),
            ("x-b3-flags", "1"),
        ],
    )
    .await;
    assert_eq!(h.injected.0, "0000000000000000a3ce929d0e0e4736");
    assert_eq!(h.injected.2, "01");
    assert_eq!(seen(&h.echo, "x-b3-flags"), None);
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_request_id_uuid_becomes_the_trace_id() {
    let (_up, proxy) = proxy_to_echo().await;
    let h = hop(&proxy, &[("x-request-id", &uuid(TRACE))]).await;
    assert_eq!(h.injected.0, TRACE);
    assert_eq!(h.injected.2, "01");
    assert_eq!(h.x_trace_id, TRACE);
    assert_eq!(
        seen(&h.echo, "x-request-id"),
        Some(uuid(TRACE)),
        "kept as it came"
    );
    assert_eq!(seen(&h.echo, "x-trace-id").as_deref(), Some(TRACE));
    let stored = stored_trace(&proxy, TRACE).await;
    let s = only_span(&stored);
    assert!(
        s.get("parent_span_id").is_none(),
        "legacy ids carry no parent: {s}"
    );
    assert_eq!(s["span_id"], h.injected.1.as_str());
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_x_trace_id_hex_becomes_the_trace_id() {
    let (_up, proxy) = proxy_to_echo().await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let h = hop(&proxy, &[("x-trace-id", trace)]).await;
    assert_eq!(h.injected.0, trace);
    assert_eq!(h.x_trace_id, trace);
    assert_eq!(seen(&h.echo, "x-trace-id").as_deref(), Some(trace));
    assert_eq!(seen(&h.echo, "x-request-id"), Some(uuid(trace)), "added");
    let stored = stored_trace(&proxy, trace).await;
    assert!(only_span(&stored).get("parent_span_id").is_none());
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_id_request_id_is_an_attribute_of_a_fresh_trace() {
    let (_up, proxy) = proxy_to_echo().await;
    let h = hop(&proxy, &[("x-request-id", "req-12345")]).await;
    assert_eq!(h.injected.0, h.x_trace_id, "a fresh trace");
    assert_eq!(
        seen(&h.echo, "x-request-id").as_deref(),
        Some("req-12345"),
        "not replaced"
    );
    let stored = stored_trace(&proxy, &h.x_trace_id).await;
    let s = only_span(&stored);
    assert_eq!(
        s["attributes"]["http.request.header.x-request-id"], "req-12345",
        "{s}"
    );
    assert!(s.get("parent_span_id").is_none());
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_over_h2c_too() {
    let (_up, proxy) = proxy_to_echo().await;
    let client = Client::h2c();
    let req = client
        .request("GET", &proxy.url("/headers"))
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.send(req).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.headers["x-trace-id"], TRACE);
    let (t, s, f) = traceparent(&seen(&resp.json(), "traceparent").unwrap());
    assert_eq!((t.as_str(), f.as_str()), (TRACE, "01"));
    assert_ne!(s, PARENT);
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_context_starts_a_new_trace_and_is_counted() {
    let (_up, proxy) = proxy_to_echo().await;
    // (headers, the format whose error counter must rise)
    let bad: &[(&[(&str, &str)], &str)] = &[
        (
            &[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            )],
            "tracecontext",
        ),
        (
            &[(
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            )],
            "tracecontext",
        ),
        (
            &[(
                "traceparent",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )],
            "tracecontext",
        ),
        (
            &[(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )],
            "tracecontext",
        ),
        (&[("b3", "not-a-b3-header")], "b3"),
        (&[("x-trace-id", "xyz")], "legacy"),
        (&[("baggage", "no value here")], "baggage"),
    ];
    for (headers, format) in bad {
        let before = metric_sum(
            &metrics(&proxy).await,
            "sidetrace_propagation_errors_total",
            &[("format", format)],
        );
        let h = hop(&proxy, headers).await;
        assert_ne!(h.injected.0, TRACE, "{headers:?}: a new trace");
        assert_eq!(h.injected.0, h.x_trace_id, "{headers:?}");
        assert_eq!(h.injected.2, "01", "{headers:?}: new traces are sampled");
        let after = metric_sum(
            &metrics(&proxy).await,
            "sidetrace_propagation_errors_total",
            &[("format", format)],
        );
        assert_eq!(after, before + 1.0, "{headers:?} counts one {format} error");
    }
    // tracestate without a valid traceparent is dropped; bad baggage too.
    let h = hop(
        &proxy,
        &[
            ("traceparent", "00-zzz-00f067aa0ba902b7-01"),
            ("tracestate", "rojo=1"),
            ("baggage", "=broken"),
        ],
    )
    .await;
    assert_eq!(seen(&h.echo, "tracestate"), None, "{}", h.echo);
    assert_eq!(seen(&h.echo, "baggage"), None, "{}", h.echo);
    proxy.shutdown();
}
