//! Span records to OpenTelemetry protobuf, in the export task only.
//!
//! [`for_each_attribute`] is the one list of a span's attributes; the OTLP
//! encoder and the embedded store's JSON both walk it, so the two views of a
//! span cannot disagree. Keys come from `opentelemetry_semantic_conventions`.

use std::{borrow::Cow, fmt::Write as _, net::IpAddr};

use filters::trace::{
    span::{AttrValue, SpanEvent},
    Resource, SpanKind, SpanRecord, SpanStatus,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    resource::v1::Resource as ProtoResource,
    trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status},
};
use opentelemetry_semantic_conventions::attribute as semconv;
use prost::Message;

/// An attribute value as the encoders see it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// A string.
    Str(Cow<'a, str>),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// An IP address, formatted by the encoder (no allocation per span).
    Ip(IpAddr),
}

/// `sidetrace.failure.category`.
pub const FAILURE_CATEGORY: &str = "sidetrace.failure.category";
/// `sidetrace.sampling.reason`.
pub const SAMPLING_REASON: &str = "sidetrace.sampling.reason";
/// The instrumentation scope name.
pub const SCOPE: &str = "sidetrace";

// The DESIGN names `rpc.system`, `rpc.service` and `rpc.grpc.status_code`,
// which the current conventions deprecate in favour of `rpc.system.name` and
// `rpc.response.status_code`; backends (Tempo, Jaeger) still key on the old
// names, so they are kept until the stable gRPC conventions land.
#[allow(deprecated)]
const RPC_SYSTEM: &str = semconv::RPC_SYSTEM;
#[allow(deprecated)]
const RPC_SERVICE: &str = semconv::RPC_SERVICE;
#[allow(deprecated)]
const RPC_GRPC_STATUS_CODE: &str = semconv::RPC_GRPC_STATUS_CODE;

/// Calls `f` with every attribute of `span`, in a stable order.
pub fn for_each_attribute(span: &SpanRecord, mut f: impl FnMut(Cow<'_, str>, Value<'_>)) {
    let mut put = |k: &'static str, v: Value<'_>| f(Cow::Borrowed(k), v);
    let method = filters::metrics::method_label(&span.method);
    put(semconv::HTTP_REQUEST_METHOD, Value::Str(method.into()));
    if method == "_OTHER" {
        put(
            semconv::HTTP_REQUEST_METHOD_ORIGINAL,
            Value::Str(span.method.as_str().into()),
        );
    }
    if let Some(p) = &span.path {
        put(semconv::URL_PATH, Value::Str(p.path().into()));
    }
    put(semconv::URL_SCHEME, Value::Str(span.scheme.into()));
    if let Some(r) = &span.route {
        put(semconv::HTTP_ROUTE, Value::Str((*r.name).into()));
    }
    if let Some(s) = span.status {
        put(
            semconv::HTTP_RESPONSE_STATUS_CODE,
            Value::Int(i64::from(s.as_u16())),
        );
    }
    put(
        semconv::NETWORK_PROTOCOL_VERSION,
        Value::Str(filters::metrics::protocol_label(span.version).into()),
    );
    // server.*: the request's host for SERVER spans; for CLIENT spans the
    // destination, which is the host the app asked for.
    let server = span
        .host
        .as_ref()
        .map(|h| h.split())
        .or_else(|| span.upstream.as_ref().map(|u| (u.host(), u.port_u16())));
    if let Some((host, port)) = server {
        if !host.is_empty() {
            put(semconv::SERVER_ADDRESS, Value::Str(host.into()));
        }
        if let Some(port) = port {
            put(semconv::SERVER_PORT, Value::Int(i64::from(port)));
        }
    }
    if let Some(addr) = span.client_address {
        put(semconv::CLIENT_ADDRESS, Value::Ip(addr.ip()));
    }
    if let Some(ua) = &span.user_agent {
        put(
            semconv::USER_AGENT_ORIGINAL,
            Value::Str(String::from_utf8_lossy(ua.as_bytes())),
        );
    }
    if let Some((service, method)) = span.rpc() {
        put(RPC_SYSTEM, Value::Str("grpc".into()));
        put(RPC_SERVICE, Value::Str(service.into()));
        put(semconv::RPC_METHOD, Value::Str(method.into()));
    }
    if let Some(code) = span.grpc_status {
        put(RPC_GRPC_STATUS_CODE, Value::Int(i64::from(code.0)));
    }
    if let Some(e) = span.error_type() {
        put(semconv::ERROR_TYPE, Value::Str(e));
    }
    if let Some(f) = span.failure {
        put(FAILURE_CATEGORY, Value::Str(f.category.as_str().into()));
    }
    if let Some(n) = span.request_bytes {
        put(
            semconv::HTTP_REQUEST_BODY_SIZE,
            Value::Int(i64::try_from(n).unwrap_or(i64::MAX)),
        );
    }
    put(
        semconv::HTTP_RESPONSE_BODY_SIZE,
        Value::Int(i64::try_from(span.response_bytes).unwrap_or(i64::MAX)),
    );
    if span.sampled {
        put(
            SAMPLING_REASON,
            Value::Str(span.sampling_reason.as_str().into()),
        );
    }
    if let Some(id) = &span.request_id {
        put(
            "http.request.header.x-request-id",
            Value::Str(String::from_utf8_lossy(id.as_bytes())),
        );
    }
    for c in &span.captured {
        let side = if c.response { "response" } else { "request" };
        f(
            Cow::Owned(format!("http.{side}.header.{}", c.name)),
            Value::Str(String::from_utf8_lossy(c.value.as_bytes())),
        );
    }
    for (k, v) in &span.attributes {
        f(Cow::Borrowed(&**k), attr_value(v));
    }
}

