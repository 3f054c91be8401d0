//! Metric handles, resolved once per label set and cached.

use std::sync::{Arc, OnceLock};

use http::{uri::Authority, HeaderValue, StatusCode};
use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};
use tokio::time::Instant;

use crate::body::Outcome;

use super::{
    cache::SeriesCache,
    exemplar::{Exemplar, ExemplarIndex, ExemplarSeries, Exemplars},
    graph::ServiceGraph,
    labels, names,
};
use crate::classify::{ErrorType, FailureCategory, GrpcCode};
use crate::route::Routes;
use crate::trace::{SpanId, TraceId};

/// Which side of the proxy a set of metrics describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Requests the proxy receives: `http_server_*`.
    Server,
    /// Requests the proxy sends: `http_client_*`, labelled with `server_address`.
    Client,
}

/// Settings of the RED metrics.
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// Label sets per metric before new ones go to the overflow series.
    pub series_limit: usize,
    /// Bucket bounds of the duration histograms, in seconds, ascending
    /// (the recorder's; exemplars are kept per bucket of these).
    pub duration_buckets: Arc<[f64]>,
}

impl MetricsConfig {
    /// A limit of `series_limit` label sets, with the default
    /// [`DURATION_BUCKETS`](super::DURATION_BUCKETS).
    pub fn new(series_limit: usize) -> Self {
        Self {
            series_limit,
            duration_buckets: super::DURATION_BUCKETS.into(),
        }
    }
}

/// The RED metrics of one side of one listener.
pub struct HttpMetrics {
    side: Side,
    recorder: Arc<dyn Recorder + Send + Sync>,
    routes: Routes,
    series: SeriesCache<SeriesKey, Series>,
    overflow_series: OnceLock<Arc<Series>>,
    overflow: Counter,
    /// By method index, then scheme index; registered on first use, so
    /// `/metrics` shows the methods and schemes that were seen, not every
    /// possible one at zero.
    active: Vec<[OnceLock<Gauge>; 2]>,
    /// By method index; registered on first use.
    request_size: Vec<OnceLock<Histogram>>,
    graph: Option<Arc<ServiceGraph>>,
    exemplars: ExemplarIndex,
    duration_buckets: Arc<[f64]>,
}

/// One request being measured. Records when [`finish`](Self::finish)ed, or
/// as `cancelled` when dropped unfinished (the client went away).
pub struct RequestRecording {
    metrics: Arc<HttpMetrics>,
    start: Instant,
    method: &'static str,
    protocol: &'static str,
    scheme: &'static str,
    route: Option<Arc<str>>,
    server: Option<Authority>,
    peer: Option<HeaderValue>,
    active: Option<Gauge>,
    finished: bool,
}

struct Series {
    duration: Histogram,
    response_size: Option<Histogram>,
    exemplars: Option<Arc<Exemplars>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    method: &'static str,
    status: Option<StatusCode>,
    route: Option<Arc<str>>,
    protocol: &'static str,
    scheme: &'static str,
    error_type: Option<ErrorTypeLabel>,
    category: Option<FailureCategory>,
    grpc: Option<GrpcCode>,
    server: Option<Authority>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ErrorTypeLabel {
    Typed(ErrorType),
    Cancelled,
}

const SCHEMES: [&str; 2] = ["http", "https"];

pub(crate) fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()))
}

// === impl HttpMetrics ===

impl HttpMetrics {
    /// Creates the metrics of one side, registering the fixed series now so
    /// that the request path only looks handles up. With a `graph`, requests
    /// also feed the service-graph metrics of that side.
    pub fn new(
        side: Side,
        recorder: Arc<dyn Recorder + Send + Sync>,
        routes: impl Into<Routes>,
        config: &MetricsConfig,
        graph: Option<Arc<ServiceGraph>>,
    ) -> Arc<Self> {
        let md = metadata();
        let overflow = recorder.register_counter(
            &Key::from_parts(
                names::OVERFLOW,
                vec![Label::new("metric", duration_name(side))],
            ),
            &md,
        );
        let (active, request_size) = match side {
            Side::Server => (
                labels::METHODS.iter().map(|_| Default::default()).collect(),
                labels::METHODS.iter().map(|_| OnceLock::new()).collect(),
            ),
            Side::Client => (Vec::new(), Vec::new()),
        };
        Arc::new(Self {
            side,
            recorder,
            routes: routes.into(),
            series: SeriesCache::new(config.series_limit),
            overflow_series: OnceLock::new(),
            overflow,
            active,
            request_size,
            graph,
            exemplars: ExemplarIndex::default(),
            duration_buckets: config.duration_buckets.clone(),
        })
    }

    /// Every duration series with its exemplars, for renderers.
    pub fn exemplars(&self) -> Vec<ExemplarSeries> {
        self.exemplars.all()
    }

