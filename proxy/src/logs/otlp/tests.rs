use std::{collections::HashMap, sync::Arc};

use filters::{
    classify::{ErrorType, Failure, FailureCategory, GrpcCode},
    trace::{span::Host, Outcome, Resource, ServiceInfo, SpanKind, SpanRecord, TraceId},
};
use http::{HeaderValue, Method, StatusCode};

use super::*;

fn record(status: u16, failure: Option<Failure>) -> AccessRecord {
    let mut s = SpanRecord::start(SpanKind::Server, TraceId::random(), Method::GET);
    s.sampled = status != 404;
    s.path = Some("/api/orders/42?token=secret".parse().unwrap());
    s.host = Some(Host::Header(HeaderValue::from_static("shop.local:8080")));
    s.upstream = Some("127.0.0.1:8080".parse().unwrap());
    s.client_address = Some("10.0.0.7:51544".parse().unwrap());
    s.request_bytes = Some(3);
    s.finish(&Outcome {
        status: Some(StatusCode::from_u16(status).unwrap()),
        failure,
        response_bytes: 24,
        ..Outcome::default()
    });
    AccessRecord::new(&s)
}

fn event(level: tracing::Level, target: &'static str, message: &str) -> LogRecord {
    LogRecord::Event(Arc::new(EventRecord {
        time_unix_nanos: 1_700_000_000_000_000_000,
        level,
        target,
        message: message.into(),
        fields: vec![
            ("error", FieldValue::Str("boom".into())),
            ("attempt", FieldValue::Int(3)),
            ("retried", FieldValue::Bool(true)),
            ("ratio", FieldValue::Float(0.5)),
        ],
    }))
}

fn attrs(r: &ProtoLogRecord) -> HashMap<String, any_value::Value> {
    r.attributes
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap().value.unwrap()))
        .collect()
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn batch() -> Vec<LogRecord> {
    let network = Failure::new(FailureCategory::Network, ErrorType::Timeout);
    let internal = Failure::new(FailureCategory::Internal, ErrorType::Panic);
    vec![
        LogRecord::Access(record(200, None)),
        event(
            tracing::Level::ERROR,
            "sidetrace::config::reload",
            "reload rejected",
        ),
        LogRecord::Access(record(404, None)),
        LogRecord::Access(record(504, Some(network))),
        event(
            tracing::Level::WARN,
            "sidetrace::export",
            "span batch dropped",
        ),
        LogRecord::Access(record(500, Some(internal))),
    ]
}

fn resource() -> ProtoResource {
    crate::export::otlp::resource(&Resource::new(
        ServiceInfo {
            name: Some("checkout"),
            ..Default::default()
        },
        &HashMap::new(),
    ))
}

#[test]
fn direct_encoder_matches_the_prost_messages() {
    let res = resource();
    let mut enc = Encoder::new(&res);
    let records = batch();
    let direct = ExportLogsServiceRequest::decode(enc.encode(&records)).unwrap();
    assert_eq!(direct, request(&res, &records));
    // Buffers are reused: another batch encodes alike, and so does none.
    let again = ExportLogsServiceRequest::decode(enc.encode(&records[2..])).unwrap();
    assert_eq!(again, request(&res, &records[2..]));
    let empty = ExportLogsServiceRequest::decode(enc.encode(&[])).unwrap();
    assert_eq!(empty, request(&res, &[]));
}

