//! Tracing: context propagation, sampling, span records, hooks and the trace
//! layer. See `docs/tracing.md` for the user's view.
//!
//! [`TraceLayer`] gives every request a [`SpanRecord`]: it extracts the
//! caller's context ([`propagation`]), decides sampling ([`Sampler`]), runs
//! the [`SpanHooks`], injects the proxy span's context into the upstream
//! request, answers with `x-trace-id`, and ends the span when the response
//! body ends (after gRPC trailers), or when the client goes away. Finished,
//! sampled spans go into a bounded queue ([`SpanSink`]) that the proxy's
//! export pipeline drains; nothing on the request path waits, locks or
//! formats OTLP. A panic inside the layer's inner service or a hook becomes
//! a 500 INTERNAL with an `exception` event.
//!
//! The layer sits outside the proxy's rescue layer, so it sees every
//! response, including the ones the proxy makes itself (429, 502, 504), with
//! their [`Failure`](crate::classify::Failure) in the response extensions.
//!
//! ```
//! use std::{convert::Infallible, sync::Arc};
//! use filters::trace::{
//!     SpanSink, TraceLayer, TraceMetrics, TraceOptions, TraceSettings, TracingConfig,
//! };
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # tokio_test_block_on(async {
//! let settings = TraceSettings::new(&TracingConfig::default(), &[], TraceMetrics::noop()).unwrap();
//! let (sink, mut spans) = SpanSink::channel(1024, metrics::Counter::noop());
//! let layer = TraceLayer::new(TraceOptions::server("http", None), Arc::new(settings), sink);
//! let svc = layer.layer(service_fn(|_req: filters::Request| async {
//!     Ok::<_, Infallible>(http::Response::new(filters::empty_body()))
//! }));
//! let resp = svc.oneshot(http::Request::new(filters::empty_body())).await.unwrap();
//! assert!(resp.headers().contains_key("x-trace-id"));
//! drop(resp);
//! assert_eq!(spans.recv().await.unwrap().name(), "GET");
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```
//!
//! Logs inside a request: the layer enters a `request` span (target
//! `sidetrace::request`, level DEBUG, fields `trace_id` and `span_id`) while
//! the inner service runs; it costs nothing unless that target is enabled
//! (`RUST_LOG=info,sidetrace::request=debug`). At the default level,
//! correlate through the access log line, which always carries both ids.
//!
//! With [`TraceLayer::logging_to`], the access log also goes to a bounded
//! [`LogSink`] as one [`AccessRecord`] per request (which requests:
//! [`AccessMode`], set with [`TraceSettings::with_access`]), for the proxy's
//! OpenTelemetry logs pipeline.

mod body;
pub mod config;
pub mod context;
mod counters;
pub mod hooks;
mod layer;
pub mod logs;
pub mod otel;
pub mod propagation;
pub mod sampler;
mod sink;
pub mod span;

pub use self::{
    body::SpanEnd,
    config::{
        CaptureConfig, ExportConfig, ExportProtocol, Resource, RouteConfig, RouteSample,
        SamplerConfig, SamplerKind, ServiceInfo, TracingConfig, DEFAULT_STORE_BYTES,
    },
    context::{SpanId, TraceId},
    counters::{names, TraceMetrics},
    hooks::{PanicInfo, PanicSource, SpanHooks},
    layer::{ResponseFuture, Trace, TraceLayer, TraceOptions, TraceSettings, X_TRACE_ID},
    logs::{AccessMode, AccessRecord, EventRecord, FieldValue, LogReceiver, LogRecord, LogSink},
    sampler::{Decision, Sampler, SamplingReason},
    sink::{SpanReceiver, SpanSink},
    span::{EndAttributes, Outcome, SpanKind, SpanRecord, SpanStatus},
};

#[cfg(test)]
mod tests;
