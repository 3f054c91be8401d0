//! OTLP/gRPC without tonic at run time: one unary call,
//! `POST /opentelemetry.proto.collector.trace.v1.TraceService/Export`, over
//! a pooled HTTP/2 connection (h2c, or TLS offering only `h2` for an
//! `https://` collector), with gRPC's 5-byte message framing and the status
//! read from the trailers (or the headers of a trailers-only answer).

use std::{sync::Arc, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioTimer},
};

use super::{client, exporter::Attempt};
use crate::tls::client::{Alpn, ClientTls};

/// Sends export bodies as gRPC unary calls.
#[derive(Clone, Debug)]
pub struct GrpcTransport {
    client: client::ExportClient,
    target: Uri,
    headers: HeaderMap,
    gzip: bool,
}

/// gRPC codes the OTLP specification says to retry.
const RETRYABLE: [u16; 5] = [
    1,  // CANCELLED
    4,  // DEADLINE_EXCEEDED
    8,  // RESOURCE_EXHAUSTED
    10, // ABORTED
    14, // UNAVAILABLE
];

/// A gRPC message: compressed flag, big-endian length, payload.
pub fn frame(message: &[u8], compressed: bool) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + message.len());
    buf.put_u8(u8::from(compressed));
    buf.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    buf.put_slice(message);
    buf.freeze()
}

// === impl GrpcTransport ===

impl GrpcTransport {
    /// A transport calling `target` (scheme, authority and the Export
    /// path); `tls` reaches an `https://` target.
    pub fn new(target: Uri, headers: HeaderMap, gzip: bool, tls: Option<Arc<ClientTls>>) -> Self {
        let connector = client::connector(tls, Alpn::H2);
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Self {
            client,
            target,
            headers,
            gzip,
        }
    }

    /// One attempt: `message` is the encoded request (gzipped when configured).
    pub async fn send(&self, message: Bytes) -> Attempt {
        let mut req = Request::new(Full::new(frame(&message, self.gzip)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.target.clone();
        *req.version_mut() = http::Version::HTTP_2;
        let h = req.headers_mut();
        h.extend(self.headers.clone());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        if self.gzip {
            h.insert("grpc-encoding", HeaderValue::from_static("gzip"));
        }
        let captured = client::capture(&self.target, &mut req);
        let resp = match self.client.request(req).await {
            Ok(resp) => resp,
            Err(e) => return client::unreachable(&e, captured.as_ref()),
        };
        let status = resp.status();
        if status != StatusCode::OK {
            // An HTTP error before gRPC: the HTTP mapping applies.
            return super::http::classify_status(status, super::http::retry_after(resp.headers()));
        }
        if let Some(code) = grpc_status(resp.headers()) {
            return classify_code(code, resp.headers());
        }
        match resp.into_body().collect().await {
            Ok(collected) => match collected.trailers().and_then(grpc_status) {
                Some(code) => {
                    classify_code(code, collected.trailers().unwrap_or(&HeaderMap::new()))
                }
                None => Attempt::Fail("collector answered without grpc-status".into()),
            },
            Err(e) => Attempt::Retry(format!("response stream failed: {e}"), None),
        }
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u16> {
    filters::classify::GrpcCode::from_headers(headers).map(|code| code.0)
}

/// What a gRPC status means for the batch.
pub(crate) fn classify_code(code: u16, headers: &HeaderMap) -> Attempt {
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or_default();
    if code == 0 {
        Attempt::Done
    } else if RETRYABLE.contains(&code) {
        Attempt::Retry(
            format!("collector answered grpc-status {code} {message}"),
            None,
        )
    } else {
        Attempt::Fail(format!(
            "collector rejected the batch: grpc-status {code} {message}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        let f = frame(b"abc", false);
        assert_eq!(&f[..], &[0, 0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(frame(b"", true)[0], 1);
    }

    #[test]
    fn codes() {
        let table: &[(u16, &str)] = &[
            (0, "done"),
            (14, "retry"),
            (8, "retry"),
            (4, "retry"),
            (3, "fail"),
            (12, "fail"),
            (16, "fail"),
        ];
        for (code, want) in table {
            let got = match classify_code(*code, &HeaderMap::new()) {
                Attempt::Done => "done",
                Attempt::Retry(..) => "retry",
                Attempt::Fail(_) => "fail",
            };
            assert_eq!(got, *want, "{code}");
        }
    }
}