#[test]
fn records_carry_ids_severity_and_scope() {
    let records = batch();
    let res = resource();
    let req = ExportLogsServiceRequest::decode(Encoder::new(&res).encode(&records)).unwrap();
    let rl = &req.resource_logs[0];
    assert_eq!(rl.resource.as_ref(), Some(&res));
    let scopes: Vec<&str> = rl
        .scope_logs
        .iter()
        .map(|s| s.scope.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(
        scopes,
        [
            "sidetrace::access",
            "sidetrace::config::reload",
            "sidetrace::export"
        ]
    );
    let access = &rl.scope_logs[0].log_records;
    let severities: Vec<(i32, &str)> = access
        .iter()
        .map(|r| (r.severity_number, r.severity_text.as_str()))
        .collect();
    assert_eq!(
        severities,
        [(9, "INFO"), (13, "WARN"), (17, "ERROR"), (19, "ERROR")]
    );
    let LogRecord::Access(first) = &records[0] else {
        unreachable!()
    };
    let r = &access[0];
    assert_eq!(r.trace_id, first.trace_id.to_bytes());
    assert_eq!(r.span_id, first.span_id.to_bytes());
    assert_eq!(r.flags, 1, "sampled");
    assert_eq!(access[1].flags, 0, "not sampled");
    assert_eq!(r.event_name, "sidetrace.access");
    assert_eq!(r.time_unix_nano, first.end_unix_nanos);
    let a = attrs(r);
    assert_eq!(a["http.request.method"], s("GET"));
    assert_eq!(a["url.path"], s("/api/orders/42"), "never the query");
    assert_eq!(a["url.scheme"], s("http"));
    assert_eq!(
        a["http.response.status_code"],
        any_value::Value::IntValue(200)
    );
    assert_eq!(a["server.address"], s("shop.local"));
    assert_eq!(a["server.port"], any_value::Value::IntValue(8080));
    assert_eq!(a["client.address"], s("10.0.0.7"));
    assert_eq!(a["client.port"], any_value::Value::IntValue(51544));
    assert_eq!(a["sidetrace.upstream"], s("127.0.0.1:8080"));
    assert_eq!(a["sidetrace.span.kind"], s("SERVER"));
    assert_eq!(a["http.request.body.size"], any_value::Value::IntValue(3));
    assert_eq!(a["http.response.body.size"], any_value::Value::IntValue(24));
    assert!(matches!(a["sidetrace.duration_ms"], any_value::Value::DoubleValue(d) if d >= 0.0));
    assert!(!a.contains_key("error.type"));
    let timeout = attrs(&access[2]);
    assert_eq!(timeout["error.type"], s("timeout"));
    assert_eq!(timeout["sidetrace.failure.category"], s("NETWORK"));
    let Some(any_value::Value::StringValue(body)) =
        access[2].body.as_ref().and_then(|b| b.value.clone())
    else {
        panic!("a string body")
    };
    assert!(
        body.starts_with("GET /api/orders/42 504 timeout "),
        "{body}"
    );

    let reload = &rl.scope_logs[1].log_records[0];
    assert_eq!(
        (reload.severity_number, reload.severity_text.as_str()),
        (17, "ERROR")
    );
    assert!(reload.trace_id.is_empty() && reload.event_name.is_empty());
    let a = attrs(reload);
    assert_eq!(a["error"], s("boom"));
    assert_eq!(a["attempt"], any_value::Value::IntValue(3));
    assert_eq!(a["retried"], any_value::Value::BoolValue(true));
    assert_eq!(a["ratio"], any_value::Value::DoubleValue(0.5));
    let warn = &rl.scope_logs[2].log_records[0];
    assert_eq!(warn.severity_number, 13);
}

#[test]
fn bodies_read_as_one_line() {
    let mut out = String::new();
    write_access_body(&record(200, None), &mut out);
    assert!(out.starts_with("GET /api/orders/42 200 "), "{out}");
    assert!(out.ends_with("ms"), "{out}");
    let mut grpc = record(200, None);
    grpc.grpc_status = Some(GrpcCode(14));
    grpc.failure = Some(Failure::new(
        FailureCategory::Network,
        ErrorType::Grpc(GrpcCode(14)),
    ));
    grpc.status = None;
    grpc.path = None;
    out.clear();
    write_access_body(&grpc, &mut out);
    assert!(
        out.starts_with("GET / - grpc-status 14 UNAVAILABLE "),
        "{out}"
    );
}
