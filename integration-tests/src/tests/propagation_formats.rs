//! X-Ray, Jaeger and Datadog context through the real proxy, and a format
//! added through the OpenTelemetry API: what the upstream (the echo app's
//! `/headers`) sees in that format and in W3C, what the proxy's span says
//! (read back from the embedded store), and the error counter for malformed
//! values.

use std::sync::Arc;

use bytes::Bytes;
use filters::trace::otel;
use http::StatusCode;
use http_body_util::Full;

use super::tracing_common::{metrics, only_span, seen, stored_trace, traceparent};
use crate::{client::Client, metric_sum, proxy::Proxy, upstream::Upstream};

/// Every format, W3C first: the documented recommended order.
const ALL_FORMATS: &str =
    "tracing: { propagators: [tracecontext, baggage, b3, xray, jaeger, datadog, legacy] }";

const TRACE: &str = "5759e988bd862e3fe1be46a994272793";
const PARENT: &str = "53995c3f42cd8ad8";

/// What one request through the proxy produced.
struct Hop {
    echo: serde_json::Value,
    x_trace_id: String,
    /// The traceparent the upstream got: (trace id, proxy span id, flags).
    w3c: (String, String, String),
}

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
    let w3c = traceparent(&seen(&echo, "traceparent").expect("traceparent injected"));
    Hop {
        x_trace_id: resp.headers["x-trace-id"].to_str().unwrap().to_string(),
        echo,
        w3c,
    }
}

async fn proxy(yaml: &str) -> (Upstream, Proxy) {
    let up = Upstream::echo().await;
    let proxy = Proxy::from_yaml(yaml).upstream(up.url()).run().await;
    (up, proxy)
}

