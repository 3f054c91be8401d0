//! What the store's JSON says about a trace: a summary the list and its
//! filters read, and the spans with their attributes for one trace.

use std::borrow::Cow;

use filters::{
    classify::{Failure, FailureCategory},
    trace::{SpanKind, SpanRecord, SpanStatus},
};
use serde::Serialize;

use crate::export::otlp::{self, Value};

/// One trace as `/debug/traces` lists it.
#[derive(Serialize)]
pub(super) struct TraceView<'a> {
    pub(super) trace_id: String,
    /// The root span's name: `METHOD route`, `METHOD`, or `Service/Method`.
    pub(super) root: Cow<'a, str>,
    /// The root span's kind.
    pub(super) kind: &'static str,
    /// The root span's route (`null` when it matched none).
    pub(super) route: Option<&'a str>,
    /// The root span's `url.path` (no query string: it may carry secrets).
    pub(super) path: Option<&'a str>,
    pub(super) service: &'a str,
    /// Hosts the trace's CLIENT spans called, sorted.
    pub(super) peers: Vec<&'a str>,
    pub(super) start_unix_nanos: u64,
    pub(super) duration_ms: f64,
    pub(super) span_count: usize,
    /// The root span's HTTP status.
    pub(super) http_status: Option<u16>,
    /// The root span's gRPC status name (`OK`, `NOT_FOUND`, ...).
    pub(super) grpc_status: Option<&'static str>,
    /// The root span's failure category, `null` when it did not fail.
    pub(super) failure_category: Option<&'static str>,
    /// The root span's `error.type`.
    pub(super) error_type: Option<Cow<'static, str>>,
    /// The root request's client went away.
    pub(super) cancelled: bool,
    /// Spans with a failure category, the root's included.
    pub(super) failed_spans: usize,
    /// Some span has status ERROR.
    pub(super) error: bool,
    pub(super) orphan: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) spans: Option<Vec<SpanView<'a>>>,
}

#[derive(Serialize)]
pub(super) struct SpanView<'a> {
    trace_id: String,
    span_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<String>,
    name: String,
    kind: &'static str,
    start_unix_nanos: u64,
    end_unix_nanos: u64,
    duration_ms: f64,
    status: &'static str,
    orphan: bool,
    attributes: serde_json::Map<String, serde_json::Value>,
    events: Vec<EventView<'a>>,
}

#[derive(Serialize)]
struct EventView<'a> {
    name: &'a str,
    time_unix_nanos: u64,
    attributes: serde_json::Map<String, serde_json::Value>,
}

/// The parts of a trace the filters need, found without building JSON.
pub(super) struct Summary<'a> {
    pub(super) spans: &'a [SpanRecord],
    pub(super) root: Option<&'a SpanRecord>,
    pub(super) start: u64,
    pub(super) end: u64,
}

// === impl Summary ===

