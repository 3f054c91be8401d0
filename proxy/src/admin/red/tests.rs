use std::{sync::Arc, time::Duration};

use filters::{
    classify::GrpcCode,
    metrics::{HttpMetrics, MetricsConfig, Outcome, RouteTable, Side, DURATION_BUCKETS},
};
use http::{Method, StatusCode, Version};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::*;

/// The RED metrics the proxy records, on the recorder `/metrics` renders,
/// with the default buckets.
fn recorder(series_limit: usize) -> (Arc<HttpMetrics>, PrometheusHandle) {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(METRIC.into()), DURATION_BUCKETS)
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    let metrics = HttpMetrics::new(
        Side::Server,
        Arc::new(recorder),
        RouteTable::new([("/api/orders", "orders"), ("/slow", "slow")]),
        &MetricsConfig::new(series_limit),
        None,
    );
    (metrics, handle)
}

/// The name of the route at `index` in the table above.
fn name(index: Option<usize>) -> Option<Arc<str>> {
    index.map(|i| Arc::from(["orders", "slow"][i]))
}

/// Records one request of `ms` milliseconds on route index `route`.
async fn request(m: &Arc<HttpMetrics>, route: Option<usize>, ms: u64, outcome: Outcome) {
    let rec = m.start(
        &Method::GET,
        Version::HTTP_11,
        "http",
        name(route),
        None,
        None,
    );
    tokio::time::advance(Duration::from_millis(ms)).await;
    rec.finish(outcome);
}

fn ok() -> Outcome {
    status(200)
}

fn status(code: u16) -> Outcome {
    Outcome {
        status: Some(StatusCode::from_u16(code).unwrap()),
        ..Outcome::default()
    }
}

fn route<'a>(red: &'a Red, name: &str) -> &'a RouteRed {
    red.routes
        .iter()
        .find(|r| r.route == name && !r.overflow)
        .unwrap_or_else(|| panic!("no route {name:?} in {red:#?}"))
}

#[tokio::test(start_paused = true)]
async fn summarises_the_histogram_per_route() {
    let (m, handle) = recorder(100);
    // orders: 10 requests, 2 of them failing in two categories, one cancelled.
    for ms in [1, 2, 3, 4, 20, 20, 40, 60] {
        request(&m, Some(0), ms, ok()).await;
    }
    request(&m, Some(0), 8, status(404)).await;
    request(&m, Some(0), 200, status(503)).await;
    let cancelled = m.start(
        &Method::GET,
        Version::HTTP_11,
        "http",
        name(Some(0)),
        None,
        None,
    );
    tokio::time::advance(Duration::from_millis(30)).await;
    drop(cancelled);
    // slow: one request past the last bucket.
    request(&m, Some(1), 12_000, ok()).await;
    // No route, gRPC INTERNAL.
    request(
        &m,
        None,
        30,
        Outcome {
            status: Some(StatusCode::OK),
            grpc: Some(GrpcCode(13)),
            ..Outcome::default()
        },
    )
    .await;

    let text = handle.render();
    let red = Red::from_exposition(&text);
    assert_eq!(red.bounds_seconds, DURATION_BUCKETS);
    assert_eq!(red.routes.len(), 3, "{red:#?}");

    let orders = route(&red, "orders");
    assert_eq!(orders.requests, 11);
    assert_eq!(orders.cancelled, 1);
    assert_eq!(orders.failures["VALIDATION"], 1);
    assert_eq!(orders.failures["NETWORK"], 1);
    assert_eq!(orders.failures["INTERNAL"], 0);
    assert!((orders.error_ratio - 2.0 / 11.0).abs() < 1e-9);
    // 5ms-bucket: 1,2,3,4 ms; 10: 8; 25: 20,20; 50: 40,30(cancelled); 75: 60; 250: 200.
    let mut want = vec![0u64; DURATION_BUCKETS.len() + 1];
    for (bound, n) in [
        (0.005, 4),
        (0.01, 1),
        (0.025, 2),
        (0.05, 2),
        (0.075, 1),
        (0.25, 1),
    ] {
        let i = DURATION_BUCKETS.iter().position(|b| *b == bound).unwrap();
        want[i] = n;
    }
    assert_eq!(orders.buckets, want);
    let sum: f64 = [1, 2, 3, 4, 20, 20, 40, 60, 8, 200, 30]
        .iter()
        .map(|ms| *ms as f64 / 1e3)
        .sum();
    assert!((orders.duration_sum_seconds - sum).abs() < 1e-6);
    // p50: rank 5.5 falls in (0.01, 0.025] holding ranks 6..7 after 5 below:
    // 0.01 + 0.015 * (5.5 - 5) / 2.
    assert!(
        (orders.quantiles["p50"] - 0.01375).abs() < 1e-9,
        "{orders:?}"
    );
    // p90: rank 9.9 in (0.05, 0.075], the 10th request: 0.05 + 0.025 * 0.9.
    assert!(
        (orders.quantiles["p90"] - 0.0725).abs() < 1e-9,
        "{orders:?}"
    );
    // p99: rank 10.89 in (0.1, 0.25], the 11th: 0.1 + 0.15 * 0.89.
    assert!(
        (orders.quantiles["p99"] - 0.2335).abs() < 1e-9,
        "{orders:?}"
    );

    let slow = route(&red, "slow");
    assert_eq!(slow.requests, 1);
    assert_eq!(*slow.buckets.last().unwrap(), 1, "past 10 s is +Inf");
    assert_eq!(slow.quantiles["p99"], 10.0, "+Inf answers the top bound");

    assert_eq!(red.all.requests, 13);
    assert_eq!(red.all.failures["INTERNAL"], 1);
    assert_eq!(red.all.failures["NETWORK"], 1);
    let summed: Vec<u64> = (0..want.len())
        .map(|i| red.routes.iter().map(|r| r.buckets[i]).sum())
        .collect();
    assert_eq!(red.all.buckets, summed);

    let none = route(&red, "");
    assert_eq!(none.failures["INTERNAL"], 1);
    assert_eq!(none.error_ratio, 1.0);
}

