use std::collections::HashMap;

use filters::trace::{Resource, ServiceInfo};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, HistogramDataPoint, Metric,
};

use super::*;
use crate::exposition::parse;

fn resource() -> Resource {
    Resource::new(
        ServiceInfo {
            name: Some("checkout"),
            ..Default::default()
        },
        &HashMap::new(),
    )
}

fn text(count_a: u64, buckets_a: [u64; 3], sum_a: f64, spans: u64) -> String {
    let [b0, b1, b2] = buckets_a;
    format!(
        r#"# HELP http_server_request_duration_seconds Duration.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{{http_response_status_code="200",http_route="a",le="0.1"}} {b0}
http_server_request_duration_seconds_bucket{{http_response_status_code="200",http_route="a",le="1"}} {b1}
http_server_request_duration_seconds_bucket{{http_response_status_code="200",http_route="a",le="+Inf"}} {b2}
http_server_request_duration_seconds_sum{{http_response_status_code="200",http_route="a"}} {sum_a}
http_server_request_duration_seconds_count{{http_response_status_code="200",http_route="a"}} {count_a}
# HELP sidetrace_spans_exported_total Spans.
# TYPE sidetrace_spans_exported_total counter
sidetrace_spans_exported_total {spans}
# TYPE sidetrace_connections_open gauge
sidetrace_connections_open{{listener="inbound"}} 2
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 1.5
"#
    )
}

fn metric<'a>(p: &'a Prepared, name: &str) -> Option<&'a Metric> {
    p.request.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == name)
}

fn histogram(p: &Prepared) -> (&HistogramDataPoint, i32) {
    match metric(p, "http.server.request.duration").and_then(|m| m.data.as_ref()) {
        Some(Data::Histogram(h)) => (&h.data_points[0], h.aggregation_temporality),
        other => panic!("no histogram: {other:?}"),
    }
}

fn sum_int(p: &Prepared, name: &str) -> Option<(i64, i32)> {
    match metric(p, name)?.data.as_ref()? {
        Data::Sum(s) => match s.data_points.first()?.value? {
            number_data_point::Value::AsInt(i) => Some((i, s.aggregation_temporality)),
            _ => None,
        },
        _ => None,
    }
}

#[test]
fn cumulative_is_what_the_exposition_says() {
    let res = resource();
    let c = Converter::new(&res, Temporality::Cumulative, 1_000);
    let p = c.prepare(&parse(&text(4, [2, 3, 4], 2.5, 7)), 5_000);
    let rm = &p.request.resource_metrics[0];
    assert_eq!(rm.resource, Some(crate::export::otlp::resource(&res)));
    let m = metric(&p, "http.server.request.duration").unwrap();
    assert_eq!(m.unit, "s");
    assert_eq!(m.description, "Duration.");
    let (h, t) = histogram(&p);
    assert_eq!(t, AggregationTemporality::Cumulative as i32);
    assert_eq!(h.count, 4);
    assert_eq!(h.sum, Some(2.5));
    assert_eq!(h.explicit_bounds, vec![0.1, 1.0]);
    assert_eq!(h.bucket_counts, vec![2, 1, 1]);
    assert_eq!((h.start_time_unix_nano, h.time_unix_nano), (1_000, 5_000));
    // Semantic-convention keys, the status code an integer.
    let keys: Vec<_> = h.attributes.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["http.response.status_code", "http.route"]);
    assert_eq!(
        h.attributes[0].value.as_ref().unwrap().value,
        Some(any_value::Value::IntValue(200))
    );
    assert_eq!(
        sum_int(&p, "sidetrace_spans_exported_total"),
        Some((7, AggregationTemporality::Cumulative as i32))
    );
    assert!(matches!(
        metric(&p, "sidetrace_connections_open").unwrap().data,
        Some(Data::Gauge(_))
    ));
    assert_eq!(metric(&p, "process_cpu_seconds_total").unwrap().unit, "s");
    assert_eq!(p.points, 4);
}

