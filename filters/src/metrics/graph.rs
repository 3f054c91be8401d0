//! Service-graph metrics, named as the Tempo and OpenTelemetry Collector
//! servicegraph connectors emit them, so their dashboards work unchanged.
//!
//! A sidecar sees each edge from one side only, so the work is split:
//!
//! - the **inbound** side (the server) counts the edge:
//!   `traces_service_graph_request_total`, `..._request_failed_total` and
//!   `..._request_server_seconds`, with `client` taken from the
//!   `x-sidetrace-client` header that a calling sidetrace adds on its
//!   outbound listener, or `user` with `connection_type="virtual_node"` when
//!   the caller is not behind sidetrace (Tempo's convention for an
//!   uninstrumented client);
//! - the **outbound** side (the client) records
//!   `traces_service_graph_request_client_seconds` with `server` = the
//!   destination host.
//!
//! An edge to a destination that is not behind sidetrace is therefore visible
//! in `client_seconds` and `http_client_request_duration_seconds` only.

use std::sync::{Arc, OnceLock};

use http::{uri::Authority, HeaderName, HeaderValue};
use metrics::{Counter, Histogram, Key, Label, Recorder};

use super::cache::SeriesCache;

/// Header carrying the calling service's name from one sidetrace to the next.
pub const CLIENT_HEADER: HeaderName = HeaderName::from_static("x-sidetrace-client");

/// Service-graph metric names.
pub mod names {
    /// Requests per edge.
    pub const REQUEST_TOTAL: &str = "traces_service_graph_request_total";
    /// Failed requests per edge.
    pub const REQUEST_FAILED_TOTAL: &str = "traces_service_graph_request_failed_total";
    /// Server-side duration per edge.
    pub const SERVER_SECONDS: &str = "traces_service_graph_request_server_seconds";
    /// Client-side duration per edge.
    pub const CLIENT_SECONDS: &str = "traces_service_graph_request_client_seconds";
}

/// The edges this proxy's service takes part in.
pub struct ServiceGraph {
    recorder: Arc<dyn Recorder + Send + Sync>,
    service: Arc<str>,
    inbound: SeriesCache<Option<HeaderValue>, InboundEdge>,
    outbound: SeriesCache<Authority, Histogram>,
    /// Past the edge cap, edges land here (`client`/`server` = `_overflow`),
    /// registered on first use so a healthy process shows none.
    inbound_overflow: OnceLock<InboundEdge>,
    outbound_overflow: OnceLock<Histogram>,
    inbound_overflow_count: Counter,
    outbound_overflow_count: Counter,
}

/// The label value of edges past the cap.
pub const OVERFLOW_PEER: &str = "_overflow";

struct InboundEdge {
    total: Counter,
    failed: Counter,
    seconds: Histogram,
}

// === impl ServiceGraph ===

