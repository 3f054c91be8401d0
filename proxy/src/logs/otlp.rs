//! Log records to OpenTelemetry protobuf, in the export task only.
//!
//! [`for_each_attribute`] is the one list of an access record's attributes
//! (semantic-convention keys where they exist, as on the request's span);
//! the direct [`Encoder`] and the prost messages of [`request`] both walk
//! it, and a test holds the two encodings together.
//!
//! | outcome | `severity_number` | `severity_text` |
//! |---|---|---|
//! | success (a client that went away included) | 9 INFO | `INFO` |
//! | VALIDATION failure | 13 WARN | `WARN` |
//! | NETWORK failure | 17 ERROR | `ERROR` |
//! | INTERNAL failure | 19 ERROR3 | `ERROR` |
//! | proxy warning / error | 13 WARN / 17 ERROR | `WARN` / `ERROR` |
//!
//! INTERNAL is an error of higher priority than NETWORK, not FATAL: the
//! proxy answered 500 and keeps serving, which is not what FATAL tells an
//! operator. Each record's instrumentation scope is its log target
//! (`sidetrace::access` for access records), as on stdout.

use std::{borrow::Cow, fmt::Write as _};

use filters::{
    classify::FailureCategory,
    trace::{AccessRecord, EventRecord, FieldValue, LogRecord},
};
use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    logs::v1::{LogRecord as ProtoLogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    resource::v1::Resource as ProtoResource,
};
use opentelemetry_semantic_conventions::attribute as semconv;
use prost::Message;

use crate::export::otlp::{key_value, put_key_value, wire, Value, FAILURE_CATEGORY};

/// The log target, and scope, of access records.
pub const ACCESS_TARGET: &str = "sidetrace::access";
/// `event_name` of access records.
pub const ACCESS_EVENT: &str = "sidetrace.access";

/// An attribute value of a log record.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr<'a> {
    /// A value spans have too.
    Value(Value<'a>),
    /// A float.
    Double(f64),
}

#[allow(deprecated)]
const RPC_GRPC_STATUS_CODE: &str = semconv::RPC_GRPC_STATUS_CODE;

/// Calls `f` with every attribute of `r`, in a stable order.
pub fn for_each_attribute(r: &AccessRecord, mut f: impl FnMut(&'static str, Attr<'_>)) {
    let mut put = |k: &'static str, v: Value<'_>| f(k, Attr::Value(v));
    put("sidetrace.span.kind", Value::Str(r.kind.as_str().into()));
    let method = filters::metrics::method_label(&r.method);
    put(semconv::HTTP_REQUEST_METHOD, Value::Str(method.into()));
    if method == "_OTHER" {
        put(
            semconv::HTTP_REQUEST_METHOD_ORIGINAL,
            Value::Str(r.method.as_str().into()),
        );
    }
    put(semconv::URL_SCHEME, Value::Str(r.scheme.into()));
    if let Some(p) = &r.path {
        put(semconv::URL_PATH, Value::Str(p.path().into()));
    }
    if let Some(route) = &r.route {
        put(semconv::HTTP_ROUTE, Value::Str((**route).into()));
    }
    put(
        semconv::NETWORK_PROTOCOL_VERSION,
        Value::Str(filters::metrics::protocol_label(r.version).into()),
    );
    if let Some(s) = r.status {
        put(
            semconv::HTTP_RESPONSE_STATUS_CODE,
            Value::Int(i64::from(s.as_u16())),
        );
    }
    if let Some(code) = r.grpc_status {
        put(RPC_GRPC_STATUS_CODE, Value::Int(i64::from(code.0)));
    }
    // server.*: the request's host for SERVER requests, the destination
    // for CLIENT ones, as on the span.
    let server = r
        .host
        .as_ref()
        .map(|h| h.split())
        .or_else(|| r.upstream.as_ref().map(|u| (u.host(), u.port_u16())));
    if let Some((host, port)) = server {
        if !host.is_empty() {
            put(semconv::SERVER_ADDRESS, Value::Str(host.into()));
        }
        if let Some(port) = port {
            put(semconv::SERVER_PORT, Value::Int(i64::from(port)));
        }
    }
    if let Some(addr) = r.client_address {
        put(semconv::CLIENT_ADDRESS, Value::Ip(addr.ip()));
        put(semconv::CLIENT_PORT, Value::Int(i64::from(addr.port())));
    }
    if let Some(u) = &r.upstream {
        put("sidetrace.upstream", Value::Str(u.as_str().into()));
    }
    if let Some(e) = r.error_type() {
        put(semconv::ERROR_TYPE, Value::Str(e));
    }
    if let Some(failure) = r.failure {
        put(
            FAILURE_CATEGORY,
            Value::Str(failure.category.as_str().into()),
        );
    }
    if let Some(n) = r.request_bytes {
        put(
            semconv::HTTP_REQUEST_BODY_SIZE,
            Value::Int(i64::try_from(n).unwrap_or(i64::MAX)),
        );
    }
    put(
        semconv::HTTP_RESPONSE_BODY_SIZE,
        Value::Int(i64::try_from(r.response_bytes).unwrap_or(i64::MAX)),
    );
    f("sidetrace.duration_ms", Attr::Double(r.duration_ms()));
}

