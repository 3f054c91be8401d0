//! OTLP metrics push end to end: a real receiver (tonic `MetricsService`
//! and `POST /v1/metrics`, decoded with the official messages) gets the
//! instruments `/metrics` shows, with the same counts, sums and buckets as
//! a scrape, the spans' resource, cumulative or delta; a dead collector
//! costs no request and is counted; the drain pushes one last time.

use std::collections::{BTreeSet, HashMap};

use http::StatusCode;
use opentelemetry_proto::tonic::{
    common::v1::{any_value, KeyValue},
    metrics::v1::{metric::Data, AggregationTemporality, HistogramDataPoint},
};

use super::tracing_common::metrics;
use crate::{
    assert_eventually,
    client::Client,
    metric_sum,
    otlp::{Otlp, ReceivedMetrics},
    pki::{temp_dir, write, Pki},
    proxy::Proxy,
    upstream::Upstream,
};

const DURATION: &str = "http.server.request.duration";
const PROM_DURATION: &str = "http_server_request_duration_seconds";

/// Requests of known status: (path, status, how many).
const STATUSES: [(&str, u16, usize); 3] = [
    ("/ok", 200, 3),
    ("/missing?status=404", 404, 2),
    ("/down?status=503", 503, 1),
];

fn total() -> usize {
    STATUSES.iter().map(|(_, _, n)| n).sum()
}

async fn send_statuses(proxy: &Proxy) {
    let client = Client::http1();
    for (path, status, n) in STATUSES {
        for _ in 0..n {
            let resp = client.get(&proxy.url(path)).await;
            assert_eq!(resp.status.as_u16(), status, "{path}");
        }
    }
}

/// `/metrics` once it counts `n` served requests.
async fn scrape_counting(proxy: &Proxy, n: usize) -> String {
    let mut text: String;
    assert_eventually!(
        {
            text = metrics(proxy).await;
            metric_sum(&text, &format!("{PROM_DURATION}_count"), &[]) == n as f64
        },
        "/metrics counts {n} requests: {text}"
    );
    text
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?.value {
        Some(any_value::Value::IntValue(i)) => Some(i),
        _ => None,
    }
}

fn points<'a>(push: &'a ReceivedMetrics, name: &str) -> &'a [HistogramDataPoint] {
    push.histogram(name).map_or(&[], |(p, _)| p)
}

fn pushed_count(push: &ReceivedMetrics) -> u64 {
    points(push, DURATION).iter().map(|p| p.count).sum()
}

fn resource_map(attrs: &[KeyValue]) -> HashMap<String, String> {
    attrs
        .iter()
        .map(|kv| (kv.key.clone(), format!("{:?}", kv.value)))
        .collect()
}

/// The pushed duration histogram against the scrape: per status code the
/// count, the sum and every cumulative bucket, and the bounds.
fn check_against_scrape(push: &ReceivedMetrics, text: &str) {
    let (pts, temporality) = push.histogram(DURATION).expect("the duration histogram");
    assert_eq!(temporality, AggregationTemporality::Cumulative as i32);
    let bounds = &pts[0].explicit_bounds;
    assert_eq!(
        bounds,
        &[0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0],
        "the configured buckets"
    );
    for (_, status, n) in STATUSES {
        let code = status.to_string();
        let label = [("http_response_status_code", code.as_str())];
        let mine: Vec<&HistogramDataPoint> = pts
            .iter()
            .filter(|p| int_attr(&p.attributes, "http.response.status_code") == Some(status.into()))
            .collect();
        let count: u64 = mine.iter().map(|p| p.count).sum();
        assert_eq!(count, n as u64, "{status}: pushed count");
        assert_eq!(
            count as f64,
            metric_sum(text, &format!("{PROM_DURATION}_count"), &label),
            "{status}: count as /metrics"
        );
        let sum: f64 = mine.iter().map(|p| p.sum.unwrap_or(0.0)).sum();
        let scraped = metric_sum(text, &format!("{PROM_DURATION}_sum"), &label);
        assert!(
            (sum - scraped).abs() <= 1e-9 * scraped.max(1.0),
            "{status}: sum {sum} as /metrics {scraped}"
        );
        for (i, le) in bounds
            .iter()
            .map(|b| b.to_string())
            .chain(["+Inf".to_string()])
            .enumerate()
        {
            let cumulative: u64 = mine
                .iter()
                .map(|p| p.bucket_counts[..=i].iter().sum::<u64>())
                .sum();
            assert_eq!(
                cumulative as f64,
                metric_sum(
                    text,
                    &format!("{PROM_DURATION}_bucket"),
                    &[("http_response_status_code", &code), ("le", &le)]
                ),
                "{status}: bucket le={le}"
            );
        }
    }
}

