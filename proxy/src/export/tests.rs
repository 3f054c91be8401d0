//! Pipeline and exporter tests against in-process collectors on loopback.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    io::Read,
    sync::Arc,
    time::Duration,
};

use ::http::{HeaderMap, Request, Response, StatusCode};
use bytes::Bytes;
use filters::trace::{
    ExportConfig, ExportProtocol, Outcome, Resource, ServiceInfo, SpanKind, SpanRecord, SpanSink,
    TraceId,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use metrics::Counter;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::*;

fn span(path: &'static str) -> SpanRecord {
    let mut s = SpanRecord::start(SpanKind::Server, TraceId::random(), ::http::Method::GET);
    s.sampled = true;
    s.path = Some(::http::uri::PathAndQuery::from_static(path));
    s.finish(&Outcome {
        status: Some(StatusCode::OK),
        ..Outcome::default()
    });
    s
}

fn resource() -> Resource {
    Resource::new(
        ServiceInfo {
            name: Some("checkout"),
            ..ServiceInfo::default()
        },
        &HashMap::new(),
    )
}

/// A scripted collector: answers from `script` in order (the last answer
/// repeats) and keeps what it received.
#[derive(Clone)]
struct Collector {
    received: Arc<parking_lot::Mutex<Vec<(HeaderMap, Bytes)>>>,
    addr: std::net::SocketAddr,
}

#[derive(Clone, Debug)]
enum Answer {
    Http(u16),
    Grpc(u16),
    Hang,
}

impl Collector {
    async fn start(script: Vec<Answer>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let script = Arc::new(parking_lot::Mutex::new(VecDeque::from(script)));
        let store = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let store = store.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let store = store.clone();
                        let script = script.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            store.lock().push((parts.headers, body));
                            let answer = {
                                let mut s = script.lock();
                                if s.len() > 1 {
                                    s.pop_front().unwrap()
                                } else {
                                    s.front().cloned().unwrap()
                                }
                            };
                            Ok::<_, Infallible>(respond(answer).await)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self { received, addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<(HeaderMap, Bytes)> {
        self.received.lock().clone()
    }
}

async fn respond(
    answer: Answer,
) -> Response<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
    match answer {
        Answer::Http(code) => {
            let mut r = Response::new(Full::new(Bytes::new()).boxed());
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            r
        }
        Answer::Grpc(code) => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", code.to_string().parse().unwrap());
            let frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = vec![
                Ok(http_body::Frame::data(grpc::frame(b"", false))),
                Ok(http_body::Frame::trailers(trailers)),
            ];
            let mut r = Response::new(
                http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed(),
            );
            r.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            r
        }
        Answer::Hang => std::future::pending().await,
    }
}

fn settings(url: Option<String>, protocol: ExportProtocol, gzip: bool) -> ExportSettings {
    let mut s = ExportSettings::resolve(
        &ExportConfig {
            endpoint: url,
            protocol,
            gzip,
            batch_size: 4,
            queue_size: 16,
            timeout: Duration::from_millis(500),
            ..ExportConfig::default()
        },
        &HashMap::new(),
    )
    .unwrap();
    s.retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    };
    s
}

fn decode(body: &[u8], gzip: bool) -> ExportTraceServiceRequest {
    let raw = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        body.to_vec()
    };
    ExportTraceServiceRequest::decode(&raw[..]).unwrap()
}

fn exporter_with_metrics(
    s: &ExportSettings,
) -> (Exporter, metrics_exporter_prometheus::PrometheusHandle) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let exporter = Exporter::new(s, None, ExportMetrics::register(&recorder)).unwrap();
    (exporter, handle)
}

#[tokio::test]
async fn http_export_retries_503_then_succeeds_with_gzip() {
    let collector = Collector::start(vec![Answer::Http(503), Answer::Http(200)]).await;
    let s = settings(Some(collector.url()), ExportProtocol::HttpProtobuf, true);
    let (exporter, prom) = exporter_with_metrics(&s);
    let spans = vec![span("/a"), span("/b")];
    let body = otlp::encode(&otlp::resource(&resource()), &spans);
    exporter.export(body, 2).await.unwrap();
    let reqs = collector.requests();
    assert_eq!(reqs.len(), 2, "one retry");
    let (headers, body) = &reqs[1];
    assert_eq!(headers["content-type"], "application/x-protobuf");
    assert_eq!(headers["content-encoding"], "gzip");
    let decoded = decode(body, true);
    assert_eq!(decoded.resource_spans[0].scope_spans[0].spans.len(), 2);
    assert!(prom.render().contains("sidetrace_spans_exported_total 2"));
}

