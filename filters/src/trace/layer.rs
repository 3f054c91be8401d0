//! [`TraceLayer`]: a span per request, context in and out, the access log.

use std::{
    convert::Infallible,
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use arc_swap::ArcSwap;
use futures_util::future::{CatchUnwind, FutureExt};
use http::{header, uri::Authority, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{
    body::{RequestBytes, SpanEnd},
    config::{validate_routes, RouteConfig, TracingConfig},
    context::{hex_str, TraceId},
    counters::TraceMetrics,
    hooks::{
        CaptureHeaders, DebugPanic, Exceptions, PanicInfo, PanicSource, RouteNaming, SpanHooks,
    },
    logs::{AccessMode, LogSink},
    propagation::{self, custom::CustomPropagators, xray, InjectContext, Propagator, Propagators},
    sampler::{Decision, Sampler},
    sink::SpanSink,
    span::{EndAttributes, Host, SpanKind, SpanRecord},
};
use crate::{
    body::EosBody,
    catch_panic::panic_message,
    classify::{ErrorType, Failure, FailureCategory, GrpcCode},
    connection::ConnectionInfo,
    metrics::{self as red_metrics, HttpMetrics, RequestRecording},
    registry::ConfigError,
    Request, Response,
};

/// `x-trace-id`: the response header carrying the trace id, so a user can
/// paste it into the trace UI.
pub const X_TRACE_ID: header::HeaderName = header::HeaderName::from_static("x-trace-id");

/// Everything the trace layer reads per request, built once from config and
/// swapped whole on reload.
pub struct TraceSettings {
    pub(crate) propagators: Propagators,
    pub(crate) custom: CustomPropagators,
    pub(crate) sampler: Sampler,
    pub(crate) hooks: Vec<Arc<dyn SpanHooks>>,
    pub(crate) metrics: TraceMetrics,
    pub(crate) access_log: bool,
    pub(crate) access_mode: AccessMode,
}

/// Per-listener facts that do not come from the tracing config.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// SERVER for the inbound listener, CLIENT for the outbound one.
    pub kind: SpanKind,
    /// `url.scheme` of the listener (`http` or `https`).
    pub scheme: &'static str,
    /// Where requests go (the app), for the access log; for CLIENT spans the
    /// request's own authority is used when this is `None`.
    pub upstream: Option<Authority>,
}

/// Applies [`Trace`]. Cloned per request by hyper-util: `Arc`s inside.
#[derive(Clone)]
pub struct TraceLayer {
    shared: Arc<Shared>,
    red: Option<Red>,
}

/// Traces requests to the inner service.
#[derive(Clone)]
pub struct Trace<S> {
    inner: S,
    shared: Arc<Shared>,
    red: Option<Red>,
}

/// The RED metrics a trace layer records along with its spans.
#[derive(Clone)]
struct Red {
    metrics: Arc<HttpMetrics>,
    scheme: &'static str,
}

struct Shared {
    options: TraceOptions,
    settings: ArcSwap<TraceSettings>,
    sinks: Arc<Sinks>,
}

/// Where finished requests go: one `Arc` cloned per request for both.
pub(crate) struct Sinks {
    pub(crate) spans: SpanSink,
    pub(crate) logs: LogSink,
}

pin_project! {
    /// Response future of [`Trace`].
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        span: Option<InFlight>,
        log_span: tracing::Span,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the response head: the client went away while
            // the upstream was still working. The span ends as cancelled.
            if let Some(inflight) = this.project().span.take() {
                crate::body::OnEos::on_eos(SpanEnd::before_head(inflight), crate::body::Eos::Cancelled, 0);
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running { #[pin] future: CatchUnwind<AssertUnwindSafe<F>> },
        Answered { response: Option<Response> },
    }
}

/// A span between `call` and the end of the response body.
pub(crate) struct InFlight {
    pub(crate) record: SpanRecord,
    pub(crate) decision: Decision,
    pub(crate) settings: Arc<TraceSettings>,
    pub(crate) sinks: Arc<Sinks>,
    pub(crate) request_bytes: RequestBytes,
    /// The request's RED recording, finished with the span.
    pub(crate) recording: Option<RequestRecording>,
    pub(crate) access_log: bool,
    pub(crate) panicked: bool,
    /// `x-trace-id` for the response (shares the injected headers' buffer).
    pub(crate) trace_header: HeaderValue,
}

// === impl TraceSettings ===

impl TraceSettings {
    /// Settings from the `tracing:` block and `routes:` list (validated
    /// here), with the built-in hooks in order: route naming, header
    /// capture, exceptions, and the debug panic hook when configured.
    pub fn new(
        config: &TracingConfig,
        routes: &[RouteConfig],
        metrics: TraceMetrics,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        validate_routes(routes)?;
        let mut hooks: Vec<Arc<dyn SpanHooks>> = Vec::new();
        let naming = RouteNaming::new(routes);
        if !naming.is_empty() {
            hooks.push(Arc::new(naming));
        }
        let capture = CaptureHeaders::new(&config.capture);
        if !capture.is_empty() {
            hooks.push(Arc::new(capture));
        }
        hooks.push(Arc::new(Exceptions));
        if let Some(h) = &config.debug_panic_header {
            let name = header::HeaderName::from_bytes(h.as_bytes()).map_err(|_| ConfigError {
                field: "tracing.debug_panic_header",
                message: format!("{h:?} is not a header name"),
            })?;
            hooks.push(Arc::new(DebugPanic::new(name)));
        }
        Ok(Self {
            propagators: config.propagators(),
            custom: CustomPropagators::default(),
            sampler: Sampler::new(&config.sampler, metrics.sampling.clone()),
            hooks,
            metrics,
            access_log: config.access_log,
            access_mode: AccessMode::All,
        })
    }

    /// Which requests get an access-log entry (`logs.access`); `stdout`
    /// false keeps the JSON line off stdout whatever `access_log` says.
    pub fn with_access(mut self, mode: AccessMode, stdout: bool) -> Self {
        self.access_mode = mode;
        self.access_log &= stdout;
        self
    }

    /// Adds a hook after the built-ins.
    pub fn with_hook(mut self, hook: Arc<dyn SpanHooks>) -> Self {
        self.hooks.push(hook);
        self
    }

    /// Adds an OpenTelemetry propagator for a format sidetrace does not
    /// build in: read after the configured formats when none of them found
    /// a trace id, written after them (see
    /// [`propagation::custom`](super::propagation::custom)).
    pub fn with_propagator(mut self, propagator: propagation::custom::DynPropagator) -> Self {
        self.custom = self.custom.with(propagator);
        self
    }
}

// === impl TraceOptions ===

impl TraceOptions {
    /// Options for the inbound listener (SERVER spans).
    pub fn server(scheme: &'static str, upstream: Option<Authority>) -> Self {
        Self {
            kind: SpanKind::Server,
            scheme,
            upstream,
        }
    }

    /// Options for the outbound listener (CLIENT spans).
    pub fn client() -> Self {
        Self {
            kind: SpanKind::Client,
            scheme: "http",
            upstream: None,
        }
    }
}

// === impl TraceLayer ===

impl TraceLayer {
    /// A layer recording spans into `sink`.
    pub fn new(options: TraceOptions, settings: Arc<TraceSettings>, sink: SpanSink) -> Self {
        Self {
            shared: Arc::new(Shared {
                options,
                settings: ArcSwap::new(settings),
                sinks: Arc::new(Sinks {
                    spans: sink,
                    logs: LogSink::discard(),
                }),
            }),
            red: None,
        }
    }

    /// Also records the RED metrics of every request into `metrics`
    /// (`scheme` is the listener's), ended with the span by the same
    /// end-of-body observer, so a request's response body is wrapped once
    /// for both. Reloads still reach the layer this was made from.
    pub fn with_metrics(&self, metrics: Arc<HttpMetrics>, scheme: &'static str) -> Self {
        Self {
            shared: self.shared.clone(),
            red: Some(Red { metrics, scheme }),
        }
    }

    /// Also queues an access record into `logs` for every request the
    /// settings' [`AccessMode`] selects.
    pub fn logging_to(self, logs: LogSink) -> Self {
        let shared = &self.shared;
        Self {
            shared: Arc::new(Shared {
                options: shared.options.clone(),
                settings: ArcSwap::new(shared.settings.load_full()),
                sinks: Arc::new(Sinks {
                    spans: shared.sinks.spans.clone(),
                    logs,
                }),
            }),
            red: self.red.clone(),
        }
    }

    /// Replaces the settings (config reload); requests in flight finish
    /// with the old ones.
    pub fn reload(&self, settings: Arc<TraceSettings>) {
        self.shared.settings.store(settings);
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace {
            inner,
            shared: self.shared.clone(),
            red: self.red.clone(),
        }
    }
}

// === impl Trace ===

impl<S> Service<Request> for Trace<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        // Timed from here, the outermost point of the stack, so the
        // proxy's own answers are measured like the app's.
        let recording = self
            .red
            .as_ref()
            .map(|red| red_metrics::begin(&red.metrics, red.scheme, &mut req));
        let settings = self.shared.settings.load_full();
        let options = &self.shared.options;
        let mut extracted = propagation::extract(&settings.propagators, req.headers());
        for format in extracted.errors.iter() {
            settings.metrics.propagation_errors[format.index()].increment(1);
        }
        if extracted.trace_id.is_none() && !settings.custom.is_empty() {
            settings.custom.extract(req.headers(), &mut extracted);
        }
        let trace_id = extracted.trace_id.unwrap_or_else(|| {
            // The X-Ray backend refuses ids that do not start with a recent
            // epoch second; every other backend takes those too.
            if settings.propagators.contains(Propagator::XRay) {
                xray::new_trace_id()
            } else {
                TraceId::random()
            }
        });
        let mut record = SpanRecord::start(options.kind, trace_id, req.method().clone());
        record.parent_span_id = extracted.parent_span_id;
        record.tracestate = extracted.tracestate.clone();
        record.request_id = extracted.request_id.clone();
        record.scheme = options.scheme;
        record.version = req.version();
        record.path = req.uri().path_and_query().cloned();
        record.grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        record.host = match req.uri().authority() {
            Some(a) => Some(Host::Authority(a.clone())),
            None => req.headers().get(header::HOST).cloned().map(Host::Header),
        };
        record.client_address = ConnectionInfo::of(req.extensions()).map(|c| c.client);
        record.user_agent = req.headers().get(header::USER_AGENT).cloned();
        record.upstream = match (&options.upstream, options.kind) {
            (Some(u), _) => Some(u.clone()),
            // The destination: the URI authority (HTTP/2, proxy form) or
            // the Host header (HTTP/1 origin form).
            (None, SpanKind::Client) => req.uri().authority().cloned().or_else(|| {
                let host = req.headers().get(header::HOST)?;
                Authority::try_from(host.as_bytes()).ok()
            }),
            (None, SpanKind::Server) => None,
        };

        // Hooks see the request before sampling: route naming may carry a
        // per-route override.
        let mut hook_panic = None;
        for hook in &settings.hooks {
            if let Err(payload) =
                catch_unwind(AssertUnwindSafe(|| hook.on_start(&mut record, &req)))
            {
                hook_panic = Some(panic_message(&*payload));
                break;
            }
        }

        let route_sample = record.route.as_ref().and_then(|r| r.sample);
        let decision = settings
            .sampler
            .decide(trace_id, extracted.sampled, route_sample);
        record.sampled = decision.sampled;
        record.sampling_reason = decision.reason;

        let request_size = self
            .red
            .as_ref()
            .and_then(|red| red.metrics.request_size(req.method()).cloned());
        let request_bytes = RequestBytes::watch(&mut req, request_size);
        let log_span = tracing::debug_span!(
            target: "sidetrace::request",
            "request",
            trace_id = hex_str(&trace_id.to_hex()),
            span_id = hex_str(&record.span_id.to_hex()),
        );
        let mut inflight = InFlight {
            record,
            decision,
            access_log: settings.access_log,
            settings,
            sinks: self.shared.sinks.clone(),
            request_bytes,
            recording,
            panicked: false,
            trace_header: HeaderValue::from_static(""),
        };

        if let Some(message) = hook_panic {
            let grpc = inflight.record.grpc;
            let response = inflight.panicked_response(&message, PanicSource::Hook, grpc);
            return ResponseFuture {
                state: State::Answered {
                    response: Some(response),
                },
                span: Some(inflight),
                log_span,
            };
        }

        let inject = InjectContext {
            trace_id,
            span_id: inflight.record.span_id,
            sampled: decision.sampled,
            extracted: &extracted,
        };
        inflight.trace_header =
            propagation::inject(&inflight.settings.propagators, req.headers_mut(), &inject);
        let rejected = inflight.settings.custom.inject(req.headers_mut(), &inject);
        if rejected > 0 {
            tracing::debug!(
                target: "sidetrace::trace",
                rejected,
                "an added propagator wrote fields that are not valid headers; skipped"
            );
        }

        let grpc = inflight.record.grpc;
        let _enter = log_span.enter();
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(future) => ResponseFuture {
                state: State::Running {
                    future: AssertUnwindSafe(future).catch_unwind(),
                },
                span: Some(inflight),
                log_span: log_span.clone(),
            },
            Err(payload) => {
                let message = panic_message(&*payload);
                let response = inflight.panicked_response(&message, PanicSource::Service, grpc);
                ResponseFuture {
                    state: State::Answered {
                        response: Some(response),
                    },
                    span: Some(inflight),
                    log_span: log_span.clone(),
                }
            }
        }
    }
}

