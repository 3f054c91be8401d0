//! Errors become responses: the one place where a typed error from the stack
//! (timeout, limit, upstream failure, panic) turns into the 4xx/5xx or
//! trailers-only gRPC answer the client sees.
//!
//! hyper meets a service error by dropping the connection unanswered, so the
//! services handed to it are infallible: this layer sits under the metrics
//! and trace layers and puts the [`Failure`] into the response extensions so
//! they record the same classification.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use filters::{
    classify::{classify_error, Failure, Synthetic},
    HttpBody,
};
use http::{header, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::forward::is_grpc;

/// Header naming the failure category of a response the proxy made itself.
pub const X_SIDETRACE_ERROR: &str = "x-sidetrace-error";

/// Applies [`Rescue`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RescueLayer;

/// Turns errors into responses.
#[derive(Clone, Debug)]
pub struct Rescue<S> {
    inner: S,
}

pin_project! {
    /// Response future of [`Rescue`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        grpc: bool,
    }
}

// === impl RescueLayer ===

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Rescue { inner }
    }
}

// === impl Rescue ===

impl<S> Service<Request<HttpBody>> for Rescue<S>
where
    S: Service<Request<HttpBody>, Response = Response<HttpBody>, Error = filters::Error>,
{
    type Response = Response<HttpBody>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The chain's services are always ready (limits answer in `call`); an
        // error here is reported by the call that follows.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Request<HttpBody>) -> Self::Future {
        let grpc = is_grpc(req.headers());
        ResponseFuture {
            inner: self.inner.call(req),
            grpc,
        }
    }
}

// === impl ResponseFuture ===

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<HttpBody>, filters::Error>>,
{
    type Output = Result<Response<HttpBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(resp)) => Poll::Ready(Ok(resp)),
            Poll::Ready(Err(error)) => {
                let synthetic = classify_error(&*error);
                tracing::warn!(
                    error = %error,
                    status = synthetic.status.as_u16(),
                    failure_category = synthetic.failure.category.as_str(),
                    error_type = %synthetic.failure.error_type,
                    "request failed in the proxy"
                );
                Poll::Ready(Ok(respond(&synthetic, *this.grpc, &error.to_string())))
            }
        }
    }
}

/// The response for a failure the proxy answers itself.
pub fn respond(synthetic: &Synthetic, grpc: bool, detail: &str) -> Response<HttpBody> {
    let category = HeaderValue::from_static(synthetic.failure.category.as_str());
    let mut resp = if grpc {
        // Trailers-only: status 200 with grpc-status in the headers.
        let mut resp = Response::new(filters::empty_body());
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        if let Ok(v) = HeaderValue::from_str(&synthetic.grpc.as_str()) {
            h.insert("grpc-status", v);
        }
        if let Ok(v) = HeaderValue::from_str(&percent_encode(detail)) {
            h.insert("grpc-message", v);
        }
        resp
    } else {
        let body = format!(
            "{} {}: {}\n",
            synthetic.status.as_u16(),
            synthetic.status.canonical_reason().unwrap_or("error"),
            synthetic.failure.error_type
        );
        let mut resp = Response::new(filters::full_body(body));
        *resp.status_mut() = synthetic.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if synthetic.status == StatusCode::SERVICE_UNAVAILABLE
            || synthetic.status == StatusCode::TOO_MANY_REQUESTS
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    };
    resp.headers_mut().insert(X_SIDETRACE_ERROR, category);
    resp.extensions_mut().insert::<Failure>(synthetic.failure);
    resp
}

/// gRPC's percent-encoding of `grpc-message` (printable ASCII except `%`).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use filters::classify::{RequestTimeout, UpstreamError, UpstreamErrorKind};
    use tower::{service_fn, ServiceExt};

    async fn rescue(error: filters::Error, grpc: bool) -> Response<HttpBody> {
        let mut error = Some(error);
        let svc = RescueLayer.layer(service_fn(move |_req: Request<HttpBody>| {
            let e = error.take().expect("called once");
            async move { Err::<Response<HttpBody>, _>(e) }
        }));
        let mut req = Request::new(filters::empty_body());
        if grpc {
            req.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
        }
        svc.oneshot(req).await.unwrap()
    }

    #[tokio::test]
    async fn connect_error_is_502_network() {
        let e = UpstreamError {
            kind: UpstreamErrorKind::Connect,
            addr: "127.0.0.1:1".parse().unwrap(),
            source: "refused".into(),
        };
        let resp = rescue(Box::new(e), false).await;
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(resp.headers()[X_SIDETRACE_ERROR], "NETWORK");
        assert_eq!(
            resp.extensions()
                .get::<Failure>()
                .unwrap()
                .category
                .as_str(),
            "NETWORK"
        );
    }

    #[tokio::test]
    async fn grpc_timeout_is_trailers_only_deadline_exceeded() {
        let resp = rescue(
            Box::new(RequestTimeout(std::time::Duration::from_secs(1))),
            true,
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "4");
        assert!(resp.headers()["grpc-message"]
            .to_str()
            .unwrap()
            .contains("timed out"));
    }

    #[tokio::test]
    async fn a_body_too_large_is_413_validation_and_resource_exhausted_for_grpc() {
        let e = || Box::new(filters::classify::BodyTooLarge { limit: 1024 });
        let resp = rescue(e(), false).await;
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(resp.headers()[X_SIDETRACE_ERROR], "VALIDATION");
        assert_eq!(
            resp.extensions()
                .get::<Failure>()
                .unwrap()
                .error_type
                .as_str(),
            "body_too_large"
        );
        let resp = rescue(e(), true).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "8");
        assert_eq!(resp.headers()[X_SIDETRACE_ERROR], "VALIDATION");
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("a%b\nc"), "a%25b%0Ac");
    }
}
