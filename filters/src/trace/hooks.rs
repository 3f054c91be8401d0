//! Span hooks: code that runs at fixed points of a request's span.
//!
//! Hooks compose in order: the built-ins first ([`RouteNaming`],
//! [`CaptureHeaders`], [`Exceptions`], and [`DebugPanic`] when configured),
//! then any added with [`TraceSettings::with_hook`](super::TraceSettings::with_hook).
//! Each method is guarded: a panicking hook does not take the proxy down.
//! A panic in `on_start` answers the request with a 500 INTERNAL (the
//! request never reaches the app) and an `exception` event; a panic in a
//! later method only adds the event.
//!
//! ```
//! use filters::trace::{hooks::SpanHooks, span::{AttrValue, SpanRecord}};
//!
//! /// Tags spans of requests from the canary.
//! struct Canary;
//!
//! impl SpanHooks for Canary {
//!     fn on_start(&self, span: &mut SpanRecord, req: &filters::Request) {
//!         if req.headers().contains_key("x-canary") {
//!             span.attributes.push(("deployment.canary".into(), AttrValue::Bool(true)));
//!         }
//!     }
//! }
//! ```

use std::sync::Arc;

use http::{header::HeaderName, HeaderMap, HeaderValue, StatusCode};

use super::{
    config::{CaptureConfig, RouteConfig},
    span::{CapturedHeader, Outcome, SpanRecord},
};
use crate::{
    classify::ErrorType,
    route::{Route, RouteTable},
    Request,
};

/// Code run at the points of a span's life. Every method has a no-op default.
pub trait SpanHooks: Send + Sync + 'static {
    /// Runs in the layer's `call`, after context extraction and **before**
    /// the sampling decision and context injection. May read the request
    /// (not its body) and set any span field; setting `span.route` (with a
    /// sampling override) steers sampling. Must not block.
    fn on_start(&self, span: &mut SpanRecord, req: &Request) {
        let _ = (span, req);
    }

    /// Runs when the response head arrives (or the proxy makes one), before
    /// the body streams. May read status and headers; the body is not seen.
    fn on_response(&self, span: &mut SpanRecord, status: StatusCode, headers: &HeaderMap) {
        let _ = (span, status, headers);
    }

    /// Runs once when the response body ends, fails or is dropped, after
    /// `span.finish` filled status, failure and end time, and before the tail
    /// sampling decision, the access log line and export. May change any
    /// field, including `failure` (which the tail decision then sees).
    fn on_end(&self, span: &mut SpanRecord, outcome: &Outcome) {
        let _ = (span, outcome);
    }

    /// Runs when a panic was caught while handling the request: in a hook,
    /// in the inner service, or in the filter chain (reported by the catch
    /// panic layer below). The response is a 500 INTERNAL.
    fn on_panic(&self, span: &mut SpanRecord, panic: &PanicInfo<'_>) {
        let _ = (span, panic);
    }
}

/// A caught panic, as hooks see it.
#[derive(Clone, Copy, Debug)]
pub struct PanicInfo<'a> {
    /// The panic message (when the payload was a string).
    pub message: &'a str,
    /// Where it was caught.
    pub source: PanicSource,
}

/// Where a panic was caught.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanicSource {
    /// In a [`SpanHooks`] method.
    Hook,
    /// In the inner service's `call` or response future.
    Service,
    /// In a filter, turned into an error by the catch-panic layer below and
    /// answered by the rescue layer (the message is not known here).
    Chain,
}

/// Names spans after the longest matching `routes:` prefix and carries the
/// route's sampling override.
#[derive(Clone, Debug, Default)]
pub struct RouteNaming {
    routes: RouteTable,
}

/// Records configured request and response headers as span attributes,
/// replacing redacted ones (the built-in credential headers and the user's
/// `redact` list) with `[REDACTED]`.
#[derive(Clone, Debug, Default)]
pub struct CaptureHeaders {
    request: Box<[(HeaderName, bool)]>,
    response: Box<[(HeaderName, bool)]>,
}

/// Adds the `exception` event of a caught panic, and of a panic the filter
/// chain reported as a failure.
#[derive(Clone, Copy, Debug, Default)]
pub struct Exceptions;

/// **For tests only** (`tracing.debug_panic_header`): panics in `on_start`
/// when the request carries the header, so tests can prove that a panic
/// becomes a 500 INTERNAL with an `exception` event and the proxy keeps
/// serving.
#[derive(Clone, Debug)]
pub struct DebugPanic {
    header: HeaderName,
}

/// The value recorded for redacted headers.
pub const REDACTED: HeaderValue = HeaderValue::from_static("[REDACTED]");

// === impl RouteNaming ===