// === impl ResponseFuture ===

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _enter = this.log_span.enter();
        let response = match this.state.project() {
            StateProj::Running { future } => match future.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Ok(response))) => response,
                Poll::Ready(Ok(Err(never))) => match never {},
                Poll::Ready(Err(payload)) => {
                    let message = panic_message(&*payload);
                    match this.span.as_mut() {
                        Some(inflight) => {
                            let grpc = inflight.record.grpc;
                            inflight.panicked_response(&message, PanicSource::Service, grpc)
                        }
                        None => internal_error(false),
                    }
                }
            },
            StateProj::Answered { response } => match response.take() {
                Some(r) => r,
                // Polled after completion: answer like a fused future would
                // not, but without panicking.
                None => internal_error(false),
            },
        };
        let Some(inflight) = this.span.take() else {
            return Poll::Ready(Ok(response));
        };
        Poll::Ready(Ok(inflight.respond(response)))
    }
}

// === impl InFlight ===

impl InFlight {
    /// Records the panic and makes the 500 INTERNAL answer.
    fn panicked_response(&mut self, message: &str, source: PanicSource, grpc: bool) -> Response {
        tracing::error!(
            target: "sidetrace::trace",
            panic = message,
            source = ?source,
            "panic while handling a request; answered 500"
        );
        self.panicked = true;
        self.run_on_panic(message, source);
        internal_error(grpc)
    }

