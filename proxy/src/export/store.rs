//! The embedded trace store: the last N traces in memory, for
//! `/debug/traces` and the trace viewer when no collector is configured.
//!
//! Only the export task writes (a `parking_lot` lock, off the request path);
//! the admin server reads. Traces are grouped by trace id and evicted oldest
//! first, past `capacity` traces or past `max_bytes` of spans (as
//! [`SpanRecord::approx_size`] counts them), whichever comes first; a trace
//! keeps at most [`MAX_SPANS_PER_TRACE`] spans.
//!
//! Routes the admin server forwards here ([`TraceStore::handle`]):
//! - `GET /debug/traces` — JSON, newest first, each trace summarised (root
//!   span, status, failure category, peers) with its spans; the filters are
//!   in `query.rs` and `docs/tracing.md`.
//! - `GET /debug/traces/{trace_id}` — one trace as JSON.
//!
//! The viewer page at `/debug/traces/ui` is the admin server's
//! (`admin::ui`); it reads these two routes.
//!
//! Root spans of kind CLIENT are flagged `orphan`: an outbound call that
//! carried no trace context, so the app did not forward its inbound
//! request's headers (see "What a sidecar cannot know" in `docs/tracing.md`).

mod query;
#[cfg(test)]
mod tests;
mod view;

use std::collections::{BTreeSet, HashMap, VecDeque};

use bytes::Bytes;
use filters::trace::{SpanKind, SpanRecord, TraceId};
use http::StatusCode;
use parking_lot::RwLock;
use serde::Serialize;

use self::{
    query::Query,
    view::{Summary, TraceView},
};

/// Spans kept per trace.
pub const MAX_SPANS_PER_TRACE: usize = 256;

/// `application/json`.
pub const JSON: &str = "application/json";

/// The last `capacity` traces, within `max_bytes`.
#[derive(Debug)]
pub struct TraceStore {
    capacity: usize,
    max_bytes: usize,
    service: String,
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    traces: HashMap<TraceId, StoredTrace>,
    /// Trace ids, oldest first.
    order: VecDeque<TraceId>,
    /// Sum of the stored traces' `bytes`.
    bytes: usize,
}

#[derive(Debug)]
struct StoredTrace {
    spans: Vec<SpanRecord>,
    bytes: usize,
}

/// `GET /debug/traces`.
#[derive(Serialize)]
struct ListView<'a> {
    /// This proxy's service (`service.name`).
    service: &'a str,
    traces: Vec<TraceView<'a>>,
    /// Traces that pass the filters, `limit` aside.
    matched: usize,
    /// Traces held.
    stored: usize,
    capacity: usize,
    /// Values the filters can take over every stored trace, so a viewer can
    /// offer them whatever the current filter.
    facets: Facets<'a>,
}

#[derive(Serialize)]
struct Facets<'a> {
    /// This service and every peer a CLIENT span called.
    services: Vec<&'a str>,
    /// Routes SERVER spans matched; `""` for requests that matched none.
    routes: Vec<&'a str>,
}

// === impl TraceStore ===

impl TraceStore {
    /// A store of `capacity` traces for `service` (the resource's
    /// `service.name`), within the default `tracing.store_bytes`.
    pub fn new(capacity: usize, service: impl Into<String>) -> Self {
        Self::with_max_bytes(capacity, filters::trace::DEFAULT_STORE_BYTES, service)
    }

    /// A store of `capacity` traces holding at most `max_bytes` of spans.
    pub fn with_max_bytes(capacity: usize, max_bytes: usize, service: impl Into<String>) -> Self {
        Self {
            capacity: capacity.max(1),
            max_bytes,
            service: service.into(),
            inner: RwLock::new(Inner::default()),
        }
    }

    /// Adds finished spans, evicting the oldest traces past either bound.
    /// The newest trace stays even when it alone is over `max_bytes`.
    pub fn insert(&self, spans: impl IntoIterator<Item = SpanRecord>) {
        // Kept for long: each span holds its own bytes, not hyper's read
        // buffers (copied before the lock is taken).
        let spans: Vec<SpanRecord> = spans
            .into_iter()
            .map(|mut span| {
                span.compact();
                span
            })
            .collect();
        let mut inner = self.inner.write();
        for span in spans {
            let id = span.trace_id;
            let size = span.approx_size();
            if let Some(trace) = inner.traces.get_mut(&id) {
                if trace.spans.len() < MAX_SPANS_PER_TRACE {
                    trace.spans.push(span);
                    trace.bytes += size;
                    inner.bytes += size;
                }
            } else {
                while inner.order.len() >= self.capacity {
                    inner.evict_oldest();
                }
                inner.order.push_back(id);
                inner.bytes += size;
                inner.traces.insert(
                    id,
                    StoredTrace {
                        spans: vec![span],
                        bytes: size,
                    },
                );
            }
            while inner.bytes > self.max_bytes && inner.order.len() > 1 {
                inner.evict_oldest();
            }
        }
    }

