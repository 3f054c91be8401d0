//! What the proxy measures and where it goes: the Prometheus recorder, the
//! RED metrics of each side, the span pipeline, the logs pipeline and the
//! OTLP metrics push, started before any listener serves.

use std::{collections::HashMap, sync::Arc};

use filters::{
    metrics::{graph::ServiceGraph, names, HttpMetrics, MetricsConfig, Side},
    route::{RouteTable, Routes},
    trace::{Resource, ServiceInfo, TraceMetrics},
};
use metrics::{Counter, Gauge, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::{
    admin,
    config::{ConfigError, Settings},
    export::{ExportMetrics, ExportSettings, Pipeline, StoreBounds},
    logs::Logs,
    metrics_export::MetricsPush,
    tls::{client::ClientTls, metrics::HandshakeMetrics},
};

/// The proxy's telemetry, started.
pub(super) struct Telemetry {
    pub(super) recorder: Arc<PrometheusRecorder>,
    pub(super) prometheus: PrometheusHandle,
    pub(super) tls_handshakes: HandshakeMetrics,
    /// One table for every listener, replaced whole on reload.
    pub(super) routes: Routes,
    /// Inbound requests: the server side of the service graph.
    pub(super) server: Arc<HttpMetrics>,
    /// The hop to the app: the same service, so out of the graph.
    pub(super) hop: Arc<HttpMetrics>,
    /// Calls the app makes, when the outbound listener exists: the client
    /// side of the service graph.
    pub(super) outbound: Option<Arc<HttpMetrics>>,
    pub(super) trace_metrics: TraceMetrics,
    pub(super) pipeline: Pipeline,
    /// The span exporter's TLS client, for an https:// collector.
    pub(super) export_tls: Option<Arc<ClientTls>>,
    pub(super) logs: Logs,
    pub(super) metrics_push: MetricsPush,
}

// === impl Telemetry ===

impl Telemetry {
    /// Registers the metrics and starts the pipelines; `outbound` says
    /// whether the outbound listener exists.
    pub(super) fn start(
        settings: &Settings,
        env: &HashMap<String, String>,
        outbound: bool,
    ) -> Result<Self, ConfigError> {
        let recorder = Arc::new(build_recorder(settings));
        let prometheus = recorder.handle();
        recorder
            .register_gauge(
                &Key::from_parts(
                    "sidetrace_build_info",
                    vec![Label::new("version", env!("CARGO_PKG_VERSION"))],
                ),
                &metadata(),
            )
            .set(1.0);
        // Handshakes of both sides, inbound and to upstreams.
        let tls_handshakes = HandshakeMetrics::register(&*recorder);
        let routes = Routes::new(RouteTable::from_config(&settings.routes));
        let metrics_config = MetricsConfig {
            series_limit: settings.metrics.series_limit,
            duration_buckets: settings.metrics.duration_buckets.as_slice().into(),
        };
        let dyn_recorder: Arc<dyn Recorder + Send + Sync> = recorder.clone();
        let graph = ServiceGraph::new(
            dyn_recorder.clone(),
            &settings.service_name,
            settings.metrics.series_limit,
        );
        let metrics = |side, graph| {
            HttpMetrics::new(
                side,
                dyn_recorder.clone(),
                routes.clone(),
                &metrics_config,
                graph,
            )
        };
        let server = metrics(Side::Server, Some(graph.clone()));
        let hop = metrics(Side::Client, None);
        let outbound = outbound.then(|| metrics(Side::Client, Some(graph.clone())));

        // Tracing: one span queue and pipeline for both listeners.
        let trace_metrics = TraceMetrics::register(&*recorder);
        let export = ExportSettings::resolve(&settings.tracing.export, env)
            .map_err(|e| ConfigError::invalid(e.source_name, e.message))?;
        let export_tls = export
            .client_tls()
            .map_err(|e| ConfigError::invalid(e.source_name, e.message))?;
        let resource = Resource::new(
            ServiceInfo {
                name: Some(&settings.service_name),
                version: settings.service_version.as_deref(),
                environment: settings.environment.as_deref(),
            },
            env,
        );
        let pipeline = Pipeline::start(
            &export,
            export_tls.clone(),
            &resource,
            StoreBounds::of(&settings.tracing),
            trace_metrics.spans_dropped_queue_full.clone(),
            ExportMetrics::register(&*recorder),
        );
        // Logs: access records and the proxy's warnings, with the spans' resource.
        let logs = Logs::start(&settings.logs, env, &resource, &*recorder)
            .map_err(|e| ConfigError::invalid(e.source_name, e.message))?;
        // Metrics over OTLP: the text /metrics serves, pushed from the export
        // runtime with the spans' resource, with the exemplars of both sides.
        let source = prometheus.clone();
        let red = both_sides(&server, &outbound);
        let metrics_push = MetricsPush::start(
            &settings.metrics.export,
            env,
            &resource,
            Arc::new(move || admin::exposition(&source)),
            Some(Arc::new(move || {
                red.iter().flat_map(|m| m.exemplars()).collect()
            })),
            &*recorder,
        )
        .map_err(|e| ConfigError::invalid(e.source_name, e.message))?;
        Ok(Self {
            recorder,
            prometheus,
            tls_handshakes,
            routes,
            server,
            hop,
            outbound,
            trace_metrics,
            pipeline,
            export_tls,
            logs,
            metrics_push,
        })
    }

    /// The RED metrics `/debug/red` reads: both sides' requests.
    pub(super) fn red(&self) -> Vec<Arc<HttpMetrics>> {
        both_sides(&self.server, &self.outbound)
    }

    /// The gauge `name` with `labels`.
    pub(super) fn gauge(
        &self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> Gauge {
        self.recorder
            .register_gauge(&key(name, labels), &metadata())
    }

    /// The counter `name` with `labels`.
    pub(super) fn counter(
        &self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> Counter {
        self.recorder
            .register_counter(&key(name, labels), &metadata())
    }
}

/// The inbound requests' metrics and the app's calls', when measured.
fn both_sides(
    server: &Arc<HttpMetrics>,
    outbound: &Option<Arc<HttpMetrics>>,
) -> Vec<Arc<HttpMetrics>> {
    std::iter::once(server.clone())
        .chain(outbound.clone())
        .collect()
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(k, v)| Label::new(*k, *v))
            .collect::<Vec<_>>(),
    )
}

fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()))
}

fn build_recorder(settings: &Settings) -> PrometheusRecorder {
    let mut builder = PrometheusBuilder::new();
    for name in [
        names::SERVER_DURATION,
        names::CLIENT_DURATION,
        filters::metrics::graph::names::SERVER_SECONDS,
        filters::metrics::graph::names::CLIENT_SECONDS,
    ] {
        builder = builder
            .set_buckets_for_metric(
                Matcher::Full(name.to_string()),
                &settings.metrics.duration_buckets,
            )
            .expect("duration buckets are validated non-empty");
    }
    for name in [names::SERVER_REQUEST_SIZE, names::SERVER_RESPONSE_SIZE] {
        builder = builder
            .set_buckets_for_metric(
                Matcher::Full(name.to_string()),
                filters::metrics::SIZE_BUCKETS,
            )
            .expect("size buckets are non-empty");
    }
    let recorder = builder.build_recorder();
    crate::admin::help::describe(&recorder);
    recorder
}
