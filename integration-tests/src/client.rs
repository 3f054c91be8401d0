//! HTTP clients for tests: HTTP/1.1 and h2c (prior knowledge), and raw TCP.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client as HyperClient},
    rt::TokioExecutor,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A response read whole.
#[derive(Debug)]
pub struct Collected {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Trailers, if any.
    pub trailers: Option<HeaderMap>,
}

impl Collected {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// An HTTP client speaking one protocol.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
    version: Version,
}

impl Client {
    /// HTTP/1.1 with keep-alive.
    pub fn http1() -> Self {
        Self {
            inner: HyperClient::builder(TokioExecutor::new()).build_http(),
            version: Version::HTTP_11,
        }
    }

    /// HTTP/2 prior knowledge.
    pub fn h2c() -> Self {
        Self {
            inner: HyperClient::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
            version: Version::HTTP_2,
        }
    }

    /// A request builder with this client's version.
    pub fn request(&self, method: &str, url: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(url)
            .version(self.version)
    }

    /// GET `url`.
    pub async fn get(&self, url: &str) -> Collected {
        self.send(
            self.request("GET", url)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
    }

    /// Sends `total` GETs of `url` from `concurrency` tasks sharing this
    /// client; returns how many were answered 200. The load that shows a
    /// collector down or slow costs requests nothing.
    pub async fn load(&self, url: &str, total: usize, concurrency: usize) -> usize {
        let ok = Arc::new(AtomicUsize::new(0));
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (client, url) = (self.clone(), url.to_string());
            let (ok, next) = (ok.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                while next.fetch_add(1, Ordering::SeqCst) < total {
                    if client.get(&url).await.status == StatusCode::OK {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        ok.load(Ordering::SeqCst)
    }

    /// Sends and reads the whole response, within [`crate::PATIENCE`].
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Collected {
        let resp = self.send_streaming(req).await;
        collect(resp).await
    }

    /// Sends and returns the response with its body unread.
    pub async fn send_streaming(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Response<hyper::body::Incoming> {
        tokio::time::timeout(crate::PATIENCE, self.inner.request(req))
            .await
            .expect("response in time")
            .expect("request succeeded")
    }
}

/// Reads a response whole, within [`crate::PATIENCE`].
pub async fn collect(resp: Response<hyper::body::Incoming>) -> Collected {
    let (parts, body) = resp.into_parts();
    let collected = tokio::time::timeout(crate::PATIENCE, body.collect())
        .await
        .expect("body in time")
        .expect("body read");
    let trailers = collected.trailers().cloned();
    Collected {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

/// Writes raw bytes to `addr` and reads until the server closes or
/// [`crate::PATIENCE`] passes; returns what came back.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(crate::PATIENCE, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