impl<'a> Summary<'a> {
    pub(super) fn new(spans: &'a [SpanRecord]) -> Self {
        let start = spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0);
        let end = spans
            .iter()
            .map(|s| s.end_unix_nanos)
            .max()
            .unwrap_or(start);
        // The root: the earliest span whose parent is not in the trace.
        let root = spans
            .iter()
            .filter(|s| {
                s.parent_span_id
                    .is_none_or(|p| !spans.iter().any(|o| o.span_id == p))
            })
            .min_by_key(|s| s.start_unix_nanos)
            .or_else(|| spans.first());
        Self {
            spans,
            root,
            start,
            end,
        }
    }

    pub(super) fn duration_ms(&self) -> f64 {
        self.end.saturating_sub(self.start) as f64 / 1e6
    }

    pub(super) fn root_failure(&self) -> Option<Failure> {
        self.root.and_then(|r| r.failure)
    }

    pub(super) fn is_error(&self) -> bool {
        self.spans
            .iter()
            .any(|s| s.status_code == SpanStatus::Error)
    }

    pub(super) fn failed(&self) -> bool {
        self.spans.iter().any(|s| s.failure.is_some())
    }

    pub(super) fn has_category(&self, category: FailureCategory) -> bool {
        self.spans
            .iter()
            .any(|s| s.failure.is_some_and(|f| f.category == category))
    }

    /// The SERVER span that matched `route` (`""`: no route).
    pub(super) fn server_span(&self, route: &str) -> Option<&'a SpanRecord> {
        self.spans.iter().find(|s| {
            s.kind == SpanKind::Server && s.route.as_ref().map_or("", |r| &*r.name) == route
        })
    }

    /// Hosts the CLIENT spans called, sorted and distinct.
    pub(super) fn peers(&self) -> Vec<&'a str> {
        let mut peers: Vec<&str> = self
            .spans
            .iter()
            .filter(|s| s.kind == SpanKind::Client)
            .filter_map(|s| s.upstream.as_ref().map(|u| u.host()))
            .collect();
        peers.sort_unstable();
        peers.dedup();
        peers
    }

    pub(super) fn trace_id(&self) -> String {
        self.spans
            .first()
            .map(|s| s.trace_id.to_string())
            .unwrap_or_default()
    }

    pub(super) fn view(&self, service: &'a str, with_spans: bool) -> TraceView<'a> {
        let root = self.root;
        let failure = self.root_failure();
        TraceView {
            trace_id: self.trace_id(),
            root: root.map_or(Cow::Borrowed(""), |s| Cow::Owned(s.name())),
            kind: root.map_or("", |s| s.kind.as_str()),
            route: root.and_then(|s| s.route.as_ref()).map(|r| &*r.name),
            path: root.and_then(|s| s.path.as_ref()).map(|p| p.path()),
            service,
            peers: self.peers(),
            start_unix_nanos: self.start,
            duration_ms: self.duration_ms(),
            span_count: self.spans.len(),
            http_status: root.and_then(|s| s.status).map(|s| s.as_u16()),
            grpc_status: root.and_then(|s| s.grpc_status).map(|g| g.name()),
            failure_category: failure.map(|f| f.category.as_str()),
            error_type: root.and_then(SpanRecord::error_type),
            cancelled: root.is_some_and(|s| s.cancelled),
            failed_spans: self.spans.iter().filter(|s| s.failure.is_some()).count(),
            error: self.is_error(),
            orphan: self.spans.iter().any(SpanRecord::is_orphan),
            spans: with_spans.then(|| self.spans.iter().map(span_view).collect()),
        }
    }
}

fn span_view(s: &SpanRecord) -> SpanView<'_> {
    let mut attributes = serde_json::Map::new();
    otlp::for_each_attribute(s, |k, v| {
        attributes.insert(k.into_owned(), json_value(v));
    });
    SpanView {
        trace_id: s.trace_id.to_string(),
        span_id: s.span_id.to_string(),
        parent_span_id: s.parent_span_id.map(|p| p.to_string()),
        name: s.name(),
        kind: s.kind.as_str(),
        start_unix_nanos: s.start_unix_nanos,
        end_unix_nanos: s.end_unix_nanos,
        duration_ms: s.duration().as_secs_f64() * 1e3,
        status: match s.status_code {
            SpanStatus::Error => "ERROR",
            SpanStatus::Unset => "UNSET",
        },
        orphan: s.is_orphan(),
        attributes,
        events: s
            .events
            .iter()
            .map(|e| EventView {
                name: e.name,
                time_unix_nanos: e.time_unix_nanos,
                attributes: e
                    .attributes
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), json_value(otlp::attr_value(v))))
                    .collect(),
            })
            .collect(),
    }
}

fn json_value(v: Value<'_>) -> serde_json::Value {
    match v {
        Value::Str(s) => serde_json::Value::String(s.into_owned()),
        Value::Int(i) => serde_json::Value::from(i),
        Value::Bool(b) => serde_json::Value::Bool(b),
        Value::Ip(ip) => serde_json::Value::String(ip.to_string()),
    }
}
