//! The span of one request, as a plain struct of typed fields.
//!
//! A [`SpanRecord`] is filled on the request path with values that are cheap
//! to keep (ids as byte arrays, `&'static str`s, `http` types that clone by
//! refcount) and turned into OpenTelemetry protobuf only in the export task.

use std::{
    borrow::Cow,
    fmt,
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::BytesMut;
use http::{
    header::HeaderName,
    uri::{Authority, PathAndQuery},
    HeaderValue, Method, StatusCode, Version,
};
use tokio::time::Instant;

use super::{
    context::{SpanId, TraceId},
    sampler::SamplingReason,
};
use crate::classify::{classify_response, Failure, FailureCategory, GrpcCode};

/// SERVER for requests the proxy receives, CLIENT for the app's outbound calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpanKind {
    /// An inbound request.
    Server,
    /// An outbound call.
    Client,
}

/// The span status of OpenTelemetry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpanStatus {
    /// Not an error (success, client-side 4xx on SERVER spans, cancellation).
    #[default]
    Unset,
    /// An error: NETWORK/INTERNAL on SERVER spans, any failure on CLIENT spans.
    Error,
}

/// The request's host, as it came: the URI authority (HTTP/2) or the `Host`
/// header (HTTP/1), kept without copying.
#[derive(Clone, Debug)]
pub enum Host {
    /// From the request URI.
    Authority(Authority),
    /// From the `Host` header.
    Header(HeaderValue),
}

pub use crate::route::Route;

/// A span attribute value added by a hook.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// A string.
    Str(Cow<'static, str>),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A header value, kept as it came (may not be UTF-8).
    Header(HeaderValue),
}

/// A header recorded as `http.{request,response}.header.<name>`.
#[derive(Clone, Debug)]
pub struct CapturedHeader {
    /// Whether it is a response header.
    pub response: bool,
    /// The header name.
    pub name: HeaderName,
    /// The value (`[REDACTED]` for redacted names).
    pub value: HeaderValue,
}

