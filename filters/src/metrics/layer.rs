//! The RED layer: the outermost layer of every listener's stack.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http_body::Body;
use http_body_util::BodyExt;
use metrics::Histogram;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use http::uri::Authority;

use super::{graph::CLIENT_HEADER, HttpMetrics, Outcome, RequestRecording, Side};
use crate::{
    body::{Eos, EosBody, OnEos},
    classify::{Failure, GrpcCode},
    HttpBody,
};

/// Applies [`RedService`].
#[derive(Clone)]
pub struct RedLayer {
    metrics: Arc<HttpMetrics>,
    scheme: &'static str,
}

/// Records rate, errors and duration of every request.
#[derive(Clone)]
pub struct RedService<S> {
    inner: S,
    metrics: Arc<HttpMetrics>,
    scheme: &'static str,
}

pin_project! {
    /// Response future of [`RedService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        recording: Option<RequestRecording>,
    }
}

struct ResponseEnd {
    recording: RequestRecording,
    outcome: Outcome,
}

struct RequestSize(Histogram);

// === impl RedLayer ===

impl RedLayer {
    /// A layer recording into `metrics`; `scheme` is the listener's
    /// (`http` or `https`).
    pub fn new(metrics: Arc<HttpMetrics>, scheme: &'static str) -> Self {
        Self { metrics, scheme }
    }
}

impl<S> Layer<S> for RedLayer {
    type Service = RedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RedService {
            inner,
            metrics: self.metrics.clone(),
            scheme: self.scheme,
        }
    }
}

// === impl RedService ===

impl<S> Service<http::Request<HttpBody>> for RedService<S>
where
    S: Service<http::Request<HttpBody>, Response = http::Response<HttpBody>>,
{
    type Response = http::Response<HttpBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<HttpBody>) -> Self::Future {
        let recording = begin(&self.metrics, self.scheme, &mut req);
        measure_request_body(&self.metrics, &mut req);
        ResponseFuture {
            inner: self.inner.call(req),
            recording: Some(recording),
        }
    }
}

// === impl ResponseFuture ===

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<HttpBody>, E>>,
{
    type Output = Result<http::Response<HttpBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result,
        };
        let Some(recording) = this.recording.take() else {
            return Poll::Ready(result);
        };
        match result {
            Ok(resp) => {
                let outcome = Outcome {
                    status: Some(resp.status()),
                    grpc: GrpcCode::from_headers(resp.headers()),
                    failure: resp.extensions().get::<Failure>().copied(),
                    ..Outcome::default()
                };
                let end = ResponseEnd { recording, outcome };
                Poll::Ready(Ok(resp.map(|body| EosBody::new(body, end).boxed_unsync())))
            }
            Err(e) => {
                recording.finish(Outcome {
                    failure: Some(Failure::new(
                        crate::classify::FailureCategory::Internal,
                        crate::classify::ErrorType::Internal,
                    )),
                    ..Outcome::default()
                });
                Poll::Ready(Err(e))
            }
        }
    }
}

/// Starts recording `req` into `metrics`: matches its route (put in the
/// request extensions for the layers below) and takes the service-graph hop
/// header off; the caller measures the request body (see
/// [`HttpMetrics::request_size`]). For a layer
/// that records RED metrics as part of its own work (the trace layer's
/// [`with_metrics`](crate::trace::TraceLayer::with_metrics)).
pub fn begin(
    metrics: &Arc<HttpMetrics>,
    scheme: &'static str,
    req: &mut http::Request<HttpBody>,
) -> RequestRecording {
    let route = metrics.routes().lookup(req);
    let (server, peer) = match metrics.side() {
        // The outbound listener: the destination names the series.
        Side::Client => (destination(req), None),
        // The inbound listener: a calling sidetrace names itself for the
        // service graph; the header is for this hop only.
        Side::Server if metrics.has_graph() => (None, req.headers_mut().remove(CLIENT_HEADER)),
        Side::Server => (None, None),
    };
    let recording = metrics.start(
        req.method(),
        req.version(),
        scheme,
        route.as_ref().map(|r| r.name.clone()),
        server,
        peer,
    );
    if let Some(route) = route {
        req.extensions_mut().insert(route);
    }
    recording
}

/// Records the size of `req`'s body in the request-size histogram when the
/// body ends, for [`RedService`]; the trace layer records it from the one
/// body counter its span uses.
fn measure_request_body(metrics: &HttpMetrics, req: &mut http::Request<HttpBody>) {
    if let Some(size) = metrics.request_size(req.method()) {
        if req.body().is_end_stream() {
            // Most requests have no body: record without wrapping (and boxing) it.
            size.record(0.0);
        } else {
            let size = RequestSize(size.clone());
            let body = std::mem::replace(req.body_mut(), crate::empty_body());
            *req.body_mut() = EosBody::new(body, size).boxed_unsync();
        }
    }
}

/// The destination of an outbound request: its URI authority (h2, or an
/// absolute-form HTTP/1.1 target) or its `Host`.
fn destination(req: &http::Request<HttpBody>) -> Option<Authority> {
    match req.uri().authority() {
        Some(a) => Some(a.clone()),
        None => req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok()),
    }
}

impl OnEos for ResponseEnd {
    fn on_eos(self, eos: Eos<'_>, bytes: u64) {
        let Self {
            recording,
            mut outcome,
        } = self;
        outcome.end(eos, bytes);
        recording.finish(outcome);
    }
}

impl OnEos for RequestSize {
    fn on_eos(self, _: Eos<'_>, bytes: u64) {
        self.0.record(bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body::Frame;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::metrics::{MetricsConfig, RouteTable, Side};

    #[tokio::test]
    async fn grpc_status_from_trailers_is_recorded_at_body_end() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let metrics = HttpMetrics::new(
            Side::Server,
            Arc::new(recorder),
            RouteTable::default(),
            &MetricsConfig::new(10),
            None,
        );
        let svc = RedLayer::new(metrics, "http").layer(service_fn(|_req| async {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
            let frames: Vec<Result<Frame<Bytes>, crate::Error>> = vec![
                Ok(Frame::data(Bytes::from_static(b"xyz"))),
                Ok(Frame::trailers(trailers)),
            ];
            let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
            Ok::<_, Infallible>(http::Response::new(body.boxed_unsync()))
        }));
        let req = http::Request::builder()
            .method("POST")
            .version(http::Version::HTTP_2)
            .body(crate::full_body("hello"))
            .unwrap();
        let resp = svc.oneshot(req).await.unwrap();
        assert!(
            !handle
                .render()
                .contains("http_server_request_duration_seconds_count{"),
            "nothing recorded before the body ends: {}",
            handle.render()
        );
        let _ = resp.into_body().collect().await.unwrap();
        let text = handle.render();
        assert!(text.contains("rpc_grpc_status_code=\"14\""), "{text}");
        assert!(text.contains("failure_category=\"NETWORK\""), "{text}");
        assert!(
            text.contains("http_server_response_body_size_bytes_sum{"),
            "{text}"
        );
    }
}
