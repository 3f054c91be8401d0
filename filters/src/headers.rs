#![doc = include_str!("../../docs/filters/headers.md")]

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderMap, HeaderName, HeaderValue};
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use tower::{Layer, Service};

use crate::{
    registry::{BuildContext, ConfigError, Filter},
    secret::SecretHeaders,
    HttpLayer,
};

/// Config of the `headers` filter.
#[derive(Clone, Debug, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// Headers appended to the request before it goes upstream. The values
    /// may be credentials (an `authorization` for the app): rendered as
    /// `[REDACTED]`.
    #[serde(default)]
    pub request_add: SecretHeaders,
    /// Headers removed from the request (before `request_add` applies).
    #[serde(default)]
    pub request_remove: Vec<String>,
    /// Headers appended to the response before it goes back to the client;
    /// rendered as `[REDACTED]` like `request_add`.
    #[serde(default)]
    pub response_add: SecretHeaders,
    /// Headers removed from the response (before `response_add` applies).
    #[serde(default)]
    pub response_remove: Vec<String>,
}

/// Parsed header edits for one direction, built once per chain.
#[derive(Clone, Debug, Default)]
pub struct HeaderEdits {
    remove: Box<[HeaderName]>,
    add: Box<[(HeaderName, HeaderValue)]>,
}

/// Applies [`Headers`] to a service.
#[derive(Clone, Debug)]
pub struct HeadersLayer {
    edits: Arc<Edits>,
}

/// Edits request headers on the way in and response headers on the way out.
#[derive(Clone, Debug)]
pub struct Headers<S> {
    inner: S,
    edits: Arc<Edits>,
}

#[derive(Debug, Default)]
struct Edits {
    request: HeaderEdits,
    response: HeaderEdits,
}

pin_project! {
    /// Response future of [`Headers`]: edits the response head when it arrives.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // `None` when there is nothing to do on the response.
        edits: Option<Arc<Edits>>,
    }
}

/// Headers that frame the message or the connection; editing them would
/// break the exchange, so the filter refuses them.
const FORBIDDEN: [HeaderName; 8] = [
    http::header::CONNECTION,
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

// === impl HeadersConfig ===

impl HeadersConfig {
    fn parse(&self) -> Result<Edits, ConfigError> {
        Ok(Edits {
            request: HeaderEdits::parse(
                ("request_add", &self.request_add),
                ("request_remove", &self.request_remove),
            )?,
            response: HeaderEdits::parse(
                ("response_add", &self.response_add),
                ("response_remove", &self.response_remove),
            )?,
        })
    }
}

impl Filter for HeadersConfig {
    const NAME: &'static str = "headers";

    fn validate(&self) -> Result<(), ConfigError> {
        self.parse().map(drop)
    }

    fn layer(&self, _: &BuildContext) -> Result<HttpLayer, ConfigError> {
        Ok(HttpLayer::new(HeadersLayer {
            edits: Arc::new(self.parse()?),
        }))
    }
}

// === impl HeaderEdits ===

impl HeaderEdits {
    /// Edits that remove `remove`, then append `add`.
    pub fn new(
        remove: impl IntoIterator<Item = HeaderName>,
        add: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
    ) -> Self {
        Self {
            remove: remove.into_iter().collect(),
            add: add.into_iter().collect(),
        }
    }

    fn parse(
        (add_field, add): (&'static str, &BTreeMap<String, String>),
        (remove_field, remove): (&'static str, &[String]),
    ) -> Result<Self, ConfigError> {
        let remove = remove
            .iter()
            .map(|name| parse_name(remove_field, name))
            .collect::<Result<Box<[_]>, _>>()?;
        let add = add
            .iter()
            .map(|(name, value)| {
                let name = parse_name(add_field, name)?;
                let value = HeaderValue::from_str(value).map_err(|_| ConfigError {
                    field: add_field,
                    message: format!(
                        "invalid value {value:?} for header {name}: use visible ASCII, spaces and tabs"
                    ),
                })?;
                Ok((name, value))
            })
            .collect::<Result<Box<[_]>, _>>()?;
        Ok(Self { remove, add })
    }

    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }

    /// Removes, then appends. Clones of parsed names and values share their
    /// bytes, so this allocates only when the map itself grows.
    fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

fn parse_name(field: &'static str, name: &str) -> Result<HeaderName, ConfigError> {
    let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| ConfigError {
        field,
        message: format!("invalid header name {name:?}"),
    })?;
    if FORBIDDEN.contains(&parsed) {
        return Err(ConfigError {
            field,
            message: format!("header {parsed} frames the message and cannot be edited"),
        });
    }
    Ok(parsed)
}

// === impl HeadersLayer ===

impl HeadersLayer {
    /// A layer applying `request` edits to requests and `response` edits to responses.
    pub fn new(request: HeaderEdits, response: HeaderEdits) -> Self {
        Self {
            edits: Arc::new(Edits { request, response }),
        }
    }
}

impl<S> Layer<S> for HeadersLayer {
    type Service = Headers<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Headers {
            inner,
            edits: self.edits.clone(),
        }
    }
}

// === impl Headers ===

impl<S, B, RB> Service<http::Request<B>> for Headers<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        self.edits.request.apply(req.headers_mut());
        let edits = (!self.edits.response.is_empty()).then(|| self.edits.clone());
        ResponseFuture {
            inner: self.inner.call(req),
            edits,
        }
    }
}

