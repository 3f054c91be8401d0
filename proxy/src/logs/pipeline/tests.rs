//! The logs settings (the `_LOGS_` variables over `logs.export`) and the
//! pipeline against a collector on loopback.

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use filters::trace::{
    AccessRecord, ExportConfig, ExportProtocol, Outcome, ServiceInfo, SpanKind, SpanRecord, TraceId,
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn resolve(
    endpoint: Option<&str>,
    pairs: &[(&str, &str)],
) -> Result<ExportSettings, ExportConfigError> {
    let config = ExportConfig {
        endpoint: endpoint.map(str::to_string),
        ..ExportConfig::default()
    };
    ExportSettings::resolve_signal(Signal::LOGS, &config, &env(pairs))
}

/// (file endpoint, environment, what is expected).
type Row<'a, T> = (Option<&'a str>, &'a [(&'a str, &'a str)], T);

fn target(s: &ExportSettings) -> Option<String> {
    s.target.as_ref().map(|t| t.to_string())
}

#[test]
fn logs_read_their_own_variables_over_the_generic_ones() {
    let table: &[Row<'_, Option<&str>>] = &[
        (None, &[], None),
        (Some("http://c:4318"), &[], Some("http://c:4318/v1/logs")),
        (
            None,
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318/")],
            Some("http://env:4318/v1/logs"),
        ),
        (
            Some("http://file:4318"),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
                ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://logs:9/as/is"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:9/x"),
            ],
            Some("http://logs:9/as/is"),
        ),
        (
            None,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
                ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
            Some("http://env:4317/opentelemetry.proto.collector.logs.v1.LogsService/Export"),
        ),
        (
            Some("http://file:4318"),
            &[
                ("OTEL_LOGS_EXPORTER", "none"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ],
            None,
        ),
        // Asked for with no endpoint: the specification's default.
        (
            None,
            &[("OTEL_LOGS_EXPORTER", "otlp")],
            Some("http://localhost:4318/v1/logs"),
        ),
        (
            None,
            &[
                ("OTEL_LOGS_EXPORTER", "otlp"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
            Some("http://localhost:4317/opentelemetry.proto.collector.logs.v1.LogsService/Export"),
        ),
        // The traces switch does not touch logs.
        (
            Some("http://file:4318"),
            &[("OTEL_TRACES_EXPORTER", "none")],
            Some("http://file:4318/v1/logs"),
        ),
    ];
    for (endpoint, pairs, want) in table {
        let s = resolve(*endpoint, pairs).unwrap();
        assert_eq!(target(&s).as_deref(), *want, "{endpoint:?} {pairs:?}");
        assert_eq!(s.signal, Signal::LOGS);
    }
    let s = resolve(
        Some("http://c:4318"),
        &[
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=generic,b=2"),
            ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "a=logs"),
            ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "1500"),
            ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "gzip"),
        ],
    )
    .unwrap();
    assert_eq!(s.headers["a"], "logs", "the _LOGS_ list wins whole");
    assert!(!s.headers.contains_key("b"));
    assert_eq!(s.timeout, Duration::from_millis(1500));
    assert!(s.gzip);
}

