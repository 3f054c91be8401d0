use std::sync::atomic::AtomicUsize;

use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::StreamBody;
use tower::{service_fn, ServiceExt};

use super::*;
use crate::{
    classify::{classify_error, FailureCategory},
    filter_metrics::FilterMetrics,
};

/// What the inner service saw of the request body.
#[derive(Debug)]
struct Seen {
    data: Vec<u8>,
    trailers: Option<HeaderMap>,
}

/// An inner service that reads the whole body and answers with it in an
/// extension; a body error is its error, as the forwarder's would be.
/// `calls` counts the calls.
fn reader(
    calls: Arc<AtomicUsize>,
) -> impl Service<crate::Request, Response = http::Response<Seen>, Error = crate::Error> + Clone {
    service_fn(move |req: crate::Request| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let collected = req.into_body().collect().await?;
            let trailers = collected.trailers().cloned();
            let data = collected.to_bytes().to_vec();
            Ok(http::Response::new(Seen { data, trailers }))
        }
    })
}

fn declared(len: usize) -> crate::Request {
    let mut req = http::Request::new(crate::full_body(vec![b'x'; len]));
    req.headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    req
}

/// A body of `chunks` data frames (then `trailers`) with no length known
/// in advance, as a chunked HTTP/1.1 or HTTP/2 body arrives.
fn streamed(chunks: &[usize], trailers: Option<HeaderMap>) -> crate::Request {
    let mut frames: Vec<Result<Frame<Bytes>, crate::Error>> = chunks
        .iter()
        .enumerate()
        .map(|(i, &n)| Ok(Frame::data(Bytes::from(vec![b'a' + i as u8; n]))))
        .collect();
    frames.extend(trailers.map(|t| Ok(Frame::trailers(t))));
    let body = StreamBody::new(futures_util::stream::iter(frames));
    assert_eq!(body.size_hint().upper(), None, "the length is not known");
    http::Request::new(body.boxed_unsync())
}

async fn call(
    limit: u64,
    req: crate::Request,
) -> (Result<http::Response<Seen>, crate::Error>, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = MaxBodyLayer::new(limit).layer(reader(calls.clone()));
    let out = svc.oneshot(req).await;
    (out, calls.load(Ordering::SeqCst))
}

fn assert_too_large(err: &crate::Error, limit: u64) {
    let large = err
        .downcast_ref::<BodyTooLarge>()
        .unwrap_or_else(|| panic!("not BodyTooLarge: {err}"));
    assert_eq!(large.limit, limit);
    let s = classify_error(&**err);
    assert_eq!(s.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.failure.category, FailureCategory::Validation);
    assert_eq!(s.failure.error_type.as_str(), "body_too_large");
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_without_calling_inner() {
    let (out, calls) = call(100, declared(101)).await;
    assert_too_large(&out.unwrap_err(), 100);
    assert_eq!(calls, 0, "the inner service (the upstream) is never called");
}

#[tokio::test]
async fn a_declared_length_at_or_under_the_limit_passes() {
    for len in [100, 99, 0] {
        let (out, calls) = call(100, declared(len)).await;
        let seen = out.unwrap().into_body();
        assert_eq!(seen.data.len(), len);
        assert_eq!(calls, 1);
    }
}

#[tokio::test]
async fn a_declared_length_is_refused_even_when_the_body_is_shorter() {
    // The header alone decides: a client announcing more than the limit
    // is refused before it sends anything.
    let mut req = http::Request::new(crate::empty_body());
    req.headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(5000));
    let (out, calls) = call(4096, req).await;
    assert_too_large(&out.unwrap_err(), 4096);
    assert_eq!(calls, 0);
}

#[tokio::test]
async fn a_streamed_body_fails_at_the_chunk_that_passes_the_limit() {
    let seen_before_error = Arc::new(AtomicUsize::new(0));
    let seen = seen_before_error.clone();
    // Reads frame by frame to see exactly where the error comes.
    let svc = MaxBodyLayer::new(10).layer(service_fn(move |req: crate::Request| {
        let seen = seen.clone();
        async move {
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                let frame = frame?;
                if let Some(d) = frame.data_ref() {
                    seen.fetch_add(d.len(), Ordering::SeqCst);
                }
            }
            Ok::<_, crate::Error>(http::Response::new(()))
        }
    }));
    // 4 + 4 = 8 pass; the third chunk would make 11.
    let err = svc
        .oneshot(streamed(&[4, 4, 3, 4], None))
        .await
        .unwrap_err();
    assert_too_large(&err, 10);
    assert_eq!(seen_before_error.load(Ordering::SeqCst), 8);
}

#[tokio::test]
async fn a_streamed_body_of_exactly_the_limit_passes() {
    let (out, calls) = call(10, streamed(&[4, 4, 2], None)).await;
    assert_eq!(out.unwrap().into_body().data.len(), 10);
    assert_eq!(calls, 1);
}

