//! The clients: HTTP/1.1 (the lean client in [`super::h1`]), h2c (one hyper
//! HTTP/2 connection per bench connection), and gRPC as h2c with a
//! length-prefixed body, `te: trailers`, and `grpc-status` read from the
//! trailers (or trailers-only headers).
//!
//! The request is built once ([`Target`]): HTTP/1.1 bytes are serialized once;
//! for HTTP/2 the body is a `Bytes` handle and the URI and headers are cloned,
//! nothing is re-parsed.

use std::{future::Future, net::SocketAddr, pin::Pin};

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{net::TcpStream, time::Duration};

use super::{
    args::{BenchConfig, Protocol},
    h1,
    stats::{Failure, Outcome},
    BenchError,
};

/// Request body type.
type ReqBody = Full<Bytes>;

/// A connection's request handle.
#[derive(Debug)]
pub(super) enum Sender {
    /// HTTP/1.1: one request at a time; moved into the request and handed back.
    H1(h1::Conn),
    /// HTTP/2: cloned per stream.
    H2(http2::SendRequest<ReqBody>),
}

impl Sender {
    /// A handle for one more concurrent request (HTTP/2 only).
    pub(super) fn stream(&self) -> Option<Self> {
        match self {
            Self::H1(_) => None,
            Self::H2(s) => Some(Self::H2(s.clone())),
        }
    }

    /// Whether the connection can take no more requests.
    pub(super) fn is_closed(&self) -> bool {
        match self {
            Self::H1(c) => c.is_closed(),
            Self::H2(s) => s.is_closed(),
        }
    }
}

/// Drives a connection's I/O; polled by the connection's own task.
pub(super) type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What to send, where, prepared once per run.
#[derive(Debug)]
pub(super) struct Target {
    addr: SocketAddr,
    protocol: Protocol,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    /// HTTP/1.1: the whole request, serialized once.
    h1_request: Bytes,
    timeout: Duration,
}