/// Severity of an access record: by the failure category's priority.
pub fn access_severity(r: &AccessRecord) -> (SeverityNumber, &'static str) {
    match r.failure.map(|f| f.category) {
        None => (SeverityNumber::Info, "INFO"),
        Some(FailureCategory::Validation) => (SeverityNumber::Warn, "WARN"),
        Some(FailureCategory::Network) => (SeverityNumber::Error, "ERROR"),
        Some(FailureCategory::Internal) => (SeverityNumber::Error3, "ERROR"),
    }
}

/// Severity of a proxy event.
pub fn event_severity(e: &EventRecord) -> (SeverityNumber, &'static str) {
    if e.level == tracing::Level::ERROR {
        (SeverityNumber::Error, "ERROR")
    } else {
        (SeverityNumber::Warn, "WARN")
    }
}

/// The body of an access record, one line for a person reading a log view:
/// `GET /api/orders/42 504 timeout 5001.2ms`.
pub fn write_access_body(r: &AccessRecord, out: &mut String) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{} ", r.method);
    out.push_str(r.path.as_ref().map_or("/", |p| p.path()));
    match r.status {
        Some(s) => {
            let _ = write!(out, " {}", s.as_u16());
        }
        None => out.push_str(" -"),
    }
    if let Some(code) = r.grpc_status {
        let _ = write!(out, " grpc-status {}", code.0);
    }
    if let Some(e) = r.error_type() {
        out.push(' ');
        out.push_str(&e);
    }
    let _ = write!(out, " {:.1}ms", r.duration_ms());
}

fn target(r: &LogRecord) -> &'static str {
    match r {
        LogRecord::Access(_) => ACCESS_TARGET,
        LogRecord::Event(e) => e.target,
    }
}

/// The scopes of `records` (their targets), in order of first appearance.
fn scopes(records: &[LogRecord], out: &mut Vec<&'static str>) {
    out.clear();
    for r in records {
        let t = target(r);
        if !out.contains(&t) {
            out.push(t);
        }
    }
}

fn event_attr(v: &FieldValue) -> Attr<'_> {
    match v {
        FieldValue::Str(s) => Attr::Value(Value::Str(Cow::Borrowed(s))),
        FieldValue::Int(i) => Attr::Value(Value::Int(*i)),
        FieldValue::Bool(b) => Attr::Value(Value::Bool(*b)),
        FieldValue::Float(f) => Attr::Double(*f),
    }
}

// === prost messages ===

fn proto_attr(k: &str, v: Attr<'_>) -> KeyValue {
    match v {
        Attr::Value(v) => key_value(Cow::Borrowed(k), v),
        Attr::Double(d) => KeyValue {
            key: k.to_string(),
            value: Some(AnyValue {
                value: Some(any_value::Value::DoubleValue(d)),
            }),
            ..KeyValue::default()
        },
    }
}

fn string_body(s: String) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    })
}

/// One record as OTLP.
pub fn log_record(record: &LogRecord) -> ProtoLogRecord {
    match record {
        LogRecord::Access(r) => {
            let mut attributes = Vec::with_capacity(20);
            for_each_attribute(r, |k, v| attributes.push(proto_attr(k, v)));
            let (severity, text) = access_severity(r);
            let mut body = String::new();
            write_access_body(r, &mut body);
            ProtoLogRecord {
                time_unix_nano: r.end_unix_nanos,
                observed_time_unix_nano: r.end_unix_nanos,
                severity_number: severity as i32,
                severity_text: text.to_string(),
                body: string_body(body),
                attributes,
                flags: u32::from(r.sampled),
                trace_id: r.trace_id.to_bytes().to_vec(),
                span_id: r.span_id.to_bytes().to_vec(),
                event_name: ACCESS_EVENT.to_string(),
                ..ProtoLogRecord::default()
            }
        }
        LogRecord::Event(e) => {
            let (severity, text) = event_severity(e);
            ProtoLogRecord {
                time_unix_nano: e.time_unix_nanos,
                observed_time_unix_nano: e.time_unix_nanos,
                severity_number: severity as i32,
                severity_text: text.to_string(),
                body: string_body(e.message.clone()),
                attributes: e
                    .fields
                    .iter()
                    .map(|(k, v)| proto_attr(k, event_attr(v)))
                    .collect(),
                ..ProtoLogRecord::default()
            }
        }
    }
}

/// One export request for `records`, through the prost messages.
pub fn request(res: &ProtoResource, records: &[LogRecord]) -> ExportLogsServiceRequest {
    let mut targets = Vec::new();
    scopes(records, &mut targets);
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(res.clone()),
            scope_logs: targets
                .iter()
                .map(|t| ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: t.to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        ..InstrumentationScope::default()
                    }),
                    log_records: records
                        .iter()
                        .filter(|r| target(r) == *t)
                        .map(log_record)
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
            schema_url: String::new(),
        }],
    }
}

// === Encoder ===

