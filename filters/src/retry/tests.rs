use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use tower::{service_fn, Layer, Service, ServiceExt};

use super::*;
use crate::{
    classify::{RequestTimeout, UpstreamError, UpstreamErrorKind},
    full_body, Request, Response,
};

/// One scripted answer of the upstream.
enum Answer {
    Status(u16),
    Error(UpstreamErrorKind),
    Timeout,
    /// A 503 whose body sets the flag once it has been read to the end.
    FlaggedStatus(u16, Arc<AtomicBool>),
}

/// What the upstream saw of one attempt.
#[derive(Debug, PartialEq)]
struct Seen {
    method: Method,
    body: Bytes,
    header: Option<String>,
}

#[derive(Clone, Default)]
struct Upstream {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    fn new(answers: impl IntoIterator<Item = Answer>) -> Self {
        Self {
            answers: Arc::new(Mutex::new(answers.into_iter().collect())),
            seen: Arc::default(),
        }
    }

    fn calls(&self) -> usize {
        self.seen.lock().len()
    }

    fn service(
        &self,
    ) -> impl Service<Request, Response = Response, Error = crate::Error, Future = impl Send> + Clone
    {
        let up = self.clone();
        service_fn(move |req: Request| {
            let up = up.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await?.to_bytes();
                up.seen.lock().push(Seen {
                    method: parts.method,
                    body,
                    header: parts
                        .headers
                        .get("x-attempt")
                        .map(|v| v.to_str().unwrap().to_owned()),
                });
                let answer = up.answers.lock().pop_front().unwrap_or(Answer::Status(200));
                let status = |code: u16, body: crate::HttpBody| {
                    let mut res = http::Response::new(body);
                    *res.status_mut() = StatusCode::from_u16(code).unwrap();
                    res
                };
                match answer {
                    Answer::Status(code) => Ok(status(code, full_body(format!("{code}")))),
                    Answer::FlaggedStatus(code, flag) => Ok(status(
                        code,
                        Flagged(Some(Bytes::from_static(b"unavailable")), flag).boxed_unsync(),
                    )),
                    Answer::Error(kind) => Err(UpstreamError {
                        kind,
                        addr: http::uri::Authority::from_static("app:8080"),
                        source: "scripted".into(),
                    }
                    .into()),
                    Answer::Timeout => Err(RequestTimeout(Duration::from_secs(1)).into()),
                }
            }
        })
    }
}

struct Flagged(Option<Bytes>, Arc<AtomicBool>);

impl Body for Flagged {
    type Data = Bytes;
    type Error = crate::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::Error>>> {
        match self.0.take() {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            None => {
                self.1.store(true, Ordering::SeqCst);
                Poll::Ready(None)
            }
        }
    }
}

fn config(yaml: &str) -> RetryConfig {
    let c: RetryConfig = serde_saphyr::from_str(yaml).unwrap();
    crate::registry::Filter::validate(&c).unwrap();
    c
}

fn request(method: Method, body: &'static str) -> Request {
    http::Request::builder()
        .method(method)
        .uri("/orders")
        .header("x-attempt", "same")
        .body(if body.is_empty() {
            crate::empty_body()
        } else {
            full_body(body)
        })
        .unwrap()
}

async fn status(
    svc: impl Service<Request, Response = Response, Error = crate::Error>,
    req: Request,
) -> Result<StatusCode, crate::Error> {
    svc.oneshot(req).await.map(|r| r.status())
}

#[tokio::test(start_paused = true)]
async fn connect_errors_are_retried_for_any_method_with_the_same_body() {
    let up = Upstream::new([
        Answer::Error(UpstreamErrorKind::Connect),
        Answer::Status(201),
    ]);
    let svc = RetryLayer::new(&config("{ on: [connect_error] }")).layer(up.service());
    let got = status(svc, request(Method::POST, "payload")).await.unwrap();
    assert_eq!(got, StatusCode::CREATED);
    let seen = up.seen.lock();
    assert_eq!(seen.len(), 2);
    for s in seen.iter() {
        assert_eq!(
            *s,
            Seen {
                method: Method::POST,
                body: Bytes::from_static(b"payload"),
                header: Some("same".into())
            }
        );
    }
}