/// Every family the scrape shows, under the name the push gives it.
fn check_every_family(push: &ReceivedMetrics, text: &str) {
    let pushed: BTreeSet<&str> = push
        .request
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| m.name.as_str())
        .collect();
    let renamed: HashMap<&str, &str> = [
        (PROM_DURATION, DURATION),
        ("http_server_active_requests", "http.server.active_requests"),
        (
            "http_server_request_body_size_bytes",
            "http.server.request.body.size",
        ),
        (
            "http_server_response_body_size_bytes",
            "http.server.response.body.size",
        ),
        (
            "http_client_request_duration_seconds",
            "http.client.request.duration",
        ),
    ]
    .into();
    let scraped: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for family in [
        "http_client_request_duration_seconds",
        "traces_service_graph_request_total",
        "sidetrace_build_info",
        "sidetrace_metrics_export_errors_total",
        "process_cpu_seconds_total",
    ] {
        assert!(scraped.contains(&family), "{family} in /metrics");
    }
    for family in scraped {
        let name = renamed.get(family).copied().unwrap_or(family);
        assert!(
            pushed.contains(name),
            "{family} pushed as {name}: {pushed:?}"
        );
    }
}

/// Over gRPC, with an interval longer than the test: the one push is the
/// drain's, and it carries everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_push_equals_the_scrape_over_grpc() {
    let up = Upstream::echo().await;
    let otlp = Otlp::grpc().run().await;
    let proxy = Proxy::builder()
        .upstream(up.url())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
        .env("OTEL_TRACES_SAMPLER", "always_on")
        .env("OTEL_SERVICE_NAME", "checkout")
        .run()
        .await;
    send_statuses(&proxy).await;
    let text = scrape_counting(&proxy, total()).await;
    let spans = otlp.wait_for_spans(total()).await;
    assert!(
        otlp.metric_pushes().is_empty(),
        "no push before the interval"
    );
    proxy.shutdown();
    let pushes = otlp.metric_pushes();
    assert_eq!(pushes.len(), 1, "the drain's push, and only it");
    let push = &pushes[0];
    check_against_scrape(push, &text);
    check_every_family(push, &text);
    // The upstream hop: one client request per served one.
    let hop: u64 = points(push, "http.client.request.duration")
        .iter()
        .map(|p| p.count)
        .sum();
    assert_eq!(
        hop as f64,
        metric_sum(&text, "http_client_request_duration_seconds_count", &[])
    );
    assert_eq!(
        resource_map(&push.resource()),
        resource_map(&spans[0].resource),
        "the spans' resource, instance id included"
    );
    assert_eq!(spans[0].resource_str("service.name"), Some("checkout"));
    // Exemplars: every request was sampled, so each duration point carries
    // exemplars, each a span the collector got, in the bucket it annotates.
    let exported: BTreeSet<(Vec<u8>, Vec<u8>)> = spans
        .iter()
        .map(|s| (s.span.trace_id.clone(), s.span.span_id.clone()))
        .collect();
    let pts = points(push, DURATION);
    assert!(pts.iter().all(|p| !p.exemplars.is_empty()), "{pts:?}");
    for p in pts {
        for e in &p.exemplars {
            assert!(
                exported.contains(&(e.trace_id.clone(), e.span_id.clone())),
                "exemplar {e:?} is not an exported span"
            );
            let Some(opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsDouble(v)) =
                e.value
            else {
                panic!("a duration in seconds: {e:?}")
            };
            let bucket = p.explicit_bounds.partition_point(|b| *b < v);
            assert!(
                p.bucket_counts[bucket] > 0,
                "{v} lands in a bucket with requests"
            );
        }
    }
    otlp.shutdown().await;
}

