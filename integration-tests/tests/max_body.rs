//! The `max_body` filter through the real proxy against a real upstream
//! that counts what reaches it: a declared length over the limit never
//! reaches the upstream, a chunked body over it is cut and answered 413, a
//! body within it arrives whole, and over h2c only the offending stream
//! fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use integration::{client::Client, metric_sum, proxy::Proxy, PATIENCE};
use parking_lot::Mutex;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};

const LIMIT: usize = 1024;

/// What the upstream saw.
#[derive(Default)]
struct Seen {
    /// Request heads that arrived.
    requests: AtomicUsize,
    /// Bodies read to their end, with their length and the request's version.
    complete: Mutex<Vec<(usize, Version)>>,
    /// Bodies that broke off before their end.
    broken: AtomicUsize,
}

/// An HTTP/1.1 and h2c app. It reads every request body to the end and
/// answers `200` with the byte count, except `/early`, answered `200 early`
/// at once without reading the body.
async fn counting_upstream() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let state = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let state = state.clone();
                    async move {
                        state.requests.fetch_add(1, Ordering::SeqCst);
                        if req.uri().path() == "/early" {
                            return Ok::<_, Infallible>(Response::new(Full::new(
                                Bytes::from_static(b"early"),
                            )));
                        }
                        let version = req.version();
                        match req.into_body().collect().await {
                            Ok(body) => {
                                let n = body.to_bytes().len();
                                state.complete.lock().push((n, version));
                                Ok(Response::new(Full::new(Bytes::from(n.to_string()))))
                            }
                            Err(_) => {
                                state.broken.fetch_add(1, Ordering::SeqCst);
                                Ok(Response::new(Full::new(Bytes::new())))
                            }
                        }
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn proxy_for(upstream: SocketAddr) -> Proxy {
    Proxy::from_yaml("filters:\n  - max_body: { bytes: 1KiB }\n")
        .upstream(format!("http://{upstream}"))
        .run()
        .await
}

type Body = BoxBody<Bytes, Infallible>;

/// A body of `chunks` data frames whose length is not declared: chunked
/// over HTTP/1.1, DATA frames without `content-length` over HTTP/2.
fn chunked(chunks: &[usize]) -> Body {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
        .iter()
        .map(|&n| Ok(Frame::data(Bytes::from(vec![b'x'; n]))))
        .collect();
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

fn http1_client(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

async fn collect(resp: Response<Incoming>) -> (StatusCode, http::HeaderMap, String) {
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("body in time")
        .expect("body read")
        .to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn metrics(proxy: &Proxy) -> String {
    Client::http1()
        .get(&proxy.admin_url("/metrics"))
        .await
        .text()
}

fn refused(text: &str) -> f64 {
    metric_sum(
        text,
        "sidetrace_filter_body_too_large_total",
        &[
            ("filter", "filters[0].max_body"),
            ("listener", "inbound"),
            ("route", ""),
        ],
    )
}

fn assert_413(status: StatusCode, headers: &http::HeaderMap, body: &str) {
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(headers["x-sidetrace-error"], "VALIDATION");
    assert!(body.contains("body_too_large"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_over_the_limit_never_reaches_the_upstream() {
    let (up, seen) = counting_upstream().await;
    let proxy = proxy_for(up).await;
    let client = Client::http1();
    let resp = client
        .send(
            client
                .request("POST", &proxy.url("/upload"))
                .body(Full::new(Bytes::from(vec![b'x'; LIMIT + 1])))
                .unwrap(),
        )
        .await;
    assert_413(resp.status, &resp.headers, &resp.text());
    assert_eq!(
        seen.requests.load(Ordering::SeqCst),
        0,
        "upstream untouched"
    );

    let text = metrics(&proxy).await;
    assert_eq!(refused(&text), 1.0, "{text}");
    // The classification reaches the RED metrics as it does the span and
    // the access log: one source.
    assert_eq!(
        metric_sum(
            &text,
            "http_server_request_duration_seconds_count",
            &[
                ("error_type", "body_too_large"),
                ("failure_category", "VALIDATION"),
                ("http_response_status_code", "413"),
            ],
        ),
        1.0,
        "{text}"
    );

    // Exactly the limit, declared, passes whole.
    let resp = client
        .send(
            client
                .request("POST", &proxy.url("/upload"))
                .body(Full::new(Bytes::from(vec![b'x'; LIMIT])))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.text(), LIMIT.to_string());
    proxy.shutdown();
}

/// Reads from `stream` until `needle` has arrived (or the peer closed),
/// within [`PATIENCE`].
async fn read_until(stream: &mut tokio::net::TcpStream, needle: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains(needle) {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("the proxy answers in time")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Over HTTP/1.1 the rest of a refused body decides the connection's fate:
/// the proxy skips what it already holds and keeps the connection (the
/// next request is served on it); a body still arriving cannot be skipped,
/// so the proxy answers and closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http1_the_connection_survives_when_the_rest_of_the_body_is_in() {
    let (up, seen) = counting_upstream().await;
    // Idle connections are kept far longer than the test waits: a close
    // seen here is the proxy's decision, not a timeout.
    let proxy = Proxy::from_yaml(
        "limits: { header_read_timeout: 60s, idle_timeout: 60s }\nfilters:\n  - max_body: { bytes: 1KiB }\n",
    )
    .upstream(format!("http://{up}"))
    .run()
    .await;
    let chunk = |n: usize| [format!("{n:x}\r\n").as_bytes(), &vec![b'x'; n], b"\r\n"].concat();
    let declared = [
        format!(
            "POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            2 * LIMIT
        )
        .as_bytes(),
        &vec![b'x'; 2 * LIMIT],
    ]
    .concat();
    let streamed = [
        &b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"[..],
        &chunk(LIMIT),
        &chunk(LIMIT),
        b"0\r\n\r\n",
    ]
    .concat();
    for request in [declared, streamed] {
        let mut stream = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
        // One write: the whole body is in the proxy's buffer when it refuses.
        stream.write_all(&request).await.unwrap();
        let text = read_until(&mut stream, "body_too_large\n").await;
        assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
        assert!(text.contains("x-sidetrace-error: VALIDATION"), "{text}");
        stream
            .write_all(b"POST /next HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc")
            .await
            .unwrap();
        let text = read_until(&mut stream, "\r\n\r\n3").await;
        assert!(
            text.starts_with("HTTP/1.1 200 "),
            "the same connection serves the next: {text}"
        );
    }

    // 1 MiB declared, 16 KiB sent: the rest is not there to skip.
    let mut stream = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        1 << 20
    );
    stream
        .write_all(&[head.as_bytes(), &[b'x'; 16 << 10]].concat())
        .await
        .unwrap();
    let mut out = Vec::new();
    // A reset after the answer (data the proxy never read) is a close too.
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");

    assert_eq!(
        *seen.complete.lock(),
        [(3, Version::HTTP_11), (3, Version::HTTP_11)],
        "only the follow-up requests reached the app"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_limit_is_cut_and_answered_413() {
    let (up, seen) = counting_upstream().await;
    let proxy = proxy_for(up).await;
    let req = Request::post(proxy.url("/upload"))
        .body(chunked(&[512, 512, 512, 512]))
        .unwrap();
    let resp = tokio::time::timeout(PATIENCE, http1_client().request(req))
        .await
        .expect("answer in time")
        .expect("an answer, not a broken connection");
    assert!(resp.headers().get("content-length").is_some());
    let (status, headers, body) = collect(resp).await;
    assert_413(status, &headers, &body);
    // The proxy forwards while it counts: the head and up to 1 KiB may have
    // left before the count passed the limit (the connection is then cut
    // and the app sees its body break off), or the connection may be cut
    // before the app has parsed the head at all. Never a complete body.
    let heads = seen.requests.load(Ordering::SeqCst);
    assert!(heads <= 1, "{heads}");
    integration::assert_eventually!(
        seen.broken.load(Ordering::SeqCst) == heads,
        "every head the app saw had its body cut"
    );
    assert!(seen.complete.lock().is_empty());
    assert_eq!(refused(&metrics(&proxy).await), 1.0);
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_within_the_limit_arrives_whole() {
    let (up, seen) = counting_upstream().await;
    let proxy = proxy_for(up).await;
    for chunks in [&[256, 256, 256][..], &[512, 512]] {
        let req = Request::post(proxy.url("/upload"))
            .body(chunked(chunks))
            .unwrap();
        let resp = tokio::time::timeout(PATIENCE, http1_client().request(req))
            .await
            .expect("answer in time")
            .unwrap();
        let (status, _, body) = collect(resp).await;
        let sent: usize = chunks.iter().sum();
        assert_eq!((status, body), (StatusCode::OK, sent.to_string()));
    }
    assert_eq!(
        *seen.complete.lock(),
        [(768, Version::HTTP_11), (1024, Version::HTTP_11)]
    );
    assert_eq!(refused(&metrics(&proxy).await), 0.0);
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_answered_first_keeps_its_answer() {
    let (up, seen) = counting_upstream().await;
    let proxy = proxy_for(up).await;
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let frames =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let req = Request::post(proxy.url("/early"))
        .body(StreamBody::new(frames).boxed())
        .unwrap();
    tx.send(Ok(Frame::data(Bytes::from(vec![b'x'; 512]))))
        .await
        .unwrap();
    let client = http1_client();
    let resp = tokio::time::timeout(PATIENCE, client.request(req));
    // The answer comes before the body passes the limit...
    let resp = resp.await.expect("answer in time").unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // ... and the rest of the body, over the limit, does not take it back.
    let _ = tx
        .send(Ok(Frame::data(Bytes::from(vec![b'x'; 1024]))))
        .await;
    drop(tx);
    let (status, headers, body) = collect(resp).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "early"));
    assert!(headers.get("x-sidetrace-error").is_none());
    assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_h2c_only_the_stream_fails_and_the_connection_serves_the_next() {
    let (up, seen) = counting_upstream().await;
    let proxy = proxy_for(up).await;
    let stream = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(conn);

    let over = Request::post(proxy.url("/upload"))
        .version(Version::HTTP_2)
        .body(chunked(&[512, 512, 512]))
        .unwrap();
    let resp = tokio::time::timeout(PATIENCE, send.send_request(over))
        .await
        .expect("answer in time")
        .expect("the stream is answered, not reset");
    let (status, headers, body) = collect(resp).await;
    assert_413(status, &headers, &body);

    for chunks in [&[512, 512][..], &[100]] {
        let within = Request::post(proxy.url("/upload"))
            .version(Version::HTTP_2)
            .body(chunked(chunks))
            .unwrap();
        let resp = tokio::time::timeout(PATIENCE, send.send_request(within))
            .await
            .expect("answer in time")
            .expect("the same connection serves the next request");
        let (status, _, body) = collect(resp).await;
        let sent: usize = chunks.iter().sum();
        assert_eq!((status, body), (StatusCode::OK, sent.to_string()));
    }
    assert!(!connection.is_finished(), "the client connection is open");
    // The refused stream was the first this proxy sent the app over
    // HTTP/2: it must not be taken for an app that cannot speak it.
    assert_eq!(
        *seen.complete.lock(),
        [(1024, Version::HTTP_2), (100, Version::HTTP_2)]
    );
    assert_eq!(refused(&metrics(&proxy).await), 1.0);
    proxy.shutdown();
}
