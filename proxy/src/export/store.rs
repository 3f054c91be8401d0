//! The embedded trace store: the last N traces in memory, for
//! `/debug/traces` when no collector is configured.
//!
//! Only the export task writes (a `parking_lot` lock, off the request path);
//! the admin server reads. Traces are grouped by trace id and evicted oldest
//! first; a trace keeps at most [`MAX_SPANS_PER_TRACE`] spans, so memory is
//! bounded by `capacity` times that.
//!
//! Routes the admin server forwards here ([`TraceStore::handle`]):
//! - `GET /debug/traces` — JSON, newest first, each trace with its spans;
//!   filters `?service=` (the service, or the peer a span talked to),
//!   `?min_duration_ms=`, `?error=true`, `?limit=` (default 100).
//! - `GET /debug/traces/{trace_id}` — one trace as JSON.
//! - `GET /debug/traces/ui` — a small self-contained HTML page.
//!
//! Root spans of kind CLIENT are flagged `orphan`: an outbound call that
//! carried no trace context, so the app did not forward its inbound
//! request's headers (see "What a sidecar cannot know" in `docs/tracing.md`).

use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
    fmt::Write as _,
};

use bytes::Bytes;
use filters::trace::{SpanRecord, SpanStatus, TraceId};
use http::StatusCode;
use parking_lot::RwLock;
use serde::Serialize;

use super::otlp::{self, Value};

/// Spans kept per trace.
pub const MAX_SPANS_PER_TRACE: usize = 256;

/// `application/json`.
pub const JSON: &str = "application/json";
/// `text/html; charset=utf-8`.
pub const HTML: &str = "text/html; charset=utf-8";

/// The last `capacity` traces.
#[derive(Debug)]
pub struct TraceStore {
    capacity: usize,
    service: String,
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    traces: HashMap<TraceId, Vec<SpanRecord>>,
    /// Trace ids, oldest first.
    order: VecDeque<TraceId>,
}

#[derive(Serialize)]
struct TraceView<'a> {
    trace_id: String,
    root: Cow<'a, str>,
    service: &'a str,
    start_unix_nanos: u64,
    duration_ms: f64,
    span_count: usize,
    error: bool,
    orphan: bool,
    spans: Vec<SpanView<'a>>,
}

#[derive(Serialize)]
struct SpanView<'a> {
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

/// Parsed `/debug/traces` query.
#[derive(Debug, Default, PartialEq)]
struct Query {
    service: Option<String>,
    min_duration_ms: Option<f64>,
    error: Option<bool>,
    limit: usize,
}

// === impl TraceStore ===

impl TraceStore {
    /// A store of `capacity` traces for `service` (the resource's
    /// `service.name`).
    pub fn new(capacity: usize, service: impl Into<String>) -> Self {
        Self {
            capacity: capacity.max(1),
            service: service.into(),
            inner: RwLock::new(Inner::default()),
        }
    }

    /// Adds finished spans, evicting the oldest traces past capacity.
    pub fn insert(&self, spans: impl IntoIterator<Item = SpanRecord>) {
        let mut inner = self.inner.write();
        for span in spans {
            let id = span.trace_id;
            if let Some(trace) = inner.traces.get_mut(&id) {
                if trace.len() < MAX_SPANS_PER_TRACE {
                    trace.push(span);
                }
                continue;
            }
            while inner.order.len() >= self.capacity {
                if let Some(old) = inner.order.pop_front() {
                    inner.traces.remove(&old);
                }
            }
            inner.order.push_back(id);
            inner.traces.insert(id, vec![span]);
        }
    }

