//! `# HELP` text for every metric family `/metrics` shows, registered once
//! with the recorder so that a person reading the page knows what each one
//! means without the docs at hand (docs/metrics.md has the labels).

use metrics::{Recorder, SharedString, Unit};

/// (name, unit, help) of every family the proxy records.
const FAMILIES: &[(&str, Option<Unit>, &str)] = &[
    (
        "http_server_request_duration_seconds",
        Some(Unit::Seconds),
        "Duration of requests the proxy served, from the request head to the end of the response body.",
    ),
    (
        "http_server_active_requests",
        None,
        "Requests being served now, by method and scheme.",
    ),
    (
        "http_server_request_body_size_bytes",
        Some(Unit::Bytes),
        "Size of request bodies received from clients.",
    ),
    (
        "http_server_response_body_size_bytes",
        Some(Unit::Bytes),
        "Size of response bodies sent to clients.",
    ),
    (
        "http_client_request_duration_seconds",
        Some(Unit::Seconds),
        "Duration of requests the proxy made to upstreams (the app inbound, destinations outbound).",
    ),
    (
        "traces_service_graph_request_total",
        None,
        "Requests between two services (client, server), as a service graph edge.",
    ),
    (
        "traces_service_graph_request_failed_total",
        None,
        "Failed requests between two services.",
    ),
    (
        "traces_service_graph_request_server_seconds",
        Some(Unit::Seconds),
        "Duration of service graph requests as the server saw them.",
    ),
    (
        "traces_service_graph_request_client_seconds",
        Some(Unit::Seconds),
        "Duration of service graph requests as the client saw them.",
    ),
    (
        "sidetrace_build_info",
        None,
        "The proxy's version; always 1.",
    ),
    (
        "sidetrace_connections_open",
        None,
        "Client connections open, by listener.",
    ),
    (
        "sidetrace_connections_rejected_total",
        None,
        "Client connections refused at accept, by listener and reason (max_connections: the listener had limits.max_connections open).",
    ),
    (
        "sidetrace_upstream_connections_open",
        None,
        "Connections open to upstreams, by listener.",
    ),
    (
        "sidetrace_filter_timeouts_total",
        None,
        "Requests a timeout filter ended (504), by filter, listener and route of its chain.",
    ),
    (
        "sidetrace_filter_rate_limited_total",
        None,
        "Requests a rate_limit filter turned away (429), by filter, listener and route of its chain.",
    ),
    (
        "sidetrace_filter_concurrency_rejected_total",
        None,
        "Requests a concurrency_limit filter shed (503), by filter, listener and route of its chain.",
    ),
    (
        "sidetrace_filter_body_too_large_total",
        None,
        "Requests a max_body filter refused (413): a declared Content-Length over its limit, or a streamed body passing it; by filter, listener and route of its chain.",
    ),
    (
        "sidetrace_filter_retry_attempts_total",
        None,
        "Requests a retry filter sent again, by filter, listener and route of its chain.",
    ),
    (
        "sidetrace_filter_retry_budget_exhausted_total",
        None,
        "Retries a retry filter would have sent but its budget refused, by filter, listener and route of its chain.",
    ),
    (
        "sidetrace_filter_circuit_breaker_state",
        None,
        "A circuit_breaker filter's state: 0 closed, 1 half-open, 2 open.",
    ),
    (
        "sidetrace_filter_circuit_breaker_transitions_total",
        None,
        "A circuit_breaker filter's transitions, by the state entered (to).",
    ),
    (
        "sidetrace_filter_circuit_breaker_rejected_total",
        None,
        "Requests an open circuit_breaker filter answered (503) without calling the upstream.",
    ),
    (
        "sidetrace_requests_shed_total",
        None,
        "Requests answered 503 without being forwarded because a limit was reached, by listener and reason.",
    ),
    (
        "sidetrace_tls_handshakes_total",
        None,
        "TLS handshakes, by side (inbound, upstream), protocol version and result.",
    ),
    (
        "sidetrace_config_reloads_total",
        None,
        "Configuration reloads, by result.",
    ),
    (
        "sidetrace_sampling_decisions_total",
        None,
        "Sampling decisions for new spans, by decision.",
    ),
    (
        "sidetrace_propagation_errors_total",
        None,
        "Incoming trace context headers that could not be parsed and were ignored, by format.",
    ),
    (
        "sidetrace_spans_exported_total",
        None,
        "Spans accepted by the collector (or stored in the embedded store).",
    ),
    (
        "sidetrace_spans_dropped_total",
        None,
        "Spans lost, by reason (queue full, export failed, shutdown).",
    ),
    (
        "sidetrace_export_errors_total",
        None,
        "Failed export attempts to the collector, by kind.",
    ),
    (
        "sidetrace_logs_exported_total",
        None,
        "Log records (access records, proxy warnings and errors) accepted by the logs collector.",
    ),
    (
        "sidetrace_logs_dropped_total",
        None,
        "Log records lost, by reason (queue full, export failed, shutdown).",
    ),
    (
        "sidetrace_logs_export_errors_total",
        None,
        "Batches of log records the logs collector did not take after retries.",
    ),
    (
        "sidetrace_metrics_export_points_total",
        None,
        "Metric data points the metrics collector took (OTLP push).",
    ),
    (
        "sidetrace_metrics_export_errors_total",
        None,
        "Metric pushes the metrics collector did not take after retries; the next push carries their values.",
    ),
    (
        "sidetrace_metrics_export_dropped_points_total",
        None,
        "Metric data points of the last push, at shutdown, that the metrics collector did not take.",
    ),
    (
        "sidetrace_metric_overflow_total",
        None,
        "Label sets folded into a metric's overflow series because it reached its series limit.",
    ),
    (
        "sidetrace_webhook_reviews_total",
        None,
        "Admission reviews answered by the injection webhook, by outcome.",
    ),
    (
        "sidetrace_webhook_review_duration_seconds",
        Some(Unit::Seconds),
        "Time to answer an admission review.",
    ),
];

/// Registers the help text of every family with `recorder`.
pub fn describe(recorder: &dyn Recorder) {
    for &(name, unit, help) in FAMILIES {
        let key = metrics::KeyName::from_const_str(name);
        let help = SharedString::const_str(help);
        match name {
            n if n.ends_with("_seconds") || n.ends_with("_bytes") => {
                recorder.describe_histogram(key, unit, help)
            }
            n if n.ends_with("_total") => recorder.describe_counter(key, unit, help),
            _ => recorder.describe_gauge(key, unit, help),
        }
    }
}
