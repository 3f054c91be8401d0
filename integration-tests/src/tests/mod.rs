//! The integration tests, one binary.

mod connect;
mod drain;
mod export_tls;
mod failures;
mod filter_metrics;
mod grpc;
mod hostile;
mod http;
mod limits;
mod logs_export;
mod metrics_export;
mod metrics_text;
mod outbound;
mod propagation_formats;
mod reload;
mod routes;
mod tls;
mod tls_load;
mod tracing_common;
mod tracing_export;
mod tracing_failures;
mod tracing_propagation;
mod tracing_sampling;
mod upstream_body;
mod upstream_tls;
mod webhook;