/// Over HTTP from the config file, every 100 ms: a periodic push that has
/// every request equals the scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_pushes_equal_the_scrape_over_http() {
    let up = Upstream::echo().await;
    let otlp = Otlp::http().run().await;
    let yaml = format!(
        "tracing:\n  export: {{ endpoint: {0} }}\nmetrics:\n  export: {{ endpoint: {0}, interval: 100ms }}\n",
        otlp.endpoint()
    );
    let proxy = Proxy::from_yaml(&yaml)
        .upstream(up.url())
        .env("OTEL_TRACES_SAMPLER", "always_on")
        .run()
        .await;
    send_statuses(&proxy).await;
    let text = scrape_counting(&proxy, total()).await;
    let pushes = otlp
        .wait_for_metrics("a push with every request", |p| {
            p.iter().any(|p| pushed_count(p) == total() as u64)
        })
        .await;
    let push = pushes
        .iter()
        .find(|p| pushed_count(p) == total() as u64)
        .unwrap();
    check_against_scrape(push, &text);
    let spans = otlp.wait_for_spans(total()).await;
    assert_eq!(
        resource_map(&push.resource()),
        resource_map(&spans[0].resource)
    );
    // Pushes are counted as data points the collector took.
    let mut now: String;
    assert_eventually!(
        {
            now = metrics(&proxy).await;
            metric_sum(&now, "sidetrace_metrics_export_points_total", &[]) > 0.0
        },
        "points counted: {now}"
    );
    assert_eq!(
        metric_sum(&now, "sidetrace_metrics_export_errors_total", &[]),
        0.0
    );
    proxy.shutdown();
    otlp.shutdown().await;
}

/// Delta: each push carries what changed since the previous one, starting
/// where it ended; the deltas add up to the scrape, and a quiet interval
/// sends no duration points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_temporality_sends_differences() {
    let up = Upstream::echo().await;
    let otlp = Otlp::http().run().await;
    let yaml = format!(
        "metrics:\n  export: {{ endpoint: {}, interval: 100ms }}\n",
        otlp.endpoint()
    );
    let proxy = Proxy::from_yaml(&yaml)
        .upstream(up.url())
        .env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
        .run()
        .await;
    let added = |p: &[ReceivedMetrics]| p.iter().map(pushed_count).sum::<u64>();
    send_statuses(&proxy).await;
    scrape_counting(&proxy, total()).await;
    otlp.wait_for_metrics("deltas adding up to the first requests", |p| {
        added(p) == total() as u64
    })
    .await;
    send_statuses(&proxy).await;
    scrape_counting(&proxy, 2 * total()).await;
    let n = otlp
        .wait_for_metrics("deltas adding up to every request", |p| {
            added(p) == 2 * total() as u64
        })
        .await
        .len();
    // Then a push with nothing new for the histogram.
    let pushes = otlp
        .wait_for_metrics("a quiet push", |p| {
            p.len() > n && p[n..].iter().any(|p| p.histogram(DURATION).is_none())
        })
        .await;
    assert_eq!(
        added(&pushes),
        2 * total() as u64,
        "no request counted twice"
    );
    for (before, push) in pushes.iter().zip(&pushes[1..]) {
        let Some((pts, temporality)) = push.histogram(DURATION) else {
            continue;
        };
        assert_eq!(temporality, AggregationTemporality::Delta as i32);
        let previous = time_of(before);
        for p in pts {
            assert_eq!(
                p.start_time_unix_nano, previous,
                "starts where the last push ended"
            );
            assert!(p.time_unix_nano > p.start_time_unix_nano);
        }
    }
    proxy.shutdown();
    otlp.shutdown().await;
}