impl RouteNaming {
    /// A table from the `routes:` list; the longest prefix wins and config
    /// order breaks ties.
    pub fn new(routes: &[RouteConfig]) -> Self {
        Self {
            routes: RouteTable::from_config(routes),
        }
    }

    /// The route matching `req`.
    pub fn lookup<B>(&self, req: &http::Request<B>) -> Option<&Arc<Route>> {
        self.routes.lookup(req)
    }

    /// Whether no route is configured.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

impl SpanHooks for RouteNaming {
    fn on_start(&self, span: &mut SpanRecord, req: &Request) {
        // The observe layer matched the request once, for its metrics too;
        // a trace layer without metrics matches here.
        let route = match Route::of(req.extensions()) {
            Some(route) => Some(route),
            None => self.lookup(req),
        };
        span.route = route.cloned();
    }
}

// === impl CaptureHeaders ===

impl CaptureHeaders {
    /// From `tracing.capture` (names already validated; invalid ones are
    /// skipped). Whether a name is redacted (built-in list plus the user's,
    /// see [`CaptureConfig::redacts`]) is decided here, once.
    pub fn new(config: &CaptureConfig) -> Self {
        let names = |list: &[String]| -> Box<[(HeaderName, bool)]> {
            list.iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .map(|n| {
                    let redacted = config.redacts(&n);
                    (n, redacted)
                })
                .collect()
        };
        Self {
            request: names(&config.request_headers),
            response: names(&config.response_headers),
        }
    }

    /// Whether nothing is captured.
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }

    fn capture(
        names: &[(HeaderName, bool)],
        headers: &HeaderMap,
        response: bool,
        span: &mut SpanRecord,
    ) {
        for (name, redacted) in names {
            for value in headers.get_all(name) {
                span.captured.push(CapturedHeader {
                    response,
                    name: name.clone(),
                    value: if *redacted { REDACTED } else { value.clone() },
                });
            }
        }
    }
}

impl SpanHooks for CaptureHeaders {
    fn on_start(&self, span: &mut SpanRecord, req: &Request) {
        Self::capture(&self.request, req.headers(), false, span);
    }

    fn on_response(&self, span: &mut SpanRecord, _: StatusCode, headers: &HeaderMap) {
        Self::capture(&self.response, headers, true, span);
    }
}

// === impl Exceptions ===

impl SpanHooks for Exceptions {
    fn on_end(&self, span: &mut SpanRecord, outcome: &Outcome) {
        let chain_panic = outcome
            .failure
            .is_some_and(|f| f.error_type == ErrorType::Panic);
        if chain_panic && !span.events.iter().any(|e| e.name == "exception") {
            span.record_exception("panic", "a filter panicked while handling the request");
        }
    }

    fn on_panic(&self, span: &mut SpanRecord, panic: &PanicInfo<'_>) {
        span.record_exception("panic", panic.message.to_string());
    }
}

// === impl DebugPanic ===

impl DebugPanic {
    /// Panics on requests carrying `header`.
    pub fn new(header: HeaderName) -> Self {
        Self { header }
    }
}

