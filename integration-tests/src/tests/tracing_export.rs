//! Spans exported over OTLP (gRPC and HTTP/protobuf) to a real receiver
//! that decodes them: names, kinds, parents, attributes, status, resource.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode as Otel};

use super::tracing_common::{metrics, PARENT};
use crate::{
    assert_eventually,
    client::Client,
    metric_sum,
    otlp::{Otlp, ReceivedSpan},
    peers::{grpc_client, GrpcServer},
    proxy::Proxy,
    upstream::Upstream,
};

const ROUTES: &str = "routes:\n  - { prefix: /api/orders, name: orders }\n";

fn by_trace<'a>(spans: &'a [ReceivedSpan], trace: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.trace_id() == trace).collect();
    assert_eq!(found.len(), 1, "one span of trace {trace}: {spans:#?}");
    found[0]
}

async fn get(client: &Client, url: &str, traceparent: &str) -> crate::client::Collected {
    let req = client
        .request("GET", url)
        .header("traceparent", traceparent)
        .header("user-agent", "tracing-test/1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    client.send(req).await
}

/// HTTP/1.1 and h2c requests through a proxy exporting to `otlp`; checks
/// every span the receiver decodes.
async fn http_spans_reach(otlp: &Otlp, proxy: Proxy) {
    let t1 = "11111111111111111111111111111111";
    let t2 = "22222222222222222222222222222222";
    let t3 = "33333333333333333333333333333333";
    let tp = |t: &str| format!("00-{t}-{PARENT}-01");
    let ok = get(
        &Client::http1(),
        &proxy.url("/api/orders/42?page=2"),
        &tp(t1),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let unavailable = get(&Client::h2c(), &proxy.url("/other?status=503"), &tp(t2)).await;
    assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
    let not_found = get(&Client::h2c(), &proxy.url("/missing?status=404"), &tp(t3)).await;
    assert_eq!(not_found.status, StatusCode::NOT_FOUND);

    let spans = otlp.wait_for_spans(3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    for s in &spans {
        assert_eq!(s.kind(), SpanKind::Server, "{s:#?}");
        assert_eq!(s.parent_span_id().as_deref(), Some(PARENT), "{s:#?}");
        assert_eq!(s.span.span_id.len(), 8);
        assert_ne!(s.span_id(), PARENT);
        assert!(s.span.end_time_unix_nano >= s.span.start_time_unix_nano);
        assert!(s.span.start_time_unix_nano > 0);
        assert_eq!(s.str("http.request.method"), Some("GET"));
        assert_eq!(s.str("url.scheme"), Some("http"));
        assert_eq!(s.str("user_agent.original"), Some("tracing-test/1"));
        assert_eq!(s.str("server.address"), Some("127.0.0.1"));
        assert_eq!(s.int("server.port"), Some(i64::from(proxy.inbound.port())));
        assert_eq!(s.str("client.address"), Some("127.0.0.1"));
        assert_eq!(s.str("sidetrace.sampling.reason"), Some("parent"));
        assert_eq!(s.scope, "sidetrace");
        assert_eq!(s.resource_str("service.name"), Some("checkout"));
        assert_eq!(s.resource_str("k8s.pod.name"), Some("checkout-7d9f-abcde"));
        assert_eq!(s.resource_str("k8s.namespace.name"), Some("shop"));
        assert_eq!(s.resource_str("telemetry.sdk.name"), Some("sidetrace"));
        assert_eq!(s.resource_str("telemetry.sdk.language"), Some("rust"));
        assert!(s.resource_str("telemetry.sdk.version").is_some());
        assert!(s.resource_str("service.instance.id").is_some());
    }

    let s = by_trace(&spans, t1);
    assert_eq!(s.span.name, "GET orders", "route name, never the raw path");
    assert_eq!(s.str("http.route"), Some("orders"));
    assert_eq!(s.str("url.path"), Some("/api/orders/42"), "no query string");
    assert_eq!(s.int("http.response.status_code"), Some(200));
    assert_eq!(s.str("network.protocol.version"), Some("1.1"));
    assert_eq!(s.str("sidetrace.failure.category"), None);
    assert_eq!(s.str("error.type"), None);
    assert_eq!(s.status(), Otel::Unset);

    let s = by_trace(&spans, t2);
    assert_eq!(s.span.name, "GET");
    assert_eq!(s.str("http.route"), None);
    assert_eq!(s.str("url.path"), Some("/other"));
    assert_eq!(s.int("http.response.status_code"), Some(503));
    assert_eq!(s.str("network.protocol.version"), Some("2"));
    assert_eq!(s.str("sidetrace.failure.category"), Some("NETWORK"));
    assert_eq!(s.str("error.type"), Some("503"));
    assert_eq!(
        s.status(),
        Otel::Error,
        "NETWORK is an error on a SERVER span"
    );

    let s = by_trace(&spans, t3);
    assert_eq!(s.int("http.response.status_code"), Some(404));
    assert_eq!(s.str("sidetrace.failure.category"), Some("VALIDATION"));
    assert_eq!(
        s.status(),
        Otel::Unset,
        "a 4xx is the caller's fault: not an error on a SERVER span"
    );

    assert_eventually!(
        metric_sum(
            &metrics(&proxy).await,
            "sidetrace_spans_exported_total",
            &[]
        ) >= 3.0,
        "sidetrace_spans_exported_total counts the spans"
    );
    let text = metrics(&proxy).await;
    assert_eq!(
        metric_sum(&text, "sidetrace_export_errors_total", &[]),
        0.0,
        "{text}"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_spans_over_otlp_grpc() {
    let up = Upstream::echo().await;
    let otlp = Otlp::grpc().run().await;
    // Configured through the standard variables.
    let proxy = Proxy::from_yaml(ROUTES)
        .upstream(up.url())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", otlp.protocol())
        .env("OTEL_SERVICE_NAME", "checkout")
        .env("K8S_POD_NAME", "checkout-7d9f-abcde")
        .env("POD_NAMESPACE", "shop")
        .run()
        .await;
    http_spans_reach(&otlp, proxy).await;
    let req = &otlp.requests()[0];
    assert_eq!(req.headers["content-type"], "application/grpc");
    otlp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_spans_over_otlp_http_protobuf_gzipped() {
    let up = Upstream::echo().await;
    let otlp = Otlp::http().run().await;
    // Configured through the file.
    let yaml = format!(
        "tracing:\n  export:\n    endpoint: {}\n    protocol: http/protobuf\n    gzip: true\n    headers: {{ x-api-key: secret }}\n{ROUTES}",
        otlp.endpoint()
    );
    let proxy = Proxy::from_yaml(&yaml)
        .upstream(up.url())
        .env("OTEL_SERVICE_NAME", "checkout")
        .env("K8S_POD_NAME", "checkout-7d9f-abcde")
        .env("K8S_NAMESPACE_NAME", "shop")
        .run()
        .await;
    http_spans_reach(&otlp, proxy).await;
    for req in otlp.requests() {
        assert!(req.gzip, "gzip: true compresses every export");
        assert_eq!(req.headers["x-api-key"], "secret");
    }
    otlp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_over_otlp() {
    let server = GrpcServer::start().await;
    let otlp = Otlp::grpc().run().await;
    let proxy = Proxy::builder()
        .upstream(format!("http://127.0.0.1:{}", server.port))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_SERVICE_NAME", "orders")
        .run()
        .await;
    let report = grpc_client(&proxy.inbound.to_string()).await;
    assert_eq!(report["ok"], "echo:hello", "{report}");
    assert_eq!(report["not_found"][0], "NOT_FOUND", "{report}");

    // Unary OK, Unary NOT_FOUND, Stream.
    let spans = otlp.wait_for_spans(3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    for s in &spans {
        assert_eq!(s.kind(), SpanKind::Server);
        assert_eq!(s.str("rpc.system"), Some("grpc"), "{s:#?}");
        assert_eq!(s.str("rpc.service"), Some("test.Echo"));
        assert_eq!(s.str("http.request.method"), Some("POST"));
        assert_eq!(s.str("network.protocol.version"), Some("2"));
        assert_eq!(s.int("http.response.status_code"), Some(200));
        assert_eq!(s.resource_str("service.name"), Some("orders"));
        assert_eq!(s.parent_span_id(), None, "grpcio sent no context");
    }
    let unary: Vec<_> = spans
        .iter()
        .filter(|s| s.span.name == "test.Echo/Unary")
        .collect();
    assert_eq!(unary.len(), 2, "{spans:#?}");
    let ok = unary
        .iter()
        .find(|s| s.int("rpc.grpc.status_code") == Some(0))
        .expect("the OK call");
    assert_eq!(ok.str("rpc.method"), Some("Unary"));
    assert_eq!(ok.str("sidetrace.failure.category"), None);
    assert_eq!(ok.status(), Otel::Unset);
    let nf = unary
        .iter()
        .find(|s| s.int("rpc.grpc.status_code") == Some(5))
        .expect("the NOT_FOUND call: status from the trailers");
    assert_eq!(nf.str("sidetrace.failure.category"), Some("VALIDATION"));
    assert_eq!(nf.str("error.type"), Some("NOT_FOUND"));
    assert_eq!(
        nf.status(),
        Otel::Unset,
        "NOT_FOUND is VALIDATION: not an error on a SERVER span"
    );
    let stream = spans
        .iter()
        .find(|s| s.span.name == "test.Echo/Stream")
        .expect("the stream");
    assert_eq!(stream.str("rpc.method"), Some("Stream"));
    assert_eq!(stream.int("rpc.grpc.status_code"), Some(0));
    assert!(
        stream.int("http.response.body.size").unwrap_or(0) > 0,
        "the span ended after the body: {stream:#?}"
    );
    assert_eventually!(
        metric_sum(
            &metrics(&proxy).await,
            "sidetrace_spans_exported_total",
            &[]
        ) >= 3.0,
        "exported spans are counted"
    );
    proxy.shutdown();
    otlp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unavailable_upstream_is_an_error_span() {
    let dead = Upstream::dead().await;
    let otlp = Otlp::http().run().await;
    let proxy = Proxy::builder()
        .upstream(format!("http://{dead}"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint())
        .run()
        .await;
    let client = Client::h2c();
    let req = client
        .request("POST", &proxy.url("/test.Echo/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("traceparent", format!("00-{}-{PARENT}-01", "44".repeat(16)))
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    let resp = client.send(req).await;
    assert_eq!(resp.headers["grpc-status"], "14");
    let spans = otlp.wait_for_spans(1).await;
    let s = &spans[0];
    assert_eq!(s.span.name, "test.Echo/Unary");
    assert_eq!(s.int("rpc.grpc.status_code"), Some(14));
    assert_eq!(s.str("sidetrace.failure.category"), Some("NETWORK"));
    assert_eq!(s.status(), Otel::Error);
    assert_eq!(s.parent_span_id().as_deref(), Some(PARENT));
    proxy.shutdown();
    otlp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_calls_are_client_spans() {
    let up = Upstream::echo().await;
    let otlp = Otlp::grpc().run().await;
    let dead = Upstream::dead().await;
    let proxy = Proxy::builder()
        .upstream(format!("http://{dead}"))
        .outbound()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_SERVICE_NAME", "checkout")
        .run()
        .await;
    let outbound = proxy.outbound.expect("outbound listener");
    let client = Client::http1();
    let t_ok = "55555555555555555555555555555555";
    let t_404 = "66666666666666666666666666666666";
    for (trace, path, status) in [(t_ok, "/headers", 200), (t_404, "/nope?status=404", 404)] {
        let req = client
            .request("GET", &format!("http://{outbound}{path}"))
            .header("host", up.addr.to_string())
            .header("traceparent", format!("00-{trace}-{PARENT}-01"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client.send(req).await;
        assert_eq!(resp.status.as_u16(), status, "{}", resp.text());
        assert_eq!(resp.headers["x-trace-id"], trace);
    }
    drop(client);
    let spans = otlp.wait_for_spans(2).await;
    for s in &spans {
        assert_eq!(s.kind(), SpanKind::Client, "{s:#?}");
        assert_eq!(s.parent_span_id().as_deref(), Some(PARENT));
        assert_eq!(s.str("server.address"), Some("127.0.0.1"));
        assert_eq!(s.int("server.port"), Some(i64::from(up.addr.port())));
    }
    let ok = by_trace(&spans, t_ok);
    assert_eq!(ok.status(), Otel::Unset);
    let nf = by_trace(&spans, t_404);
    assert_eq!(nf.str("sidetrace.failure.category"), Some("VALIDATION"));
    assert_eq!(
        nf.status(),
        Otel::Error,
        "a 4xx is an error on a CLIENT span (semconv)"
    );
    proxy.shutdown();
    otlp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_headers_resource_attributes_and_the_traces_endpoint() {
    let up = Upstream::echo().await;
    let otlp = Otlp::http().run().await;
    let yaml = "tracing:\n  capture: { request_headers: [x-tenant, authorization], response_headers: [content-type] }\nservice: { version: 1.2.3 }\n";
    // OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as-is (no /v1/traces added).
    let proxy = Proxy::from_yaml(yaml)
        .upstream(up.url())
        .env(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            &format!("{}/v1/traces", otlp.endpoint()),
        )
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=staging,team=core%20platform",
        )
        .env("OTEL_SERVICE_NAME", "checkout")
        .run()
        .await;
    let client = Client::http1();
    let req = client
        .request("GET", &proxy.url("/headers"))
        .header("x-tenant", "acme")
        .header("authorization", "Bearer hunter2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(client.send(req).await.status, StatusCode::OK);
    let spans = otlp.wait_for_spans(1).await;
    let s = &spans[0];
    assert_eq!(s.str("http.request.header.x-tenant"), Some("acme"));
    assert_eq!(
        s.str("http.request.header.authorization"),
        Some("[REDACTED]"),
        "{s:#?}"
    );
    assert_eq!(
        s.str("http.response.header.content-type"),
        Some("application/json")
    );
    assert_eq!(s.resource_str("service.name"), Some("checkout"));
    assert_eq!(s.resource_str("service.version"), Some("1.2.3"));
    assert_eq!(
        s.resource_str("deployment.environment.name"),
        Some("staging")
    );
    assert_eq!(s.resource_str("team"), Some("core platform"));
    proxy.shutdown();
    otlp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_span_ends_with_the_response_body() {
    let up = Upstream::echo().await;
    let otlp = Otlp::grpc().run().await;
    let proxy = Proxy::builder()
        .upstream(up.url())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .run()
        .await;
    // A body streamed in 5 chunks; the span must have seen all
    // of it.
    let resp = Client::h2c()
        .get(&proxy.url("/stream?chunks=5&delay_ms=20"))
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    let spans = otlp.wait_for_spans(1).await;
    assert_eq!(
        spans[0].int("http.response.body.size"),
        Some(resp.body.len() as i64),
        "{:#?}",
        spans[0]
    );
    assert!(!resp.body.is_empty());
    proxy.shutdown();
    otlp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_calls_without_context_are_flagged_orphans() {
    let up = Upstream::echo().await;
    let dead = Upstream::dead().await;
    let proxy = Proxy::builder()
        .upstream(format!("http://{dead}"))
        .outbound()
        .run()
        .await;
    let client = Client::http1();
    let req = client
        .request("GET", &format!("http://{}/x", proxy.outbound.unwrap()))
        .header("host", up.addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.send(req).await;
    assert_eq!(resp.status, StatusCode::OK);
    let trace = resp.headers["x-trace-id"].to_str().unwrap().to_string();
    drop(client);
    let stored = super::tracing_common::stored_trace(&proxy, &trace).await;
    assert_eq!(stored["orphan"], true, "{stored}");
    let s = super::tracing_common::only_span(&stored);
    assert_eq!(s["kind"], "CLIENT");
    assert_eq!(s["orphan"], true);
    proxy.shutdown();
}