/// A span event, e.g. `exception`.
#[derive(Clone, Debug)]
pub struct SpanEvent {
    /// The event name.
    pub name: &'static str,
    /// When it happened, in Unix nanoseconds.
    pub time_unix_nanos: u64,
    /// Its attributes.
    pub attributes: Vec<(&'static str, AttrValue)>,
}

/// Span attributes learnt only when a response ends, such as the byte
/// counts of a `CONNECT` tunnel whose 200 went out long before it closed.
///
/// The service that answered puts one in the response extensions and sets
/// it before the response body ends; the trace layer adds what it holds to
/// the span when the body ends. Cheap to clone: one `Arc`.
#[derive(Clone, Debug, Default)]
pub struct EndAttributes(Arc<OnceLock<Vec<Attribute>>>);

/// A span attribute: its key and value.
pub type Attribute = (Cow<'static, str>, AttrValue);

pub use crate::body::Outcome;

/// One request's span.
#[derive(Clone, Debug)]
pub struct SpanRecord {
    /// Trace id.
    pub trace_id: TraceId,
    /// This span's id.
    pub span_id: SpanId,
    /// The caller's span, when it sent one.
    pub parent_span_id: Option<SpanId>,
    /// `tracestate` of the caller, verbatim.
    pub tracestate: Option<HeaderValue>,
    /// SERVER or CLIENT.
    pub kind: SpanKind,
    /// Recorded and exported.
    pub sampled: bool,
    /// Why (not) sampled: `sidetrace.sampling.reason`.
    pub sampling_reason: SamplingReason,
    /// `http.request.method`.
    pub method: Method,
    /// The matched route: `http.route`.
    pub route: Option<Arc<Route>>,
    /// The request is gRPC (`content-type: application/grpc*`).
    pub grpc: bool,
    /// Start, Unix nanoseconds.
    pub start_unix_nanos: u64,
    /// End, Unix nanoseconds (start plus the monotonic duration).
    pub end_unix_nanos: u64,
    /// Monotonic start, for the duration.
    pub started: Instant,
    /// `url.scheme`.
    pub scheme: &'static str,
    /// `network.protocol.version`.
    pub version: Version,
    /// `url.path` (and `url.query`).
    pub path: Option<PathAndQuery>,
    /// `server.address` / `server.port`.
    pub host: Option<Host>,
    /// `client.address`.
    pub client_address: Option<SocketAddr>,
    /// `user_agent.original`.
    pub user_agent: Option<HeaderValue>,
    /// A non-id `x-request-id`: `http.request.header.x-request-id`.
    pub request_id: Option<HeaderValue>,
    /// Where the request was sent (the app, or the outbound destination).
    pub upstream: Option<Authority>,
    /// `http.response.status_code`.
    pub status: Option<StatusCode>,
    /// `rpc.grpc.status_code`.
    pub grpc_status: Option<GrpcCode>,
    /// `sidetrace.failure.category` and `error.type`.
    pub failure: Option<Failure>,
    /// The client went away: `error.type=cancelled`.
    pub cancelled: bool,
    /// OpenTelemetry span status.
    pub status_code: SpanStatus,
    /// Request body bytes, when known.
    pub request_bytes: Option<u64>,
    /// Response body bytes sent.
    pub response_bytes: u64,
    /// Captured headers (empty unless configured).
    pub captured: Vec<CapturedHeader>,
    /// Events, e.g. `exception`.
    pub events: Vec<SpanEvent>,
    /// Attributes added by custom hooks.
    pub attributes: Vec<(Cow<'static, str>, AttrValue)>,
}

/// The current wall clock in Unix nanoseconds.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// === impl EndAttributes ===

impl EndAttributes {
    /// Sets the attributes; only the first call counts.
    pub fn set(&self, attributes: Vec<Attribute>) {
        let _ = self.0.set(attributes);
    }

    /// The attributes set so far (none before [`set`](Self::set)).
    pub fn get(&self) -> &[Attribute] {
        self.0.get().map_or(&[], Vec::as_slice)
    }
}

// === impl SpanKind ===

impl SpanKind {
    /// `SERVER` or `CLIENT`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Server => "SERVER",
            Self::Client => "CLIENT",
        }
    }
}

// === impl Host ===

impl Host {
    /// The host as text (`example.com:8080`); empty if not UTF-8.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Authority(a) => a.as_str(),
            Self::Header(h) => h.to_str().unwrap_or_default(),
        }
    }

    /// `server.address` and `server.port` (`None` when the port is implied).
    pub fn split(&self) -> (&str, Option<u16>) {
        let s = self.as_str();
        // `[::1]:80` or `host:80`; a bare IPv6 literal has no port.
        if let Some(rest) = s.strip_prefix('[') {
            if let Some((host, port)) = rest.split_once(']') {
                return (host, port.strip_prefix(':').and_then(|p| p.parse().ok()));
            }
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
            _ => (s, None),
        }
    }
}

// === impl SpanRecord ===