#[tokio::test]
async fn http_export_gives_up_on_400_without_retry() {
    let collector = Collector::start(vec![Answer::Http(400)]).await;
    let s = settings(Some(collector.url()), ExportProtocol::HttpProtobuf, false);
    let (exporter, prom) = exporter_with_metrics(&s);
    let err = exporter
        .export(Bytes::from_static(b""), 3)
        .await
        .unwrap_err();
    assert_eq!(err.attempts, 1);
    assert_eq!(collector.requests().len(), 1);
    let text = prom.render();
    assert!(text.contains("sidetrace_export_errors_total 1"), "{text}");
    assert!(text.contains(r#"sidetrace_spans_dropped_total{reason="export_failed"} 3"#));
}

#[tokio::test]
async fn grpc_export_reads_status_from_trailers() {
    let collector = Collector::start(vec![Answer::Grpc(14), Answer::Grpc(0)]).await;
    let s = settings(Some(collector.url()), ExportProtocol::Grpc, false);
    let (exporter, _) = exporter_with_metrics(&s);
    let spans = vec![span("/grpc")];
    exporter
        .export(otlp::encode(&otlp::resource(&resource()), &spans), 1)
        .await
        .unwrap();
    let reqs = collector.requests();
    assert_eq!(reqs.len(), 2, "UNAVAILABLE is retried");
    let (headers, body) = &reqs[1];
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(body[0], 0, "not compressed");
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    assert_eq!(len, body.len() - 5);
    let decoded = decode(&body[5..], false);
    assert_eq!(
        decoded.resource_spans[0].scope_spans[0].spans[0].name,
        "GET"
    );
}

#[tokio::test]
async fn grpc_invalid_argument_is_not_retried() {
    let collector = Collector::start(vec![Answer::Grpc(3)]).await;
    let s = settings(Some(collector.url()), ExportProtocol::Grpc, true);
    let (exporter, _) = exporter_with_metrics(&s);
    let err = exporter
        .export(Bytes::from_static(b"x"), 1)
        .await
        .unwrap_err();
    assert_eq!(err.attempts, 1);
    assert_eq!(collector.requests()[0].0["grpc-encoding"], "gzip");
    assert_eq!(collector.requests()[0].1[0], 1, "compressed flag");
}

#[tokio::test]
async fn dead_or_hanging_collector_is_bounded() {
    // Nothing listens on this port once the listener is dropped.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = settings(
        Some(format!("http://127.0.0.1:{port}")),
        ExportProtocol::HttpProtobuf,
        false,
    );
    let (exporter, _) = exporter_with_metrics(&s);
    let err = exporter
        .export(Bytes::from_static(b"x"), 1)
        .await
        .unwrap_err();
    assert_eq!(err.attempts, 3);

    let hang = Collector::start(vec![Answer::Hang]).await;
    let mut s = settings(Some(hang.url()), ExportProtocol::HttpProtobuf, false);
    s.timeout = Duration::from_millis(50);
    s.retry.max_attempts = 2;
    let (exporter, _) = exporter_with_metrics(&s);
    let err = exporter
        .export(Bytes::from_static(b"x"), 1)
        .await
        .unwrap_err();
    assert!(err.reason.contains("no answer"), "{err}");
}

#[tokio::test]
async fn pipeline_to_a_hanging_collector_never_blocks_senders() {
    let hang = Collector::start(vec![Answer::Hang]).await;
    let mut s = settings(Some(hang.url()), ExportProtocol::HttpProtobuf, false);
    s.timeout = Duration::from_secs(30);
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prom = recorder.handle();
    let dropped = filters::trace::TraceMetrics::register(&recorder).spans_dropped_queue_full;
    let pipeline = Pipeline::start(
        &s,
        None,
        &resource(),
        bounds(10),
        dropped,
        ExportMetrics::noop(),
    );
    // The first batch is stuck in export; the queue (16) fills; the rest drop.
    let sent = (0..100).filter(|_| pipeline.sink.send(span("/x"))).count();
    assert!(sent <= 16 + 4, "sent {sent}");
    assert!(prom
        .render()
        .contains(r#"sidetrace_spans_dropped_total{reason="queue_full"}"#));
    assert!(!pipeline.handle.shutdown(Duration::from_millis(50)).await);
}

#[tokio::test(start_paused = true)]
async fn store_pipeline_batches_by_size_and_time() {
    let store = Arc::new(TraceStore::new(100, "checkout"));
    let (sink, rx) = SpanSink::channel(64, Counter::noop());
    let handle = PipelineHandle::spawn_on(
        &tokio::runtime::Handle::current(),
        rx,
        Destination::Store(store.clone()),
        4,
        Duration::from_secs(1),
        Counter::noop(),
    );
    for _ in 0..5 {
        assert!(sink.send(span("/s")));
    }
    tokio::task::yield_now().await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(store.len(), 4, "a full batch goes at once");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(store.len(), 5, "the partial batch goes after the timeout");
    sink.send(span("/f"));
    handle.flush().await;
    assert_eq!(store.len(), 6, "flush sends what is queued");
    sink.send(span("/g"));
    assert!(handle.shutdown(Duration::from_secs(1)).await);
    assert_eq!(store.len(), 7, "shutdown drains the queue");
    assert!(!sink.send(span("/late")), "closed after shutdown");
}

#[tokio::test]
async fn pipeline_without_endpoint_fills_the_store() {
    let s = settings(None, ExportProtocol::HttpProtobuf, false);
    let pipeline = Pipeline::start(
        &s,
        None,
        &resource(),
        bounds(10),
        Counter::noop(),
        ExportMetrics::noop(),
    );
    pipeline.sink.send(span("/one"));
    pipeline.handle.flush().await;
    assert_eq!(pipeline.store.len(), 1);
    let (status, _, body) = pipeline.store.render_traces("");
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["traces"][0]["service"], "checkout");
}

#[tokio::test]
async fn pipeline_exports_batches_over_http() {
    let collector = Collector::start(vec![Answer::Http(200)]).await;
    let s = settings(Some(collector.url()), ExportProtocol::HttpProtobuf, false);
    let pipeline = Pipeline::start(
        &s,
        None,
        &resource(),
        bounds(10),
        Counter::noop(),
        ExportMetrics::noop(),
    );
    for _ in 0..6 {
        pipeline.sink.send(span("/e"));
    }
    assert!(pipeline.handle.shutdown(Duration::from_secs(5)).await);
    let total: usize = collector
        .requests()
        .iter()
        .map(|(_, b)| {
            decode(b, false).resource_spans[0].scope_spans[0]
                .spans
                .len()
        })
        .sum();
    assert_eq!(total, 6);
    assert!(collector.requests().len() >= 2, "batches of 4");
    assert!(pipeline.store.is_empty(), "exported spans are not stored");
}

/// Records the name of the thread each batch is handed over on.
struct ThreadNames(Arc<parking_lot::Mutex<Vec<Option<String>>>>);

impl BatchSink<SpanRecord> for ThreadNames {
    const ITEMS: &'static str = "spans";

    async fn send(&mut self, _batch: Vec<SpanRecord>) {
        let name = std::thread::current().name().map(str::to_owned);
        self.0.lock().push(name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_handed_over_on_the_export_thread_not_a_request_thread() {
    let names = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let (sink, rx) = SpanSink::channel(64, Counter::noop());
    let handle = PipelineHandle::spawn(
        rx,
        ThreadNames(names.clone()),
        2,
        Duration::from_secs(1),
        Counter::noop(),
    );
    for _ in 0..4 {
        assert!(sink.send(span("/t")));
    }
    assert!(handle.shutdown(Duration::from_secs(5)).await);
    let names = names.lock();
    assert_eq!(names.len(), 2, "two full batches");
    for name in names.iter() {
        assert_eq!(name.as_deref(), Some("sidetrace-export"));
    }
}

fn bounds(traces: usize) -> StoreBounds {
    StoreBounds {
        traces,
        bytes: filters::trace::DEFAULT_STORE_BYTES,
    }
}
