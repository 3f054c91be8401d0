//! The OpenTelemetry API types, for hooks and propagators written against
//! OpenTelemetry.
//!
//! sidetrace keeps its own id and span types on the request path (byte
//! arrays and a plain struct); this module re-exports the `opentelemetry`
//! crate's API types at the version sidetrace is built with, converts
//! between the two, and gives [`SpanRecord`] the OpenTelemetry view a hook
//! reads naturally: [`SpanRecord::span_context`], [`SpanRecord::otel_kind`],
//! [`SpanRecord::status`] and [`SpanRecord::set_status`].
//!
//! ```
//! use filters::trace::{hooks::SpanHooks, otel, span::SpanRecord, Outcome};
//!
//! /// Marks slow checkouts as errors, the OpenTelemetry way.
//! struct SlowCheckout;
//!
//! impl SpanHooks for SlowCheckout {
//!     fn on_end(&self, span: &mut SpanRecord, _: &Outcome) {
//!         let cx: otel::SpanContext = span.span_context();
//!         if cx.is_sampled()
//!             && span.otel_kind() == otel::SpanKind::Server
//!             && span.duration() > std::time::Duration::from_secs(2)
//!         {
//!             span.set_status(otel::Status::error("checkout slower than 2s"));
//!         }
//!     }
//! }
//! ```
//!
//! Status: sidetrace spans are exported as Unset or Error. An `Ok` a hook
//! sets is final, as the specification says (later statuses, the proxy's
//! own Error included, are ignored), and is recorded as the attribute
//! `otel.status_code=OK`; an Error's description, unless it is the span's
//! `error.type`, as `otel.status_description` (the names OpenTelemetry uses
//! for formats without a native status).

use std::{borrow::Cow, str::FromStr};

pub use opentelemetry::{
    propagation::{text_map_propagator::FieldIter, Extractor, Injector, TextMapPropagator},
    trace::{
        SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    },
    Context,
};

use super::{
    context,
    span::{self, AttrValue, SpanRecord, SpanStatus},
};

/// Attribute recording an `Ok` status.
pub const STATUS_CODE: &str = "otel.status_code";
/// Attribute recording an Error status's description.
pub const STATUS_DESCRIPTION: &str = "otel.status_description";

// === conversions ===

impl From<context::TraceId> for TraceId {
    fn from(id: context::TraceId) -> Self {
        Self::from_bytes(id.0)
    }
}

impl From<TraceId> for context::TraceId {
    fn from(id: TraceId) -> Self {
        Self(id.to_bytes())
    }
}

impl From<context::SpanId> for SpanId {
    fn from(id: context::SpanId) -> Self {
        Self::from_bytes(id.0)
    }
}

impl From<SpanId> for context::SpanId {
    fn from(id: SpanId) -> Self {
        Self(id.to_bytes())
    }
}

impl From<span::SpanKind> for SpanKind {
    fn from(kind: span::SpanKind) -> Self {
        match kind {
            span::SpanKind::Server => Self::Server,
            span::SpanKind::Client => Self::Client,
        }
    }
}

// === impl SpanRecord ===

