//! Log records for the OpenTelemetry logs pipeline: the access log of every
//! request ([`AccessRecord`], queued by the trace layer when the response
//! body ends) and the proxy's own warnings and errors ([`EventRecord`]),
//! both through one bounded queue ([`LogSink`]).
//!
//! As with spans, the request path only `try_send`s a plain struct of
//! refcounted fields; attribute names, severities and OTLP protobuf are the
//! export task's business. A full queue drops the record and counts it
//! (`sidetrace_logs_dropped_total{reason="queue_full"}`).

use std::{borrow::Cow, net::SocketAddr, sync::Arc};

use http::{
    uri::{Authority, PathAndQuery},
    Method, StatusCode, Version,
};
use metrics::Counter;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{
    context::{SpanId, TraceId},
    span::{Host, SpanKind, SpanRecord},
};
use crate::classify::{Failure, GrpcCode};

/// Which requests get an access-log entry (`logs.access`), on stdout and
/// over OTLP alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    /// Every request.
    #[default]
    All,
    /// Requests whose span is sampled (after the tail decision), so every
    /// entry has its trace in the backend.
    Sampled,
    /// Failed requests only (any failure category; a client that went away
    /// is not a failure).
    Errors,
}

/// One request's access-log entry: the fields of the JSON access line, taken
/// from its finished span.
#[derive(Clone, Debug)]
pub struct AccessRecord {
    /// Trace id.
    pub trace_id: TraceId,
    /// The proxy span's id.
    pub span_id: SpanId,
    /// The span was sampled (the record's trace flags).
    pub sampled: bool,
    /// SERVER (inbound) or CLIENT (outbound).
    pub kind: SpanKind,
    /// Request method.
    pub method: Method,
    /// `url.scheme`.
    pub scheme: &'static str,
    /// Path and query as they came (the query is never exported).
    pub path: Option<PathAndQuery>,
    /// The matched route's name.
    pub route: Option<Arc<str>>,
    /// HTTP version of the client's request.
    pub version: Version,
    /// Response status, when a response head was sent.
    pub status: Option<StatusCode>,
    /// gRPC status, from trailers or headers.
    pub grpc_status: Option<GrpcCode>,
    /// The failure, when the request failed.
    pub failure: Option<Failure>,
    /// The client went away before the end.
    pub cancelled: bool,
    /// Start, Unix nanoseconds.
    pub start_unix_nanos: u64,
    /// End, Unix nanoseconds.
    pub end_unix_nanos: u64,
    /// Request body bytes, when known.
    pub request_bytes: Option<u64>,
    /// Response body bytes sent.
    pub response_bytes: u64,
    /// The request's host.
    pub host: Option<Host>,
    /// Where the request went (the app, or the outbound destination).
    pub upstream: Option<Authority>,
    /// The client's address.
    pub client_address: Option<SocketAddr>,
}

/// A warning or error the proxy logged, as the logs pipeline carries it.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRecord {
    /// When it was logged, Unix nanoseconds.
    pub time_unix_nanos: u64,
    /// `WARN` or `ERROR`.
    pub level: tracing::Level,
    /// The log target (module path), e.g. `sidetrace::config::reload`.
    pub target: &'static str,
    /// The message.
    pub message: String,
    /// The other fields, in the order they were written.
    pub fields: Vec<(&'static str, FieldValue)>,
}

/// A field of an [`EventRecord`].
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    /// Text (also `Display` and `Debug` values, formatted).
    Str(String),
    /// An integer (a `u64` past `i64::MAX` is kept as text).
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

/// What the logs queue carries.
// Access records travel by value: boxing them would allocate per request,
// and the rare events are the ones behind a pointer.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum LogRecord {
    /// A request's access-log entry.
    Access(AccessRecord),
    /// A proxy warning or error (shared: a process running several proxies
    /// hands the same event to each).
    Event(Arc<EventRecord>),
}

/// Where log records go. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LogSink {
    tx: Option<mpsc::Sender<LogRecord>>,
    dropped: Counter,
}

/// The receiving end, read by the proxy's logs pipeline.
pub type LogReceiver = mpsc::Receiver<LogRecord>;

// === impl AccessMode ===

impl AccessMode {
    /// Whether `span`'s request gets an entry.
    pub fn selects(self, span: &SpanRecord) -> bool {
        match self {
            Self::All => true,
            Self::Sampled => span.sampled,
            Self::Errors => span.failure.is_some(),
        }
    }

    /// `all`, `sampled` or `errors`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Sampled => "sampled",
            Self::Errors => "errors",
        }
    }
}

// === impl AccessRecord ===

