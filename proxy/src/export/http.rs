//! OTLP/HTTP: `POST {endpoint}/v1/traces` with a protobuf body, over TLS
//! offering only `http/1.1` for an `https://` collector.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use super::{client, exporter::Attempt};
use crate::tls::client::{Alpn, ClientTls};

/// Sends export bodies over HTTP/1.1 with a pooled keep-alive connection.
#[derive(Clone, Debug)]
pub struct HttpTransport {
    client: client::ExportClient,
    target: Uri,
    headers: HeaderMap,
    gzip: bool,
}

// === impl HttpTransport ===

impl HttpTransport {
    /// A transport posting to `target` (the full `/v1/traces` URL); `tls`
    /// reaches an `https://` target.
    pub fn new(target: Uri, headers: HeaderMap, gzip: bool, tls: Option<Arc<ClientTls>>) -> Self {
        let connector = client::connector(tls, Alpn::Http1);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(connector);
        Self {
            client,
            target,
            headers,
            gzip,
        }
    }

    /// One attempt: `body` is already encoded (and gzipped when configured).
    pub async fn send(&self, body: Bytes) -> Attempt {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.target.clone();
        let h = req.headers_mut();
        h.extend(self.headers.clone());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        if self.gzip {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let captured = client::capture(&self.target, &mut req);
        let resp = match self.client.request(req).await {
            Ok(resp) => resp,
            Err(e) => return client::unreachable(&e, captured.as_ref()),
        };
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        // Read the body so the connection goes back to the pool.
        let body = resp.into_body().collect().await;
        if status.is_success() {
            return match body {
                Ok(_) => Attempt::Done,
                Err(e) => Attempt::Retry(format!("response body failed: {e}"), None),
            };
        }
        classify_status(status, retry_after)
    }
}

/// Retryable statuses per the OTLP/HTTP specification.
pub(crate) fn classify_status(status: StatusCode, retry_after: Option<Duration>) -> Attempt {
    match status.as_u16() {
        429 | 502 | 503 | 504 => {
            Attempt::Retry(format!("collector answered {status}"), retry_after)
        }
        _ => Attempt::Fail(format!("collector rejected the batch with {status}")),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is ignored).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let table: &[(u16, bool)] = &[
            (429, true),
            (502, true),
            (503, true),
            (504, true),
            (400, false),
            (401, false),
            (404, false),
            (500, false),
        ];
        for (code, retry) in table {
            let a = classify_status(StatusCode::from_u16(*code).unwrap(), None);
            assert_eq!(matches!(a, Attempt::Retry(..)), *retry, "{code}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