impl Target {
    /// Resolves the host and prepares the request template.
    pub(super) async fn new(config: &BenchConfig) -> Result<Self, BenchError> {
        let authority = config
            .url
            .authority()
            .ok_or_else(|| BenchError::Invalid("URL has no host".into()))?;
        let host_port = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let addr = tokio::net::lookup_host(&host_port)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| BenchError::Resolve(host_port.clone()))?;
        let mut headers = HeaderMap::new();
        let (uri, body) = match config.protocol {
            Protocol::Http1 => {
                let host = HeaderValue::from_str(authority.as_str())
                    .map_err(|_| BenchError::Invalid("bad host".into()))?;
                headers.insert(header::HOST, host);
                let path = config.url.path_and_query().map_or("/", |p| p.as_str());
                let uri = path
                    .parse()
                    .map_err(|_| BenchError::Invalid("bad path".into()))?;
                (uri, config.body.clone())
            }
            Protocol::H2c => (config.url.clone(), config.body.clone()),
            Protocol::Grpc => {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                headers.insert(header::TE, HeaderValue::from_static("trailers"));
                let mut framed = BytesMut::with_capacity(config.body.len() + 5);
                framed.put_u8(0);
                framed.put_u32(
                    u32::try_from(config.body.len())
                        .map_err(|_| BenchError::Invalid("gRPC message over 4 GiB".into()))?,
                );
                framed.put_slice(&config.body);
                (config.url.clone(), framed.freeze())
            }
        };
        for (name, value) in &config.headers {
            headers.append(name, value.clone());
        }
        let h1_request = if config.protocol == Protocol::Http1 {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            h1::serialize(&config.method, path, &headers, &body)
        } else {
            Bytes::new()
        };
        Ok(Self {
            addr,
            protocol: config.protocol,
            method: config.method.clone(),
            uri,
            headers,
            body,
            h1_request,
            timeout: config.timeout,
        })
    }

    /// Request body bytes sent per request (gRPC: including the frame header).
    pub(super) fn body_len(&self) -> u64 {
        self.body.len() as u64
    }

    /// The per-request timeout.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One HTTP/1.1 exchange, without a timeout (the caller keeps one per
    /// connection); on `Err` the connection is unusable.
    pub(super) async fn h1_exchange(&self, conn: &mut h1::Conn) -> Result<Outcome, Failure> {
        conn.exchange(&self.h1_request, self.method == Method::HEAD)
            .await
    }

    /// Opens a connection: TCP connect plus the HTTP handshake, within the timeout.
    pub(super) async fn connect(&self) -> Result<(Sender, Driver), Failure> {
        let handshake = async {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|_| Failure::Connect)?;
            let _ = stream.set_nodelay(true);
            match self.protocol {
                Protocol::Http1 => {
                    // The lean client does its I/O inside each exchange.
                    let driver: Driver = Box::pin(std::future::pending());
                    Ok((Sender::H1(h1::Conn::new(stream)), driver))
                }
                Protocol::H2c | Protocol::Grpc => {
                    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                        .timer(TokioTimer::new())
                        .initial_stream_window_size(1 << 20)
                        .initial_connection_window_size(8 << 20)
                        .handshake(TokioIo::new(stream))
                        .await
                        .map_err(|_| Failure::Connect)?;
                    let driver: Driver = Box::pin(async move {
                        let _ = conn.await;
                    });
                    Ok((Sender::H2(sender), driver))
                }
            }
        };
        tokio::time::timeout(self.timeout, handshake)
            .await
            .unwrap_or(Err(Failure::Connect))
    }

    fn request(&self) -> Request<ReqBody> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        if self.protocol != Protocol::Http1 {
            *req.version_mut() = http::Version::HTTP_2;
        }
        req
    }

    /// Sends one request and reads the whole response within the timeout.
    /// Hands the sender back unless the connection must be replaced
    /// (a timed-out HTTP/1.1 exchange leaves it in an unknown state).
    pub(super) async fn send(&self, sender: Sender) -> (Option<Sender>, Outcome) {
        match tokio::time::timeout(self.timeout, self.exchange(sender)).await {
            Ok(done) => done,
            Err(_) => (None, Outcome::Failed(Failure::Timeout)),
        }
    }

    async fn exchange(&self, sender: Sender) -> (Option<Sender>, Outcome) {
        let mut sender = match sender {
            Sender::H1(mut conn) => {
                return match self.h1_exchange(&mut conn).await {
                    Ok(outcome) => (Some(Sender::H1(conn)), outcome),
                    Err(failure) => (None, Outcome::Failed(failure)),
                };
            }
            Sender::H2(s) => s,
        };
        let sent = sender.send_request(self.request()).await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => return (None, Outcome::Failed(classify(&e))),
        };
        let status = resp.status().as_u16();
        let mut grpc = grpc_status(resp.headers());
        let mut body = resp.into_body();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => received += data.len() as u64,
                    Err(frame) => {
                        if let Some(t) = frame.trailers_ref() {
                            grpc = grpc.or_else(|| grpc_status(t));
                        }
                    }
                },
                Err(e) => return (None, Outcome::Failed(classify(&e))),
            }
        }
        if self.protocol == Protocol::Grpc && grpc.is_none() && status == 200 {
            return (Some(Sender::H2(sender)), Outcome::Failed(Failure::Other));
        }
        let grpc = if self.protocol == Protocol::Grpc {
            grpc
        } else {
            None
        };
        (
            Some(Sender::H2(sender)),
            Outcome::Response {
                status,
                grpc,
                received,
            },
        )
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u16> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Maps a hyper error to a category: unparsable or refused by hyper itself
/// is "other"; everything else (closed, reset, incomplete) is "reset".
fn classify(e: &hyper::Error) -> Failure {
    if e.is_timeout() {
        Failure::Timeout
    } else if e.is_parse() || e.is_parse_status() || e.is_user() {
        Failure::Other
    } else {
        Failure::Reset
    }
}
