//! Metric families read from `/metrics` to an OTLP
//! `ExportMetricsServiceRequest`, in the export task only.
//!
//! | exposition | OTLP |
//! |---|---|
//! | counter | `Sum`, monotonic, cumulative or delta |
//! | gauge | `Gauge` |
//! | histogram | `Histogram` with the same bounds, per-bucket counts, cumulative or delta |
//! | summary | `Summary` (always cumulative, as OTLP has it) |
//!
//! The HTTP instruments go out under their semantic-convention names and
//! attribute keys (`http_server_request_duration_seconds` is
//! `http.server.request.duration` in `s`, `http_response_status_code` is the
//! integer `http.response.status_code`), which is what an OpenTelemetry SDK
//! would push and what the Prometheus rendering was derived from. Every
//! other family keeps its exposed name and labels (`sidetrace_*`,
//! `traces_service_graph_*`, `process_*`), as a collector's Prometheus
//! receiver would name them, so one dashboard query fits either channel.
//!
//! Delta: each push carries the change since the last push the collector
//! *took* (its start time is that push's time); a failed push leaves the
//! baseline where it was, so the next one covers both intervals and nothing
//! is lost. Series that did not change are left out of a delta push.

use std::collections::HashMap;

use filters::{
    metrics::exemplar::{ExemplarSeries, Exemplars},
    trace::Resource,
};
use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    metrics::v1::{
        exemplar, metric::Data, number_data_point, summary_data_point::ValueAtQuantile,
        AggregationTemporality, Exemplar, Gauge, Histogram, HistogramDataPoint, Metric,
        NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
    },
    resource::v1::Resource as ProtoResource,
};
use opentelemetry_semantic_conventions::{attribute as attr, metric as semconv};

use super::config::Temporality;
use crate::{
    export::otlp::{FAILURE_CATEGORY, SCOPE},
    exposition::{Family, Kind, Labels, Value},
};

/// Exposed name, OTLP name and unit of the instruments the semantic
/// conventions define.
const SEMCONV_NAMES: &[(&str, &str, &str)] = &[
    (
        filters::metrics::names::SERVER_DURATION,
        semconv::HTTP_SERVER_REQUEST_DURATION,
        "s",
    ),
    (
        filters::metrics::names::SERVER_ACTIVE,
        semconv::HTTP_SERVER_ACTIVE_REQUESTS,
        "{request}",
    ),
    (
        filters::metrics::names::SERVER_REQUEST_SIZE,
        semconv::HTTP_SERVER_REQUEST_BODY_SIZE,
        "By",
    ),
    (
        filters::metrics::names::SERVER_RESPONSE_SIZE,
        semconv::HTTP_SERVER_RESPONSE_BODY_SIZE,
        "By",
    ),
    (
        filters::metrics::names::CLIENT_DURATION,
        semconv::HTTP_CLIENT_REQUEST_DURATION,
        "s",
    ),
];

#[allow(deprecated)]
const RPC_GRPC_STATUS_CODE: &str = attr::RPC_GRPC_STATUS_CODE;

/// Exposed label, OTLP attribute key, and whether the value is an integer.
const ATTRIBUTES: &[(&str, &str, bool)] = &[
    ("http_request_method", attr::HTTP_REQUEST_METHOD, false),
    (
        "http_response_status_code",
        attr::HTTP_RESPONSE_STATUS_CODE,
        true,
    ),
    ("http_route", attr::HTTP_ROUTE, false),
    (
        "network_protocol_version",
        attr::NETWORK_PROTOCOL_VERSION,
        false,
    ),
    ("url_scheme", attr::URL_SCHEME, false),
    ("error_type", attr::ERROR_TYPE, false),
    ("failure_category", FAILURE_CATEGORY, false),
    ("rpc_grpc_status_code", RPC_GRPC_STATUS_CODE, true),
    ("server_address", attr::SERVER_ADDRESS, false),
    ("server_port", attr::SERVER_PORT, true),
];

/// Counters read from the system at collection (asynchronous instruments,
/// in OpenTelemetry terms), cumulative under `lowmemory`.
fn observed(name: &str) -> bool {
    name.starts_with("process_")
}

/// Turns families into export requests and keeps the delta baseline.
#[derive(Debug)]
pub struct Converter {
    resource: ProtoResource,
    scope: InstrumentationScope,
    temporality: Temporality,
    /// The baseline: cumulative values the collector has taken, by series.
    baseline: HashMap<(String, Labels), Prev>,
    /// When the baseline was taken (the start of the next delta), or the
    /// start of the push (the start of every cumulative point).
    baseline_time: u64,
    start_time: u64,
}

