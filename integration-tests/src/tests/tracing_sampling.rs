//! Sampling end to end: what reaches a real OTLP receiver, and what the
//! upstream is told, under each sampler. Every count is read after a proxy
//! shutdown, which flushes the span pipeline.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as Otel;

use super::tracing_common::{metrics, seen, traceparent, PARENT};
use crate::{
    client::{Client, Collected},
    metric_sum,
    otlp::Otlp,
    proxy::{Proxy, ProxyBuilder},
    upstream::Upstream,
};

fn exporting_to(builder: ProxyBuilder, otlp: &Otlp) -> ProxyBuilder {
    builder
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", otlp.protocol())
}

async fn get_with(client: &Client, url: &str, headers: &[(&str, &str)]) -> Collected {
    let mut req = client.request("GET", url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client
        .send(req.body(Full::new(Bytes::new())).unwrap())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_queued_spans() {
    let up = Upstream::echo().await;
    let otlp = Otlp::grpc().run().await;
    // A batch of 512 is never full here, and the partial-batch timer (1 s)
    // may not have fired: only the flush on drain sends these.
    let proxy = exporting_to(Proxy::builder().upstream(up.url()), &otlp)
        .run()
        .await;
    let client = Client::http1();
    for _ in 0..3 {
        assert_eq!(client.get(&proxy.url("/x")).await.status, StatusCode::OK);
    }
    drop(client);
    proxy.shutdown();
    assert_eq!(otlp.spans().len(), 3, "flushed before the proxy ended");
    otlp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_off_exports_nothing_but_still_propagates() {
    let up = Upstream::echo().await;
    let otlp = Otlp::grpc().run().await;
    let proxy = exporting_to(Proxy::builder().upstream(up.url()), &otlp)
        .env("OTEL_TRACES_SAMPLER", "always_off")
        .run()
        .await;
    let client = Client::http1();
    let sampled_parent = format!("00-{}-{PARENT}-01", "ab".repeat(16));
    for headers in [vec![], vec![("traceparent", sampled_parent.as_str())]] {
        for _ in 0..10 {
            let resp = get_with(&client, &proxy.url("/headers"), &headers).await;
            assert_eq!(resp.status, StatusCode::OK);
            let echo = resp.json();
            let (trace, _, flags) = traceparent(&seen(&echo, "traceparent").unwrap());
            assert_eq!(flags, "00", "propagated unsampled: {echo}");
            assert_eq!(seen(&echo, "x-b3-sampled").as_deref(), Some("0"));
            assert_eq!(resp.headers["x-trace-id"], trace.as_str());
        }
    }
    drop(client);
    let text = metrics(&proxy).await;
    assert_eq!(
        metric_sum(
            &text,
            "sidetrace_sampling_decisions_total",
            &[("decision", "dropped")]
        ),
        20.0,
        "always_off is not parent-based: {text}"
    );
    assert_eq!(
        metric_sum(&text, "http_server_request_duration_seconds_count", &[]),
        20.0,
        "unsampled requests still count in metrics"
    );
    proxy.shutdown();
    assert_eq!(otlp.attempts(), 0, "{:#?}", otlp.spans());
    otlp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceidratio_quarter_lands_in_a_sane_band() {
    let up = Upstream::echo().await;
    let otlp = Otlp::http().run().await;
    let proxy = exporting_to(Proxy::builder().upstream(up.url()), &otlp)
        .env("OTEL_TRACES_SAMPLER", "traceidratio")
        .env("OTEL_TRACES_SAMPLER_ARG", "0.25")
        .run()
        .await;
    let total = 4000;
    let next = Arc::new(AtomicUsize::new(0));
    let url = proxy.url("/x");
    let mut handles = Vec::new();
    for _ in 0..16 {
        let (next, url) = (next.clone(), url.clone());
        handles.push(tokio::spawn(async move {
            let client = Client::http1();
            let mut ids = Vec::new();
            while next.fetch_add(1, Ordering::SeqCst) < total {
                let resp = client.get(&url).await;
                assert_eq!(resp.status, StatusCode::OK);
                ids.push(resp.headers["x-trace-id"].to_str().unwrap().to_string());
            }
            ids
        }));
    }
    let mut answered = HashSet::new();
    for h in handles {
        answered.extend(h.await.unwrap());
    }
    assert_eq!(answered.len(), total, "a fresh trace per request");
    let text = metrics(&proxy).await;
    proxy.shutdown();
    let spans = otlp.spans();
    // Binomial(4000, 0.25): mean 1000, sd ~27; the band is ~7 sd wide.
    assert!(
        (800..=1200).contains(&spans.len()),
        "{} of {total} exported",
        spans.len()
    );
    let sampled = metric_sum(
        &text,
        "sidetrace_sampling_decisions_total",
        &[("reason", "ratio"), ("decision", "sampled")],
    );
    assert_eq!(
        sampled,
        spans.len() as f64,
        "every sampled span was exported"
    );
    for s in &spans {
        assert_eq!(s.str("sidetrace.sampling.reason"), Some("ratio"));
        assert!(answered.contains(&s.trace_id()), "{s:#?}");
    }
    otlp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_parent_is_respected_by_default() {
    let up = Upstream::echo().await;
    let otlp = Otlp::grpc().run().await;
    let proxy = exporting_to(Proxy::builder().upstream(up.url()), &otlp)
        .run()
        .await;
    let client = Client::http1();
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let sampled = "1af7651916cd43dd8448eb211c80319c";
    for _ in 0..5 {
        let resp = get_with(
            &client,
            &proxy.url("/headers"),
            &[("traceparent", &format!("00-{unsampled}-{PARENT}-00"))],
        )
        .await;
        let (trace, span, flags) = traceparent(&seen(&resp.json(), "traceparent").unwrap());
        assert_eq!((trace.as_str(), flags.as_str()), (unsampled, "00"));
        assert_ne!(span, PARENT);
    }
    let resp = get_with(
        &client,
        &proxy.url("/headers"),
        &[("traceparent", &format!("00-{sampled}-{PARENT}-01"))],
    )
    .await;
    assert_eq!(
        traceparent(&seen(&resp.json(), "traceparent").unwrap()).2,
        "01"
    );
    drop(client);
    let text = metrics(&proxy).await;
    assert_eq!(
        metric_sum(
            &text,
            "sidetrace_sampling_decisions_total",
            &[("reason", "parent"), ("decision", "dropped")]
        ),
        5.0,
        "{text}"
    );
    proxy.shutdown();
    let spans = otlp.spans();
    assert_eq!(spans.len(), 1, "only the sampled parent's span: {spans:#?}");
    assert_eq!(spans[0].trace_id(), sampled);
    assert_eq!(spans[0].str("sidetrace.sampling.reason"), Some("parent"));
    otlp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_errors_keeps_a_failed_unsampled_span() {
    let up = Upstream::echo().await;
    let otlp = Otlp::grpc().run().await;
    let yaml = "tracing:\n  sampler: { type: ratio, ratio: 0.0, keep_errors: true }\n";
    let proxy = exporting_to(Proxy::from_yaml(yaml).upstream(up.url()), &otlp)
        .run()
        .await;
    let client = Client::http1();
    let ok = client.get(&proxy.url("/headers")).await;
    assert_eq!(ok.status, StatusCode::OK);
    let not_found = client.get(&proxy.url("/headers?status=404")).await;
    assert_eq!(not_found.status, StatusCode::NOT_FOUND);
    let failed = client.get(&proxy.url("/headers?status=503")).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    let (_, _, flags) = traceparent(&seen(&failed.json(), "traceparent").unwrap());
    assert_eq!(flags, "00", "the upstream saw the head decision");
    drop(client);
    let text = metrics(&proxy).await;
    proxy.shutdown();
    let spans = otlp.spans();
    assert_eq!(spans.len(), 1, "only the 503 is kept: {spans:#?}");
    let s = &spans[0];
    assert_eq!(s.trace_id(), failed.headers["x-trace-id"].to_str().unwrap());
    assert_eq!(s.str("sidetrace.sampling.reason"), Some("error_kept"));
    assert_eq!(s.str("sidetrace.failure.category"), Some("NETWORK"));
    assert_eq!(s.int("http.response.status_code"), Some(503));
    assert_eq!(s.status(), Otel::Error);
    assert_eq!(
        metric_sum(
            &text,
            "sidetrace_sampling_decisions_total",
            &[("reason", "error_kept"), ("decision", "sampled")]
        ),
        1.0,
        "{text}"
    );
    otlp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_overrides_beat_the_ratio() {
    let up = Upstream::echo().await;
    let otlp = Otlp::http().run().await;
    let yaml = "tracing:\n  sampler: { type: ratio, ratio: 0.0 }\nroutes:\n  - { prefix: /api/orders, name: orders, sample: always }\n  - { prefix: /healthz, name: health, sample: never }\n";
    let proxy = exporting_to(Proxy::from_yaml(yaml).upstream(up.url()), &otlp)
        .run()
        .await;
    let client = Client::http1();
    for path in ["/api/orders/1", "/healthz", "/other"] {
        assert_eq!(client.get(&proxy.url(path)).await.status, StatusCode::OK);
    }
    drop(client);
    proxy.shutdown();
    let spans = otlp.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].span.name, "GET orders");
    assert_eq!(
        spans[0].str("sidetrace.sampling.reason"),
        Some("route_always")
    );
    otlp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_per_second_caps_ratio_sampling_but_not_parents() {
    let up = Upstream::echo().await;
    let otlp = Otlp::grpc().run().await;
    let yaml = "tracing:\n  sampler: { type: parent_ratio, ratio: 1.0, max_per_second: 10 }\n";
    let proxy = exporting_to(Proxy::from_yaml(yaml).upstream(up.url()), &otlp)
        .run()
        .await;
    let client = Client::http1();
    let total = 300;
    for _ in 0..total {
        assert_eq!(client.get(&proxy.url("/x")).await.status, StatusCode::OK);
    }
    // Sampled parents are not capped.
    for i in 0..20 {
        let tp = format!("00-{:032x}-{PARENT}-01", 0xabc000 + i);
        let resp = get_with(&client, &proxy.url("/p"), &[("traceparent", &tp)]).await;
        assert_eq!(resp.status, StatusCode::OK);
    }
    drop(client);
    let text = metrics(&proxy).await;
    proxy.shutdown();
    let capped = metric_sum(
        &text,
        "sidetrace_sampling_decisions_total",
        &[("reason", "rate_capped"), ("decision", "dropped")],
    );
    let kept = metric_sum(
        &text,
        "sidetrace_sampling_decisions_total",
        &[("reason", "ratio"), ("decision", "sampled")],
    );
    // A burst of one second's worth (10) plus 10 per second of the run: 300
    // requests would have to take ~29 s for none to be capped.
    assert!(capped > 0.0, "{text}");
    assert_eq!(capped + kept, total as f64, "{text}");
    let spans = otlp.spans();
    let parents = spans.iter().filter(|s| s.str("url.path") == Some("/p"));
    assert_eq!(parents.count(), 20, "parent decisions are not capped");
    assert_eq!(spans.len() as f64, kept + 20.0);
    otlp.shutdown().await;
}
