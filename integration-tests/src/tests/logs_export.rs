//! OTLP logs end to end: a real receiver (tonic `LogsService` and
//! `POST /v1/logs`, decoded with the official messages) gets one access
//! record per request, joined to the exported spans by trace and span id and
//! carrying the spans' resource; `logs.access: errors` sends failures only;
//! a dead logs collector costs no request; the proxy's own warnings and
//! errors (a rejected reload, a failing span export) arrive as records too.

use std::collections::HashMap;

use http::StatusCode;

use super::tracing_common::metrics;
use crate::{
    assert_eventually,
    client::Client,
    metric_sum,
    otlp::{Otlp, ReceivedLog, ReceivedSpan},
    pki::{temp_dir, write, Pki},
    proxy::Proxy,
    upstream::Upstream,
};

/// OpenTelemetry severity numbers.
const INFO: i32 = 9;
const WARN: i32 = 13;
const ERROR: i32 = 17;
const ERROR3: i32 = 19;

/// A request of known outcome: (path and query, status, severity,
/// `error.type`, failure category).
type Case = (
    &'static str,
    u16,
    i32,
    Option<&'static str>,
    Option<&'static str>,
);

const CASES: [Case; 5] = [
    ("/ok?secret=1", 200, INFO, None, None),
    (
        "/missing?status=404",
        404,
        WARN,
        Some("404"),
        Some("VALIDATION"),
    ),
    ("/down?status=503", 503, ERROR, Some("503"), Some("NETWORK")),
    (
        "/broken?status=500",
        500,
        ERROR3,
        Some("500"),
        Some("INTERNAL"),
    ),
    (
        "/slow?delay_ms=3000",
        504,
        ERROR,
        Some("timeout"),
        Some("NETWORK"),
    ),
];

/// Sends every case once; returns (path, status, `x-trace-id`) per request.
async fn send_cases(proxy: &Proxy) -> Vec<(&'static str, u16, String)> {
    let client = Client::http1();
    let mut sent = Vec::new();
    for (path, status, ..) in CASES {
        let resp = client.get(&proxy.url(path)).await;
        assert_eq!(resp.status.as_u16(), status, "{path}: {}", resp.text());
        let trace_id = resp.headers["x-trace-id"].to_str().unwrap().to_string();
        sent.push((path, status, trace_id));
    }
    sent
}

fn url_path(path_and_query: &str) -> &str {
    path_and_query.split('?').next().unwrap()
}

