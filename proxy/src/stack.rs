//! THE place where the inbound and outbound stacks are assembled, outermost
//! layer first. Each layer says why it sits where it does.

use std::{convert::Infallible, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use filters::{
    catch_panic::CatchPanicLayer,
    filter_metrics::FilterMetrics,
    metrics::HttpMetrics,
    registry::{build_chain_recording, ConfigError, FilterConfig},
    trace::{
        hooks::SpanHooks, propagation::custom::DynPropagator, RouteConfig, TraceLayer,
        TraceMetrics, TraceSettings, TracingConfig,
    },
    HttpBody, HttpService,
};
use futures_util::future::Either;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::{util::BoxCloneSyncService, Service, ServiceBuilder, ServiceExt};

use crate::{
    client_body::ClientBody,
    forward::{is_grpc, strip_hop_by_hop, Forward},
    logs::LogsConfig,
    rescue::RescueLayer,
    tunnel::{ConnectPolicy, TunnelLayer},
    validate::ValidateLayer,
};

/// The configured filter chain over the forwarder, swapped whole on reload.
#[derive(Clone)]
pub struct Chain {
    current: Arc<ArcSwap<Configured>>,
    metrics: FilterMetrics,
}

/// What a chain runs: the forwarder itself when no filter is configured,
/// so the common case pays for no boxed service clone and no boxed future
/// per request, else the built filters over it.
pub enum Configured {
    /// No filters.
    Forward(Forward),
    /// The filters, outermost first, over the forwarder.
    Filters(HttpService),
}

/// Builds `filters` over `forward`, recording into `metrics`: the same for
/// start-up and reload. The error carries the failing filter's index.
fn configured(
    filters: &[FilterConfig],
    forward: &Forward,
    metrics: &FilterMetrics,
) -> Result<Configured, (usize, ConfigError)> {
    if filters.is_empty() {
        return Ok(Configured::Forward(forward.clone()));
    }
    build_chain_recording(filters, BoxCloneSyncService::new(forward.clone()), metrics)
        .map(Configured::Filters)
}

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
            req.map(|b| ClientBody::new(b, idle).boxed_unsync())
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

// === impl Chain ===

impl Chain {
    /// The chain of `filters` over `forward`, its filters recording into
    /// `metrics`. The error carries the failing filter's index.
    pub fn build(
        filters: &[FilterConfig],
        forward: &Forward,
        metrics: FilterMetrics,
    ) -> Result<Self, (usize, ConfigError)> {
        let current = configured(filters, forward, &metrics)?;
        Ok(Self {
            current: Arc::new(ArcSwap::from_pointee(current)),
            metrics,
        })
    }

    /// `filters` over `forward` built as this chain's, ready to [`swap`](Self::swap) in.
    pub fn rebuild(
        &self,
        filters: &[FilterConfig],
        forward: &Forward,
    ) -> Result<Configured, (usize, ConfigError)> {
        configured(filters, forward, &self.metrics)
    }

    /// Replaces the chain; requests in flight finish on the old one.
    pub fn swap(&self, service: Configured) {
        self.current.store(Arc::new(service));
    }
}

impl Service<Request<HttpBody>> for Chain {
    type Response = Response<HttpBody>;
    type Error = filters::Error;
    type Future = Either<
        <Forward as Service<Request<HttpBody>>>::Future,
        tower::util::Oneshot<HttpService, Request<HttpBody>>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Readiness is the current chain's, checked in `call` through oneshot:
        // filters answer limits in `call`, so this never parks a connection.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<HttpBody>) -> Self::Future {
        match &**self.current.load() {
            // Always ready (see `Forward::poll_ready`).
            Configured::Forward(forward) => Either::Left(forward.clone().call(req)),
            Configured::Filters(service) => Either::Right(service.clone().oneshot(req)),
        }
    }
}