impl SpanRecord {
    /// The span's context as OpenTelemetry has it: trace and span id, the
    /// sampled flag, the caller's `tracestate`; not remote (it is the
    /// proxy's own span).
    pub fn span_context(&self) -> SpanContext {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let state = self
            .tracestate
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| TraceState::from_str(v).ok())
            .unwrap_or_default();
        SpanContext::new(
            self.trace_id.into(),
            self.span_id.into(),
            flags,
            false,
            state,
        )
    }

    /// The caller's span, when it sent one, as an OpenTelemetry id.
    pub fn otel_parent_span_id(&self) -> Option<SpanId> {
        self.parent_span_id.map(Into::into)
    }

    /// The span kind, as OpenTelemetry names it.
    pub fn otel_kind(&self) -> SpanKind {
        self.kind.into()
    }

    /// The span status, as OpenTelemetry has it: `Ok` when a hook set it,
    /// `Error` (described by `otel.status_description`, else `error.type`),
    /// or `Unset`.
    pub fn status(&self) -> Status {
        if self.status_is_ok() {
            return Status::Ok;
        }
        match self.status_code {
            SpanStatus::Unset => Status::Unset,
            SpanStatus::Error => {
                let described = self.attributes.iter().find_map(|(k, v)| match v {
                    AttrValue::Str(s) if k == STATUS_DESCRIPTION => Some(s.clone()),
                    _ => None,
                });
                Status::Error {
                    description: described
                        .or_else(|| self.error_type())
                        .unwrap_or(Cow::Borrowed("")),
                }
            }
        }
    }

    /// Sets the status the OpenTelemetry way: `Unset` is ignored, `Ok` is
    /// final, `Error` replaces Unset (see the module docs for how each is
    /// exported). The status a hook sets before the end is kept when the
    /// span finishes.
    pub fn set_status(&mut self, status: Status) {
        if self.status_is_ok() {
            return;
        }
        match status {
            Status::Unset => {}
            Status::Ok => {
                self.status_code = SpanStatus::Unset;
                self.attributes.retain(|(k, _)| k != STATUS_DESCRIPTION);
                self.attributes
                    .push((STATUS_CODE.into(), AttrValue::Str("OK".into())));
            }
            Status::Error { description } => {
                self.status_code = SpanStatus::Error;
                self.attributes.retain(|(k, _)| k != STATUS_DESCRIPTION);
                if !description.is_empty() && self.error_type().as_deref() != Some(&description) {
                    self.attributes
                        .push((STATUS_DESCRIPTION.into(), AttrValue::Str(description)));
                }
            }
        }
    }

    /// Whether a hook set `Ok` (which is final).
    pub fn status_is_ok(&self) -> bool {
        self.attributes
            .iter()
            .any(|(k, v)| k == STATUS_CODE && *v == AttrValue::Str(Cow::Borrowed("OK")))
    }
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::{
        classify::{ErrorType, Failure, FailureCategory},
        trace::Outcome,
    };

    fn span() -> SpanRecord {
        SpanRecord::start(
            span::SpanKind::Server,
            context::TraceId::random(),
            Method::GET,
        )
    }

    #[test]
    fn ids_and_context_convert_both_ways() {
        let mut s = span();
        s.sampled = true;
        s.tracestate = Some(http::HeaderValue::from_static("rojo=00f067aa0ba902b7"));
        let cx = s.span_context();
        assert_eq!(cx.trace_id().to_string(), s.trace_id.to_string());
        assert_eq!(cx.span_id().to_string(), s.span_id.to_string());
        assert!(cx.is_sampled() && cx.is_valid() && !cx.is_remote());
        assert_eq!(cx.trace_state().get("rojo"), Some("00f067aa0ba902b7"));
        assert_eq!(context::TraceId::from(cx.trace_id()), s.trace_id);
        assert_eq!(context::SpanId::from(cx.span_id()), s.span_id);
        assert_eq!(s.otel_kind(), SpanKind::Server);
        assert_eq!(s.otel_parent_span_id(), None);
    }

    #[test]
    fn status_follows_the_specification() {
        let mut s = span();
        assert_eq!(s.status(), Status::Unset);
        s.set_status(Status::error("declined"));
        assert_eq!(s.status(), Status::error("declined"));
        // A hook's Error survives the end of a 200.
        s.finish(&Outcome {
            status: Some(http::StatusCode::OK),
            ..Outcome::default()
        });
        assert_eq!(s.status_code, SpanStatus::Error);
        s.set_status(Status::Unset);
        assert_eq!(s.status(), Status::error("declined"), "Unset is ignored");
        s.set_status(Status::Ok);
        assert_eq!(s.status(), Status::Ok);
        assert_eq!(s.status_code, SpanStatus::Unset);
        s.set_status(Status::error("later"));
        assert_eq!(s.status(), Status::Ok, "Ok is final");

        // Ok before the end overrides the proxy's own Error.
        let mut s = span();
        s.set_status(Status::Ok);
        s.finish(&Outcome {
            status: Some(http::StatusCode::BAD_GATEWAY),
            ..Outcome::default()
        });
        assert_eq!(s.status(), Status::Ok);
        assert_eq!(s.status_code, SpanStatus::Unset);

        // The proxy's Error reads as one, described by error.type.
        let mut s = span();
        s.finish(&Outcome {
            failure: Some(Failure::new(FailureCategory::Network, ErrorType::Timeout)),
            ..Outcome::default()
        });
        assert_eq!(s.status(), Status::error("timeout"));
    }
}