/// A push's collection time, from the gauge every push carries.
fn time_of(push: &ReceivedMetrics) -> u64 {
    match push
        .metric("sidetrace_build_info")
        .and_then(|m| m.data.as_ref())
    {
        Some(Data::Gauge(g)) => g.data_points[0].time_unix_nano,
        other => panic!("no build info gauge: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_metrics_collector_costs_no_request_and_is_counted() {
    let up = Upstream::echo().await;
    let otlp = Otlp::http().unavailable().run().await;
    let yaml = format!(
        "drain_timeout: 2s\nmetrics:\n  export: {{ endpoint: {}, interval: 100ms, timeout: 1s }}\n",
        otlp.endpoint()
    );
    let proxy = Proxy::from_yaml(&yaml).upstream(up.url()).run().await;
    let client = Client::h2c();
    assert_eq!(
        client.load(&proxy.url("/r"), 100, 100).await,
        100,
        "every request succeeds with the metrics collector down"
    );
    let mut text: String;
    assert_eventually!(
        {
            text = metrics(&proxy).await;
            metric_sum(&text, "sidetrace_metrics_export_errors_total", &[]) >= 1.0
        },
        "the failed push is counted: {text}"
    );
    assert!(otlp.metric_attempts() >= 2, "retried");
    assert_eq!(
        metric_sum(&text, "sidetrace_metrics_export_points_total", &[]),
        0.0
    );
    assert_eq!(
        metric_sum(&text, &format!("{PROM_DURATION}_count"), &[]),
        100.0
    );
    assert_eq!(
        client.get(&proxy.url("/after")).await.status,
        StatusCode::OK
    );
    proxy.shutdown();
    assert!(otlp.metric_pushes().is_empty());
    otlp.shutdown().await;
}

/// Over TLS with the metrics' own variables (gRPC): the collector's
/// CA from `OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE`; spans stay home.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reach_a_tls_collector_with_their_own_variables() {
    let dir = temp_dir("metrics-tls");
    let pki = Pki::new("collector CA");
    let ca = write(&dir, "ca.pem", &pki.ca_pem);
    let otlp = Otlp::grpc()
        .tls(&pki.leaf("collector", &["localhost"]))
        .run()
        .await;
    let up = Upstream::echo().await;
    let proxy = Proxy::builder()
        .upstream(up.url())
        .env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &otlp.endpoint())
        .env("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc")
        .env("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", &ca)
        .env("OTEL_METRIC_EXPORT_INTERVAL", "100")
        .run()
        .await;
    let resp = Client::http1().get(&proxy.url("/tls")).await;
    assert_eq!(resp.status, StatusCode::OK);
    let pushes = otlp
        .wait_for_metrics("a push with the request over TLS", |p| {
            p.iter().any(|p| pushed_count(p) == 1)
        })
        .await;
    assert!(!pushes.is_empty());
    let conns = otlp.tls_connections();
    assert!(
        conns.iter().all(|c| c.alpn.as_deref() == Some("h2")),
        "{conns:?}"
    );
    assert!(otlp.spans().is_empty(), "spans stay in the embedded store");
    proxy.shutdown();
    otlp.shutdown().await;
}

/// Reload: a bad `metrics.export` is refused like any bad file; a good
/// change is taken for the rest of the file, but the push keeps going to
/// the collector it started with (a restart moves it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_checks_metrics_export_and_leaves_the_push_running() {
    let dir = temp_dir("metrics-reload");
    let path = dir.join("sidetrace.yaml");
    let up = Upstream::echo().await;
    let otlp = Otlp::http().run().await;
    let other = Otlp::http().run().await;
    let yaml = |endpoint: &str, interval: &str| {
        format!("metrics:\n  export: {{ endpoint: {endpoint}, interval: {interval} }}\n")
    };
    let proxy = Proxy::from_yaml(&yaml(&otlp.endpoint(), "100ms"))
        .config_file(&path)
        .upstream(up.url())
        .run()
        .await;
    let reloads = |text: &str, result: &str| {
        metric_sum(
            text,
            "sidetrace_config_reloads_total",
            &[("result", result)],
        )
    };
    std::fs::write(&path, yaml(&otlp.endpoint(), "0s")).unwrap();
    let mut text: String;
    assert_eventually!(
        {
            text = metrics(&proxy).await;
            reloads(&text, "failure") >= 1.0
        },
        "the bad interval is a failed reload: {text}"
    );
    std::fs::write(&path, yaml(&other.endpoint(), "100ms")).unwrap();
    assert_eventually!(
        {
            text = metrics(&proxy).await;
            reloads(&text, "success") >= 1.0
        },
        "the good file is taken: {text}"
    );
    assert_eq!(
        Client::http1().get(&proxy.url("/after")).await.status,
        StatusCode::OK
    );
    otlp.wait_for_metrics("pushes to the first collector after the reload", |p| {
        p.iter().any(|p| pushed_count(p) == 1)
    })
    .await;
    proxy.shutdown();
    assert!(other.metric_pushes().is_empty(), "a restart moves the push");
    otlp.shutdown().await;
    other.shutdown().await;
}