impl SpanRecord {
    /// Copies every header value, path and authority the record holds into
    /// an allocation of its own. Those came from the request as slices of
    /// hyper's read buffer, and a slice keeps the whole buffer (kilobytes)
    /// alive: a record queued for export or kept by the store compacts first.
    ///
    /// The values are copied into one buffer and sliced back out of it: two
    /// allocations per record (the buffer and its shared header) whatever
    /// the number of values, where a copy per value costs one or two each.
    pub fn compact(&mut self) {
        fn header_len(v: &HeaderValue) -> usize {
            v.len()
        }
        fn value_len(v: &AttrValue) -> usize {
            match v {
                AttrValue::Header(h) => h.len(),
                _ => 0,
            }
        }
        let mut len = 0;
        for v in [&self.tracestate, &self.user_agent, &self.request_id]
            .into_iter()
            .flatten()
        {
            len += header_len(v);
        }
        len += self.path.as_ref().map_or(0, |p| p.as_str().len());
        len += match &self.host {
            Some(Host::Authority(a)) => a.as_str().len(),
            Some(Host::Header(h)) => header_len(h),
            None => 0,
        };
        len += self.upstream.as_ref().map_or(0, |a| a.as_str().len());
        for c in &self.captured {
            len += c.name.as_str().len() + header_len(&c.value);
        }
        for e in &self.events {
            len += e
                .attributes
                .iter()
                .map(|(_, v)| value_len(v))
                .sum::<usize>();
        }
        len += self
            .attributes
            .iter()
            .map(|(_, v)| value_len(v))
            .sum::<usize>();
        if len == 0 {
            return;
        }

        let mut buf = BytesMut::with_capacity(len);
        let mut copy = |bytes: &[u8]| {
            buf.extend_from_slice(bytes);
            buf.split().freeze()
        };
        let mut header = |v: &mut HeaderValue| {
            let sensitive = v.is_sensitive();
            if let Ok(mut owned) = HeaderValue::from_maybe_shared(copy(v.as_bytes())) {
                owned.set_sensitive(sensitive);
                *v = owned;
            }
        };
        for v in [
            &mut self.tracestate,
            &mut self.user_agent,
            &mut self.request_id,
        ]
        .into_iter()
        .flatten()
        {
            header(v);
        }
        if let Some(Host::Header(h)) = &mut self.host {
            header(h);
        }
        for c in &mut self.captured {
            header(&mut c.value);
        }
        let events = self.events.iter_mut().flat_map(|e| e.attributes.iter_mut());
        for v in events
            .map(|(_, v)| v)
            .chain(self.attributes.iter_mut().map(|(_, v)| v))
        {
            if let AttrValue::Header(h) = v {
                header(h);
            }
        }
        let mut copy = |bytes: &[u8]| {
            buf.extend_from_slice(bytes);
            buf.split().freeze()
        };
        if let Some(p) = &mut self.path {
            if let Ok(owned) = PathAndQuery::from_maybe_shared(copy(p.as_str().as_bytes())) {
                *p = owned;
            }
        }
        let mut authority = |a: &mut Authority| {
            if let Ok(owned) = Authority::from_maybe_shared(copy(a.as_str().as_bytes())) {
                *a = owned;
            }
        };
        if let Some(Host::Authority(a)) = &mut self.host {
            authority(a);
        }
        if let Some(a) = &mut self.upstream {
            authority(a);
        }
        for c in &mut self.captured {
            if let Ok(name) = HeaderName::from_bytes(c.name.as_str().as_bytes()) {
                c.name = name;
            }
        }
    }