/// Asserts the stored span of `trace` is the one the upstream saw as its
/// parent, a child of `parent`.
async fn proxy_span_is_the_new_parent(proxy: &Proxy, h: &Hop, trace: &str, parent: Option<&str>) {
    let stored = stored_trace(proxy, trace).await;
    let s = only_span(&stored);
    assert_eq!(s["span_id"], h.w3c.1.as_str(), "{s}");
    match parent {
        Some(p) => assert_eq!(s["parent_span_id"], p, "{s}"),
        None => assert!(s.get("parent_span_id").is_none(), "{s}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xray_from_an_sdk_and_from_a_load_balancer() {
    let (_up, proxy) = proxy(ALL_FORMATS).await;
    let root = "1-5759e988-bd862e3fe1be46a994272793";
    let h = hop(
        &proxy,
        &[(
            "x-amzn-trace-id",
            &format!("Root={root};Parent={PARENT};Sampled=1;Lineage=a87bd80c:1"),
        )],
    )
    .await;
    let (trace, span, flags) = &h.w3c;
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "01"));
    assert_ne!(span, PARENT);
    assert_eq!(
        seen(&h.echo, "x-amzn-trace-id"),
        Some(format!(
            "Root={root};Parent={span};Sampled=1;Lineage=a87bd80c:1"
        )),
        "the same trace in X-Ray, the proxy span as parent, other fields kept"
    );
    assert_eq!(h.x_trace_id, TRACE);
    proxy_span_is_the_new_parent(&proxy, &h, TRACE, Some(PARENT)).await;

    // A load balancer's root: no parent, no decision; the sampler decides
    // (the default keeps new traces) and the trace keeps the balancer's id.
    let lb_root = "1-67891233-abcdef012345678912345678";
    let lb_trace = "67891233abcdef012345678912345678";
    let h = hop(&proxy, &[("x-amzn-trace-id", &format!("Root={lb_root}"))]).await;
    assert_eq!(h.w3c.0, lb_trace);
    assert_eq!(h.w3c.2, "01");
    assert_eq!(
        seen(&h.echo, "x-amzn-trace-id"),
        Some(format!("Root={lb_root};Parent={};Sampled=1", h.w3c.1))
    );
    proxy_span_is_the_new_parent(&proxy, &h, lb_trace, None).await;

    // The unsampled decision travels on in both formats.
    let h = hop(
        &proxy,
        &[(
            "x-amzn-trace-id",
            &format!("Root={root};Parent={PARENT};Sampled=0"),
        )],
    )
    .await;
    assert_eq!((h.w3c.0.as_str(), h.w3c.2.as_str()), (TRACE, "00"));
    assert!(seen(&h.echo, "x-amzn-trace-id")
        .unwrap()
        .ends_with(";Sampled=0"));
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_trace_and_baggage() {
    let (_up, proxy) = proxy(ALL_FORMATS).await;
    let trace = "000000000000004d0000000000000016";
    let h = hop(
        &proxy,
        &[
            ("uber-trace-id", "4d0000000000000016:17c29:0:1"),
            ("uberctx-tenant", "acme"),
        ],
    )
    .await;
    let (t, span, flags) = &h.w3c;
    assert_eq!((t.as_str(), flags.as_str()), (trace, "01"));
    assert_eq!(
        seen(&h.echo, "uber-trace-id"),
        Some(format!("{trace}:{span}:0:1"))
    );
    assert_eq!(seen(&h.echo, "uberctx-tenant").as_deref(), Some("acme"));
    assert_eq!(seen(&h.echo, "baggage").as_deref(), Some("tenant=acme"));
    proxy_span_is_the_new_parent(&proxy, &h, trace, Some("0000000000017c29")).await;

    let h = hop(
        &proxy,
        &[("uber-trace-id", "4d0000000000000016%3A17c29%3A0%3A0")],
    )
    .await;
    assert_eq!((h.w3c.0.as_str(), h.w3c.2.as_str()), (trace, "00"));
    assert!(seen(&h.echo, "uber-trace-id").unwrap().ends_with(":0:0"));
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datadog_ids_as_datadog_maps_them() {
    let (_up, proxy) = proxy(ALL_FORMATS).await;
    // 0x640cfd8d00000000 in the tid tag, 0xabcdefab12345678 in decimal.
    let trace = "640cfd8d00000000abcdefab12345678";
    let h = hop(
        &proxy,
        &[
            ("x-datadog-trace-id", "12379814468735227512"),
            ("x-datadog-parent-id", "67667974448284343"),
            ("x-datadog-sampling-priority", "2"),
            ("x-datadog-tags", "_dd.p.dm=-4,_dd.p.tid=640cfd8d00000000"),
            ("x-datadog-origin", "rum"),
        ],
    )
    .await;
    let (t, span, flags) = &h.w3c;
    assert_eq!((t.as_str(), flags.as_str()), (trace, "01"));
    let span_decimal = u64::from_str_radix(span, 16).unwrap().to_string();
    assert_eq!(
        seen(&h.echo, "x-datadog-trace-id").as_deref(),
        Some("12379814468735227512")
    );
    assert_eq!(seen(&h.echo, "x-datadog-parent-id"), Some(span_decimal));
    assert_eq!(
        seen(&h.echo, "x-datadog-sampling-priority").as_deref(),
        Some("2")
    );
    assert_eq!(
        seen(&h.echo, "x-datadog-tags").as_deref(),
        Some("_dd.p.dm=-4,_dd.p.tid=640cfd8d00000000")
    );
    assert_eq!(seen(&h.echo, "x-datadog-origin").as_deref(), Some("rum"));
    proxy_span_is_the_new_parent(&proxy, &h, trace, Some("00f067aa0ba902b7")).await;

    // A rejecting priority is a decision not to sample.
    let h = hop(
        &proxy,
        &[
            ("x-datadog-trace-id", "1234"),
            ("x-datadog-parent-id", "12"),
            ("x-datadog-sampling-priority", "0"),
        ],
    )
    .await;
    assert_eq!(h.w3c.0, "000000000000000000000000000004d2");
    assert_eq!(h.w3c.2, "00");
    assert_eq!(
        seen(&h.echo, "x-datadog-sampling-priority").as_deref(),
        Some("0")
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_values_are_counted_and_ignored() {
    let (_up, proxy) = proxy(ALL_FORMATS).await;
    let bad: &[(&[(&str, &str)], &str)] = &[
        (
            &[("x-amzn-trace-id", "Root=1-5759e988-bd86;Sampled=1")],
            "xray",
        ),
        (
            &[(
                "x-amzn-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=maybe",
            )],
            "xray",
        ),
        (&[("uber-trace-id", "4d0000000000000016:17c29:0")], "jaeger"),
        (&[("uber-trace-id", "0:17c29:0:1")], "jaeger"),
        (
            &[("x-datadog-trace-id", "-5"), ("x-datadog-parent-id", "12")],
            "datadog",
        ),
        (
            &[
                ("x-datadog-trace-id", "1234"),
                ("x-datadog-tags", "_dd.p.tid=NOTHEX0000000000"),
            ],
            "datadog",
        ),
    ];
    for (headers, format) in bad {
        let count = |text: &str| {
            metric_sum(
                text,
                "sidetrace_propagation_errors_total",
                &[("format", format)],
            )
        };
        let before = count(&metrics(&proxy).await);
        let h = hop(&proxy, headers).await;
        assert_ne!(h.w3c.0, TRACE, "{headers:?}");
        assert_ne!(h.w3c.0, "000000000000000000000000000004d2", "{headers:?}");
        assert_eq!(h.w3c.0, h.x_trace_id, "{headers:?}: a fresh trace");
        assert_eq!(h.w3c.2, "01", "{headers:?}: new traces are sampled");
        // The fresh trace is written in every format, the bad value replaced.
        let xray = seen(&h.echo, "x-amzn-trace-id").unwrap();
        assert!(
            xray.starts_with(&format!("Root=1-{}-", &h.w3c.0[..8])),
            "{xray}"
        );
        assert!(seen(&h.echo, "uber-trace-id")
            .unwrap()
            .starts_with(&h.w3c.0));
        let after = count(&metrics(&proxy).await);
        assert_eq!(after, before + 1.0, "{headers:?} counts one {format} error");
    }
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_xray_plus_app_w3c_follows_the_configured_order() {
    let lb = "Root=1-67891233-abcdef012345678912345678";
    let app = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = [("x-amzn-trace-id", lb), ("traceparent", app)];

    // W3C first (the default place of tracecontext): the app's trace wins,
    // and the upstream's X-Ray header carries it.
    let (_up, proxy) = proxy(ALL_FORMATS).await;
    let h = hop(&proxy, &headers).await;
    assert_eq!(h.w3c.0, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        seen(&h.echo, "x-amzn-trace-id"),
        Some(format!(
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent={};Sampled=1",
            h.w3c.1
        ))
    );
    proxy_span_is_the_new_parent(&proxy, &h, &h.w3c.0, Some("00f067aa0ba902b7")).await;
    proxy.shutdown();

    // X-Ray first, chosen through OTEL_PROPAGATORS over the file: the load
    // balancer's trace wins and the app's traceparent is replaced.
    let up = Upstream::echo().await;
    let proxy = Proxy::from_yaml(ALL_FORMATS)
        .upstream(up.url())
        .env("OTEL_PROPAGATORS", "xray,tracecontext")
        .run()
        .await;
    let h = hop(&proxy, &headers).await;
    assert_eq!(h.w3c.0, "67891233abcdef012345678912345678");
    assert_eq!(
        seen(&h.echo, "uber-trace-id"),
        None,
        "jaeger not configured"
    );
    proxy_span_is_the_new_parent(&proxy, &h, &h.w3c.0, None).await;
    proxy.shutdown();
}

/// A vendor format no contrib crate covers: `x-vendor-ctx: <trace>.<span>.<0|1>`.
#[derive(Debug)]
struct VendorPropagator {
    fields: Vec<String>,
}

impl otel::TextMapPropagator for VendorPropagator {
    fn inject_context(&self, cx: &otel::Context, injector: &mut dyn otel::Injector) {
        use otel::TraceContextExt;
        let span = cx.span();
        let sc = span.span_context();
        let sampled = u8::from(sc.is_sampled());
        injector.set(
            "x-vendor-ctx",
            format!("{}.{}.{sampled}", sc.trace_id(), sc.span_id()),
        );
    }

    fn extract_with_context(&self, cx: &otel::Context, ex: &dyn otel::Extractor) -> otel::Context {
        use otel::TraceContextExt;
        let parsed = ex.get("x-vendor-ctx").and_then(|v| {
            let mut parts = v.split('.');
            let trace = otel::TraceId::from_hex(parts.next()?).ok()?;
            let span = otel::SpanId::from_hex(parts.next()?).ok()?;
            let flags = match parts.next()? {
                "1" => otel::TraceFlags::SAMPLED,
                _ => otel::TraceFlags::default(),
            };
            Some(otel::SpanContext::new(
                trace,
                span,
                flags,
                true,
                Default::default(),
            ))
        });
        match parsed {
            Some(sc) => cx.with_remote_span_context(sc),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> otel::FieldIter<'_> {
        otel::FieldIter::new(&self.fields)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opentelemetry_propagator_added_by_the_embedder() {
    let up = Upstream::echo().await;
    let proxy = Proxy::builder()
        .upstream(up.url())
        .propagator(Arc::new(VendorPropagator {
            fields: vec!["x-vendor-ctx".into()],
        }))
        .run()
        .await;
    let h = hop(&proxy, &[("x-vendor-ctx", &format!("{TRACE}.{PARENT}.1"))]).await;
    let (trace, span, flags) = &h.w3c;
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "01"));
    assert_eq!(
        seen(&h.echo, "x-vendor-ctx"),
        Some(format!("{TRACE}.{span}.1")),
        "written back by the added propagator with the proxy span"
    );
    proxy_span_is_the_new_parent(&proxy, &h, TRACE, Some(PARENT)).await;

    // A built-in format that found a trace wins; the added one still writes.
    let w3c = "4bf92f3577b34da6a3ce929d0e0e4736";
    let h = hop(
        &proxy,
        &[
            ("traceparent", &format!("00-{w3c}-00f067aa0ba902b7-00")),
            ("x-vendor-ctx", &format!("{TRACE}.{PARENT}.1")),
        ],
    )
    .await;
    assert_eq!((h.w3c.0.as_str(), h.w3c.2.as_str()), (w3c, "00"));
    assert_eq!(
        seen(&h.echo, "x-vendor-ctx"),
        Some(format!("{w3c}.{}.0", h.w3c.1))
    );
    proxy.shutdown();
}
