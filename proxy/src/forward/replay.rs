//! Sending a bodiless request again from a copy of its head: once more when
//! the app never began to answer because it closed the connection (a
//! pooled keep-alive connection it had just closed, most often), only when
//! the request is safe to replay: an idempotent method and no body, so a
//! second delivery changes nothing and nothing has to be kept but the head;
//! and over HTTP/1.1 when an app not yet known to speak HTTP/2 turns out
//! not to ([`super::protocol`]).

use filters::HttpBody;
use http::{
    header::{self, HeaderValue},
    HeaderMap, Method, Request, Uri, Version,
};

/// The head of a bodiless request, kept to send it again.
pub(super) struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    version: Version,
}

impl Replay {
    /// What resends `req`, when it is safe to replay (RFC 9110 §9.2.2:
    /// idempotent methods; and with no body, nothing else to keep).
    pub(super) fn of(req: &Request<HttpBody>) -> Option<Self> {
        use http_body::Body;
        let idempotent = matches!(
            *req.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        (idempotent && req.body().is_end_stream()).then(|| Self::capture(req))
    }

    /// The head of `req` (ready to send), whatever its method; the caller
    /// knows it has no body.
    pub(super) fn capture(req: &Request<HttpBody>) -> Self {
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
            version: req.version(),
        }
    }

    /// The request again, with no body.
    pub(super) fn into_request(self) -> Request<HttpBody> {
        let mut req = Request::new(filters::empty_body());
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.headers_mut() = self.headers;
        *req.version_mut() = self.version;
        req
    }

    /// The request again, over HTTP/1.1 (with `Host`, which HTTP/2 left out).
    pub(super) fn into_http1(mut self) -> Request<HttpBody> {
        if let Some(host) = self
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            self.headers.entry(header::HOST).or_insert(host);
        }
        self.version = Version::HTTP_11;
        self.into_request()
    }
}

/// Whether the app closed (or reset) the connection before any of the
/// response: the request may not have been processed, and a connection it
/// had just closed looks exactly like this. Refused connects, timeouts and
/// protocol errors are not this.
pub(super) fn closed_before_head(e: &hyper_util::client::legacy::Error) -> bool {
    if e.is_connect() {
        return false;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return true;
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) {
                return true;
            }
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, body: &'static [u8]) -> Request<HttpBody> {
        let body = if body.is_empty() {
            filters::empty_body()
        } else {
            filters::full_body(bytes::Bytes::from_static(body))
        };
        let mut req = Request::new(body);
        *req.method_mut() = method;
        req
    }

    #[test]
    fn only_idempotent_requests_without_a_body_are_replayed() {
        assert!(Replay::of(&req(Method::GET, b"")).is_some());
        assert!(Replay::of(&req(Method::DELETE, b"")).is_some());
        assert!(Replay::of(&req(Method::POST, b"")).is_none());
        assert!(Replay::of(&req(Method::PATCH, b"")).is_none());
        assert!(Replay::of(&req(Method::PUT, b"x")).is_none());
        let again = Replay::of(&req(Method::HEAD, b"")).unwrap().into_request();
        assert_eq!(again.method(), Method::HEAD);
    }

    #[test]
    fn the_http1_resend_keeps_the_head_and_adds_host() {
        let mut sent = req(Method::POST, b"");
        *sent.uri_mut() = Uri::from_static("http://app:8080/orders?id=1");
        *sent.version_mut() = Version::HTTP_2;
        sent.headers_mut()
            .insert("x-request-id", HeaderValue::from_static("42"));
        let again = Replay::capture(&sent).into_http1();
        assert_eq!(again.method(), Method::POST);
        assert_eq!(again.uri(), sent.uri());
        assert_eq!(again.version(), Version::HTTP_11);
        assert_eq!(again.headers()["x-request-id"], "42");
        assert_eq!(again.headers()[header::HOST], "app:8080");
    }
}