// === impl ResponseFuture ===

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = std::task::ready!(this.inner.poll(cx))?;
        if let Some(edits) = this.edits.take() {
            edits.response.apply(res.headers_mut());
        }
        Poll::Ready(Ok(res))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{service_fn, ServiceExt};

    fn config(yaml: &str) -> HeadersConfig {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn layer(c: &HeadersConfig) -> HeadersLayer {
        HeadersLayer {
            edits: Arc::new(c.parse().unwrap()),
        }
    }

    #[tokio::test]
    async fn edits_request_and_response() {
        let c = config(
            "{ request_add: {x-env: prod, x-team: core}, request_remove: [x-secret],
               response_add: {server: sidetrace}, response_remove: [server, x-powered-by] }",
        );
        let svc = layer(&c).layer(service_fn(|req: http::Request<()>| async move {
            let h = req.headers();
            assert_eq!(h["x-env"], "prod");
            assert_eq!(h["x-team"], "core");
            assert!(!h.contains_key("x-secret"));
            assert_eq!(h["x-keep"], "1");
            let res = http::Response::builder()
                .header("server", "gunicorn")
                .header("x-powered-by", "python")
                .header("x-app", "a")
                .body(())
                .unwrap();
            Ok::<_, crate::Error>(res)
        }));
        let req = http::Request::builder()
            .header("x-secret", "s")
            .header("x-keep", "1")
            .body(())
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        let h = res.headers();
        assert_eq!(
            h.get_all("server").iter().collect::<Vec<_>>(),
            ["sidetrace"]
        );
        assert!(!h.contains_key("x-powered-by"));
        assert_eq!(h["x-app"], "a");
    }

    #[tokio::test]
    async fn add_appends_to_existing_values() {
        let c = config("{ request_add: {via: sidetrace} }");
        let svc = layer(&c).layer(service_fn(|req: http::Request<()>| async move {
            let vias: Vec<_> = req.headers().get_all("via").iter().cloned().collect();
            assert_eq!(vias, ["1.1 lb", "sidetrace"]);
            Ok::<_, crate::Error>(http::Response::new(()))
        }));
        let req = http::Request::builder()
            .header("via", "1.1 lb")
            .body(())
            .unwrap();
        svc.oneshot(req).await.unwrap();
    }

    #[test]
    fn bad_names_and_values_name_their_field() {
        let cases = [
            (
                "{ request_add: {\"bad name\": x} }",
                "request_add",
                "bad name",
            ),
            ("{ request_remove: [\"a:b\"] }", "request_remove", "a:b"),
            (
                "{ response_add: {x-ok: \"line\\nbreak\"} }",
                "response_add",
                "line",
            ),
            (
                "{ response_remove: [content-length] }",
                "response_remove",
                "content-length",
            ),
            (
                "{ request_add: {transfer-encoding: chunked} }",
                "request_add",
                "transfer-encoding",
            ),
        ];
        for (yaml, field, mentions) in cases {
            let err = config(yaml).validate().unwrap_err();
            assert_eq!(err.field, field, "{yaml}");
            assert!(err.message.contains(mentions), "{yaml}: {}", err.message);
        }
    }

    #[test]
    fn plain_yaml_scalars_are_header_values() {
        let c = config("{ request_add: {x-retries: 3, x-canary: true} }");
        let edits = c.parse().unwrap();
        let mut headers = HeaderMap::new();
        edits.request.apply(&mut headers);
        assert_eq!(headers["x-retries"], "3");
        assert_eq!(headers["x-canary"], "true");
    }

    #[test]
    fn empty_config_is_valid_and_edits_nothing() {
        let c = config("{}");
        c.validate().unwrap();
        let edits = c.parse().unwrap();
        assert!(edits.request.is_empty() && edits.response.is_empty());
    }
}