#[tokio::test]
async fn a_streamed_body_under_the_limit_passes_unchanged_with_its_trailers() {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    let (out, _) = call(1024, streamed(&[3, 0, 5], Some(trailers.clone()))).await;
    let seen = out.unwrap().into_body();
    assert_eq!(seen.data, b"aaaccccc");
    assert_eq!(seen.trailers, Some(trailers));
}

#[tokio::test]
async fn an_inner_error_after_the_body_failed_is_reported_as_too_large() {
    // HTTP/2 to the upstream: hyper keeps the body's error to itself and
    // the call fails with the stream reset it sent.
    let svc = MaxBodyLayer::new(4).layer(service_fn(|req: crate::Request| async move {
        let _ = req.into_body().collect().await;
        Err::<http::Response<()>, crate::Error>("stream error sent by user: INTERNAL_ERROR".into())
    }));
    let err = svc.oneshot(streamed(&[8], None)).await.unwrap_err();
    assert_too_large(&err, 4);

    // The same error with a body that fitted is left as it was.
    let svc = MaxBodyLayer::new(64).layer(service_fn(|req: crate::Request| async move {
        let _ = req.into_body().collect().await;
        Err::<http::Response<()>, crate::Error>("upstream reset".into())
    }));
    let err = svc.oneshot(streamed(&[8], None)).await.unwrap_err();
    assert!(err.downcast_ref::<BodyTooLarge>().is_none(), "{err}");
}

#[tokio::test]
async fn refusals_are_counted_both_ways() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let metrics = FilterMetrics::new(Arc::new(recorder), "inbound", "");
    let config = MaxBodyConfig {
        bytes: ByteSize::Count(10),
    };
    let cx = BuildContext {
        path: "filters[0].max_body".into(),
        metrics: metrics.for_filter("filters[0].max_body"),
    };
    let layer = config.layer(&cx).unwrap();
    let svc = layer.layer(crate::HttpService::new(service_fn(
        |req: crate::Request| async move {
            req.into_body().collect().await?;
            Ok::<_, crate::Error>(http::Response::new(crate::empty_body()))
        },
    )));
    assert!(svc.clone().oneshot(declared(11)).await.is_err());
    assert!(svc.clone().oneshot(streamed(&[6, 6], None)).await.is_err());
    assert!(svc.clone().oneshot(declared(10)).await.is_ok());
    assert!(svc.oneshot(streamed(&[6], None)).await.is_ok());
    let text = handle.render();
    assert!(
        text.contains(r#"sidetrace_filter_body_too_large_total{filter="filters[0].max_body",listener="inbound",route=""} 2"#),
        "{text}"
    );
}

#[test]
fn sizes() {
    let table: &[(&str, Option<u64>)] = &[
        ("1", Some(1)),
        ("1048576", Some(1 << 20)),
        ("512B", Some(512)),
        ("1KiB", Some(1024)),
        ("1MiB", Some(1 << 20)),
        ("2 GiB", Some(2 << 30)),
        ("10kB", Some(10_000)),
        ("3MB", Some(3_000_000)),
        ("1GB", Some(1_000_000_000)),
        (" 64 KiB ", Some(64 << 10)),
        ("0", Some(0)),
        ("", None),
        ("MiB", None),
        ("1.5MiB", None),
        ("-1", None),
        ("1mib", None),
        ("1KB", None),
        ("1TiB", None),
        ("1 M iB", None),
        ("lots", None),
        ("18446744073709551616", None),
        ("17179869184GiB", None),
    ];
    for &(text, want) in table {
        let got = ByteSize::Text(text.into()).bytes();
        assert_eq!(got.as_ref().ok().copied(), want, "{text:?}: {got:?}");
    }
}

#[test]
fn validation_names_the_field() {
    for yaml in [
        "{ bytes: 0 }",
        "{ bytes: '0KiB' }",
        "{ bytes: lots }",
        "{ bytes: 1.5MiB }",
    ] {
        let c: MaxBodyConfig = serde_saphyr::from_str(yaml).unwrap();
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "bytes", "{yaml}");
        assert!(!e.message.is_empty());
        assert!(c.layer(&BuildContext::default()).is_err(), "{yaml}");
    }
    let err = serde_saphyr::from_str::<MaxBodyConfig>("{ bytes: 1MiB, max: 2 }").unwrap_err();
    assert!(err.to_string().contains("max"), "{err}");
    let c: MaxBodyConfig = serde_saphyr::from_str("{ bytes: 1MiB }").unwrap();
    assert_eq!(c.limit(), Ok(1 << 20));
    let c: MaxBodyConfig = serde_saphyr::from_str("{ bytes: 4096 }").unwrap();
    assert_eq!(c.bytes, ByteSize::Count(4096));
}

#[test]
fn configs_round_trip_through_serialize() {
    for yaml in ["{ bytes: 1MiB }", "{ bytes: 4096 }", "{ bytes: 10 kB }"] {
        let c: MaxBodyConfig = serde_saphyr::from_str(yaml).unwrap();
        let text = serde_saphyr::to_string(&c).unwrap();
        let again: MaxBodyConfig =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(c, again, "{text}");
        assert_eq!(c.limit(), again.limit());
    }
}