    /// An estimate of the memory the record holds: itself and the bytes it
    /// owns (header values, path, captured headers, events, attributes).
    /// Bounds stores of finished spans; shared bytes are counted as owned.
    pub fn approx_size(&self) -> usize {
        use std::mem::size_of;
        fn header(v: &Option<HeaderValue>) -> usize {
            v.as_ref().map_or(0, HeaderValue::len)
        }
        fn value(v: &AttrValue) -> usize {
            match v {
                AttrValue::Str(s) => s.len(),
                AttrValue::Header(h) => h.len(),
                AttrValue::Int(_) | AttrValue::Bool(_) => 0,
            }
        }
        let host = match &self.host {
            Some(Host::Authority(a)) => a.as_str().len(),
            Some(Host::Header(h)) => h.len(),
            None => 0,
        };
        let captured: usize = self
            .captured
            .iter()
            .map(|c| size_of::<CapturedHeader>() + c.name.as_str().len() + c.value.len())
            .sum();
        let events: usize = self
            .events
            .iter()
            .map(|e| {
                size_of::<SpanEvent>()
                    + e.attributes
                        .iter()
                        .map(|(_, v)| size_of::<(&str, AttrValue)>() + value(v))
                        .sum::<usize>()
            })
            .sum();
        let attributes: usize = self
            .attributes
            .iter()
            .map(|(k, v)| size_of::<(Cow<'static, str>, AttrValue)>() + k.len() + value(v))
            .sum();
        size_of::<Self>()
            + header(&self.tracestate)
            + header(&self.user_agent)
            + header(&self.request_id)
            + self.path.as_ref().map_or(0, |p| p.as_str().len())
            + host
            + self.upstream.as_ref().map_or(0, |a| a.as_str().len())
            + captured
            + events
            + attributes
    }

    /// A span starting now.
    pub fn start(kind: SpanKind, trace_id: TraceId, method: Method) -> Self {
        Self {
            trace_id,
            span_id: SpanId::random(),
            parent_span_id: None,
            tracestate: None,
            kind,
            sampled: false,
            sampling_reason: SamplingReason::Parent,
            method,
            route: None,
            grpc: false,
            start_unix_nanos: unix_nanos(),
            end_unix_nanos: 0,
            started: Instant::now(),
            scheme: "http",
            version: Version::HTTP_11,
            path: None,
            host: None,
            client_address: None,
            user_agent: None,
            request_id: None,
            upstream: None,
            status: None,
            grpc_status: None,
            failure: None,
            cancelled: false,
            status_code: SpanStatus::Unset,
            request_bytes: None,
            response_bytes: 0,
            captured: Vec::new(),
            events: Vec::new(),
            attributes: Vec::new(),
        }
    }

    /// Fills the end of the span from `outcome`: end time, status, failure
    /// (classified from status and gRPC status when not given), span status.
    pub fn finish(&mut self, outcome: &Outcome) {
        let elapsed = self.started.elapsed();
        self.end_unix_nanos = self.start_unix_nanos + elapsed.as_nanos() as u64;
        self.status = outcome.status;
        self.grpc_status = outcome.grpc;
        self.response_bytes = outcome.response_bytes;
        self.cancelled = outcome.cancelled;
        self.failure = match outcome.failure {
            Some(f) => Some(f),
            None => match outcome.status {
                Some(status) => match classify_response(status, outcome.grpc) {
                    Ok(f) => f,
                    Err(_cancelled) => {
                        self.cancelled = true;
                        None
                    }
                },
                None => None,
            },
        };
        let status = match (self.kind, self.failure.map(|f| f.category)) {
            (SpanKind::Server, Some(FailureCategory::Network | FailureCategory::Internal)) => {
                SpanStatus::Error
            }
            (SpanKind::Client, Some(_)) => SpanStatus::Error,
            _ => SpanStatus::Unset,
        };
        // A status a hook set before the end stands: its Error is not
        // cleared by a clean end, and its Ok is final (`otel::set_status`).
        if self.status_code == SpanStatus::Unset && !self.status_is_ok() {
            self.status_code = status;
        }
    }

    /// The span's duration (zero until finished).
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_unix_nanos.saturating_sub(self.start_unix_nanos))
    }