fn resource_map(
    attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> HashMap<String, String> {
    attrs
        .iter()
        .map(|kv| (kv.key.clone(), format!("{:?}", kv.value)))
        .collect()
}

/// Checks each case's access record against its request and its span.
fn check_records(sent: &[(&str, u16, String)], logs: &[ReceivedLog], spans: &[ReceivedSpan]) {
    assert_eq!(logs.len(), sent.len(), "one record per request: {logs:#?}");
    for ((path, status, trace_id), (_, _, severity, error_type, category)) in sent.iter().zip(CASES)
    {
        let log = logs
            .iter()
            .find(|l| l.trace_id() == *trace_id)
            .unwrap_or_else(|| panic!("no record for {path} ({trace_id}): {logs:#?}"));
        let span = spans
            .iter()
            .find(|s| s.trace_id() == *trace_id)
            .unwrap_or_else(|| panic!("no span for {path}"));
        assert_eq!(log.span_id(), span.span_id(), "{path}: the span's own id");
        assert_eq!(log.record.flags & 1, 1, "{path}: sampled");
        assert_eq!(log.severity(), severity, "{path}");
        assert_eq!(log.record.event_name, "sidetrace.access");
        assert_eq!(log.str("http.request.method"), Some("GET"), "{path}");
        assert_eq!(log.str("url.path"), Some(url_path(path)), "{path}");
        assert_eq!(
            log.int("http.response.status_code"),
            Some(i64::from(*status))
        );
        assert_eq!(log.str("error.type"), error_type, "{path}");
        assert_eq!(log.str("sidetrace.failure.category"), category, "{path}");
        assert_eq!(log.str("network.protocol.version"), Some("1.1"));
        assert_eq!(log.str("sidetrace.span.kind"), Some("SERVER"));
        assert!(log
            .double("sidetrace.duration_ms")
            .is_some_and(|d| d >= 0.0));
        assert!(log.str("client.address").is_some());
        assert!(
            log.body()
                .starts_with(&format!("GET {} {status}", url_path(path))),
            "{}",
            log.body()
        );
        // The same attributes as the span where both have them.
        for key in [
            "http.request.method",
            "url.path",
            "error.type",
            "server.address",
        ] {
            assert_eq!(log.str(key), span.str(key), "{path}: {key}");
        }
        assert_eq!(
            resource_map(&log.resource),
            resource_map(&span.resource),
            "the spans' resource, instance id included"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_records_join_the_spans_over_grpc_and_http() {
    let up = Upstream::echo().await;
    for otlp in [Otlp::grpc().run().await, Otlp::http().run().await] {
        // The generic variables send both signals to one collector.
        let proxy = Proxy::from_yaml("limits: { response_head_timeout: 300ms }\n")
            .upstream(up.url())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint())
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", otlp.protocol())
            .env("OTEL_TRACES_SAMPLER", "always_on")
            .env("OTEL_SERVICE_NAME", "checkout")
            .run()
            .await;
        let sent = send_cases(&proxy).await;
        let spans = otlp.wait_for_spans(CASES.len()).await;
        let logs = otlp
            .wait_for_logs("an access record per request", |l| {
                l.iter().filter(|l| l.scope == "sidetrace::access").count() >= CASES.len()
            })
            .await;
        let access: Vec<ReceivedLog> = logs
            .into_iter()
            .filter(|l| l.scope == "sidetrace::access")
            .collect();
        check_records(&sent, &access, &spans);
        assert_eq!(access[0].resource_str("service.name"), Some("checkout"));
        // Counted once the collector's answer is back.
        let mut text: String;
        assert_eventually!(
            {
                text = metrics(&proxy).await;
                metric_sum(&text, "sidetrace_logs_exported_total", &[]) >= CASES.len() as f64
            },
            "the records are counted: {text}"
        );
        assert_eq!(
            metric_sum(&text, "sidetrace_logs_export_errors_total", &[]),
            0.0
        );
        proxy.shutdown();
        otlp.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_mode_exports_only_failures() {
    let up = Upstream::echo().await;
    let otlp = Otlp::http().run().await;
    let yaml = format!(
        "limits: {{ response_head_timeout: 300ms }}\nlogs:\n  access: errors\n  export: {{ endpoint: {} }}\n",
        otlp.endpoint()
    );
    let proxy = Proxy::from_yaml(&yaml).upstream(up.url()).run().await;
    let sent = send_cases(&proxy).await;
    // The drain flushes every queued record before the proxy stops.
    proxy.shutdown();
    let access = otlp.access_logs();
    let failed: Vec<&String> = sent
        .iter()
        .filter(|(_, status, _)| *status != 200)
        .map(|(_, _, id)| id)
        .collect();
    assert_eq!(access.len(), failed.len(), "{access:#?}");
    for id in failed {
        assert!(access.iter().any(|l| l.trace_id() == *id), "{id}");
    }
    assert!(access.iter().all(|l| l.severity() >= WARN));
    // Without a span collector the records still carry the span ids.
    assert!(access.iter().all(|l| l.span_id().len() == 16));
    otlp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_logs_collector_costs_no_request() {
    let up = Upstream::echo().await;
    let spans = Otlp::grpc().run().await;
    let dead = Upstream::dead().await;
    let yaml = format!(
        "drain_timeout: 2s\n\
         tracing:\n  export: {{ endpoint: {}, protocol: grpc }}\n\
         logs:\n  export: {{ endpoint: http://{dead}, batch_size: 4, queue_size: 8, timeout: 1s }}\n",
        spans.endpoint()
    );
    let proxy = Proxy::from_yaml(&yaml).upstream(up.url()).run().await;
    let client = Client::h2c();
    assert_eq!(
        client.load(&proxy.url("/r"), 200, 200).await,
        200,
        "every request succeeds with the logs collector down"
    );
    // Spans are not held up by the logs side.
    spans.wait_for_spans(200).await;
    let mut text: String;
    assert_eventually!(
        {
            text = metrics(&proxy).await;
            metric_sum(
                &text,
                "sidetrace_logs_dropped_total",
                &[("reason", "queue_full")],
            ) > 0.0
                && metric_sum(&text, "sidetrace_logs_export_errors_total", &[]) >= 1.0
        },
        "records beyond the queue dropped, failed batches counted: {text}"
    );
    assert!(
        metric_sum(
            &text,
            "sidetrace_logs_dropped_total",
            &[("reason", "export_failed")]
        ) >= 4.0,
        "{text}"
    );
    assert_eq!(metric_sum(&text, "sidetrace_logs_exported_total", &[]), 0.0);
    assert_eq!(
        metric_sum(&text, "sidetrace_export_errors_total", &[]),
        0.0,
        "the span export is healthy"
    );
    let resp = client.get(&proxy.url("/after")).await;
    assert_eq!(resp.status, StatusCode::OK);
    proxy.shutdown();
    spans.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_errors_and_warnings_become_records() {
    sidetrace::logging::init_events_only();
    let dir = temp_dir("logs-events");
    let path = dir.join("sidetrace.yaml");
    let up = Upstream::echo().await;
    let otlp = Otlp::grpc().run().await;
    let dead = Upstream::dead().await;
    // Spans go nowhere: their failing export is a warning.
    let yaml = format!(
        "tracing:\n  export: {{ endpoint: http://{dead}, batch_size: 1, timeout: 1s }}\n\
         logs:\n  export: {{ endpoint: {}, protocol: grpc }}\n",
        otlp.endpoint()
    );
    let proxy = Proxy::from_yaml(&yaml)
        .config_file(&path)
        .upstream(up.url())
        .env("OTEL_TRACES_SAMPLER", "always_on")
        .run()
        .await;
    let client = Client::http1();
    assert_eq!(client.get(&proxy.url("/one")).await.status, StatusCode::OK);
    let logs = otlp
        .wait_for_logs("the failing span export's warning", |l| {
            l.iter()
                .any(|l| l.scope == "sidetrace::export" && l.body() == "span batch dropped")
        })
        .await;
    let warning = logs
        .iter()
        .find(|l| l.body() == "span batch dropped")
        .unwrap();
    assert_eq!(warning.severity(), WARN);
    assert!(
        warning
            .str("error")
            .is_some_and(|e| e.contains("export of 1 spans failed")),
        "{warning:#?}"
    );

    // A file that does not parse: the reload is rejected, and said so.
    std::fs::write(
        &path,
        format!("{yaml}filters: [ {{ timeout: {{ jitter: 1s }} }} ]\n"),
    )
    .unwrap();
    let logs = otlp
        .wait_for_logs("the rejected reload", |l| {
            l.iter().any(|l| {
                l.body().starts_with("configuration reload rejected")
                    && l.str("error").is_some_and(|e| e.contains("sidetrace.yaml"))
            })
        })
        .await;
    let rejected = logs
        .iter()
        .find(|l| l.body().starts_with("configuration reload rejected"))
        .unwrap();
    assert_eq!(rejected.severity(), ERROR);
    assert_eq!(rejected.scope, "sidetrace::config::reload");
    assert!(rejected.trace_id().is_empty(), "not inside a request");
    let access = otlp.access_logs();
    assert_eq!(
        resource_map(&rejected.resource),
        resource_map(&access[0].resource),
        "one resource for the proxy's records"
    );
    assert_eq!(client.get(&proxy.url("/two")).await.status, StatusCode::OK);

    // A good file again, now with failures only: logs.access reloads.
    std::fs::write(&path, format!("{yaml}  access: errors\n")).unwrap();
    assert_eventually!(
        metric_sum(
            &metrics(&proxy).await,
            "sidetrace_config_reloads_total",
            &[("result", "success")]
        ) >= 1.0,
        "the good file is taken"
    );
    let ok = client.get(&proxy.url("/three")).await;
    let missing = client.get(&proxy.url("/four?status=404")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let id = |r: &crate::client::Collected| r.headers["x-trace-id"].to_str().unwrap().to_string();
    proxy.shutdown();
    let access = otlp.access_logs();
    assert!(access.iter().any(|l| l.trace_id() == id(&missing)));
    assert!(
        !access.iter().any(|l| l.trace_id() == id(&ok)),
        "no entry for a success after the reload"
    );
    otlp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_reach_a_tls_collector_with_their_own_variables() {
    let dir = temp_dir("logs-tls");
    let pki = Pki::new("collector CA");
    let ca = write(&dir, "ca.pem", &pki.ca_pem);
    let otlp = Otlp::grpc()
        .tls(&pki.leaf("collector", &["localhost"]))
        .run()
        .await;
    let up = Upstream::echo().await;
    let proxy = Proxy::builder()
        .upstream(up.url())
        .env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", &otlp.endpoint())
        .env("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc")
        .env("OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", &ca)
        .run()
        .await;
    let resp = Client::http1().get(&proxy.url("/tls")).await;
    assert_eq!(resp.status, StatusCode::OK);
    let logs = otlp
        .wait_for_logs("an access record over TLS", |l| !l.is_empty())
        .await;
    assert_eq!(logs[0].str("url.path"), Some("/tls"));
    let conns = otlp.tls_connections();
    assert!(
        conns.iter().all(|c| c.alpn.as_deref() == Some("h2")),
        "{conns:?}"
    );
    assert!(otlp.spans().is_empty(), "spans stay in the embedded store");
    proxy.shutdown();
    otlp.shutdown().await;
}
