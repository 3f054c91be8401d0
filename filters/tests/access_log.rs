//! The access log line, in a test binary of its own.
//!
//! tracing caches per call site whether anyone listens; with a scoped
//! subscriber, another test thread hitting the same call site without one can
//! cache "never" and swallow the line. A process-wide subscriber in a binary
//! that runs nothing else cannot race that way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{convert::Infallible, io::Write, sync::Arc};

use filters::trace::{
    SpanSink, TraceLayer, TraceMetrics, TraceOptions, TraceSettings, TracingConfig,
};
use http::StatusCode;
use http_body_util::BodyExt;
use tower::{service_fn, Layer, ServiceExt};

#[derive(Clone, Default)]
struct Buf(Arc<parking_lot::Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn access_log_line_is_json_with_ids() {
    let buf = Buf::default();
    let writer = buf.clone();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(move || writer.clone())
        .init();

    let settings =
        TraceSettings::new(&TracingConfig::default(), &[], TraceMetrics::noop()).unwrap();
    let (sink, _spans) = SpanSink::channel(16, metrics::Counter::noop());
    let options = TraceOptions::server("http", Some("127.0.0.1:8080".parse().unwrap()));
    let svc = TraceLayer::new(options, Arc::new(settings), sink).layer(service_fn(
        |_req: filters::Request| async {
            let mut resp = http::Response::new(filters::full_body("hello"));
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            Ok::<_, Infallible>(resp)
        },
    ));
    let req = http::Request::builder()
        .uri("/api/x?secret=1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(filters::empty_body())
        .unwrap();
    let resp = svc.oneshot(req).await.unwrap();
    let _ = resp.into_body().collect().await.unwrap();

    let text = String::from_utf8(buf.0.lock().clone()).unwrap();
    let line = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["target"] == "sidetrace::access")
        .unwrap_or_else(|| panic!("no access line in {text}"));
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(line["span_id"].as_str().unwrap().len(), 16);
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/api/x", "no query string in logs");
    assert_eq!(line["status"], 503);
    assert_eq!(line["bytes_out"], 5);
    assert_eq!(line["bytes_in"], 0);
    assert_eq!(line["upstream"], "127.0.0.1:8080");
    assert_eq!(line["failure_category"], "NETWORK");
    assert_eq!(line["error_type"], "503");
    assert!(line["duration_ms"].as_f64().is_some());
}
