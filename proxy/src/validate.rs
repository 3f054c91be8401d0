//! Requests whose target or authority is ambiguous are refused with 400
//! before any filter or the upstream sees them (RFC 9112 section 3.2,
//! RFC 9113 section 8.3.1): an app and the proxy must never disagree on
//! which host or path a request is for. Requests the listener marked as over
//! its in-flight budget ([`OverBudget`]) are refused with 503 here too, so
//! every layer above records them.

use std::task::{Context, Poll};

use filters::{
    classify::{BadRequest, Overloaded},
    HttpBody,
};
use futures_util::future::{Either, Ready};
use http::{header, Method, Request, Response, Version};

/// Put in a request's extensions by the listener when the listener already
/// has its maximum of requests in flight.
#[derive(Clone, Copy, Debug)]
pub struct OverBudget {
    /// The listener's `max_requests_in_flight`.
    pub max: usize,
}

/// Refuses ambiguous requests; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct ValidateLayer;

/// The service of [`ValidateLayer`].
#[derive(Clone, Debug)]
pub struct Validate<S> {
    inner: S,
}

// === impl ValidateLayer ===

impl<S> tower::Layer<S> for ValidateLayer {
    type Service = Validate<S>;

    fn layer(&self, inner: S) -> Validate<S> {
        Validate { inner }
    }
}

// === impl Validate ===

impl<S> tower::Service<Request<HttpBody>> for Validate<S>
where
    S: tower::Service<Request<HttpBody>, Response = Response<HttpBody>, Error = filters::Error>,
{
    type Response = Response<HttpBody>;
    type Error = filters::Error;
    type Future = Either<Ready<Result<Response<HttpBody>, filters::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<HttpBody>) -> Self::Future {
        if let Some(over) = req.extensions().get::<OverBudget>() {
            let error = Overloaded { max: over.max }.into();
            return Either::Left(futures_util::future::ready(Err(error)));
        }
        match check(&req) {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(reason) => {
                tracing::warn!(method = %req.method(), reason, "ambiguous request refused (400)");
                Either::Left(futures_util::future::ready(Err(BadRequest(reason).into())))
            }
        }
    }
}

/// Why `req` is ambiguous, if it is.
pub fn check<B>(req: &Request<B>) -> Result<(), &'static str> {
    let uri = req.uri();
    // origin-form (`/path`), absolute-form (`http://host/path`), and the two
    // special forms for the two methods that have them.
    let target_ok = match (uri.scheme(), req.method()) {
        (Some(_), _) | (None, &Method::CONNECT) => true,
        (None, method) => {
            uri.path_and_query().is_some()
                && (uri.path().starts_with('/') || (method == Method::OPTIONS && uri.path() == "*"))
        }
    };
    if !target_ok {
        return Err("request target is not a path");
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    match req.version() {
        Version::HTTP_11 if host.is_none() => Err("HTTP/1.1 request without Host"),
        Version::HTTP_2 => match (host, uri.authority()) {
            (Some(host), Some(authority))
                if !host
                    .as_bytes()
                    .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
            {
                Err("Host header differs from :authority")
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, method: Method, target: &str, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::builder()
            .version(version)
            .method(method)
            .uri(target);
        for h in hosts {
            builder = builder.header(header::HOST, *h);
        }
        builder.body(()).unwrap()
    }

    type Verdict = Result<(), &'static str>;

    #[test]
    fn ambiguous_requests_are_refused() {
        use Version as V;
        type Row = (V, Method, &'static str, &'static [&'static str], Verdict);
        let table: &[Row] = &[
            (V::HTTP_11, Method::GET, "/a?b", &["app"], Ok(())),
            (V::HTTP_11, Method::GET, "http://app/a", &["app"], Ok(())),
            (V::HTTP_11, Method::OPTIONS, "*", &["app"], Ok(())),
            (V::HTTP_10, Method::GET, "/", &[], Ok(())),
            (
                V::HTTP_11,
                Method::GET,
                "/",
                &[],
                Err("HTTP/1.1 request without Host"),
            ),
            (
                V::HTTP_11,
                Method::GET,
                "/",
                &["a", "b"],
                Err("more than one Host header"),
            ),
            (
                V::HTTP_11,
                Method::GET,
                "/",
                &["a", "a"],
                Err("more than one Host header"),
            ),
            (
                V::HTTP_11,
                Method::GET,
                "abc",
                &["app"],
                Err("request target is not a path"),
            ),
            (
                V::HTTP_11,
                Method::GET,
                "*",
                &["app"],
                Err("request target is not a path"),
            ),
            (V::HTTP_2, Method::GET, "http://app/a", &[], Ok(())),
            (V::HTTP_2, Method::GET, "http://app/a", &["APP"], Ok(())),
            (
                V::HTTP_2,
                Method::GET,
                "http://app/a",
                &["evil"],
                Err("Host header differs from :authority"),
            ),
        ];
        for (version, method, target, hosts, want) in table {
            let got = check(&req(*version, method.clone(), target, hosts));
            assert_eq!(got, *want, "{version:?} {method} {target} {hosts:?}");
        }
    }
}