impl ServiceGraph {
    /// The graph of `service`, keeping at most `edge_limit` edges per side.
    pub fn new(
        recorder: Arc<dyn Recorder + Send + Sync>,
        service: &str,
        edge_limit: usize,
    ) -> Arc<Self> {
        let overflow_counter = |metric: &'static str| {
            recorder.register_counter(
                &Key::from_parts(super::names::OVERFLOW, vec![Label::new("metric", metric)]),
                &super::handles::metadata(),
            )
        };
        Arc::new(Self {
            inbound_overflow_count: overflow_counter(names::REQUEST_TOTAL),
            outbound_overflow_count: overflow_counter(names::CLIENT_SECONDS),
            recorder,
            service: service.into(),
            inbound: SeriesCache::new(edge_limit),
            outbound: SeriesCache::new(edge_limit),
            inbound_overflow: OnceLock::new(),
            outbound_overflow: OnceLock::new(),
        })
    }

    fn inbound_edge(&self, client: String, kind: &'static str) -> InboundEdge {
        let labels = vec![
            Label::new("client", client),
            Label::new("server", self.service.to_string()),
            Label::new("connection_type", kind),
        ];
        let md = super::handles::metadata();
        InboundEdge {
            total: self
                .recorder
                .register_counter(&Key::from_parts(names::REQUEST_TOTAL, labels.clone()), &md),
            failed: self.recorder.register_counter(
                &Key::from_parts(names::REQUEST_FAILED_TOTAL, labels.clone()),
                &md,
            ),
            seconds: self
                .recorder
                .register_histogram(&Key::from_parts(names::SERVER_SECONDS, labels), &md),
        }
    }

    fn client_seconds(&self, server: String) -> Histogram {
        let labels = vec![
            Label::new("client", self.service.to_string()),
            Label::new("server", server),
            Label::new("connection_type", ""),
        ];
        self.recorder.register_histogram(
            &Key::from_parts(names::CLIENT_SECONDS, labels),
            &super::handles::metadata(),
        )
    }

    /// Records a request served on the inbound side.
    pub fn record_inbound(&self, client: Option<HeaderValue>, failed: bool, seconds: f64) {
        let edge = self.inbound.get_or_register(client, |client| {
            match client.as_ref().and_then(|c| c.to_str().ok()) {
                Some(name) if !name.is_empty() => self.inbound_edge(name.to_string(), ""),
                _ => self.inbound_edge("user".to_string(), "virtual_node"),
            }
        });
        let overflow;
        let edge = match &edge {
            Some(edge) => &**edge,
            None => {
                // Past the edge cap the request still counts, in one visible series.
                self.inbound_overflow_count.increment(1);
                overflow = self
                    .inbound_overflow
                    .get_or_init(|| self.inbound_edge(OVERFLOW_PEER.to_string(), ""));
                overflow
            }
        };
        edge.total.increment(1);
        if failed {
            edge.failed.increment(1);
        }
        edge.seconds.record(seconds);
    }

    /// Records a call made on the outbound side.
    pub fn record_outbound(&self, server: &Authority, seconds: f64) {
        match self.outbound.get_or_register(server.clone(), |server| {
            self.client_seconds(server.host().to_string())
        }) {
            Some(h) => h.record(seconds),
            None => {
                self.outbound_overflow_count.increment(1);
                self.outbound_overflow
                    .get_or_init(|| self.client_seconds(OVERFLOW_PEER.to_string()))
                    .record(seconds);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn edges_name_known_and_unknown_clients() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let graph = ServiceGraph::new(Arc::new(recorder), "orders", 10);
        graph.record_inbound(Some(HeaderValue::from_static("checkout")), false, 0.01);
        graph.record_inbound(Some(HeaderValue::from_static("checkout")), true, 0.02);
        graph.record_inbound(None, false, 0.01);
        graph.record_outbound(&"payments.internal:8080".parse().unwrap(), 0.03);
        let text = handle.render();
        assert!(text.contains("traces_service_graph_request_total{client=\"checkout\",server=\"orders\",connection_type=\"\"} 2"), "{text}");
        assert!(text.contains("traces_service_graph_request_failed_total{client=\"checkout\",server=\"orders\",connection_type=\"\"} 1"), "{text}");
        assert!(text.contains("traces_service_graph_request_total{client=\"user\",server=\"orders\",connection_type=\"virtual_node\"} 1"), "{text}");
        assert!(text.contains("traces_service_graph_request_client_seconds_count{client=\"orders\",server=\"payments.internal\",connection_type=\"\"} 1"), "{text}");
    }

    #[test]
    fn edges_past_the_cap_land_in_one_visible_overflow_edge() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let graph = ServiceGraph::new(Arc::new(recorder), "orders", 2);
        for i in 0..50 {
            let name = HeaderValue::from_str(&format!("random-{i}")).unwrap();
            graph.record_inbound(Some(name), i % 2 == 0, 0.01);
        }
        let text = handle.render();
        assert!(text.contains("traces_service_graph_request_total{client=\"_overflow\",server=\"orders\",connection_type=\"\"} 48"), "{text}");
        assert!(text.contains("traces_service_graph_request_failed_total{client=\"_overflow\",server=\"orders\",connection_type=\"\"} 24"), "{text}");
        assert!(
            text.contains(
                "sidetrace_metric_overflow_total{metric=\"traces_service_graph_request_total\"} 48"
            ),
            "{text}"
        );
        for i in 0..5 {
            let server: Authority = format!("dest-{i}:80").parse().unwrap();
            graph.record_outbound(&server, 0.01);
        }
        let text = handle.render();
        assert!(text.contains("traces_service_graph_request_client_seconds_count{client=\"orders\",server=\"_overflow\",connection_type=\"\"} 3"), "{text}");
    }
}