    fn run_on_panic(&mut self, message: &str, source: PanicSource) {
        run_on_panic(&self.settings.hooks, &mut self.record, message, source);
    }

    /// The response head arrived: run `on_response`, set `x-trace-id`, and
    /// wrap the body so the span ends with it.
    fn respond(mut self, response: Response) -> Response {
        let (mut parts, body) = response.into_parts();
        let failure = parts.extensions.get::<Failure>().copied();
        if !self.panicked && failure.is_some_and(|f| f.error_type == ErrorType::Panic) {
            self.run_on_panic("a filter panicked", PanicSource::Chain);
        }
        let Self {
            record, settings, ..
        } = &mut self;
        for hook in &settings.hooks {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| {
                hook.on_response(record, parts.status, &parts.headers)
            })) {
                let message = panic_message(&*payload);
                run_on_panic(&settings.hooks, record, &message, PanicSource::Hook);
            }
        }
        let trace_header = if self.trace_header.is_empty() {
            // The request never reached injection (a hook panicked).
            propagation::header_value(&self.record.trace_id.to_hex())
        } else {
            std::mem::replace(&mut self.trace_header, HeaderValue::from_static(""))
        };
        parts.headers.insert(X_TRACE_ID, trace_header);
        let grpc = GrpcCode::from_headers(&parts.headers);
        let end_attributes = parts.extensions.get::<EndAttributes>().cloned();
        let end = SpanEnd::new(self, parts.status, grpc, failure, end_attributes);
        Response::from_parts(parts, EosBody::new(body, end).boxed_unsync())
    }
}

/// Runs every hook's `on_panic`; a hook panicking about a panic is ignored,
/// as the span already says what happened.
pub(crate) fn run_on_panic(
    hooks: &[Arc<dyn SpanHooks>],
    record: &mut SpanRecord,
    message: &str,
    source: PanicSource,
) {
    let info = PanicInfo { message, source };
    for hook in hooks {
        let _ = catch_unwind(AssertUnwindSafe(|| hook.on_panic(record, &info)));
    }
}

/// The 500 INTERNAL answer to a caught panic (trailers-only for gRPC).
fn internal_error(grpc: bool) -> Response {
    let category = HeaderValue::from_static(FailureCategory::Internal.as_str());
    let mut resp = if grpc {
        let mut resp = http::Response::new(crate::empty_body());
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from_static("13"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("internal%20error%20in%20the%20proxy"),
        );
        resp
    } else {
        let mut resp = http::Response::new(crate::full_body("internal error in the proxy\n"));
        *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    };
    resp.headers_mut().insert("x-sidetrace-error", category);
    resp.extensions_mut()
        .insert(Failure::new(FailureCategory::Internal, ErrorType::Panic));
    resp
}
