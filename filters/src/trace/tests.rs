//! Trace layer tests: a scripted inner service, driven with `oneshot`.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tower::{service_fn, Layer, Service, ServiceExt};

use super::*;
use crate::{
    classify::{ErrorType, Failure, FailureCategory},
    Request, Response,
};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

struct Harness {
    layer: TraceLayer,
    spans: SpanReceiver,
    prom: metrics_exporter_prometheus::PrometheusHandle,
}

fn harness(kind: SpanKind, yaml: &str, routes: &[RouteConfig], queue: usize) -> Harness {
    let cfg: TracingConfig = serde_saphyr::from_str(yaml).unwrap();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prom = recorder.handle();
    let metrics = TraceMetrics::register(&recorder);
    let (sink, spans) = SpanSink::channel(queue, metrics.spans_dropped_queue_full.clone());
    let settings = TraceSettings::new(&cfg, routes, metrics).unwrap();
    let options = match kind {
        SpanKind::Server => TraceOptions::server("http", Some("127.0.0.1:8080".parse().unwrap())),
        SpanKind::Client => TraceOptions::client(),
    };
    Harness {
        layer: TraceLayer::new(options, Arc::new(settings), sink),
        spans,
        prom,
    }
}

fn get(uri: &str, headers: &[(&'static str, &str)]) -> Request {
    let mut b = http::Request::builder().uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(crate::empty_body()).unwrap();
    // As the listener does for every request.
    req.extensions_mut()
        .insert(Arc::new(crate::connection::ConnectionInfo::new(
            "10.1.2.3:4567".parse().unwrap(),
            false,
        )));
    req
}

/// An inner service answering `status` and echoing the request headers it
/// saw into the response extensions.
fn echo(
    status: u16,
) -> impl Service<Request, Response = Response, Error = Infallible, Future = impl Send> + Clone {
    service_fn(move |req: Request| async move {
        let mut resp = http::Response::new(crate::full_body("hello"));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
        resp.extensions_mut().insert(req.headers().clone());
        Ok::<_, Infallible>(resp)
    })
}

#[tokio::test]
async fn context_is_continued_and_injected() {
    let mut h = harness(SpanKind::Server, "{}", &[], 16);
    let svc = h.layer.layer(echo(200));
    let resp = svc
        .oneshot(get(
            "http://shop.local:8080/cart?x=1",
            &[
                ("traceparent", TP),
                ("tracestate", "rojo=1"),
                ("user-agent", "curl/8"),
            ],
        ))
        .await
        .unwrap();
    let upstream = resp.extensions().get::<HeaderMap>().unwrap().clone();
    assert_eq!(
        resp.headers()["x-trace-id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert!(h.spans.try_recv().is_err(), "the span ends with the body");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "hello");
    let span = h.spans.try_recv().unwrap();
    assert_eq!(
        span.trace_id.to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(span.parent_span_id.unwrap().to_string(), "00f067aa0ba902b7");
    assert_eq!(span.sampling_reason, SamplingReason::Parent);
    let tp = upstream["traceparent"].to_str().unwrap();
    assert_eq!(
        tp,
        format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", span.span_id)
    );
    assert_eq!(upstream["tracestate"], "rojo=1");
    assert!(upstream.contains_key("x-request-id"));
    assert_eq!(span.response_bytes, 5);
    assert_eq!(span.status, Some(StatusCode::OK));
    assert_eq!(span.path.as_ref().unwrap().as_str(), "/cart?x=1");
    assert_eq!(
        span.host.as_ref().unwrap().split(),
        ("shop.local", Some(8080))
    );
    assert_eq!(span.user_agent.as_ref().unwrap(), "curl/8");
    assert_eq!(span.client_address.unwrap().to_string(), "10.1.2.3:4567");
    assert_eq!(span.status_code, SpanStatus::Unset);
    assert!(span.end_unix_nanos >= span.start_unix_nanos);
}

#[tokio::test]
async fn grpc_status_comes_from_trailers() {
    let mut h = harness(SpanKind::Server, "{}", &[], 16);
    let svc = h.layer.layer(service_fn(|_req: Request| async {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("14"));
        let frames: Vec<Result<Frame<Bytes>, crate::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
        Ok::<_, Infallible>(http::Response::new(body))
    }));
    let req = http::Request::builder()
        .method("POST")
        .uri("/shop.v1.Cart/AddItem")
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .body(crate::full_body("\0\0\0\0\0"))
        .unwrap();
    let resp = svc.oneshot(req).await.unwrap();
    let _ = resp.into_body().collect().await.unwrap();
    let span = h.spans.try_recv().unwrap();
    assert_eq!(span.name(), "shop.v1.Cart/AddItem");
    assert_eq!(span.grpc_status.map(|g| g.0), Some(14));
    assert_eq!(span.failure.unwrap().category, FailureCategory::Network);
    assert_eq!(span.status_code, SpanStatus::Error);
    assert_eq!(span.request_bytes, Some(5));
}

#[tokio::test]
async fn client_going_away_is_cancelled_not_failed() {
    let mut h = harness(SpanKind::Server, "{}", &[], 16);
    let svc = h.layer.layer(service_fn(|_req: Request| async {
        let frames: Vec<Result<Frame<Bytes>, crate::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"abc"))),
            Ok(Frame::data(Bytes::from_static(b"def"))),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
        Ok::<_, Infallible>(http::Response::new(body))
    }));
    let resp = svc.oneshot(get("/stream", &[])).await.unwrap();
    let mut body = resp.into_body();
    let _first = body.frame().await.unwrap().unwrap();
    drop(body);
    let span = h.spans.try_recv().unwrap();
    assert!(span.cancelled);
    assert_eq!(span.error_type().as_deref(), Some("cancelled"));
    assert_eq!(span.failure, None);
    assert_eq!(span.status_code, SpanStatus::Unset);
    assert_eq!(span.response_bytes, 3);
}

#[tokio::test]
async fn rescued_failures_and_keep_errors() {
    let yaml = "sampler: { type: always_off, keep_errors: true }";
    let mut h = harness(SpanKind::Server, yaml, &[], 16);
    let svc = h.layer.layer(service_fn(|req: Request| async move {
        let mut resp = http::Response::new(crate::empty_body());
        if req.uri().path() == "/slow" {
            *resp.status_mut() = StatusCode::GATEWAY_TIMEOUT;
            resp.extensions_mut()
                .insert(Failure::new(FailureCategory::Network, ErrorType::Timeout));
        } else {
            *resp.status_mut() = StatusCode::NOT_FOUND;
        }
        Ok::<_, Infallible>(resp)
    }));
    let resp = svc.clone().oneshot(get("/slow", &[])).await.unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    drop(resp);
    let span = h.spans.try_recv().unwrap();
    assert_eq!(span.sampling_reason, SamplingReason::ErrorKept);
    assert_eq!(span.error_type().as_deref(), Some("timeout"));
    assert_eq!(span.status_code, SpanStatus::Error);
    // A 404 is VALIDATION: not kept.
    drop(svc.oneshot(get("/missing", &[])).await.unwrap());
    assert!(h.spans.try_recv().is_err());
    let text = h.prom.render();
    assert!(
        text.contains(
            r#"sidetrace_sampling_decisions_total{reason="error_kept",decision="sampled"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn unsampled_requests_still_propagate() {
    let mut h = harness(SpanKind::Server, "sampler: { type: always_off }", &[], 16);
    let resp = h
        .layer
        .layer(echo(200))
        .oneshot(get("/", &[]))
        .await
        .unwrap();
    let upstream = resp.extensions().get::<HeaderMap>().unwrap().clone();
    assert!(upstream["traceparent"].to_str().unwrap().ends_with("-00"));
    assert_eq!(upstream["x-b3-sampled"], "0");
    assert!(resp.headers().contains_key("x-trace-id"));
    drop(resp);
    assert!(h.spans.try_recv().is_err());
}

#[tokio::test]
async fn routes_name_spans_and_override_sampling() {
    let routes: Vec<RouteConfig> = serde_saphyr::from_str(
        "[{ prefix: /api/orders, name: orders, sample: always }, { prefix: /healthz, name: health, sample: never }]",
    )
    .unwrap();
    let mut h = harness(
        SpanKind::Server,
        "sampler: { type: ratio, ratio: 0 }",
        &routes,
        16,
    );
    let svc = h.layer.layer(echo(200));
    drop(
        svc.clone()
            .oneshot(get("/api/orders/1", &[]))
            .await
            .unwrap(),
    );
    let span = h.spans.try_recv().unwrap();
    assert_eq!(span.name(), "GET orders");
    assert_eq!(span.sampling_reason, SamplingReason::RouteAlways);
    drop(
        svc.clone()
            .oneshot(get("/healthz", &[("traceparent", TP)]))
            .await
            .unwrap(),
    );
    assert!(h.spans.try_recv().is_err());
    drop(svc.oneshot(get("/other", &[])).await.unwrap());
    assert!(h.spans.try_recv().is_err(), "ratio 0");
}

#[tokio::test]
async fn inner_panic_becomes_500_with_exception() {
    let mut h = harness(SpanKind::Server, "{}", &[], 16);
    let svc = h.layer.layer(service_fn(|req: Request| async move {
        if req.uri().path() == "/boom" {
            panic!("kaboom");
        }
        Ok::<_, Infallible>(http::Response::new(crate::empty_body()))
    }));
    let resp = svc.clone().oneshot(get("/boom", &[])).await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(resp.headers()["x-sidetrace-error"], "INTERNAL");
    drop(resp);
    let span = h.spans.try_recv().unwrap();
    assert_eq!(span.failure.unwrap().error_type, ErrorType::Panic);
    assert_eq!(span.status_code, SpanStatus::Error);
    let exceptions: Vec<_> = span
        .events
        .iter()
        .filter(|e| e.name == "exception")
        .collect();
    assert_eq!(exceptions.len(), 1);
    assert_eq!(
        exceptions[0].attributes[1].1,
        span::AttrValue::Str("kaboom".into())
    );
    // The service keeps serving.
    let ok = svc.oneshot(get("/fine", &[])).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn debug_panic_header_answers_500_without_calling_the_app() {
    let mut h = harness(
        SpanKind::Server,
        "debug_panic_header: x-sidetrace-debug-panic",
        &[],
        16,
    );
    let called = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = called.clone();
    let svc = h.layer.layer(service_fn(move |_req: Request| {
        seen.store(true, std::sync::atomic::Ordering::SeqCst);
        async { Ok::<_, Infallible>(http::Response::new(crate::empty_body())) }
    }));
    let resp = svc
        .oneshot(get("/", &[("x-sidetrace-debug-panic", "1")]))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    drop(resp);
    assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
    let span = h.spans.try_recv().unwrap();
    assert_eq!(span.events.len(), 1);
    assert_eq!(span.failure.unwrap().category, FailureCategory::Internal);
}

#[tokio::test]
async fn chain_panic_reported_by_rescue_gets_an_exception() {
    let mut h = harness(SpanKind::Server, "{}", &[], 16);
    let svc = h.layer.layer(service_fn(|_req: Request| async {
        let mut resp = http::Response::new(crate::empty_body());
        *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        resp.extensions_mut()
            .insert(Failure::new(FailureCategory::Internal, ErrorType::Panic));
        Ok::<_, Infallible>(resp)
    }));
    drop(svc.oneshot(get("/", &[])).await.unwrap());
    let span = h.spans.try_recv().unwrap();
    assert_eq!(
        span.events.iter().filter(|e| e.name == "exception").count(),
        1
    );
}

#[tokio::test]
async fn grpc_panic_is_trailers_only_internal() {
    let mut h = harness(SpanKind::Server, "{}", &[], 16);
    let svc = h.layer.layer(service_fn(|_req: Request| async {
        panic!("grpc boom");
        #[allow(unreachable_code)]
        Ok::<_, Infallible>(http::Response::new(crate::empty_body()))
    }));
    let req = http::Request::builder()
        .uri("/a.B/C")
        .header("content-type", "application/grpc")
        .body(crate::empty_body())
        .unwrap();
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["grpc-status"], "13");
    drop(resp);
    let span = h.spans.try_recv().unwrap();
    assert_eq!(span.grpc_status.map(|g| g.0), Some(13));
    assert_eq!(span.failure.unwrap().category, FailureCategory::Internal);
}

#[tokio::test]
async fn malformed_headers_are_counted_not_fatal() {
    let mut h = harness(SpanKind::Server, "{}", &[], 16);
    let resp = h
        .layer
        .layer(echo(200))
        .oneshot(get("/", &[("traceparent", "00-nope"), ("b3", "zz")]))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    drop(resp);
    let span = h.spans.try_recv().unwrap();
    assert_eq!(span.parent_span_id, None, "a fresh trace");
    let text = h.prom.render();
    assert!(
        text.contains(r#"sidetrace_propagation_errors_total{format="tracecontext"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"sidetrace_propagation_errors_total{format="b3"} 1"#));
}

#[tokio::test]
async fn full_queue_never_blocks_the_request() {
    let mut h = harness(SpanKind::Server, "{}", &[], 1);
    let svc = h.layer.layer(echo(200));
    for _ in 0..3 {
        let resp = svc.clone().oneshot(get("/", &[])).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert!(h.spans.try_recv().is_ok());
    assert!(h.spans.try_recv().is_err());
    assert!(h
        .prom
        .render()
        .contains(r#"sidetrace_spans_dropped_total{reason="queue_full"} 2"#));
}

#[tokio::test]
async fn outbound_spans_are_client_orphans_with_4xx_errors() {
    let mut h = harness(SpanKind::Client, "{}", &[], 16);
    drop(
        h.layer
            .layer(echo(404))
            .oneshot(get("http://payments.svc:9000/charge", &[]))
            .await
            .unwrap(),
    );
    let span = h.spans.try_recv().unwrap();
    assert_eq!(span.kind, SpanKind::Client);
    assert!(span.is_orphan());
    assert_eq!(span.status_code, SpanStatus::Error);
    assert_eq!(
        span.upstream.as_ref().unwrap().as_str(),
        "payments.svc:9000"
    );
    // HTTP/1 origin form: the destination comes from Host.
    drop(
        h.layer
            .layer(echo(200))
            .oneshot(get("/charge", &[("host", "ledger.svc:7000")]))
            .await
            .unwrap(),
    );
    let span = h.spans.try_recv().unwrap();
    assert_eq!(span.upstream.as_ref().unwrap().as_str(), "ledger.svc:7000");
}

#[tokio::test(start_paused = true)]
async fn streaming_request_bytes_and_duration() {
    let mut h = harness(SpanKind::Server, "{}", &[], 16);
    let svc = h.layer.layer(service_fn(|req: Request| async move {
        let n = req.into_body().collect().await.unwrap().to_bytes().len();
        tokio::time::sleep(Duration::from_millis(40)).await;
        Ok::<_, Infallible>(http::Response::new(crate::full_body(n.to_string())))
    }));
    let frames: Vec<Result<Frame<Bytes>, crate::Error>> = vec![
        Ok(Frame::data(Bytes::from_static(b"1234"))),
        Ok(Frame::data(Bytes::from_static(b"567"))),
    ];
    let req = http::Request::builder()
        .method("POST")
        .uri("/upload")
        .body(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync())
        .unwrap();
    let resp = svc.oneshot(req).await.unwrap();
    let _ = resp.into_body().collect().await.unwrap();
    let span = h.spans.try_recv().unwrap();
    assert_eq!(span.request_bytes, Some(7));
    assert_eq!(span.duration(), Duration::from_millis(40));
}

#[tokio::test(start_paused = true)]
async fn end_attributes_reach_the_span_when_the_body_ends() {
    use futures_util::StreamExt;
    let mut h = harness(SpanKind::Client, "{}", &[], 16);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let end = EndAttributes::default();
    let setter = end.clone();
    let mut done_rx = Some(done_rx);
    let svc = h.layer.layer(service_fn(move |_req: Request| {
        let done = done_rx.take();
        let end = end.clone();
        async move {
            // Open until the work behind the response is over, as a tunnel's.
            let body = StreamBody::new(
                futures_util::stream::once(async move {
                    if let Some(done) = done {
                        let _ = done.await;
                    }
                })
                .filter_map(|()| async { None::<Result<Frame<Bytes>, crate::Error>> }),
            )
            .boxed_unsync();
            let mut resp = http::Response::new(body);
            resp.extensions_mut().insert(end);
            Ok::<_, Infallible>(resp)
        }
    }));
    let resp = svc
        .oneshot(get("http://ledger.svc:7000/", &[]))
        .await
        .unwrap();
    let body = tokio::spawn(resp.into_body().collect());
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(
        h.spans.try_recv().is_err(),
        "the span lasts as long as the body"
    );
    let attributes = vec![("sidetrace.test".into(), span::AttrValue::Int(7))];
    setter.set(attributes.clone());
    done_tx.send(()).unwrap();
    body.await.unwrap().unwrap();
    let span = h.spans.try_recv().unwrap();
    assert_eq!(span.attributes, attributes);
    assert_eq!(span.duration(), Duration::from_millis(30));
}

#[tokio::test]
async fn access_log_can_be_switched_off_and_settings_reloaded() {
    let mut h = harness(SpanKind::Server, "access_log: false", &[], 16);
    let svc = h.layer.layer(echo(200));
    drop(svc.clone().oneshot(get("/", &[])).await.unwrap());
    assert!(h.spans.try_recv().is_ok());
    let off: TracingConfig = serde_saphyr::from_str("sampler: { type: always_off }").unwrap();
    h.layer.reload(Arc::new(
        TraceSettings::new(&off, &[], TraceMetrics::noop()).unwrap(),
    ));
    drop(svc.oneshot(get("/", &[])).await.unwrap());
    assert!(h.spans.try_recv().is_err(), "the reloaded sampler applies");
}

#[test]
fn layer_types_fit_a_shared_hyper_stack() {
    // hyper-util needs a Send future; the shared chain a Send + Sync service.
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    type Inner = tower::util::BoxCloneSyncService<Request, Response, Infallible>;
    send_sync::<TraceLayer>();
    send_sync::<Trace<Inner>>();
    send::<ResponseFuture<<Inner as Service<Request>>::Future>>();
    send::<SpanRecord>();
}

#[tokio::test]
async fn access_records_follow_the_access_mode() {
    let h = harness(SpanKind::Server, "{}", &[], 16);
    let (logs, mut records) = LogSink::channel(16, metrics::Counter::noop());
    let layer = h.layer.logging_to(logs);
    let svc = layer.layer(service_fn(|req: Request| async move {
        let status = if req.uri().path() == "/missing" {
            404
        } else {
            200
        };
        let mut resp = http::Response::new(crate::full_body("hello"));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
        Ok::<_, Infallible>(resp)
    }));
    let call = |path: &'static str| {
        let svc = svc.clone();
        async move {
            let resp = svc
                .oneshot(get(path, &[("traceparent", TP)]))
                .await
                .unwrap();
            let _ = resp.into_body().collect().await.unwrap();
        }
    };
    call("/ok?secret=1").await;
    let LogRecord::Access(r) = records.try_recv().unwrap() else {
        panic!("an access record")
    };
    assert_eq!(r.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(r.status, Some(StatusCode::OK));
    assert_eq!(r.response_bytes, 5);
    assert!(r.sampled, "the caller's sampled flag");
    assert_eq!(r.client_address.unwrap().to_string(), "10.1.2.3:4567");
    assert_eq!(r.upstream.as_ref().unwrap().as_str(), "127.0.0.1:8080");

    // Errors only: the 200 has no entry, the 404 has one.
    let off: TracingConfig = serde_saphyr::from_str("{}").unwrap();
    let settings = TraceSettings::new(&off, &[], TraceMetrics::noop()).unwrap();
    layer.reload(Arc::new(settings.with_access(AccessMode::Errors, true)));
    call("/ok").await;
    call("/missing").await;
    let LogRecord::Access(r) = records.try_recv().unwrap() else {
        panic!("an access record")
    };
    assert_eq!(r.status, Some(StatusCode::NOT_FOUND));
    assert_eq!(r.failure.unwrap().category, FailureCategory::Validation);
    assert!(records.try_recv().is_err(), "nothing for the 200");

    // Sampled only: an unsampled caller's request has no entry.
    let settings = TraceSettings::new(&off, &[], TraceMetrics::noop()).unwrap();
    layer.reload(Arc::new(settings.with_access(AccessMode::Sampled, false)));
    let resp = svc
        .clone()
        .oneshot(get(
            "/ok",
            &[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            )],
        ))
        .await
        .unwrap();
    let _ = resp.into_body().collect().await.unwrap();
    assert!(records.try_recv().is_err(), "the span is not sampled");
    call("/ok").await;
    assert!(matches!(records.try_recv(), Ok(LogRecord::Access(_))));
}
