//! THE place where the inbound and outbound stacks are assembled, outermost
//! layer first. Each layer says why it sits where it does.

use std::{convert::Infallible, sync::Arc, time::Duration};

use filters::{
    catch_panic::CatchPanicLayer,
    metrics::HttpMetrics,
    registry::ConfigError,
    trace::{
        hooks::SpanHooks, propagation::custom::DynPropagator, RouteConfig, TraceLayer,
        TraceMetrics, TraceSettings, TracingConfig,
    },
    HttpBody,
};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::{Service, ServiceBuilder};

mod chain;

pub use self::chain::{Chain, ChainError, Chains};
use crate::{
    client_body::{BodyFailure, ClientBody},
    forward::{is_grpc, strip_hop_by_hop},
    logs::LogsConfig,
    rescue::RescueLayer,
    tunnel::{ConnectPolicy, TunnelLayer},
    validate::ValidateLayer,
};

/// Builds a listener's stack.
///
/// `metrics` is the listener's RED metrics, `trace` its trace layer (SERVER
/// spans inbound, CLIENT spans outbound); `chain` is the configured filters
/// over the forwarder; a request body (other than gRPC's) that delivers
/// nothing for `body_idle_timeout` fails; `connect` says what becomes of
/// `CONNECT` (tunnelled outbound, refused inbound).
pub fn listener(
    metrics: Arc<HttpMetrics>,
    scheme: &'static str,
    trace: TraceLayer,
    chain: Chain,
    body_idle_timeout: Duration,
    connect: ConnectPolicy,
) -> impl Service<
    Request<Incoming>,
    Response = Response<HttpBody>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
       + Send
       + Sync
       + 'static {
    // A concrete type, not a boxed one: hyper clones it for every request
    // and a boxed clone, and its boxed future, are two allocations each time.
    ServiceBuilder::new()
        // At the edge: headers that describe the client's connection go
        // before anything is added that a `Connection` header could name
        // (trace context). hyper's body becomes the chain's boxed body once,
        // with its errors typed as the client's.
        .map_request(move |mut req: Request<Incoming>| {
            strip_hop_by_hop(&mut req);
            // A gRPC client stream may rightly stay quiet between messages.
            let idle = (!is_grpc(req.headers())).then_some(body_idle_timeout);
            // Only a request with a body can fail by it: others pay nothing.
            let failure = (!hyper::body::Body::is_end_stream(req.body())).then(|| {
                let failure = BodyFailure::default();
                req.extensions_mut().insert(failure.clone());
                failure
            });
            req.map(|b| {
                let body = ClientBody::new(b, idle);
                match failure {
                    Some(failure) => body.reporting(failure).boxed_unsync(),
                    None => body.boxed_unsync(),
                }
            })
        })
        // Observe: RED metrics, the span (context in, span, context out,
        // `x-trace-id`), the service graph and the access log, in one layer
        // with one route match and one end-of-body observer. Outermost, so
        // it sees every outcome, the proxy's own 4xx/5xx included, and times
        // the whole request until its body ends; it needs the infallible
        // service below.
        .layer(trace.with_metrics(metrics, scheme))
        // Typed errors become responses (with the Failure in extensions for
        // the layers above); below this line everything may fail.
        .layer(RescueLayer)
        // Ambiguous targets and authorities end here, as a 400 every layer
        // above records.
        .layer(ValidateLayer)
        // CONNECT is answered here, under the metrics and trace layers so a
        // tunnel is measured and spanned until it closes, after validation
        // and the in-flight budget, and over the configured filters, which
        // are for HTTP exchanges, not for the bytes of a tunnel.
        .layer(TunnelLayer::new(connect))
        // A panicking filter becomes one more INTERNAL error for rescue.
        .layer(CatchPanicLayer::new())
        .service(chain)
}

/// The trace layer's settings: the `tracing:` block and `routes:`, then the
/// proxy's own span hooks after the built-ins, the embedder's propagators
/// after the configured formats, and which requests get access records.
/// The same at start-up and on reload.
pub fn trace_settings(
    tracing: &TracingConfig,
    routes: &[RouteConfig],
    metrics: TraceMetrics,
    hooks: &[Arc<dyn SpanHooks>],
    propagators: &[DynPropagator],
    logs: &LogsConfig,
) -> Result<TraceSettings, ConfigError> {
    let settings = TraceSettings::new(tracing, routes, metrics)?;
    let settings = hooks
        .iter()
        .cloned()
        .fold(settings, TraceSettings::with_hook);
    Ok(propagators
        .iter()
        .cloned()
        .fold(settings, TraceSettings::with_propagator)
        .with_access(logs.access, logs.stdout))
}
