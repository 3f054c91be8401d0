//! RED metrics: rate, errors and duration of every request, with OpenTelemetry
//! semantic-convention names rendered the Prometheus way (DESIGN section 6).
//!
//! [`RedLayer`] is the outermost layer of a listener's stack, so it sees every
//! outcome, including responses the proxy makes itself. Durations are recorded
//! when the response *body* ends (after gRPC trailers), not when headers
//! arrive. [`HttpMetrics::start`] is also used by the forwarder for the
//! upstream hop (`http_client_request_duration_seconds`).
//!
//! Handles are resolved once per label set and cached behind an `ArcSwap`, so
//! the request path does one lock-free map lookup; label values come from
//! fixed `&'static str` sets and configured route names, never from raw paths.
//! Past `series_limit` label sets per metric, new ones land in one overflow
//! series counted by `sidetrace_metric_overflow_total`.

mod cache;
pub mod exemplar;
pub mod graph;
mod handles;
mod labels;
mod layer;

pub use crate::body::Outcome;
pub use crate::route::RouteTable;

pub use self::{
    handles::{HttpMetrics, MetricsConfig, RequestRecording, Side},
    labels::{method_index, method_label, protocol_label, METHODS},
    layer::{begin, RedLayer, RedService, ResponseFuture},
};

/// Histogram buckets of the semantic conventions for durations, in seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Buckets for body sizes in bytes (powers of four from 64 B to 64 MiB).
pub const SIZE_BUCKETS: &[f64] = &[
    64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];

/// Metric names, in one place so the chart's tests and the docs can match them.
pub mod names {
    /// Inbound (SERVER) request duration histogram.
    pub const SERVER_DURATION: &str = "http_server_request_duration_seconds";
    /// In-flight inbound requests.
    pub const SERVER_ACTIVE: &str = "http_server_active_requests";
    /// Inbound request body sizes.
    pub const SERVER_REQUEST_SIZE: &str = "http_server_request_body_size_bytes";
    /// Inbound response body sizes.
    pub const SERVER_RESPONSE_SIZE: &str = "http_server_response_body_size_bytes";
    /// Upstream-hop and outbound (CLIENT) request duration histogram.
    pub const CLIENT_DURATION: &str = "http_client_request_duration_seconds";
    /// Label sets refused by the series cap.
    pub const OVERFLOW: &str = "sidetrace_metric_overflow_total";
}