impl AccessRecord {
    /// The entry of a finished span; every field clones by refcount or copy.
    pub fn new(span: &SpanRecord) -> Self {
        Self {
            trace_id: span.trace_id,
            span_id: span.span_id,
            sampled: span.sampled,
            kind: span.kind,
            method: span.method.clone(),
            scheme: span.scheme,
            path: span.path.clone(),
            route: span.route.as_ref().map(|r| r.name.clone()),
            version: span.version,
            status: span.status,
            grpc_status: span.grpc_status,
            failure: span.failure,
            cancelled: span.cancelled,
            start_unix_nanos: span.start_unix_nanos,
            end_unix_nanos: span.end_unix_nanos,
            request_bytes: span.request_bytes,
            response_bytes: span.response_bytes,
            host: span.host.clone(),
            upstream: span.upstream.clone(),
            client_address: span.client_address,
        }
    }

    /// `error.type`: the failure's type, or `cancelled`.
    pub fn error_type(&self) -> Option<Cow<'static, str>> {
        match (self.failure, self.cancelled) {
            (Some(f), _) => Some(f.error_type.as_str()),
            (None, true) => Some(Cow::Borrowed("cancelled")),
            (None, false) => None,
        }
    }

    /// Duration in milliseconds.
    pub fn duration_ms(&self) -> f64 {
        self.end_unix_nanos.saturating_sub(self.start_unix_nanos) as f64 / 1e6
    }
}

// === impl LogSink ===

impl LogSink {
    /// A queue of `capacity` records; `dropped` counts records refused
    /// because it was full (or the pipeline is gone).
    pub fn channel(capacity: usize, dropped: Counter) -> (Self, LogReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                tx: Some(tx),
                dropped,
            },
            rx,
        )
    }

    /// A sink that takes nothing (no logs export).
    pub fn discard() -> Self {
        Self {
            tx: None,
            dropped: Counter::noop(),
        }
    }

    /// Whether records are wanted: callers skip building them otherwise.
    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `record` without waiting; `false` (and counted) when dropped.
    pub fn send(&self, record: LogRecord) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        match tx.try_send(record) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.increment(1);
                false
            }
        }
    }
}

impl Default for LogSink {
    fn default() -> Self {
        Self::discard()
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::{
        classify::{ErrorType, FailureCategory},
        trace::Outcome,
    };

    fn finished(status: u16, failure: Option<Failure>, sampled: bool) -> SpanRecord {
        let mut s = SpanRecord::start(SpanKind::Server, TraceId::random(), Method::GET);
        s.sampled = sampled;
        s.finish(&Outcome {
            status: Some(StatusCode::from_u16(status).unwrap()),
            failure,
            ..Outcome::default()
        });
        s
    }

    #[test]
    fn modes_select_requests() {
        let ok = finished(200, None, false);
        let sampled = finished(200, None, true);
        let not_found = finished(404, None, false);
        let timeout = Failure::new(FailureCategory::Network, ErrorType::Timeout);
        let timed_out = finished(504, Some(timeout), false);
        // (mode, ok, sampled, 404, 504)
        let table = [
            (AccessMode::All, [true, true, true, true]),
            (AccessMode::Sampled, [false, true, false, false]),
            (AccessMode::Errors, [false, false, true, true]),
        ];
        for (mode, want) in table {
            let got = [&ok, &sampled, &not_found, &timed_out].map(|s| mode.selects(s));
            assert_eq!(got, want, "{}", mode.as_str());
        }
    }

    #[test]
    fn record_takes_the_span_fields() {
        let mut s = finished(503, None, true);
        s.cancelled = false;
        s.path = Some("/a?b=c".parse().unwrap());
        s.response_bytes = 12;
        let r = AccessRecord::new(&s);
        assert_eq!((r.trace_id, r.span_id), (s.trace_id, s.span_id));
        assert_eq!(r.status, Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(r.error_type().as_deref(), Some("503"));
        assert_eq!(r.path.as_ref().map(|p| p.path()), Some("/a"));
        assert_eq!(r.response_bytes, 12);
        assert!(r.duration_ms() >= 0.0);
        let mut cancelled = finished(200, None, false);
        cancelled.cancelled = true;
        assert_eq!(
            AccessRecord::new(&cancelled).error_type().as_deref(),
            Some("cancelled")
        );
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let dropped = metrics::Recorder::register_counter(
            &recorder,
            &metrics::Key::from_parts(
                "sidetrace_logs_dropped_total",
                vec![metrics::Label::new("reason", "queue_full")],
            ),
            &metrics::Metadata::new("t", metrics::Level::INFO, None),
        );
        let (sink, mut rx) = LogSink::channel(1, dropped);
        let record = || LogRecord::Access(AccessRecord::new(&finished(200, None, false)));
        assert!(sink.send(record()));
        assert!(!sink.send(record()));
        assert!(handle
            .render()
            .contains(r#"sidetrace_logs_dropped_total{reason="queue_full"} 1"#));
        assert!(rx.try_recv().is_ok());
        assert!(sink.send(record()), "room again");
        assert!(!LogSink::discard().is_enabled());
        assert!(!LogSink::discard().send(record()));
    }
}