    /// Number of traces held.
    pub fn len(&self) -> usize {
        self.inner.read().order.len()
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
            "/debug/traces/ui" => self.render_html(),
            other => match other.strip_prefix("/debug/traces/") {
                Some(id) => self.render_trace(id),
                None => not_found("no such page"),
            },
        }
    }

    /// `GET /debug/traces` as JSON: `{"traces": [...]}`, newest first.
    pub fn render_traces(&self, query: &str) -> (StatusCode, &'static str, Bytes) {
        let q = match Query::parse(query) {
            Ok(q) => q,
            Err(message) => return error(StatusCode::BAD_REQUEST, &message),
        };
        let inner = self.inner.read();
        let mut views = Vec::new();
        for id in inner.order.iter().rev() {
            if views.len() >= q.limit {
                break;
            }
            let Some(spans) = inner.traces.get(id) else {
                continue;
            };
            let view = self.view(spans);
            if q.matches(&view, spans) {
                views.push(view);
            }
        }
        json(StatusCode::OK, &serde_json::json!({ "traces": views }))
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
            Some(spans) => json(StatusCode::OK, &self.view(spans)),
            None => error(
                StatusCode::NOT_FOUND,
                "trace not in the store (not sampled, or evicted)",
            ),
        }
    }

    /// `GET /debug/traces/ui`: a self-contained HTML list of the traces.
    pub fn render_html(&self) -> (StatusCode, &'static str, Bytes) {
        let inner = self.inner.read();
        let mut html = String::with_capacity(4096);
        html.push_str(concat!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>sidetrace traces</title>",
            "<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}",
            "td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}",
            ".err{color:#b00020;font-weight:600}.orphan{color:#8a6d00}code{font-size:12px}</style>",
            "</head><body><h1>Recent traces</h1>",
            "<p>Newest first. JSON: <a href=\"/debug/traces\">/debug/traces</a>. ",
            "<span class=\"orphan\">orphan</span> = an outbound call that carried no trace context ",
            "(the app does not forward trace headers).</p>",
            "<table><tr><th>trace</th><th>root span</th><th>spans</th><th>duration</th><th>status</th></tr>"
        ));
        for id in inner.order.iter().rev() {
            let Some(spans) = inner.traces.get(id) else {
                continue;
            };
            let v = self.view(spans);
            let _ = write!(
                html,
                "<tr><td><a href=\"/debug/traces/{id}\"><code>{id}</code></a></td><td>{root}</td>\
                 <td>{count}</td><td>{ms:.2} ms</td><td>{status}{orphan}</td></tr>",
                id = v.trace_id,
                root = escape(&v.root),
                count = v.span_count,
                ms = v.duration_ms,
                status = if v.error {
                    "<span class=\"err\">error</span>"
                } else {
                    "ok"
                },
                orphan = if v.orphan {
                    " <span class=\"orphan\">orphan</span>"
                } else {
                    ""
                },
            );
        }
        if inner.order.is_empty() {
            html.push_str("<tr><td colspan=\"5\">No traces yet.</td></tr>");
        }
        html.push_str("</table></body></html>\n");
        (StatusCode::OK, HTML, Bytes::from(html))
    }

    fn view<'a>(&'a self, spans: &'a [SpanRecord]) -> TraceView<'a> {
        let start = spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0);
        let end = spans
            .iter()
            .map(|s| s.end_unix_nanos)
            .max()
            .unwrap_or(start);
        // The root: a span whose parent is not in the trace (the earliest).
        let root = spans
            .iter()
            .filter(|s| {
                s.parent_span_id
                    .is_none_or(|p| !spans.iter().any(|o| o.span_id == p))
            })
            .min_by_key(|s| s.start_unix_nanos)
            .or_else(|| spans.first());
        TraceView {
            trace_id: spans
                .first()
                .map(|s| s.trace_id.to_string())
                .unwrap_or_default(),
            root: root.map_or(Cow::Borrowed(""), |s| Cow::Owned(s.name())),
            service: &self.service,
            start_unix_nanos: start,
            duration_ms: end.saturating_sub(start) as f64 / 1e6,
            span_count: spans.len(),
            error: spans.iter().any(|s| s.status_code == SpanStatus::Error),
            orphan: spans.iter().any(SpanRecord::is_orphan),
            spans: spans.iter().map(span_view).collect(),
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

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

// === impl Query ===

impl Query {
    fn parse(query: &str) -> Result<Self, String> {
        let mut q = Self {
            limit: 100,
            ..Self::default()
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "service" => q.service = Some(v.to_string()),
                "min_duration_ms" => {
                    q.min_duration_ms = Some(
                        v.parse::<f64>()
                            .ok()
                            .filter(|x| x.is_finite() && *x >= 0.0)
                            .ok_or_else(|| format!("min_duration_ms={v} is not a number"))?,
                    );
                }
                "error" => {
                    q.error = Some(match v {
                        "true" | "1" | "" => true,
                        "false" | "0" => false,
                        _ => return Err(format!("error={v} is not true or false")),
                    });
                }
                "limit" => {
                    q.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("limit={v} is not a positive number"))?;
                }
                other => return Err(format!("unknown parameter {other:?}")),
            }
        }
        Ok(q)
    }

    fn matches(&self, view: &TraceView<'_>, spans: &[SpanRecord]) -> bool {
        if let Some(service) = &self.service {
            let peer = |s: &SpanRecord| {
                s.upstream.as_ref().is_some_and(|u| u.host() == service)
                    || s.host.as_ref().is_some_and(|h| h.split().0 == service)
            };
            if view.service != service && !spans.iter().any(peer) {
                return false;
            }
        }
        if self
            .min_duration_ms
            .is_some_and(|min| view.duration_ms < min)
        {
            return false;
        }
        if self.error.is_some_and(|e| e != view.error) {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use filters::trace::{Outcome, SpanId, SpanKind};
    use http::Method;

    use super::*;

    fn span(kind: SpanKind, trace: TraceId, status: u16, ms: u64) -> SpanRecord {
        let mut s = SpanRecord::start(kind, trace, Method::GET);
        s.sampled = true;
        s.path = Some("/api".parse().unwrap());
        s.finish(&Outcome {
            status: Some(StatusCode::from_u16(status).unwrap()),
            ..Outcome::default()
        });
        s.end_unix_nanos = s.start_unix_nanos + Duration::from_millis(ms).as_nanos() as u64;
        s
    }

    fn body(r: (StatusCode, &'static str, Bytes)) -> (StatusCode, serde_json::Value) {
        assert_eq!(r.1, JSON);
        (r.0, serde_json::from_slice(&r.2).unwrap())
    }

    #[test]
    fn ring_buffer_keeps_the_newest_traces() {
        let store = TraceStore::new(3, "checkout");
        let ids: Vec<TraceId> = (0..5).map(|_| TraceId::random()).collect();
        for id in &ids {
            store.insert([span(SpanKind::Server, *id, 200, 1)]);
        }
        assert_eq!(store.len(), 3);
        let (status, v) = body(store.render_traces(""));
        assert_eq!(status, StatusCode::OK);
        let got: Vec<&str> = v["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["trace_id"].as_str().unwrap())
            .collect();
        let want: Vec<String> = ids[2..].iter().rev().map(|t| t.to_string()).collect();
        assert_eq!(got, want);
        let (status, _) = body(store.render_trace(&ids[0].to_string()));
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn spans_group_by_trace_and_orphans_are_flagged() {
        let store = TraceStore::new(10, "checkout");
        let t = TraceId::random();
        let server = span(SpanKind::Server, t, 200, 10);
        let mut client = span(SpanKind::Client, t, 200, 4);
        client.parent_span_id = Some(server.span_id);
        store.insert([server.clone(), client]);
        let orphan_trace = TraceId::random();
        let mut orphan = span(SpanKind::Client, orphan_trace, 200, 2);
        orphan.upstream = Some("payments.svc:9000".parse().unwrap());
        store.insert([orphan]);
        let (_, v) = body(store.render_trace(&t.to_string()));
        assert_eq!(v["span_count"], 2);
        assert_eq!(v["orphan"], false);
        assert_eq!(v["root"], "GET");
        assert_eq!(v["spans"][0]["attributes"]["url.path"], "/api");
        assert_eq!(v["spans"][1]["parent_span_id"], server.span_id.to_string());
        let (_, v) = body(store.render_trace(&orphan_trace.to_string()));
        assert_eq!(v["orphan"], true);
        assert_eq!(v["spans"][0]["kind"], "CLIENT");
        let _ = SpanId::random();
    }

    #[test]
    fn filters() {
        let store = TraceStore::new(10, "checkout");
        store.insert([span(SpanKind::Server, TraceId::random(), 200, 5)]);
        store.insert([span(SpanKind::Server, TraceId::random(), 503, 50)]);
        let mut out = span(SpanKind::Client, TraceId::random(), 200, 1);
        out.upstream = Some("payments.svc:9000".parse().unwrap());
        store.insert([out]);
        let count = |q: &str| {
            let (status, v) = body(store.render_traces(q));
            assert_eq!(status, StatusCode::OK, "{q}");
            v["traces"].as_array().unwrap().len()
        };
        assert_eq!(count(""), 3);
        assert_eq!(count("error=true"), 1);
        assert_eq!(count("error=false"), 2);
        assert_eq!(count("min_duration_ms=10"), 1);
        assert_eq!(count("service=checkout"), 3);
        assert_eq!(count("service=payments.svc"), 1, "by peer");
        assert_eq!(count("limit=2"), 2);
        assert_eq!(count("service=nobody"), 0);
        for bad in ["min_duration_ms=x", "error=maybe", "limit=0", "colour=red"] {
            let (status, v) = body(store.render_traces(bad));
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(v["error"].is_string());
        }
    }

    #[test]
    fn routing_and_html() {
        let store = TraceStore::new(10, "checkout");
        let mut s = span(SpanKind::Server, TraceId::random(), 500, 3);
        s.route = Some(filters::trace::span::MatchedRoute {
            index: 0,
            name: "<script>".into(),
            sample: None,
        });
        let id = s.trace_id.to_string();
        store.insert([s]);
        assert_eq!(
            store.handle("/debug/traces", Some("error=true")).0,
            StatusCode::OK
        );
        assert_eq!(store.handle("/debug/traces/", None).0, StatusCode::OK);
        assert_eq!(
            store.handle(&format!("/debug/traces/{id}"), None).0,
            StatusCode::OK
        );
        assert_eq!(
            store.handle("/debug/traces/xyz", None).0,
            StatusCode::BAD_REQUEST
        );
        let (status, ct, html) = store.handle("/debug/traces/ui", None);
        assert_eq!((status, ct), (StatusCode::OK, HTML));
        let html = String::from_utf8(html.to_vec()).unwrap();
        assert!(html.contains(&id));
        assert!(html.contains("GET &lt;script&gt;"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("class=\"err\""));
    }

    #[test]
    fn spans_per_trace_are_capped() {
        let store = TraceStore::new(2, "s");
        let t = TraceId::random();
        store.insert((0..MAX_SPANS_PER_TRACE + 10).map(|_| span(SpanKind::Server, t, 200, 1)));
        let (_, v) = body(store.render_trace(&t.to_string()));
        assert_eq!(v["span_count"], MAX_SPANS_PER_TRACE);
    }
}