#[tokio::test(start_paused = true)]
async fn overflow_series_is_its_own_row() {
    let (m, handle) = recorder(1);
    request(&m, Some(0), 3, ok()).await;
    request(&m, Some(1), 3, status(500)).await;
    let red = Red::from_exposition(&handle.render());
    let overflow: Vec<_> = red.routes.iter().filter(|r| r.overflow).collect();
    assert_eq!(overflow.len(), 1, "{red:#?}");
    assert_eq!(overflow[0].requests, 1);
    assert_eq!(route(&red, "orders").requests, 1);
}

#[test]
fn no_traffic_no_routes() {
    let red = Red::from_exposition("process_start_time_seconds 1700000000.5\n");
    assert_eq!(red.process_start_time_seconds, Some(1_700_000_000.5));
    assert!(red.routes.is_empty());
    assert!(red.bounds_seconds.is_empty());
}

#[test]
fn escaped_label_values() {
    let text = concat!(
        "http_server_request_duration_seconds_bucket{http_route=\"a \\\"b\\\" \\\\ c\",le=\"0.1\"} 2\n",
        "http_server_request_duration_seconds_bucket{http_route=\"a \\\"b\\\" \\\\ c\",le=\"+Inf\"} 3\n",
        "http_server_request_duration_seconds_count{http_route=\"a \\\"b\\\" \\\\ c\"} 3\n",
        "http_server_request_duration_seconds_sum{http_route=\"a \\\"b\\\" \\\\ c\"} 0.5\n",
        "http_server_request_duration_seconds_count{http_route=\"broken\n",
        "http_server_active_requests{http_request_method=\"GET\"} 1\n",
    );
    let red = Red::from_exposition(text);
    assert_eq!(red.routes.len(), 1, "{red:#?}");
    let r = &red.routes[0];
    assert_eq!(r.route, "a \"b\" \\ c");
    assert_eq!(r.buckets, [2, 1]);
    assert!(
        (r.quantiles["p50"] - 0.075).abs() < 1e-12,
        "0 + 0.1 * 1.5 / 2"
    );
    assert_eq!(r.quantiles["p99"], 0.1);
}

#[test]
fn quantile_matches_promql() {
    // Buckets le=1: 10, le=2: 20, le=4: 20, +Inf: 20 (cumulative).
    let bounds = [1.0, 2.0, 4.0];
    let cumulative = [10, 20, 20, 20];
    assert_eq!(quantile(0.25, &bounds, &cumulative), Some(0.5));
    assert_eq!(quantile(0.5, &bounds, &cumulative), Some(1.0));
    assert_eq!(quantile(0.75, &bounds, &cumulative), Some(1.5));
    assert_eq!(quantile(1.0, &bounds, &cumulative), Some(2.0));
    assert_eq!(quantile(0.5, &bounds, &[0, 0, 0, 0]), None);
}