    /// Which side these metrics describe.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Whether requests feed the service graph.
    pub fn has_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// The routes requests are matched against.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// The request body size histogram for a method label.
    pub fn request_size(&self, method: &http::Method) -> Option<&Histogram> {
        let index = labels::method_index(method);
        let slot = self.request_size.get(index)?;
        Some(slot.get_or_init(|| {
            let key = Key::from_parts(
                names::SERVER_REQUEST_SIZE,
                vec![Label::new("http_request_method", labels::METHODS[index])],
            );
            self.recorder.register_histogram(&key, &metadata())
        }))
    }

    /// Starts measuring a request.
    pub fn start(
        self: &Arc<Self>,
        method: &http::Method,
        version: http::Version,
        scheme: &'static str,
        route: Option<Arc<str>>,
        server: Option<Authority>,
        peer: Option<HeaderValue>,
    ) -> RequestRecording {
        let index = labels::method_index(method);
        let method = labels::METHODS[index];
        let scheme_index = usize::from(scheme == "https");
        let active = self.active.get(index).map(|slots| {
            slots[scheme_index]
                .get_or_init(|| {
                    let key = Key::from_parts(
                        names::SERVER_ACTIVE,
                        vec![
                            Label::new("http_request_method", method),
                            Label::new("url_scheme", SCHEMES[scheme_index]),
                        ],
                    );
                    self.recorder.register_gauge(&key, &metadata())
                })
                .clone()
        });
        if let Some(g) = &active {
            g.increment(1.0);
        }
        RequestRecording {
            metrics: self.clone(),
            start: Instant::now(),
            method,
            protocol: labels::protocol_label(version),
            scheme,
            route,
            server,
            peer,
            active,
            finished: false,
        }
    }

    fn series(&self, key: SeriesKey) -> Arc<Series> {
        if let Some(series) = self.series.get_or_register(key, |key| self.register(key)) {
            return series;
        }
        self.overflow.increment(1);
        // Registered on first use so that a healthy process shows no overflow series.
        self.overflow_series
            .get_or_init(|| {
                Arc::new(Series {
                    duration: self.recorder.register_histogram(
                        &Key::from_parts(
                            duration_name(self.side),
                            vec![Label::new("overflow", "true")],
                        ),
                        &metadata(),
                    ),
                    response_size: None,
                    exemplars: None,
                })
            })
            .clone()
    }

    fn register(&self, key: &SeriesKey) -> Series {
        let mut labels = Vec::with_capacity(9);
        labels.push(Label::new("http_request_method", key.method));
        if let Some(status) = key.status {
            labels.push(Label::new(
                "http_response_status_code",
                crate::classify::status_str(status),
            ));
        }
        let route = key.route.as_deref().unwrap_or_default().to_owned();
        labels.push(Label::new("http_route", route));
        labels.push(Label::new("network_protocol_version", key.protocol));
        labels.push(Label::new("url_scheme", key.scheme));
        if let Some(error_type) = key.error_type {
            let value = match error_type {
                ErrorTypeLabel::Typed(t) => t.as_str(),
                ErrorTypeLabel::Cancelled => "cancelled".into(),
            };
            labels.push(Label::new("error_type", value));
        }
        if let Some(category) = key.category {
            labels.push(Label::new("failure_category", category.as_str()));
        }
        if let Some(grpc) = key.grpc {
            labels.push(Label::new("rpc_grpc_status_code", grpc.as_str()));
        }
        if let Some(server) = &key.server {
            labels.push(Label::new("server_address", server.host().to_string()));
            labels.push(Label::new(
                "server_port",
                server.port_u16().unwrap_or(80).to_string(),
            ));
        }
        let md = metadata();
        let duration = self.recorder.register_histogram(
            &Key::from_parts(duration_name(self.side), labels.clone()),
            &md,
        );
        let exemplars = Arc::new(Exemplars::new(self.duration_buckets.clone()));
        self.exemplars.register(ExemplarSeries {
            name: duration_name(self.side),
            labels: labels
                .iter()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect(),
            exemplars: exemplars.clone(),
        });
        let response_size = (self.side == Side::Server).then(|| {
            self.recorder
                .register_histogram(&Key::from_parts(names::SERVER_RESPONSE_SIZE, labels), &md)
        });
        Series {
            duration,
            response_size,
            exemplars: Some(exemplars),
        }
    }
}

fn duration_name(side: Side) -> &'static str {
    match side {
        Side::Server => names::SERVER_DURATION,
        Side::Client => names::CLIENT_DURATION,
    }
}

// === impl RequestRecording ===

impl RequestRecording {
    /// Records the request's outcome.
    pub fn finish(mut self, outcome: Outcome) {
        self.record(outcome, None);
    }

    /// Records the request's outcome, and its trace and span as the
    /// exemplar of the duration bucket it falls in (for a sampled request,
    /// whose trace can be found).
    pub fn finish_traced(mut self, outcome: Outcome, trace: Option<(TraceId, SpanId)>) {
        self.record(outcome, trace);
    }