    /// `error.type`: the failure's type, or `cancelled`.
    pub fn error_type(&self) -> Option<Cow<'static, str>> {
        match (self.failure, self.cancelled) {
            (Some(f), _) => Some(f.error_type.as_str()),
            (None, true) => Some(Cow::Borrowed("cancelled")),
            (None, false) => None,
        }
    }

    /// `rpc.service` and `rpc.method` of a gRPC request
    /// (`/package.Service/Method`).
    pub fn rpc(&self) -> Option<(&str, &str)> {
        if !self.grpc {
            return None;
        }
        let path = self.path.as_ref()?.path();
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        (!service.is_empty() && !method.is_empty() && !method.contains('/'))
            .then_some((service, method))
    }

    /// The span name: `package.Service/Method` for gRPC, `METHOD route`, or
    /// `METHOD` when no route matched. Built at export time.
    pub fn name(&self) -> String {
        let mut name = String::with_capacity(32);
        // Writing to a String cannot fail.
        let _ = self.write_name(&mut name);
        name
    }

    /// Writes the span name (see [`name`](Self::name)) into `out`, so an
    /// encoder can reuse one buffer for every span.
    pub fn write_name<W: fmt::Write>(&self, out: &mut W) -> fmt::Result {
        if let Some((service, method)) = self.rpc() {
            out.write_str(service)?;
            out.write_char('/')?;
            return out.write_str(method);
        }
        out.write_str(self.method.as_str())?;
        if let Some(r) = &self.route {
            out.write_char(' ')?;
            out.write_str(&r.name)?;
        }
        Ok(())
    }

    /// Adds an `exception` event now.
    pub fn record_exception(&mut self, kind: &'static str, message: impl Into<Cow<'static, str>>) {
        self.events.push(SpanEvent {
            name: "exception",
            time_unix_nanos: unix_nanos(),
            attributes: vec![
                ("exception.type", AttrValue::Str(Cow::Borrowed(kind))),
                ("exception.message", AttrValue::Str(message.into())),
            ],
        });
    }

    /// Whether this is a root span of kind CLIENT: an outbound call that
    /// carried no trace context, so the app did not forward its inbound
    /// request's headers (an orphan).
    pub fn is_orphan(&self) -> bool {
        self.kind == SpanKind::Client && self.parent_span_id.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::ErrorType;

    fn span(kind: SpanKind) -> SpanRecord {
        SpanRecord::start(kind, TraceId::random(), Method::GET)
    }

    #[test]
    fn status_table() {
        use FailureCategory::*;
        // (kind, status, grpc, given failure, category, span status, cancelled)
        type Row = (
            SpanKind,
            u16,
            Option<u16>,
            Option<Failure>,
            Option<FailureCategory>,
            SpanStatus,
            bool,
        );
        let timeout = Failure::new(Network, ErrorType::Timeout);
        let table: &[Row] = &[
            (
                SpanKind::Server,
                200,
                None,
                None,
                None,
                SpanStatus::Unset,
                false,
            ),
            (
                SpanKind::Server,
                404,
                None,
                None,
                Some(Validation),
                SpanStatus::Unset,
                false,
            ),
            (
                SpanKind::Client,
                404,
                None,
                None,
                Some(Validation),
                SpanStatus::Error,
                false,
            ),
            (
                SpanKind::Server,
                503,
                None,
                None,
                Some(Network),
                SpanStatus::Error,
                false,
            ),
            (
                SpanKind::Server,
                500,
                None,
                None,
                Some(Internal),
                SpanStatus::Error,
                false,
            ),
            (
                SpanKind::Server,
                200,
                Some(14),
                None,
                Some(Network),
                SpanStatus::Error,
                false,
            ),
            (
                SpanKind::Server,
                200,
                Some(5),
                None,
                Some(Validation),
                SpanStatus::Unset,
                false,
            ),
            (
                SpanKind::Server,
                200,
                Some(1),
                None,
                None,
                SpanStatus::Unset,
                true,
            ),
            (
                SpanKind::Server,
                504,
                None,
                Some(timeout),
                Some(Network),
                SpanStatus::Error,
                false,
            ),
        ];
        for (i, &(kind, status, grpc, failure, category, span_status, cancelled)) in
            table.iter().enumerate()
        {
            let mut s = span(kind);
            s.finish(&Outcome {
                status: Some(StatusCode::from_u16(status).unwrap()),
                grpc: grpc.map(GrpcCode),
                failure,
                ..Outcome::default()
            });
            assert_eq!(s.failure.map(|f| f.category), category, "row {i}");
            assert_eq!(s.status_code, span_status, "row {i}");
            assert_eq!(s.cancelled, cancelled, "row {i}");
        }
        let mut gone = span(SpanKind::Server);
        gone.finish(&Outcome {
            status: Some(StatusCode::OK),
            cancelled: true,
            ..Outcome::default()
        });
        assert_eq!(gone.error_type().as_deref(), Some("cancelled"));
        assert_eq!(gone.status_code, SpanStatus::Unset);
    }

    #[test]
    fn names() {
        let mut s = span(SpanKind::Server);
        assert_eq!(s.name(), "GET");
        s.route = Some(Arc::new(Route {
            index: 0,
            name: "orders".into(),
            sample: None,
            generation: 0,
        }));
        assert_eq!(s.name(), "GET orders");
        s.path = Some(PathAndQuery::from_static("/shop.v1.Cart/AddItem"));
        assert_eq!(s.name(), "GET orders", "not gRPC");
        s.grpc = true;
        assert_eq!(s.name(), "shop.v1.Cart/AddItem");
        assert_eq!(s.rpc(), Some(("shop.v1.Cart", "AddItem")));
        s.path = Some(PathAndQuery::from_static("/nope"));
        assert_eq!(s.rpc(), None);
    }

    #[test]
    fn compact_copies_out_of_the_request_buffer() {
        let buffer = bytes::Bytes::from(vec![b'a'; 8192]);
        let range = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
        let inside = |b: &[u8]| range.contains(&(b.as_ptr() as usize));
        let mut s = SpanRecord::start(SpanKind::Server, TraceId::random(), Method::GET);
        s.user_agent = Some(HeaderValue::from_maybe_shared(buffer.slice(0..10)).unwrap());
        s.host = Some(Host::Header(
            HeaderValue::from_maybe_shared(buffer.slice(10..20)).unwrap(),
        ));
        assert!(inside(s.user_agent.as_ref().unwrap().as_bytes()));
        s.compact();
        assert!(!inside(s.user_agent.as_ref().unwrap().as_bytes()));
        let Some(Host::Header(h)) = &s.host else {
            panic!()
        };
        assert!(!inside(h.as_bytes()));
        assert_eq!(s.user_agent.unwrap().as_bytes(), b"aaaaaaaaaa");
    }

    #[test]
    fn compact_copies_path_and_authorities_into_one_buffer() {
        let buffer = bytes::Bytes::from(b"/items?id=7example.com:8080h2load/1s3cr3t".to_vec());
        let range = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
        let inside = |b: &[u8]| range.contains(&(b.as_ptr() as usize));
        let mut s = SpanRecord::start(SpanKind::Server, TraceId::random(), Method::GET);
        s.path = Some(PathAndQuery::from_maybe_shared(buffer.slice(0..11)).unwrap());
        s.host = Some(Host::Authority(
            Authority::from_maybe_shared(buffer.slice(11..27)).unwrap(),
        ));
        s.upstream = Some(Authority::from_maybe_shared(buffer.slice(11..27)).unwrap());
        s.user_agent = Some(HeaderValue::from_maybe_shared(buffer.slice(27..35)).unwrap());
        let mut secret = HeaderValue::from_maybe_shared(buffer.slice(35..41)).unwrap();
        secret.set_sensitive(true);
        s.attributes
            .push((Cow::Borrowed("secret"), AttrValue::Header(secret)));
        s.compact();
        assert_eq!(s.path.as_ref().unwrap().as_str(), "/items?id=7");
        assert!(!inside(s.path.as_ref().unwrap().as_str().as_bytes()));
        let Some(Host::Authority(a)) = &s.host else {
            panic!()
        };
        assert_eq!(a.as_str(), "example.com:8080");
        assert!(!inside(a.as_str().as_bytes()));
        let upstream = s.upstream.as_ref().unwrap();
        assert_eq!(upstream.as_str(), "example.com:8080");
        assert!(!inside(upstream.as_str().as_bytes()));
        let ua = s.user_agent.as_ref().unwrap();
        assert_eq!(ua.as_bytes(), b"h2load/1");
        assert!(!inside(ua.as_bytes()));
        let AttrValue::Header(h) = &s.attributes[0].1 else {
            panic!()
        };
        assert_eq!(h.as_bytes(), b"s3cr3t");
        assert!(h.is_sensitive());
        assert!(!inside(h.as_bytes()));
    }

    #[test]
    fn host_split() {
        let table: &[(&str, &str, Option<u16>)] = &[
            ("example.com:8080", "example.com", Some(8080)),
            ("example.com", "example.com", None),
            ("[::1]:443", "::1", Some(443)),
            ("[::1]", "::1", None),
            ("10.0.0.1:x", "10.0.0.1", None),
        ];
        for (input, host, port) in table {
            let h = Host::Header(HeaderValue::from_static(input));
            assert_eq!(h.split(), (*host, *port), "{input}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn duration_is_monotonic() {
        let mut s = span(SpanKind::Server);
        tokio::time::advance(Duration::from_millis(250)).await;
        s.finish(&Outcome::default());
        assert_eq!(s.duration(), Duration::from_millis(250));
        assert!(!s.is_orphan());
        let c = span(SpanKind::Client);
        assert!(c.is_orphan());
    }
}
