//! `sidetrace webhook`: the mutating admission webhook that adds the
//! sidecar to new pods, with the same definition and decisions as
//! `sidetrace inject` ([`crate::inject`]).
//!
//! One HTTPS port (rustls through [`crate::tls::server`], so the
//! certificate reloads when cert-manager or a Secret update rewrites its
//! files; HTTP/1.1 and h2 by ALPN):
//!
//! - `POST /mutate`: an `admission.k8s.io/v1` AdmissionReview in, the
//!   review with a JSON Patch out ([`review`]); never a refusal.
//! - `GET /live`, `GET /ready` (503 once the drain starts), for the kubelet.
//! - `GET /metrics`: reviews by result, review latency, TLS handshakes.
//!
//! The webhook reads nothing from the API server: which pods it sees is
//! decided by the `MutatingWebhookConfiguration` the chart renders
//! (namespace label, pod annotation), and everything else comes from the
//! pod in the review and the chart values the chart mounts.

pub mod review;

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use metrics::{Counter, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};
use tokio_rustls::TlsAcceptor;

use self::review::{Decision, Reviewer, MAX_BODY};
use crate::{
    cli::WebhookArgs,
    config::TlsConfig,
    drain::{self, Drain, DrainTrigger},
    inject::{ChartValues, Injector, Mode},
    tls::{
        metrics::HandshakeMetrics,
        server::{self as tls_server, Handshakes},
        TlsError,
    },
};

/// Connections served at once; past it new ones wait in the kernel's queue.
const MAX_CONNECTIONS: usize = 1024;
/// Time for a TLS handshake, and for a request head once it is done.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time in-flight reviews get to finish after the drain starts.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

const REVIEWS: &str = "sidetrace_webhook_reviews_total";
const DURATION: &str = "sidetrace_webhook_review_duration_seconds";
/// Review latency buckets, seconds: the API server's timeout is seconds,
/// a review takes well under a millisecond.
const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
const RESULTS: [&str; 4] = ["injected", "skipped", "undecided", "malformed"];

/// What the webhook needs to start.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// HTTPS listen address.
    pub listen: SocketAddr,
    /// Certificate and key (no client CA: the API server does not present
    /// one by default).
    pub tls: TlsConfig,
    /// Chart values files over the chart's defaults.
    pub values: Vec<PathBuf>,
    /// The chart's release name.
    pub release: String,
    /// Default mode.
    pub mode: Mode,
}

/// Why the webhook did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The values or the sidecar definition.
    #[error(transparent)]
    Setup(#[from] crate::inject::sidecar::SetupError),
    /// The certificate or key.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listen address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A started webhook.
pub struct Running {
    addr: SocketAddr,
    trigger: DrainTrigger,
    task: JoinHandle<()>,
}

/// What requests share.
struct State {
    reviewer: Reviewer,
    ready: AtomicBool,
    reviews: [Counter; 4],
    duration: Histogram,
    prometheus: PrometheusHandle,
}

// === impl Running ===

impl Running {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts the drain: `/ready` answers 503, no new connections, in-flight
    /// reviews finish.
    pub fn drain(&self) {
        self.trigger.drain();
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Loads the values, the certificate and binds; serves until drained.
pub async fn start(config: WebhookConfig) -> Result<Running, StartError> {
    let values = ChartValues::load(&config.values)
        .map_err(|e| StartError::Setup(crate::inject::sidecar::SetupError::Values(e)))?;
    let injector = Injector::new(&values, &config.release)?;
    let (server, cert) = tls_server::server_config(&config.tls)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let (trigger, drain) = drain::channel();
    tls_server::watch(cert, config.tls.clone(), drain.clone());

    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(DURATION.into()), DURATION_BUCKETS)
        .map(PrometheusBuilder::build_recorder)
        .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
    let md = Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
    let reviews = RESULTS.map(|r| {
        recorder.register_counter(
            &Key::from_parts(REVIEWS, vec![Label::new("result", r)]),
            &md,
        )
    });
    let duration = recorder.register_histogram(&Key::from_name(DURATION), &md);
    let handshakes = Handshakes::new(
        TlsAcceptor::from(server),
        HANDSHAKE_TIMEOUT,
        HandshakeMetrics::register(&recorder),
    );
    let state = Arc::new(State {
        reviewer: Reviewer::new(injector, config.mode),
        ready: AtomicBool::new(true),
        reviews,
        duration,
        prometheus: recorder.handle(),
    });
    tracing::info!(%addr, release = %config.release, "webhook listening");
    let task = tokio::spawn(serve(listener, Arc::new(handshakes), state, drain));
    Ok(Running {
        addr,
        trigger,
        task,
    })
}

/// `sidetrace webhook`: runs until `shutdown` resolves, then drains.
pub async fn run(args: WebhookArgs, shutdown: impl std::future::Future<Output = ()>) -> ExitCode {
    let config = WebhookConfig {
        listen: args.listen,
        tls: TlsConfig {
            cert: args.cert,
            key: args.key,
            client_ca: None,
        },
        values: args.values,
        release: args.release,
        mode: args.mode,
    };
    let running = match start(config).await {
        Ok(r) => r,
        Err(e @ StartError::Bind { .. }) => {
            eprintln!("sidetrace webhook: {e}");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("sidetrace webhook: {e}");
            return ExitCode::from(2);
        }
    };
    shutdown.await;
    tracing::info!("signal received, draining");
    running.drain();
    running.wait().await;
    ExitCode::SUCCESS
}

async fn serve(
    listener: TcpListener,
    handshakes: Arc<Handshakes>,
    state: Arc<State>,
    mut drain: Drain,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            biased;
            () = drain.signaled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = drain.signaled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let watcher = graceful.watcher();
        let (handshakes, state, builder) = (handshakes.clone(), state.clone(), builder.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let Some((tls, _facts)) = handshakes.accept(stream, peer, "webhook").await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let conn = builder
                .serve_connection(TokioIo::new(tls), svc)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(client = %peer, error = %e, "webhook connection error");
            }
        });
    }
    state.ready.store(false, Ordering::Relaxed);
    drop(listener);
    if tokio::time::timeout(DRAIN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("webhook connections still open after the drain grace; stopping");
    }
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/mutate") => {
            let started = tokio::time::Instant::now();
            let (body, decision) = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(body) => state.reviewer.review(&body.to_bytes()),
                // Oversized or cut short: answered like any malformed review.
                Err(e) => state
                    .reviewer
                    .review(format!("unreadable body: {e}").as_bytes()),
            };
            let result = match decision {
                Decision::Injected => 0,
                Decision::Skipped(_) => 1,
                Decision::Undecided(_) => 2,
                Decision::Malformed(_) => 3,
            };
            state.reviews[result].increment(1);
            state.duration.record(started.elapsed().as_secs_f64());
            respond(StatusCode::OK, "application/json", body)
        }
        (_, "/mutate") => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"POST an AdmissionReview\n".to_vec(),
        ),
        (&Method::GET, "/live") => respond(StatusCode::OK, "text/plain", b"live\n".to_vec()),
        (&Method::GET, "/ready") if state.ready.load(Ordering::Relaxed) => {
            respond(StatusCode::OK, "text/plain", b"ready\n".to_vec())
        }
        (&Method::GET, "/ready") => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            b"draining\n".to_vec(),
        ),
        (&Method::GET, "/metrics") => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.prometheus.render().into_bytes(),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}
