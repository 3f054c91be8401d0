//! The end of a traced request: the response body's end finishes the span.
//!
//! [`SpanEnd`] rides in the response body ([`EosBody`](crate::body::EosBody))
//! and runs once when the body ends (gRPC status from the trailers), fails,
//! or is dropped by a client that went away (`error.type=cancelled`, not a
//! failure). It then runs the `on_end` hooks, the tail sampling decision,
//! writes the access log line and queues the access record (when the access
//! mode selects the request) and the span (if sampled).

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use http::StatusCode;
use http_body::Body as _;
use http_body_util::BodyExt;
use metrics::Histogram;

use super::{
    context::hex_str,
    hooks::PanicSource,
    layer::{run_on_panic, InFlight},
    logs::{AccessRecord, LogRecord},
    span::{EndAttributes, Outcome, SpanRecord},
};
use crate::{
    body::{Eos, EosBody, OnEos},
    catch_panic::panic_message,
    classify::{Failure, GrpcCode},
    Request,
};

/// Finishes a span when the response body ends.
pub struct SpanEnd {
    inflight: InFlight,
    outcome: Outcome,
    end_attributes: Option<EndAttributes>,
}

/// How the request body's size is learnt: its exact size hint, or a counter
/// filled as the body streams (only for bodies of unknown length).
pub(crate) enum RequestBytes {
    Known(u64),
    Counted(Arc<AtomicU64>),
}

/// The one observer of a streaming request body: the span's byte count and
/// the RED request-size histogram.
struct CountRequest {
    bytes: Arc<AtomicU64>,
    histogram: Option<Histogram>,
}

// === impl RequestBytes ===

impl RequestBytes {
    /// Learns the request body's size, wrapping the body only when its
    /// length is not known up front (streaming uploads), and records it in
    /// `histogram` (the RED request size) once known.
    pub(crate) fn watch(req: &mut Request, histogram: Option<Histogram>) -> Self {
        let body = req.body();
        let known = match body.is_end_stream() {
            true => Some(0),
            false => body.size_hint().exact(),
        };
        if let Some(bytes) = known {
            if let Some(h) = histogram {
                h.record(bytes as f64);
            }
            return Self::Known(bytes);
        }
        let counter = Arc::new(AtomicU64::new(0));
        let count = CountRequest {
            bytes: counter.clone(),
            histogram,
        };
        let body = std::mem::replace(req.body_mut(), crate::empty_body());
        *req.body_mut() = EosBody::new(body, count).boxed_unsync();
        Self::Counted(counter)
    }

    fn get(&self) -> u64 {
        match self {
            Self::Known(n) => *n,
            Self::Counted(c) => c.load(Ordering::Relaxed),
        }
    }
}

impl OnEos for CountRequest {
    fn on_eos(self, _: Eos<'_>, bytes: u64) {
        self.bytes.store(bytes, Ordering::Relaxed);
        if let Some(h) = self.histogram {
            h.record(bytes as f64);
        }
    }
}

// === impl SpanEnd ===

impl SpanEnd {
    pub(crate) fn new(
        inflight: InFlight,
        status: StatusCode,
        grpc: Option<GrpcCode>,
        failure: Option<Failure>,
        end_attributes: Option<EndAttributes>,
    ) -> Self {
        Self {
            inflight,
            end_attributes,
            outcome: Outcome {
                status: Some(status),
                grpc,
                failure,
                cancelled: false,
                response_bytes: 0,
            },
        }
    }
}

impl SpanEnd {
    /// The end of a span whose response head never came.
    pub(crate) fn before_head(inflight: InFlight) -> Self {
        Self {
            inflight,
            end_attributes: None,
            outcome: Outcome {
                status: None,
                grpc: None,
                failure: None,
                cancelled: false,
                response_bytes: 0,
            },
        }
    }
}

impl OnEos for SpanEnd {
    fn on_eos(self, eos: Eos<'_>, bytes: u64) {
        let Self {
            mut inflight,
            mut outcome,
            end_attributes,
        } = self;
        outcome.end(eos, bytes);
        let record = &mut inflight.record;
        record.request_bytes = Some(inflight.request_bytes.get());
        if let Some(end) = end_attributes {
            record.attributes.extend(end.get().iter().cloned());
        }
        record.finish(&outcome);
        let outcome = Outcome {
            failure: record.failure,
            cancelled: record.cancelled,
            ..outcome
        };
        for hook in &inflight.settings.hooks {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| hook.on_end(record, &outcome))) {
                let message = panic_message(&*payload);
                run_on_panic(
                    &inflight.settings.hooks,
                    record,
                    &message,
                    PanicSource::Hook,
                );
            }
        }
        let decision = inflight
            .settings
            .sampler
            .tail(inflight.decision, record.failure.as_ref());
        record.sampled = decision.sampled;
        record.sampling_reason = decision.reason;
        if let Some(recording) = inflight.recording.take() {
            // A sampled request's trace can be found: it is the exemplar.
            let trace = record.sampled.then_some((record.trace_id, record.span_id));
            recording.finish_traced(outcome, trace);
        }
        let selected = inflight.settings.access_mode.selects(record);
        let logs = &inflight.sinks.logs;
        if record.sampled || (selected && logs.is_enabled()) {
            // Queued records wait for their batch (tens of milliseconds and
            // hundreds of requests): holding slices of hyper's read buffer,
            // each would keep that buffer alive and make hyper allocate a
            // fresh one for the connection's next request. A few small
            // copies here keep one buffer per connection.
            record.compact();
        }
        if selected {
            if inflight.access_log {
                access_log(record);
            }
            if logs.is_enabled() {
                logs.send(LogRecord::Access(AccessRecord::new(record)));
            }
        }
        if record.sampled {
            inflight.sinks.spans.send(inflight.record);
        }
    }
}

/// One JSON line per request (target `sidetrace::access`), for every
/// response including the ones the proxy makes itself.
fn access_log(span: &SpanRecord) {
    let trace_id = span.trace_id.to_hex();
    let span_id = span.span_id.to_hex();
    let error_type = span.error_type();
    tracing::info!(
        target: "sidetrace::access",
        trace_id = hex_str(&trace_id),
        span_id = hex_str(&span_id),
        kind = span.kind.as_str(),
        method = span.method.as_str(),
        path = span.path.as_ref().map(|p| p.path()),
        route = span.route.as_ref().map(|r| &*r.name),
        protocol = crate::metrics::protocol_label(span.version),
        status = span.status.map(|s| s.as_u16()),
        grpc_status = span.grpc_status.map(|g| g.0),
        duration_ms = span.duration().as_secs_f64() * 1000.0,
        bytes_in = span.request_bytes,
        bytes_out = span.response_bytes,
        upstream = span.upstream.as_ref().map(|u| u.as_str()),
        client = span.client_address.map(tracing::field::display),
        failure_category = span.failure.map(|f| f.category.as_str()),
        error_type = error_type.as_deref(),
        sampled = span.sampled,
        "access"
    );
}