    /// Number of traces held.
    pub fn len(&self) -> usize {
        self.inner.read().order.len()
    }

    /// Bytes of spans held, as [`SpanRecord::approx_size`] counts them.
    pub fn bytes(&self) -> usize {
        self.inner.read().bytes
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Routes an admin request under `/debug/traces`: `path` is the request
    /// path, `query` its query string. Answers `(status, content type, body)`.
    pub fn handle(&self, path: &str, query: Option<&str>) -> (StatusCode, &'static str, Bytes) {
        match path.trim_end_matches('/') {
            "/debug/traces" => self.render_traces(query.unwrap_or_default()),
            other => match other.strip_prefix("/debug/traces/") {
                Some(id) => self.render_trace(id),
                None => not_found("no such page"),
            },
        }
    }

    /// `GET /debug/traces` as JSON: `{"traces": [...], "matched", "stored",
    /// "capacity", "facets"}`, newest first.
    pub fn render_traces(&self, query: &str) -> (StatusCode, &'static str, Bytes) {
        let q = match Query::parse(query) {
            Ok(q) => q,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        let inner = self.inner.read();
        let mut traces = Vec::new();
        let mut matched = 0;
        let mut services = BTreeSet::from([self.service.as_str()]);
        let mut routes = BTreeSet::new();
        for id in inner.order.iter().rev() {
            let Some(StoredTrace { spans, .. }) = inner.traces.get(id) else {
                continue;
            };
            let summary = Summary::new(spans);
            services.extend(summary.peers());
            routes.extend(
                spans
                    .iter()
                    .filter(|s| s.kind == SpanKind::Server)
                    .map(|s| s.route.as_ref().map_or("", |r| &*r.name)),
            );
            if !q.matches(&summary, &self.service) {
                continue;
            }
            matched += 1;
            if traces.len() < q.limit {
                traces.push(summary.view(&self.service, q.spans));
            }
        }
        let list = ListView {
            service: &self.service,
            traces,
            matched,
            stored: inner.order.len(),
            capacity: self.capacity,
            facets: Facets {
                services: services.into_iter().collect(),
                routes: routes.into_iter().collect(),
            },
        };
        json(StatusCode::OK, &list)
    }

    /// `GET /debug/traces/{trace_id}` as JSON.
    pub fn render_trace(&self, trace_id: &str) -> (StatusCode, &'static str, Bytes) {
        let Some(id) = TraceId::from_hex(trace_id.as_bytes()).filter(|_| trace_id.len() == 32)
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "a trace id is 32 hex digits, as in the x-trace-id response header",
            );
        };
        let inner = self.inner.read();
        match inner.traces.get(&id) {
            Some(StoredTrace { spans, .. }) => json(
                StatusCode::OK,
                &Summary::new(spans).view(&self.service, true),
            ),
            None => error(
                StatusCode::NOT_FOUND,
                "trace not in the store (not sampled, or evicted)",
            ),
        }
    }
}

// === impl Inner ===

impl Inner {
    fn evict_oldest(&mut self) {
        if let Some(old) = self.order.pop_front() {
            if let Some(trace) = self.traces.remove(&old) {
                self.bytes -= trace.bytes;
            }
        }
    }
}

fn json(status: StatusCode, value: &impl Serialize) -> (StatusCode, &'static str, Bytes) {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            (status, JSON, Bytes::from(body))
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            JSON,
            Bytes::from(format!("{{\"error\":\"{e}\"}}\n")),
        ),
    }
}

fn error(status: StatusCode, message: &str) -> (StatusCode, &'static str, Bytes) {
    json(status, &serde_json::json!({ "error": message }))
}

fn not_found(message: &str) -> (StatusCode, &'static str, Bytes) {
    error(StatusCode::NOT_FOUND, message)
}