#[test]
fn delta_sends_differences_from_what_was_taken() {
    let mut c = Converter::new(&resource(), Temporality::Delta, 1_000);
    let first = c.prepare(&parse(&text(4, [2, 3, 4], 2.5, 7)), 5_000);
    let (h, t) = histogram(&first);
    assert_eq!(t, AggregationTemporality::Delta as i32);
    assert_eq!((h.count, h.bucket_counts.clone()), (4, vec![2, 1, 1]));
    assert_eq!(h.start_time_unix_nano, 1_000);
    c.commit(first);
    let second = c.prepare(&parse(&text(6, [3, 5, 6], 3.0, 7)), 9_000);
    let (h, _) = histogram(&second);
    assert_eq!(h.count, 2);
    assert_eq!(h.sum, Some(0.5));
    assert_eq!(h.bucket_counts, vec![1, 1, 0]);
    assert_eq!((h.start_time_unix_nano, h.time_unix_nano), (5_000, 9_000));
    // Unchanged counters are left out; gauges are always sent.
    assert!(metric(&second, "sidetrace_spans_exported_total").is_none());
    assert!(metric(&second, "sidetrace_connections_open").is_some());
    // Not committed (the push failed): the next delta covers both intervals.
    let third = c.prepare(&parse(&text(9, [3, 6, 9], 4.0, 8)), 13_000);
    let (h, _) = histogram(&third);
    assert_eq!((h.count, h.bucket_counts.clone()), (5, vec![1, 2, 2]));
    assert_eq!(h.start_time_unix_nano, 5_000);
    assert_eq!(
        sum_int(&third, "sidetrace_spans_exported_total"),
        Some((1, AggregationTemporality::Delta as i32))
    );
    c.commit(third);
    let quiet = c.prepare(&parse(&text(9, [3, 6, 9], 4.0, 8)), 17_000);
    assert!(metric(&quiet, "http.server.request.duration").is_none());
}

#[test]
fn lowmemory_keeps_observed_counters_cumulative() {
    let c = Converter::new(&resource(), Temporality::LowMemory, 1_000);
    let p = c.prepare(&parse(&text(4, [2, 3, 4], 2.5, 7)), 5_000);
    assert_eq!(histogram(&p).1, AggregationTemporality::Delta as i32);
    match metric(&p, "process_cpu_seconds_total")
        .unwrap()
        .data
        .as_ref()
    {
        Some(Data::Sum(s)) => {
            assert_eq!(
                s.aggregation_temporality,
                AggregationTemporality::Cumulative as i32
            )
        }
        other => panic!("{other:?}"),
    }
}

/// The time to render, parse, convert and encode one push: the recorder
/// after requests over a few routes, statuses and methods (32 duration
/// series), then 512 and 2000 (the default `metrics.series_limit`).
/// Prints the figures; `cargo test --release -p sidetrace --lib
/// cost_of_one_push -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn cost_of_one_push() {
    use metrics::{Key, Label, Metadata, Recorder};
    use prost::Message;
    for routes in [4, 64, 250] {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    filters::metrics::names::SERVER_DURATION.to_string(),
                ),
                filters::metrics::DURATION_BUCKETS,
            )
            .unwrap()
            .build_recorder();
        crate::admin::help::describe(&recorder);
        let md = Metadata::new("t", metrics::Level::INFO, None);
        for route in 0..routes {
            for status in ["200", "404", "500", "503"] {
                for method in ["GET", "POST"] {
                    let key = Key::from_parts(
                        filters::metrics::names::SERVER_DURATION,
                        vec![
                            Label::new("http_request_method", method),
                            Label::new("http_response_status_code", status),
                            Label::new("http_route", format!("route-{route}")),
                            Label::new("url_scheme", "http"),
                            Label::new("network_protocol_version", "1.1"),
                        ],
                    );
                    let h = recorder.register_histogram(&key, &md);
                    for i in 0..20 {
                        h.record(f64::from(i) / 100.0);
                    }
                }
            }
        }
        let handle = recorder.handle();
        for temporality in [Temporality::Cumulative, Temporality::Delta] {
            let mut c = Converter::new(&resource(), temporality, 0);
            let n = 50;
            let start = std::time::Instant::now();
            let (mut bytes, mut points) = (0, 0);
            for i in 0..n {
                let text = crate::admin::exposition(&handle);
                let p = c.prepare(&parse(&text), i + 1);
                points = p.points;
                bytes = p.request.encode_to_vec().len();
                c.commit(p);
            }
            let per = start.elapsed() / n as u32;
            let t = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(crate::admin::exposition(&handle));
            }
            let render = t.elapsed() / n as u32;
            println!(
                "{} duration series, {temporality:?}: {points} points, {bytes} bytes, {per:?} per push, of which {render:?} the /metrics rendering",
                routes * 8
            );
        }
    }
}