/// A hook's attribute value as an encoder value.
pub fn attr_value(v: &AttrValue) -> Value<'_> {
    match v {
        AttrValue::Str(s) => Value::Str(Cow::Borrowed(&**s)),
        AttrValue::Int(i) => Value::Int(*i),
        AttrValue::Bool(b) => Value::Bool(*b),
        AttrValue::Header(h) => Value::Str(String::from_utf8_lossy(h.as_bytes())),
    }
}

/// One OTLP attribute.
pub(crate) fn key_value(k: Cow<'_, str>, v: Value<'_>) -> KeyValue {
    let value = match v {
        Value::Str(s) => any_value::Value::StringValue(s.into_owned()),
        Value::Int(i) => any_value::Value::IntValue(i),
        Value::Bool(b) => any_value::Value::BoolValue(b),
        Value::Ip(ip) => any_value::Value::StringValue(ip.to_string()),
    };
    KeyValue {
        key: k.into_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

/// The OTLP resource.
pub fn resource(resource: &Resource) -> ProtoResource {
    ProtoResource {
        attributes: resource
            .attributes
            .iter()
            .map(|(k, v)| key_value(Cow::Borrowed(k), Value::Str(Cow::Borrowed(v))))
            .collect(),
        ..ProtoResource::default()
    }
}

fn event(e: &SpanEvent) -> span::Event {
    span::Event {
        time_unix_nano: e.time_unix_nanos,
        name: e.name.to_string(),
        attributes: e
            .attributes
            .iter()
            .map(|(k, v)| key_value(Cow::Borrowed(k), attr_value(v)))
            .collect(),
        dropped_attributes_count: 0,
    }
}

/// One span as OTLP.
pub fn span(record: &SpanRecord) -> Span {
    let mut attributes = Vec::with_capacity(16);
    for_each_attribute(record, |k, v| attributes.push(key_value(k, v)));
    let flags = span_flags(record);
    Span {
        trace_id: record.trace_id.to_bytes().to_vec(),
        span_id: record.span_id.to_bytes().to_vec(),
        trace_state: record
            .tracestate
            .as_ref()
            .and_then(|t| t.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        parent_span_id: record
            .parent_span_id
            .map(|p| p.to_bytes().to_vec())
            .unwrap_or_default(),
        flags,
        name: record.name(),
        kind: match record.kind {
            SpanKind::Server => span::SpanKind::Server as i32,
            SpanKind::Client => span::SpanKind::Client as i32,
        },
        start_time_unix_nano: record.start_unix_nanos,
        end_time_unix_nano: record.end_unix_nanos,
        attributes,
        events: record.events.iter().map(event).collect(),
        status: Some(match record.status_code {
            SpanStatus::Error => Status {
                message: record.error_type().map(Cow::into_owned).unwrap_or_default(),
                code: status::StatusCode::Error as i32,
            },
            SpanStatus::Unset => Status::default(),
        }),
        ..Span::default()
    }
}

/// One export request for `spans`.
pub fn request(res: &ProtoResource, spans: &[SpanRecord]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(res.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: SCOPE.to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    ..InstrumentationScope::default()
                }),
                spans: spans.iter().map(span).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// Encodes `spans` into an OTLP protobuf body through the prost structs
/// ([`request`]); [`Encoder`] writes the same message without them.
pub fn encode(res: &ProtoResource, spans: &[SpanRecord]) -> bytes::Bytes {
    request(res, spans).encode_to_vec().into()
}

/// Writes `ExportTraceServiceRequest` protobuf straight from span records,
/// reusing its scratch buffers from batch to batch: no per-attribute
/// `String`s and no intermediate message structs. Decodes to exactly what
/// [`request`] builds (a test holds the two together).
#[derive(Debug)]
pub struct Encoder {
    resource: Vec<u8>,
    scope: Vec<u8>,
    spans: Vec<u8>,
    span: Vec<u8>,
    event: Vec<u8>,
    text: String,
}

pub(crate) mod wire {
    //! Protobuf wire helpers over prost's varint and key encoders. Default
    //! values are skipped as prost skips them.
    pub(crate) use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};

    pub(crate) fn bytes(buf: &mut Vec<u8>, tag: u32, data: &[u8]) {
        if !data.is_empty() {
            message(buf, tag, data);
        }
    }

    /// A length-delimited field, written even when empty.
    pub(crate) fn message(buf: &mut Vec<u8>, tag: u32, data: &[u8]) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(data.len() as u64, buf);
        buf.extend_from_slice(data);
    }

    pub(crate) fn fixed64(buf: &mut Vec<u8>, tag: u32, v: u64) {
        if v != 0 {
            encode_key(tag, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    pub(crate) fn fixed32(buf: &mut Vec<u8>, tag: u32, v: u32) {
        if v != 0 {
            encode_key(tag, WireType::ThirtyTwoBit, buf);
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    pub(crate) fn varint(buf: &mut Vec<u8>, tag: u32, v: u64) {
        if v != 0 {
            encode_key(tag, WireType::Varint, buf);
            encode_varint(v, buf);
        }
    }

    /// Length of a length-delimited field of `len` bytes with a one-byte key.
    pub(crate) fn field_len(len: usize) -> usize {
        1 + encoded_len_varint(len as u64) + len
    }
}

// === impl Encoder ===

impl Encoder {
    /// An encoder for batches of `resource`'s spans.
    pub fn new(resource: &ProtoResource) -> Self {
        let mut scope = Vec::new();
        wire::bytes(&mut scope, 1, SCOPE.as_bytes());
        wire::bytes(&mut scope, 2, env!("CARGO_PKG_VERSION").as_bytes());
        Self {
            resource: resource.encode_to_vec(),
            scope,
            spans: Vec::new(),
            span: Vec::new(),
            event: Vec::new(),
            text: String::new(),
        }
    }

    /// One export request body for `spans`.
    pub fn encode(&mut self, spans: &[SpanRecord]) -> bytes::Bytes {
        self.spans.clear();
        for record in spans {
            self.span(record);
            wire::message(&mut self.spans, 2, &self.span);
        }
        // ScopeSpans { scope = 1, spans = 2 }
        let scope_spans_len = wire::field_len(self.scope.len()) + self.spans.len();
        // ResourceSpans { resource = 1, scope_spans = 2 }
        let resource_spans_len =
            wire::field_len(self.resource.len()) + wire::field_len(scope_spans_len);
        let mut out = Vec::with_capacity(wire::field_len(resource_spans_len));
        wire::encode_key(1, wire::WireType::LengthDelimited, &mut out);
        wire::encode_varint(resource_spans_len as u64, &mut out);
        wire::message(&mut out, 1, &self.resource);
        wire::encode_key(2, wire::WireType::LengthDelimited, &mut out);
        wire::encode_varint(scope_spans_len as u64, &mut out);
        wire::message(&mut out, 1, &self.scope);
        out.extend_from_slice(&self.spans);
        out.into()
    }

    fn span(&mut self, r: &SpanRecord) {
        let Self {
            span: buf,
            event,
            text,
            ..
        } = self;
        buf.clear();
        wire::bytes(buf, 1, &r.trace_id.to_bytes());
        wire::bytes(buf, 2, &r.span_id.to_bytes());
        if let Some(state) = r.tracestate.as_ref().and_then(|t| t.to_str().ok()) {
            wire::bytes(buf, 3, state.as_bytes());
        }
        if let Some(parent) = r.parent_span_id {
            wire::bytes(buf, 4, &parent.to_bytes());
        }
        text.clear();
        // Writing to a String cannot fail.
        let _ = r.write_name(text);
        wire::bytes(buf, 5, text.as_bytes());
        let kind = match r.kind {
            SpanKind::Server => span::SpanKind::Server,
            SpanKind::Client => span::SpanKind::Client,
        };
        wire::varint(buf, 6, kind as u64);
        wire::fixed64(buf, 7, r.start_unix_nanos);
        wire::fixed64(buf, 8, r.end_unix_nanos);
        for_each_attribute(r, |k, v| put_key_value(buf, 9, &k, &v, text));
        for e in &r.events {
            event.clear();
            wire::fixed64(event, 1, e.time_unix_nanos);
            wire::bytes(event, 2, e.name.as_bytes());
            for (k, v) in &e.attributes {
                put_key_value(event, 3, k, &attr_value(v), text);
            }
            wire::message(buf, 11, event);
        }
        // Status { message = 2, code = 3 }, always present.
        match r.status_code {
            SpanStatus::Error => {
                text.clear();
                if let Some(e) = r.error_type() {
                    text.push_str(&e);
                }
                let message_len = if text.is_empty() {
                    0
                } else {
                    wire::field_len(text.len())
                };
                wire::encode_key(15, wire::WireType::LengthDelimited, buf);
                wire::encode_varint((message_len + 2) as u64, buf);
                wire::bytes(buf, 2, text.as_bytes());
                wire::varint(buf, 3, status::StatusCode::Error as u64);
            }
            SpanStatus::Unset => wire::message(buf, 15, &[]),
        }
        wire::fixed32(buf, 16, span_flags(r));
    }
}

/// `KeyValue { key = 1, value = 2: AnyValue { oneof } }` as field `tag`.
pub(crate) fn put_key_value(
    buf: &mut Vec<u8>,
    tag: u32,
    key: &str,
    v: &Value<'_>,
    scratch: &mut String,
) {
    let s: &str = match v {
        Value::Str(s) => s,
        Value::Ip(ip) => {
            scratch.clear();
            let _ = write!(scratch, "{ip}");
            scratch
        }
        Value::Int(_) | Value::Bool(_) => "",
    };
    // Oneof members are written even when they hold a default value.
    let any_len = match v {
        Value::Str(_) | Value::Ip(_) => wire::field_len(s.len()),
        Value::Int(i) => 1 + wire::encoded_len_varint(*i as u64),
        Value::Bool(_) => 2,
    };
    let key_len = if key.is_empty() {
        0
    } else {
        wire::field_len(key.len())
    };
    wire::encode_key(tag, wire::WireType::LengthDelimited, buf);
    wire::encode_varint((key_len + wire::field_len(any_len)) as u64, buf);
    wire::bytes(buf, 1, key.as_bytes());
    wire::encode_key(2, wire::WireType::LengthDelimited, buf);
    wire::encode_varint(any_len as u64, buf);
    match v {
        Value::Str(_) | Value::Ip(_) => wire::message(buf, 1, s.as_bytes()),
        Value::Int(i) => {
            wire::encode_key(3, wire::WireType::Varint, buf);
            wire::encode_varint(*i as u64, buf);
        }
        Value::Bool(b) => {
            wire::encode_key(2, wire::WireType::Varint, buf);
            wire::encode_varint(u64::from(*b), buf);
        }
    }
}

/// Trace flags (sampled), and whether the parent is remote (it is when the
/// caller sent one).
fn span_flags(r: &SpanRecord) -> u32 {
    let mut flags = 0x01 | 0x100;
    if r.parent_span_id.is_some() {
        flags |= 0x200;
    }
    flags
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use filters::{
        classify::{ErrorType, Failure, FailureCategory, GrpcCode},
        trace::{
            span::{AttrValue, Host},
            ServiceInfo, SpanId, TraceId,
        },
    };
    use http::{HeaderValue, Method, StatusCode};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    use super::*;

    fn attrs(s: &Span) -> HashMap<String, any_value::Value> {
        s.attributes
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone().unwrap().value.unwrap()))
            .collect()
    }

    fn s(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    #[test]
    fn grpc_server_span_round_trips() {
        let mut r = SpanRecord::start(SpanKind::Server, TraceId::random(), Method::POST);
        r.parent_span_id = Some(SpanId::random());
        r.grpc = true;
        r.sampled = true;
        r.path = Some("/shop.v1.Cart/AddItem".parse().unwrap());
        r.host = Some(Host::Header(HeaderValue::from_static("cart.local:50051")));
        r.client_address = Some("10.0.0.9:5555".parse().unwrap());
        r.version = http::Version::HTTP_2;
        r.tracestate = Some(HeaderValue::from_static("rojo=1"));
        r.finish(&filters::trace::Outcome {
            status: Some(StatusCode::OK),
            grpc: Some(GrpcCode(14)),
            response_bytes: 12,
            ..Default::default()
        });
        r.record_exception("panic", "boom");
        let res = resource(&Resource::new(
            ServiceInfo {
                name: Some("checkout"),
                ..Default::default()
            },
            &HashMap::new(),
        ));
        let body = encode(&res, std::slice::from_ref(&r));
        let decoded = ExportTraceServiceRequest::decode(body).unwrap();
        let rs = &decoded.resource_spans[0];
        assert!(rs.resource.as_ref().unwrap().attributes.iter().any(|kv| {
            kv.key == "service.name" && kv.value.as_ref().unwrap().value == Some(s("checkout"))
        }));
        let span = &rs.scope_spans[0].spans[0];
        assert_eq!(span.name, "shop.v1.Cart/AddItem");
        assert_eq!(span.kind, span::SpanKind::Server as i32);
        assert_eq!(span.trace_id, r.trace_id.to_bytes());
        assert_eq!(span.parent_span_id, r.parent_span_id.unwrap().to_bytes());
        assert_eq!(span.trace_state, "rojo=1");
        assert_eq!(span.flags, 0x301);
        assert_eq!(
            span.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
        let a = attrs(span);
        assert_eq!(a["rpc.system"], s("grpc"));
        assert_eq!(a["rpc.service"], s("shop.v1.Cart"));
        assert_eq!(a["rpc.method"], s("AddItem"));
        assert_eq!(a["rpc.grpc.status_code"], any_value::Value::IntValue(14));
        assert_eq!(
            a["http.response.status_code"],
            any_value::Value::IntValue(200)
        );
        assert_eq!(a["network.protocol.version"], s("2"));
        assert_eq!(a["server.address"], s("cart.local"));
        assert_eq!(a["server.port"], any_value::Value::IntValue(50051));
        assert_eq!(a["client.address"], s("10.0.0.9"));
        assert_eq!(a["error.type"], s("UNAVAILABLE"));
        assert_eq!(a["sidetrace.failure.category"], s("NETWORK"));
        assert_eq!(a["sidetrace.sampling.reason"], s("parent"));
        assert_eq!(span.events[0].name, "exception");
    }

    #[test]
    fn direct_encoder_matches_the_prost_messages() {
        let res = resource(&Resource::new(ServiceInfo::default(), &HashMap::new()));
        let mut enc = Encoder::new(&res);
        let mut spans = Vec::new();
        let kinds = [SpanKind::Server, SpanKind::Client, SpanKind::Server];
        for (i, kind) in kinds.into_iter().enumerate() {
            let mut r = SpanRecord::start(kind, TraceId::random(), Method::GET);
            r.sampled = i != 1;
            r.path = Some("/a.B/C".parse().unwrap());
            r.grpc = i == 2;
            r.client_address = Some("[::1]:80".parse().unwrap());
            r.tracestate = (i == 0).then(|| HeaderValue::from_static("k=v"));
            r.parent_span_id = (i == 0).then(SpanId::random);
            r.attributes.push(("custom.neg".into(), AttrValue::Int(-5)));
            r.attributes
                .push(("custom.flag".into(), AttrValue::Bool(false)));
            r.attributes
                .push(("custom.empty".into(), AttrValue::Str("".into())));
            let status = if i == 1 {
                StatusCode::BAD_GATEWAY
            } else {
                StatusCode::OK
            };
            r.finish(&filters::trace::Outcome {
                status: Some(status),
                ..Default::default()
            });
            if i == 2 {
                r.record_exception("panic", "boom");
            }
            spans.push(r);
        }
        let direct = ExportTraceServiceRequest::decode(enc.encode(&spans)).unwrap();
        assert_eq!(direct, request(&res, &spans));
        // Scratch buffers are reused: a second batch encodes alike.
        let again = ExportTraceServiceRequest::decode(enc.encode(&spans[1..])).unwrap();
        assert_eq!(again, request(&res, &spans[1..]));
        let empty = ExportTraceServiceRequest::decode(enc.encode(&[])).unwrap();
        assert_eq!(empty, request(&res, &[]));
    }

    #[test]
    fn client_span_with_captured_headers_and_odd_method() {
        let mut r = SpanRecord::start(
            SpanKind::Client,
            TraceId::random(),
            Method::from_bytes(b"PURGE").unwrap(),
        );
        r.upstream = Some("payments.svc:9000".parse().unwrap());
        r.captured.push(filters::trace::span::CapturedHeader {
            response: false,
            name: http::header::HeaderName::from_static("x-tenant"),
            value: HeaderValue::from_static("acme"),
        });
        r.request_id = Some(HeaderValue::from_static("req-1"));
        r.finish(&filters::trace::Outcome {
            status: Some(StatusCode::NOT_FOUND),
            failure: Some(Failure::new(
                FailureCategory::Validation,
                ErrorType::Status(StatusCode::NOT_FOUND),
            )),
            ..Default::default()
        });
        let span = span(&r);
        assert_eq!(span.kind, span::SpanKind::Client as i32);
        assert_eq!(span.flags, 0x101);
        assert_eq!(
            span.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
        let a = attrs(&span);
        assert_eq!(a["http.request.method"], s("_OTHER"));
        assert_eq!(a["http.request.method_original"], s("PURGE"));
        assert_eq!(a["server.address"], s("payments.svc"));
        assert_eq!(a["http.request.header.x-tenant"], s("acme"));
        assert_eq!(a["http.request.header.x-request-id"], s("req-1"));
        assert_eq!(a["error.type"], s("404"));
        assert!(!a.contains_key("sidetrace.sampling.reason"), "unsampled");
        assert_eq!(span.name, "PURGE");
    }
}