#[test]
fn bad_logs_settings_name_their_source() {
    let table: &[Row<'_, &str>] = &[
        (
            None,
            &[("OTEL_LOGS_EXPORTER", "console")],
            "OTEL_LOGS_EXPORTER",
        ),
        (
            None,
            &[("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "ftp://x")],
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        ),
        (
            Some("http://c:4318"),
            &[("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "json")],
            "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
        ),
        (
            Some("https://c:4318"),
            &[("OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE", "/c.pem")],
            "OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE",
        ),
        (
            Some("http://c:4318"),
            &[("OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", "/ca.pem")],
            "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE",
        ),
        (
            None,
            &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem")],
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ),
    ];
    for (endpoint, pairs, source) in table {
        let e = resolve(*endpoint, pairs).unwrap_err();
        assert_eq!(e.source_name, *source, "{e}");
    }
    let e = resolve(None, &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem")]).unwrap_err();
    assert!(e.message.contains("log records are not exported"), "{e}");
    // A TLS file for an https:// collector that cannot be read names the
    // logs field it came from.
    let config = ExportConfig {
        endpoint: Some("https://c:4318".into()),
        tls: Some(filters::trace::config::ExportTlsConfig {
            ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        }),
        ..ExportConfig::default()
    };
    let s = ExportSettings::resolve_signal(Signal::LOGS, &config, &HashMap::new()).unwrap();
    let e = s.client_tls().unwrap_err();
    assert_eq!(e.source_name, "logs.export.tls.ca", "{e}");
}

fn access(status: u16) -> LogRecord {
    let mut s = SpanRecord::start(SpanKind::Server, TraceId::random(), http::Method::GET);
    s.finish(&Outcome {
        status: Some(StatusCode::from_u16(status).unwrap()),
        ..Outcome::default()
    });
    LogRecord::Access(AccessRecord::new(&s))
}

/// A collector answering `status` to every POST, sending each request's
/// path and body on `tx`.
async fn collector(
    status: u16,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(String, Bytes)>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let _ = tx.send((path, body));
                        let mut resp = Response::new(Full::new(Bytes::new()));
                        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (url, rx)
}

fn config(endpoint: &str, batch_size: usize, queue_size: usize) -> LogsConfig {
    LogsConfig {
        export: ExportConfig {
            endpoint: Some(endpoint.into()),
            protocol: ExportProtocol::HttpProtobuf,
            batch_size,
            queue_size,
            timeout: Duration::from_millis(500),
            ..ExportConfig::default()
        },
        ..LogsConfig::default()
    }
}

fn resource() -> Resource {
    Resource::new(
        ServiceInfo {
            name: Some("checkout"),
            ..ServiceInfo::default()
        },
        &HashMap::new(),
    )
}

#[tokio::test]
async fn records_are_batched_to_v1_logs_and_counted() {
    let (url, mut bodies) = collector(200).await;
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prom = recorder.handle();
    let logs = Logs::start(
        &config(&url, 4, 64),
        &HashMap::new(),
        &resource(),
        &recorder,
    )
    .unwrap();
    assert!(logs.is_exporting() && logs.sink.is_enabled());
    for status in [200, 404, 502, 200, 200, 500] {
        assert!(logs.sink.send(access(status)));
    }
    logs.flush().await;
    let mut access_records = 0;
    while let Ok((path, body)) = bodies.try_recv() {
        assert_eq!(path, "/v1/logs");
        let req = ExportLogsServiceRequest::decode(body).unwrap();
        let rl = &req.resource_logs[0];
        let service = &rl.resource.as_ref().unwrap().attributes[0];
        assert_eq!(service.key, "service.name");
        // The proxy's own warnings (other tests') may share a batch.
        access_records += rl
            .scope_logs
            .iter()
            .filter(|s| s.scope.as_ref().unwrap().name == "sidetrace::access")
            .map(|s| s.log_records.len())
            .sum::<usize>();
    }
    assert_eq!(access_records, 6);
    assert!(prom.render().contains("sidetrace_logs_exported_total "));
    assert!(logs.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_dead_collector_costs_the_senders_nothing() {
    // Nothing listens on port 9 of loopback.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prom = recorder.handle();
    let mut c = config("http://127.0.0.1:9", 2, 8);
    c.export.timeout = Duration::from_secs(30);
    let logs = Logs::start(&c, &HashMap::new(), &resource(), &recorder).unwrap();
    let sent = (0..200).filter(|_| logs.sink.send(access(200))).count();
    assert!(sent < 200, "the queue is bounded: {sent} taken");
    let text = prom.render();
    assert!(
        text.contains(r#"sidetrace_logs_dropped_total{reason="queue_full"}"#),
        "{text}"
    );
    // The drain gives up at its deadline.
    assert!(!logs.shutdown(Duration::from_millis(100)).await);
}

#[tokio::test]
async fn without_a_collector_nothing_is_queued() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let logs = Logs::start(
        &LogsConfig::default(),
        &HashMap::new(),
        &resource(),
        &recorder,
    )
    .unwrap();
    assert!(!logs.is_exporting());
    assert!(!logs.sink.is_enabled());
    assert!(logs.tls().is_none());
    assert!(logs.shutdown(Duration::from_millis(10)).await);
    // The families exist all the same, for dashboards and alerts.
    let text = recorder.handle().render();
    assert!(text.contains("sidetrace_logs_dropped_total"), "{text}");
    assert!(
        text.contains("sidetrace_logs_export_errors_total"),
        "{text}"
    );
}
