//! Formats sidetrace does not build in, through the OpenTelemetry API: any
//! [`TextMapPropagator`] (a contrib crate's, or one's own) added with
//! [`TraceSettings::with_propagator`](crate::trace::TraceSettings::with_propagator).
//!
//! On extract, the added propagators are asked in the order they were added,
//! after the built-in formats and only when none of those found a trace id;
//! the first valid remote span context wins (its trace state becomes the
//! W3C `tracestate` when there was none). On inject, every added propagator
//! writes the proxy span's context, after the built-in formats.
//!
//! This path pays what the OpenTelemetry API costs (an `opentelemetry`
//! `Context` per request, a `String` per injected header); the built-in
//! formats never touch it, and a proxy with no added propagator does not
//! either.
//!
//! ```
//! use std::sync::Arc;
//! use filters::trace::{otel, propagation::custom::CustomPropagators, TraceId, SpanId};
//!
//! /// A vendor format: `x-vendor-trace: <32 hex>/<16 hex>`.
//! #[derive(Debug)]
//! struct Vendor(Vec<String>);
//!
//! impl otel::TextMapPropagator for Vendor {
//!     fn inject_context(&self, cx: &otel::Context, injector: &mut dyn otel::Injector) {
//!         use otel::TraceContextExt;
//!         let sc = cx.span().span_context().clone();
//!         injector.set("x-vendor-trace", format!("{}/{}", sc.trace_id(), sc.span_id()));
//!     }
//!     fn extract_with_context(&self, cx: &otel::Context, ex: &dyn otel::Extractor) -> otel::Context {
//!         use otel::TraceContextExt;
//!         let Some((t, s)) = ex.get("x-vendor-trace").and_then(|v| v.split_once('/')) else {
//!             return cx.clone();
//!         };
//!         let (Ok(t), Ok(s)) = (otel::TraceId::from_hex(t), otel::SpanId::from_hex(s)) else {
//!             return cx.clone();
//!         };
//!         let sc = otel::SpanContext::new(t, s, otel::TraceFlags::SAMPLED, true, Default::default());
//!         cx.with_remote_span_context(sc)
//!     }
//!     fn fields(&self) -> otel::FieldIter<'_> {
//!         otel::FieldIter::new(&self.0)
//!     }
//! }
//!
//! let custom = CustomPropagators::default().with(Arc::new(Vendor(vec!["x-vendor-trace".into()])));
//! let mut headers = http::HeaderMap::new();
//! headers.insert("x-vendor-trace", "4bf92f3577b34da6a3ce929d0e0e4736/00f067aa0ba902b7".parse().unwrap());
//! let mut extracted = Default::default();
//! custom.extract(&headers, &mut extracted);
//! assert_eq!(extracted.trace_id.unwrap().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! ```

use std::{fmt, str::FromStr, sync::Arc};

use http::{header::HeaderName, HeaderMap, HeaderValue};
use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, TraceContextExt, TraceFlags, TraceState},
    Context,
};

use super::{w3c::valid_tracestate, Extracted, InjectContext};

/// A propagator the proxy can share between threads.
pub type DynPropagator = Arc<dyn TextMapPropagator + Send + Sync>;

/// The added propagators, in order; cloning is one `Arc`.
#[derive(Clone, Default)]
pub struct CustomPropagators(Arc<[DynPropagator]>);

/// Reads request headers for a [`TextMapPropagator`]; nothing is copied.
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

/// Writes a [`TextMapPropagator`]'s fields into request headers; a name or
/// value that is not a valid header is skipped and counted.
pub struct HeaderInjector<'a> {
    headers: &'a mut HeaderMap,
    /// Fields skipped because they were not valid headers.
    pub rejected: usize,
}

// === impl CustomPropagators ===

impl CustomPropagators {
    /// These propagators and then `p`.
    pub fn with(&self, p: DynPropagator) -> Self {
        Self(self.0.iter().cloned().chain(std::iter::once(p)).collect())
    }

    /// Whether none was added.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Asks each propagator in turn; the first valid span context fills
    /// `out`'s trace id, parent, sampled flag (and `tracestate` when none
    /// came). Call it only when the built-in formats found no trace id.
    pub fn extract(&self, headers: &HeaderMap, out: &mut Extracted) {
        let extractor = HeaderExtractor(headers);
        for p in self.0.iter() {
            let cx = p.extract(&extractor);
            let span = cx.span();
            let sc = span.span_context();
            if !sc.is_valid() {
                continue;
            }
            out.trace_id = Some(sc.trace_id().into());
            out.parent_span_id = Some(sc.span_id().into());
            if out.sampled.is_none() {
                out.sampled = Some(sc.is_sampled());
            }
            let state = sc.trace_state().header();
            if out.tracestate.is_none() && !state.is_empty() && valid_tracestate(state.as_bytes()) {
                out.tracestate = HeaderValue::from_str(&state).ok();
            }
            return;
        }
    }

    /// Lets every propagator write the proxy span's context (trace state
    /// from `tracestate`) into `headers`; returns how many fields were
    /// skipped as invalid headers.
    pub fn inject(&self, headers: &mut HeaderMap, cx: &InjectContext<'_>) -> usize {
        if self.0.is_empty() {
            return 0;
        }
        let state = cx
            .extracted
            .tracestate
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| TraceState::from_str(v).ok())
            .unwrap_or_default();
        let flags = if cx.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let sc = SpanContext::new(cx.trace_id.into(), cx.span_id.into(), flags, false, state);
        let otel_cx = Context::new().with_remote_span_context(sc);
        let mut injector = HeaderInjector {
            headers,
            rejected: 0,
        };
        for p in self.0.iter() {
            p.inject_context(&otel_cx, &mut injector);
        }
        injector.rejected
    }
}

impl fmt::Debug for CustomPropagators {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

// === impl HeaderExtractor ===

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }

    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let values: Vec<&str> = self
            .0
            .get_all(key)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then_some(values)
    }
}

// === impl HeaderInjector ===

impl<'a> HeaderInjector<'a> {
    /// An injector writing into `headers`.
    pub fn new(headers: &'a mut HeaderMap) -> Self {
        Self {
            headers,
            rejected: 0,
        }
    }
}

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        match (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::try_from(value),
        ) {
            (Ok(name), Ok(value)) => {
                self.headers.insert(name, value);
            }
            _ => self.rejected += 1,
        }
    }
}