/// Writes `ExportLogsServiceRequest` protobuf straight from the records,
/// reusing its buffers from batch to batch; decodes to exactly what
/// [`request`] builds.
#[derive(Debug)]
pub struct Encoder {
    resource: Vec<u8>,
    scopes: Vec<u8>,
    scope: Vec<u8>,
    records: Vec<u8>,
    record: Vec<u8>,
    text: String,
    scratch: String,
    targets: Vec<&'static str>,
}

impl Encoder {
    /// An encoder for batches of `resource`'s records.
    pub fn new(resource: &ProtoResource) -> Self {
        Self {
            resource: resource.encode_to_vec(),
            scopes: Vec::new(),
            scope: Vec::new(),
            records: Vec::new(),
            record: Vec::new(),
            text: String::new(),
            scratch: String::new(),
            targets: Vec::new(),
        }
    }

    /// One export request body for `records`.
    pub fn encode(&mut self, records: &[LogRecord]) -> bytes::Bytes {
        let mut targets = std::mem::take(&mut self.targets);
        scopes(records, &mut targets);
        self.scopes.clear();
        for t in &targets {
            self.records.clear();
            for r in records.iter().filter(|r| target(r) == *t) {
                self.record(r);
                wire::message(&mut self.records, 2, &self.record);
            }
            // InstrumentationScope { name = 1, version = 2 }
            self.scope.clear();
            wire::bytes(&mut self.scope, 1, t.as_bytes());
            wire::bytes(&mut self.scope, 2, env!("CARGO_PKG_VERSION").as_bytes());
            // ScopeLogs { scope = 1, log_records = 2 }
            let len = wire::field_len(self.scope.len()) + self.records.len();
            wire::encode_key(2, wire::WireType::LengthDelimited, &mut self.scopes);
            wire::encode_varint(len as u64, &mut self.scopes);
            wire::message(&mut self.scopes, 1, &self.scope);
            self.scopes.extend_from_slice(&self.records);
        }
        self.targets = targets;
        // ResourceLogs { resource = 1, scope_logs = 2 }
        let resource_logs_len = wire::field_len(self.resource.len()) + self.scopes.len();
        let mut out = Vec::with_capacity(wire::field_len(resource_logs_len));
        wire::encode_key(1, wire::WireType::LengthDelimited, &mut out);
        wire::encode_varint(resource_logs_len as u64, &mut out);
        wire::message(&mut out, 1, &self.resource);
        out.extend_from_slice(&self.scopes);
        out.into()
    }

    fn record(&mut self, record: &LogRecord) {
        let Self {
            record: buf,
            text,
            scratch,
            ..
        } = self;
        buf.clear();
        match record {
            LogRecord::Access(r) => {
                let (severity, severity_text) = access_severity(r);
                text.clear();
                write_access_body(r, text);
                header(buf, r.end_unix_nanos, severity, severity_text, text);
                for_each_attribute(r, |k, v| put_attr(buf, k, &v, scratch));
                wire::fixed32(buf, 8, u32::from(r.sampled));
                wire::bytes(buf, 9, &r.trace_id.to_bytes());
                wire::bytes(buf, 10, &r.span_id.to_bytes());
                wire::bytes(buf, 12, ACCESS_EVENT.as_bytes());
            }
            LogRecord::Event(e) => {
                let (severity, severity_text) = event_severity(e);
                header(buf, e.time_unix_nanos, severity, severity_text, &e.message);
                for (k, v) in &e.fields {
                    put_attr(buf, k, &event_attr(v), scratch);
                }
            }
        }
    }
}

/// Times, severity and the string body: `time_unix_nano = 1`,
/// `observed_time_unix_nano = 11`, `severity_number = 2`,
/// `severity_text = 3`, `body = 5`.
fn header(buf: &mut Vec<u8>, time: u64, severity: SeverityNumber, text: &str, body: &str) {
    wire::fixed64(buf, 1, time);
    wire::fixed64(buf, 11, time);
    wire::varint(buf, 2, severity as u64);
    wire::bytes(buf, 3, text.as_bytes());
    // AnyValue { string_value = 1 }: a oneof member, written even when empty.
    wire::encode_key(5, wire::WireType::LengthDelimited, buf);
    wire::encode_varint(wire::field_len(body.len()) as u64, buf);
    wire::message(buf, 1, body.as_bytes());
}

/// An attribute, `attributes = 6`.
fn put_attr(buf: &mut Vec<u8>, key: &str, v: &Attr<'_>, scratch: &mut String) {
    match v {
        Attr::Value(v) => put_key_value(buf, 6, key, v, scratch),
        Attr::Double(d) => {
            // KeyValue { key = 1, value = 2: AnyValue { double_value = 4 } }
            let any_len = 1 + 8;
            let key_len = if key.is_empty() {
                0
            } else {
                wire::field_len(key.len())
            };
            wire::encode_key(6, wire::WireType::LengthDelimited, buf);
            wire::encode_varint((key_len + wire::field_len(any_len)) as u64, buf);
            wire::bytes(buf, 1, key.as_bytes());
            wire::encode_key(2, wire::WireType::LengthDelimited, buf);
            wire::encode_varint(any_len as u64, buf);
            wire::encode_key(4, wire::WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&d.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests;