impl SpanHooks for DebugPanic {
    #[allow(clippy::panic)]
    fn on_start(&self, _: &mut SpanRecord, req: &Request) {
        if req.headers().contains_key(&self.header) {
            panic!("debug panic requested by the {} header", self.header);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{config::RouteSample, context::TraceId, span::SpanKind};

    fn request(path: &str, headers: &[(&'static str, &'static str)]) -> Request {
        let mut b = http::Request::builder().uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(crate::empty_body()).unwrap()
    }

    fn span() -> SpanRecord {
        SpanRecord::start(SpanKind::Server, TraceId::random(), http::Method::GET)
    }

    #[test]
    fn longest_prefix_wins() {
        let routes = RouteNaming::new(&[
            RouteConfig {
                prefix: "/api".into(),
                name: "api".into(),
                sample: None,
                ..RouteConfig::default()
            },
            RouteConfig {
                prefix: "/api/orders".into(),
                name: "orders".into(),
                sample: Some(RouteSample::Always),
                ..RouteConfig::default()
            },
            RouteConfig {
                prefix: "/api".into(),
                name: "shadowed".into(),
                sample: None,
                ..RouteConfig::default()
            },
        ]);
        let table: &[(&str, Option<&str>)] = &[
            ("/api/orders/42", Some("orders")),
            ("/api/users", Some("api")),
            ("/other", None),
            ("/", None),
        ];
        for (path, want) in table {
            let mut s = span();
            routes.on_start(&mut s, &request(path, &[]));
            assert_eq!(s.route.as_ref().map(|r| &*r.name), *want, "{path}");
        }
        let mut s = span();
        routes.on_start(&mut s, &request("/api/orders", &[]));
        let r = s.route.unwrap();
        assert_eq!((r.index, r.sample), (1, Some(RouteSample::Always)));
    }

    #[test]
    fn capture_and_redact() {
        let hook = CaptureHeaders::new(&CaptureConfig {
            request_headers: vec!["x-tenant".into(), "authorization".into(), "x-absent".into()],
            response_headers: vec!["set-cookie".into(), "content-type".into()],
            ..CaptureConfig::default()
        });
        let mut s = span();
        hook.on_start(
            &mut s,
            &request(
                "/",
                &[("x-tenant", "acme"), ("authorization", "Bearer secret")],
            ),
        );
        let mut resp = HeaderMap::new();
        resp.insert("set-cookie", HeaderValue::from_static("sid=1"));
        resp.insert("content-type", HeaderValue::from_static("text/plain"));
        hook.on_response(&mut s, StatusCode::OK, &resp);
        let got: Vec<(bool, &str, &str)> = s
            .captured
            .iter()
            .map(|c| (c.response, c.name.as_str(), c.value.to_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                (false, "x-tenant", "acme"),
                (false, "authorization", "[REDACTED]"),
                (true, "set-cookie", "[REDACTED]"),
                (true, "content-type", "text/plain"),
            ]
        );
        assert!(CaptureHeaders::new(&CaptureConfig::default()).is_empty());
    }

    /// What a span records for `authorization`, `x-tenant-secret`,
    /// `x-plan` and `x-tenant` under `capture`.
    fn recorded(capture: &str) -> Vec<(String, String)> {
        let mut config: CaptureConfig = serde_saphyr::from_str(capture).unwrap();
        config.request_headers = ["authorization", "x-tenant-secret", "x-plan", "x-tenant"]
            .map(String::from)
            .to_vec();
        let hook = CaptureHeaders::new(&config);
        let mut s = span();
        hook.on_start(
            &mut s,
            &request(
                "/",
                &[
                    ("authorization", "Bearer s3cr3t"),
                    ("x-tenant-secret", "hunter2"),
                    ("x-plan", "gold"),
                    ("x-tenant", "acme"),
                ],
            ),
        );
        s.captured
            .iter()
            .map(|c| (c.name.to_string(), c.value.to_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn a_user_redact_list_adds_to_the_builtin_one() {
        let got = recorded("{ redact: [x-tenant-secret, x-plan] }");
        let value = |n: &str| got.iter().find(|(k, _)| k == n).unwrap().1.as_str();
        assert_eq!(value("authorization"), "[REDACTED]", "{got:?}");
        assert_eq!(value("x-tenant-secret"), "[REDACTED]");
        assert_eq!(value("x-plan"), "[REDACTED]", "the user's own entry");
        assert_eq!(value("x-tenant"), "acme");
        for yaml in ["{}", "{ redact: [] }", "{ redact: [x-tenant-secret] }"] {
            let got = recorded(yaml);
            assert!(
                got.contains(&("authorization".into(), "[REDACTED]".into())),
                "{yaml}: {got:?}"
            );
            assert!(!format!("{got:?}").contains("s3cr3t"), "{yaml}: {got:?}");
        }
    }

    #[test]
    fn only_redact_builtin_false_records_authorization() {
        let got = recorded("{ redact_builtin: false, redact: [x-plan] }");
        let value = |n: &str| got.iter().find(|(k, _)| k == n).unwrap().1.as_str();
        assert_eq!(value("authorization"), "Bearer s3cr3t");
        assert_eq!(value("x-tenant-secret"), "hunter2");
        assert_eq!(
            value("x-plan"),
            "[REDACTED]",
            "the user's list still applies"
        );
    }

    #[test]
    fn exceptions_for_caught_and_chain_panics() {
        let mut s = span();
        Exceptions.on_panic(
            &mut s,
            &PanicInfo {
                message: "boom",
                source: PanicSource::Service,
            },
        );
        assert_eq!(s.events.len(), 1);
        assert_eq!(
            s.events[0].attributes[1].1,
            crate::trace::span::AttrValue::Str("boom".into())
        );
        let panic = crate::classify::Failure::new(
            crate::classify::FailureCategory::Internal,
            ErrorType::Panic,
        );
        let outcome = Outcome {
            failure: Some(panic),
            ..Outcome::default()
        };
        Exceptions.on_end(&mut s, &outcome);
        assert_eq!(s.events.len(), 1, "not recorded twice");
        let mut chain = span();
        Exceptions.on_end(&mut chain, &outcome);
        assert_eq!(chain.events[0].name, "exception");
    }

    #[test]
    fn debug_panic_only_with_the_header() {
        let hook = DebugPanic::new(HeaderName::from_static("x-sidetrace-debug-panic"));
        hook.on_start(&mut span(), &request("/", &[]));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            hook.on_start(
                &mut span(),
                &request("/", &[("x-sidetrace-debug-panic", "1")]),
            );
        }));
        assert!(caught.is_err());
    }
}