#[tokio::test(start_paused = true)]
async fn listed_statuses_are_retried_for_idempotent_methods_only() {
    let c = config("{ on: [503] }");
    let up = Upstream::new([Answer::Status(503), Answer::Status(200)]);
    let got = status(
        RetryLayer::new(&c).layer(up.service()),
        request(Method::GET, ""),
    );
    assert_eq!(got.await.unwrap(), StatusCode::OK);
    assert_eq!(up.calls(), 2);

    let up = Upstream::new([Answer::Status(503), Answer::Status(200)]);
    let got = status(
        RetryLayer::new(&c).layer(up.service()),
        request(Method::POST, "x"),
    );
    assert_eq!(
        got.await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "POST may have run"
    );
    assert_eq!(up.calls(), 1);

    let up = Upstream::new([Answer::Status(500), Answer::Status(200)]);
    let got = status(
        RetryLayer::new(&c).layer(up.service()),
        request(Method::GET, ""),
    );
    assert_eq!(
        got.await.unwrap(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "500 is not listed"
    );
    assert_eq!(up.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn resets_and_timeouts_are_retried_for_idempotent_methods() {
    let c = config("{ attempts: 3, on: [reset, timeout] }");
    let up = Upstream::new([
        Answer::Error(UpstreamErrorKind::Reset),
        Answer::Timeout,
        Answer::Status(200),
    ]);
    let got = status(
        RetryLayer::new(&c).layer(up.service()),
        request(Method::PUT, "v"),
    );
    assert_eq!(got.await.unwrap(), StatusCode::OK);
    assert_eq!(up.calls(), 3);

    let up = Upstream::new([Answer::Error(UpstreamErrorKind::Reset)]);
    let err = status(
        RetryLayer::new(&c).layer(up.service()),
        request(Method::PATCH, "v"),
    )
    .await
    .unwrap_err();
    assert!(
        err.is::<UpstreamError>(),
        "the last error comes back unchanged"
    );
    assert_eq!(up.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn attempts_bound_the_tries() {
    let up = Upstream::new((0..5).map(|_| Answer::Status(502)));
    let svc = RetryLayer::new(&config("{ attempts: 3, on: [502] }")).layer(up.service());
    let got = status(svc, request(Method::GET, "")).await.unwrap();
    assert_eq!(got, StatusCode::BAD_GATEWAY);
    assert_eq!(up.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn bodies_that_cannot_be_replayed_are_not_retried() {
    let c = config("{ on: [connect_error], max_replay_bytes: 4 }");
    let up = Upstream::new([Answer::Error(UpstreamErrorKind::Connect)]);
    let err = status(
        RetryLayer::new(&c).layer(up.service()),
        request(Method::PUT, "too long"),
    );
    assert!(err.await.unwrap_err().is::<UpstreamError>());
    assert_eq!(up.calls(), 1);

    // A gRPC stream: no announced length, so never buffered nor retried.
    let up = Upstream::new([Answer::Error(UpstreamErrorKind::Connect)]);
    let frames =
        futures_util::stream::iter([Ok::<_, crate::Error>(Frame::data(Bytes::from_static(b"m")))]);
    let req = http::Request::builder()
        .method(Method::POST)
        .header("content-type", "application/grpc")
        .body(http_body_util::StreamBody::new(frames).boxed_unsync())
        .unwrap();
    let err = status(RetryLayer::new(&c).layer(up.service()), req).await;
    assert!(err.unwrap_err().is::<UpstreamError>());
    assert_eq!(up.calls(), 1);

    // An upgrade is a new protocol, not a request to send twice.
    let up = Upstream::new([Answer::Error(UpstreamErrorKind::Connect)]);
    let mut req = request(Method::GET, "");
    req.headers_mut().insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("websocket"),
    );
    let err = status(RetryLayer::new(&c).layer(up.service()), req).await;
    assert!(err.unwrap_err().is::<UpstreamError>());
    assert_eq!(up.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_budget_bounds_retries_to_a_share_of_traffic() {
    let c = config("{ budget_percent: 50, min_per_second: 0, on: [503] }");
    let up = Upstream::new((0..10).flat_map(|_| [Answer::Status(503), Answer::Status(200)]));
    let svc = RetryLayer::new(&c).layer(up.service());
    let mut retried = 0;
    for _ in 0..10 {
        let before = up.calls();
        let got = status(svc.clone(), request(Method::GET, "")).await.unwrap();
        if up.calls() - before == 2 {
            retried += 1;
            assert_eq!(got, StatusCode::OK);
        } else {
            assert_eq!(got, StatusCode::SERVICE_UNAVAILABLE);
            // The unretried request consumed only its 503; drop the unused 200.
            up.answers.lock().pop_front();
        }
    }
    assert_eq!(retried, 5, "50 % of 10 requests");

    let c = config("{ budget_percent: 0, min_per_second: 0, on: [connect_error] }");
    let up = Upstream::new([Answer::Error(UpstreamErrorKind::Connect)]);
    let err = status(
        RetryLayer::new(&c).layer(up.service()),
        request(Method::GET, ""),
    );
    assert!(err.await.unwrap_err().is::<UpstreamError>());
    assert_eq!(up.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_with_jitter_and_drains_the_failed_body() {
    let flag = Arc::new(AtomicBool::new(false));
    let up = Upstream::new([
        Answer::FlaggedStatus(503, flag.clone()),
        Answer::Status(503),
        Answer::Status(200),
    ]);
    let c = config("{ attempts: 3, on: [503], backoff: 100ms }");
    let svc = RetryLayer::new(&c).layer(up.service());
    let start = tokio::time::Instant::now();
    let got = status(svc, request(Method::GET, "")).await.unwrap();
    let waited = start.elapsed();
    assert_eq!(got, StatusCode::OK);
    // First wait in [50, 100] ms, second in [100, 200] ms.
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited <= Duration::from_millis(300), "{waited:?}");
    assert!(
        flag.load(Ordering::SeqCst),
        "the failed body was read to its end"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_that_succeed_pass_through_untouched() {
    let up = Upstream::new([Answer::Status(200)]);
    let svc = RetryLayer::new(&config("{ on: [connect_error, 503] }")).layer(up.service());
    let res = svc.oneshot(request(Method::POST, "hello")).await.unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "200");
    assert_eq!(up.seen.lock()[0].body, "hello");
}

#[test]
fn config_parses_names_and_statuses() {
    let c = config(
        "{ attempts: 2, budget_percent: 20, on: [connect_error, reset, timeout, 503, \"504\"] }",
    );
    assert_eq!(
        c.on,
        [
            RetryOn::ConnectError,
            RetryOn::Reset,
            RetryOn::Timeout,
            RetryOn::Status(StatusCode::SERVICE_UNAVAILABLE),
            RetryOn::Status(StatusCode::GATEWAY_TIMEOUT),
        ]
    );
    let defaults = config("{}");
    assert_eq!(defaults.attempts, 2);
    assert_eq!(defaults.budget_percent, 20);
    assert_eq!(defaults.min_per_second, 10);
    assert_eq!(defaults.on, [RetryOn::ConnectError]);
    assert_eq!(defaults.backoff, Duration::from_millis(25));
    assert_eq!(defaults.max_replay_bytes, 64 * 1024);

    let err = serde_saphyr::from_str::<RetryConfig>("{ on: [bogus] }").unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
    assert!(err.to_string().contains("HTTP status"), "{err}");
    let err = serde_saphyr::from_str::<RetryConfig>("{ on: [1000] }").unwrap_err();
    assert!(err.to_string().contains("1000"), "{err}");
}

#[test]
fn validation_names_the_field() {
    let cases = [
        ("{ attempts: 0 }", "attempts"),
        ("{ attempts: 11 }", "attempts"),
        ("{ budget_percent: 1001 }", "budget_percent"),
        ("{ on: [200] }", "on"),
        ("{ max_replay_bytes: 999999999 }", "max_replay_bytes"),
        ("{ backoff: 2m }", "backoff"),
    ];
    for (yaml, field) in cases {
        let c: RetryConfig = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(
            crate::registry::Filter::validate(&c).unwrap_err().field,
            field,
            "{yaml}"
        );
    }
}
