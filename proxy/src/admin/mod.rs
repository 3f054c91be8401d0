//! The admin server (default `127.0.0.1:15090`): `/metrics`, `/live`,
//! `/ready`, `/config`, `/debug/traces` (the embedded trace store),
//! `/debug/traces/ui` (the trace viewer, [`ui`]), `/debug/red` (RED per
//! route, [`red`]), `POST /shutdown`.
//!
//! Plain HTTP/1.1 on its own listener, away from the data path, so a scrape
//! or a probe never queues behind application traffic. `/metrics`, `/live`
//! and `/ready` answer any peer; `/config`, `/debug/*` and `/shutdown` answer
//! loopback peers only unless `admin.expose` lists them ([`access`]).
//! `/config` has its secrets redacted ([`config`]).

pub mod access;
pub mod config;
pub mod help;
pub mod openmetrics;
mod process;
pub mod red;
pub mod ui;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::drain::{Drain, DrainTrigger};

pub use self::{
    access::{Access, EndpointGroup},
    config::{render as render_config, ConfigView},
};

/// What the admin endpoints read.
pub struct AdminState {
    /// Renders the RED and self metrics.
    pub prometheus: PrometheusHandle,
    /// Effective config, rendered as JSON with secrets redacted, at start
    /// and after each reload.
    pub config_json: Arc<ConfigView>,
    /// Which peers may use `/config`, `/debug/*` and `/shutdown`.
    pub access: Access,
    /// Listeners bound and config valid.
    pub ready: AtomicBool,
    /// Starts the drain (`POST /shutdown`, signals).
    pub drain: DrainTrigger,
    /// The embedded trace store behind `/debug/traces`.
    pub traces: Arc<crate::export::TraceStore>,
    /// The RED metrics whose duration buckets carry exemplars in the
    /// OpenMetrics rendering of `/metrics`.
    pub red: Vec<Arc<filters::metrics::HttpMetrics>>,
}

/// Serves the admin endpoints until the drain has finished (the admin server
/// is the last thing to stop, so `/ready` reports 503 during the drain).
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut stop: Drain) {
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.signaled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req, peer)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(client = %peer, error = %e, "admin connection error");
            }
        });
    }
}

/// The Prometheus text `/metrics` serves: the recorder's families and the
/// `process_*` ones. `/debug/red` and the OTLP metrics push
/// ([`crate::metrics_export`]) read this same text.
pub fn exposition(prometheus: &PrometheusHandle) -> String {
    let mut text = prometheus.render();
    process::render(&mut text);
    text
}

fn route(state: &AdminState, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    // Before routing, on the same path the router matches, so no spelling
    // of a guarded endpoint reaches its handler unchecked.
    if let Err(refused) = state.access.check(req.uri().path(), peer.ip()) {
        return respond(StatusCode::FORBIDDEN, "text/plain", refused.message());
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let text = exposition(&state.prometheus);
            if openmetrics::wanted(req.headers().get(header::ACCEPT)) {
                let exemplars: Vec<_> = state.red.iter().flat_map(|m| m.exemplars()).collect();
                let text = openmetrics::render(&text, &exemplars);
                return respond(StatusCode::OK, openmetrics::CONTENT_TYPE, text);
            }
            respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text,
            )
        }
        (&Method::GET, "/live") => respond(StatusCode::OK, "text/plain", "live\n"),
        (&Method::GET, "/ready") => {
            if state.drain.is_draining() {
                respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n")
            } else if state.ready.load(Ordering::Relaxed) {
                respond(StatusCode::OK, "text/plain", "ready\n")
            } else {
                respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "starting\n")
            }
        }
        (&Method::GET, "/config") => {
            respond(StatusCode::OK, "application/json", state.config_json.json())
        }
        (&Method::GET, path) if ui::owns(path) => ui::serve(path),
        (&Method::GET, "/debug/red") => {
            let text = exposition(&state.prometheus);
            match serde_json::to_vec(&red::Red::from_exposition(&text)) {
                Ok(json) => respond(StatusCode::OK, "application/json", json),
                Err(e) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("cannot render the RED summary: {e}\n"),
                ),
            }
        }
        (&Method::GET, path) if path == "/debug/traces" || path.starts_with("/debug/traces/") => {
            let (status, content_type, body) = state.traces.handle(path, req.uri().query());
            respond(status, content_type, body)
        }
        (&Method::POST, "/shutdown") => {
            tracing::info!(client = %peer, "shutdown requested on the admin server");
            state.drain.drain();
            respond(StatusCode::ACCEPTED, "text/plain", "draining\n")
        }
        (_, "/metrics" | "/live" | "/ready" | "/config" | "/shutdown") => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics /live /ready /config /debug/traces, \
             or the trace viewer at /debug/traces/ui\n",
        ),
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