    fn record(&mut self, outcome: Outcome, trace: Option<(TraceId, SpanId)>) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        if let Some(g) = self.active.take() {
            g.decrement(1.0);
        }
        let failure = match outcome.failure {
            Some(f) => Ok(Some(f)),
            None => match outcome.status {
                Some(status) => crate::classify::classify_response(status, outcome.grpc),
                None => Ok(None),
            },
        };
        let (error_type, category) = match (outcome.cancelled, failure) {
            (_, Ok(Some(f))) => (Some(ErrorTypeLabel::Typed(f.error_type)), Some(f.category)),
            (true, _) | (_, Err(crate::classify::Cancelled)) => {
                (Some(ErrorTypeLabel::Cancelled), None)
            }
            (false, Ok(None)) => (None, None),
        };
        let seconds = self.start.elapsed().as_secs_f64();
        if let Some(graph) = &self.metrics.graph {
            match (self.metrics.side, &self.server) {
                (Side::Server, _) => {
                    let failed = matches!(
                        category,
                        Some(FailureCategory::Network | FailureCategory::Internal)
                    );
                    graph.record_inbound(self.peer.take(), failed, seconds);
                }
                (Side::Client, Some(server)) => graph.record_outbound(server, seconds),
                (Side::Client, None) => {}
            }
        }
        let key = SeriesKey {
            method: self.method,
            status: outcome.status,
            route: self.route.take(),
            protocol: self.protocol,
            scheme: self.scheme,
            error_type,
            category,
            grpc: outcome.grpc,
            server: self.server.take(),
        };
        let series = self.metrics.series(key);
        series.duration.record(seconds);
        if let (Some(exemplars), Some((trace_id, span_id))) = (&series.exemplars, trace) {
            exemplars.offer(Exemplar {
                trace_id,
                span_id,
                value: seconds,
                unix_millis: crate::trace::span::unix_nanos() / 1_000_000,
            });
        }
        if let Some(size) = &series.response_size {
            size.record(outcome.response_bytes as f64);
        }
    }
}

impl Drop for RequestRecording {
    fn drop(&mut self) {
        if !self.finished {
            self.record(
                Outcome {
                    cancelled: true,
                    ..Outcome::default()
                },
                None,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    fn metrics(
        side: Side,
        limit: usize,
    ) -> (
        Arc<HttpMetrics>,
        metrics_exporter_prometheus::PrometheusHandle,
    ) {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let m = HttpMetrics::new(
            side,
            Arc::new(recorder),
            crate::route::RouteTable::new([("/api", "api")]),
            &MetricsConfig::new(limit),
            None,
        );
        (m, handle)
    }

    #[test]
    fn records_labels_of_a_failure() {
        let (m, handle) = metrics(Side::Server, 100);
        let rec = m.start(
            &http::Method::GET,
            http::Version::HTTP_2,
            "http",
            Some("api".into()),
            None,
            None,
        );
        rec.finish(Outcome {
            status: Some(StatusCode::OK),
            grpc: Some(GrpcCode(5)),
            ..Outcome::default()
        });
        let text = handle.render();
        let line = text
            .lines()
            .find(|l| l.starts_with("http_server_request_duration_seconds_count"))
            .unwrap();
        for want in [
            "http_request_method=\"GET\"",
            "http_response_status_code=\"200\"",
            "http_route=\"api\"",
            "network_protocol_version=\"2\"",
            "error_type=\"NOT_FOUND\"",
            "failure_category=\"VALIDATION\"",
            "rpc_grpc_status_code=\"5\"",
            "url_scheme=\"http\"",
        ] {
            assert!(line.contains(want), "{want} missing in {line}");
        }
        assert!(text.contains(
            "http_server_active_requests{http_request_method=\"GET\",url_scheme=\"http\"} 0"
        ));
    }

    #[test]
    fn dropped_recording_is_cancelled_not_failed() {
        let (m, handle) = metrics(Side::Server, 100);
        drop(m.start(
            &http::Method::POST,
            http::Version::HTTP_11,
            "http",
            None,
            None,
            None,
        ));
        let text = handle.render();
        assert!(text.contains("error_type=\"cancelled\""), "{text}");
        assert!(!text.contains("failure_category"), "{text}");
    }

    #[test]
    fn series_cap_overflows_into_one_series() {
        let (m, handle) = metrics(Side::Client, 2);
        for status in [200u16, 201, 202, 203] {
            let authority: Authority = "upstream:8080".parse().unwrap();
            m.start(
                &http::Method::GET,
                http::Version::HTTP_11,
                "http",
                None,
                Some(authority),
                None,
            )
            .finish(Outcome {
                status: Some(StatusCode::from_u16(status).unwrap()),
                ..Outcome::default()
            });
        }
        let text = handle.render();
        assert!(text.contains("sidetrace_metric_overflow_total{metric=\"http_client_request_duration_seconds\"} 2"), "{text}");
        assert!(
            text.contains("http_client_request_duration_seconds_count{overflow=\"true\"} 2"),
            "{text}"
        );
        assert!(text.contains("server_address=\"upstream\""), "{text}");
    }
}