/// A request ready to send, and what it commits on success.
#[derive(Debug)]
pub struct Prepared {
    /// The request.
    pub request: ExportMetricsServiceRequest,
    /// Data points in it.
    pub points: usize,
    time: u64,
    snapshot: HashMap<(String, Labels), Prev>,
}

#[derive(Clone, Debug, PartialEq)]
enum Prev {
    Number(f64),
    Histogram {
        cumulative: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

// === impl Converter ===

impl Converter {
    /// A converter for `resource` (the spans' own); `start` (Unix ns) is the
    /// start time of cumulative points.
    pub fn new(resource: &Resource, temporality: Temporality, start: u64) -> Self {
        Self {
            resource: crate::export::otlp::resource(resource),
            scope: InstrumentationScope {
                name: SCOPE.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                ..Default::default()
            },
            temporality,
            baseline: HashMap::new(),
            baseline_time: start,
            start_time: start,
        }
    }

    /// The request for `families` collected at `now` (Unix ns).
    pub fn prepare(&self, families: &[Family], now: u64) -> Prepared {
        self.prepare_with(families, &[], now)
    }

    /// [`prepare`](Self::prepare), the histogram points of `exemplars`'
    /// series carrying the exemplars their buckets hold (for delta points,
    /// only those newer than the last push).
    pub fn prepare_with(
        &self,
        families: &[Family],
        exemplars: &[ExemplarSeries],
        now: u64,
    ) -> Prepared {
        let by_series: HashMap<(&str, Labels), &Exemplars> = exemplars
            .iter()
            .map(|s| {
                let mut labels: Labels = s.labels.to_vec();
                labels.sort_unstable();
                ((s.name, labels), &*s.exemplars)
            })
            .collect();
        let mut metrics = Vec::with_capacity(families.len());
        let mut snapshot = HashMap::new();
        let mut points = 0;
        for family in families {
            let delta = match self.temporality {
                Temporality::Cumulative => false,
                Temporality::Delta => true,
                Temporality::LowMemory => !observed(&family.name),
            } && matches!(family.kind, Kind::Counter | Kind::Histogram);
            let temporality = if delta {
                AggregationTemporality::Delta
            } else {
                AggregationTemporality::Cumulative
            } as i32;
            let start = if delta {
                self.baseline_time
            } else {
                self.start_time
            };
            let data = match family.kind {
                Kind::Counter | Kind::Gauge => {
                    let mut data_points = Vec::with_capacity(family.series.len());
                    for s in &family.series {
                        let Value::Number { value, int } = s.value else {
                            continue;
                        };
                        let mut value = value;
                        if delta {
                            let key = (family.name.clone(), s.labels.clone());
                            let before = match self.baseline.get(&key) {
                                Some(Prev::Number(v)) if *v <= value => *v,
                                _ => 0.0,
                            };
                            snapshot.insert(key, Prev::Number(value));
                            value -= before;
                            if value == 0.0 {
                                continue;
                            }
                        }
                        data_points.push(NumberDataPoint {
                            attributes: attributes(&s.labels),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            value: Some(match int {
                                true => number_data_point::Value::AsInt(value as i64),
                                false => number_data_point::Value::AsDouble(value),
                            }),
                            ..Default::default()
                        });
                    }
                    points += data_points.len();
                    match family.kind {
                        Kind::Counter => Data::Sum(Sum {
                            data_points,
                            aggregation_temporality: temporality,
                            is_monotonic: true,
                        }),
                        _ => Data::Gauge(Gauge { data_points }),
                    }
                }
                Kind::Histogram => {
                    let mut data_points = Vec::with_capacity(family.series.len());
                    for s in &family.series {
                        let Value::Histogram {
                            bounds,
                            cumulative,
                            sum,
                            count,
                        } = &s.value
                        else {
                            continue;
                        };
                        let (taken, taken_sum, taken_count) = (cumulative, *sum, *count);
                        let (mut cumulative, mut sum, mut count) =
                            (cumulative.clone(), *sum, *count);
                        if delta {
                            let key = (family.name.clone(), s.labels.clone());
                            if let Some(Prev::Histogram {
                                cumulative: c0,
                                sum: s0,
                                count: n0,
                            }) = self.baseline.get(&key)
                            {
                                // A series only grows; anything else starts over.
                                if c0.len() == cumulative.len() && *n0 <= count {
                                    for (c, c0) in cumulative.iter_mut().zip(c0) {
                                        *c = c.saturating_sub(*c0);
                                    }
                                    sum -= s0;
                                    count -= n0;
                                }
                            }
                            snapshot.insert(
                                key,
                                Prev::Histogram {
                                    cumulative: taken.clone(),
                                    sum: taken_sum,
                                    count: taken_count,
                                },
                            );
                            if count == 0 {
                                continue;
                            }
                        }
                        // Cumulative `le` counts to counts per bucket.
                        let mut below = 0;
                        let bucket_counts = cumulative
                            .iter()
                            .map(|&c| {
                                let n = c.saturating_sub(below);
                                below = c.max(below);
                                n
                            })
                            .collect();
                        let mut labels = s.labels.clone();
                        labels.sort_unstable();
                        let exemplars = by_series
                            .get(&(family.name.as_str(), labels))
                            .map(|e| otlp_exemplars(e, start))
                            .unwrap_or_default();
                        data_points.push(HistogramDataPoint {
                            attributes: attributes(&s.labels),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            count,
                            sum: Some(sum),
                            bucket_counts,
                            explicit_bounds: bounds.clone(),
                            exemplars,
                            ..Default::default()
                        });
                    }
                    points += data_points.len();
                    Data::Histogram(Histogram {
                        data_points,
                        aggregation_temporality: temporality,
                    })
                }
                Kind::Summary => {
                    let data_points: Vec<_> = family
                        .series
                        .iter()
                        .filter_map(|s| match &s.value {
                            Value::Summary {
                                quantiles,
                                sum,
                                count,
                            } => Some(SummaryDataPoint {
                                attributes: attributes(&s.labels),
                                start_time_unix_nano: self.start_time,
                                time_unix_nano: now,
                                count: *count,
                                sum: *sum,
                                quantile_values: quantiles
                                    .iter()
                                    .map(|&(quantile, value)| ValueAtQuantile { quantile, value })
                                    .collect(),
                                flags: 0,
                            }),
                            _ => None,
                        })
                        .collect();
                    points += data_points.len();
                    Data::Summary(Summary { data_points })
                }
            };
            if is_empty(&data) {
                continue;
            }
            let (name, unit) = otlp_name(&family.name);
            metrics.push(Metric {
                name,
                description: family.help.clone(),
                unit: unit.to_string(),
                metadata: Vec::new(),
                data: Some(data),
            });
        }
        Prepared {
            request: ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    resource: Some(self.resource.clone()),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(self.scope.clone()),
                        metrics,
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            },
            points,
            time: now,
            snapshot,
        }
    }

    /// The collector took `prepared`: later deltas start from it.
    pub fn commit(&mut self, prepared: Prepared) {
        if self.temporality == Temporality::Cumulative {
            return;
        }
        self.baseline.extend(prepared.snapshot);
        self.baseline_time = prepared.time;
    }
}

/// A series' exemplars as OTLP exemplars, those recorded since `since`
/// (Unix ns).
fn otlp_exemplars(exemplars: &Exemplars, since: u64) -> Vec<Exemplar> {
    (0..=exemplars.bounds().len())
        .filter_map(|i| exemplars.get(i))
        .map(|e| (e, e.unix_millis.saturating_mul(1_000_000)))
        .filter(|(_, at)| *at >= since)
        .map(|(e, at)| Exemplar {
            time_unix_nano: at,
            trace_id: e.trace_id.0.to_vec(),
            span_id: e.span_id.0.to_vec(),
            value: Some(exemplar::Value::AsDouble(e.value)),
            ..Default::default()
        })
        .collect()
}

fn is_empty(data: &Data) -> bool {
    match data {
        Data::Sum(s) => s.data_points.is_empty(),
        Data::Gauge(g) => g.data_points.is_empty(),
        Data::Histogram(h) => h.data_points.is_empty(),
        Data::Summary(s) => s.data_points.is_empty(),
        Data::ExponentialHistogram(h) => h.data_points.is_empty(),
    }
}

/// The OTLP name and unit of an exposed family.
pub fn otlp_name(exposed: &str) -> (String, &'static str) {
    if let Some(&(_, name, unit)) = SEMCONV_NAMES.iter().find(|(e, _, _)| *e == exposed) {
        return (name.to_string(), unit);
    }
    let unit = if exposed.ends_with("_seconds") || exposed.ends_with("_seconds_total") {
        "s"
    } else if exposed.ends_with("_bytes") {
        "By"
    } else {
        ""
    };
    (exposed.to_string(), unit)
}

fn attributes(labels: &Labels) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(k, v)| {
            let (key, int) = ATTRIBUTES
                .iter()
                .find(|(e, _, _)| e == k)
                .map_or((k.as_str(), false), |&(_, key, int)| (key, int));
            let value = match int.then(|| v.parse::<i64>().ok()).flatten() {
                Some(i) => any_value::Value::IntValue(i),
                None => any_value::Value::StringValue(v.clone()),
            };
            KeyValue {
                key: key.to_string(),
                value: Some(AnyValue { value: Some(value) }),
                ..KeyValue::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
