//! The innermost service: forwards a request to its upstream over a pooled
//! client and streams the response back.
//!
//! One pooled client per listener: keep-alive for HTTP/1.1, multiplexed for
//! HTTP/2. `upstream_protocol: auto` speaks HTTP/2 (prior knowledge) to the
//! app when the request arrived as HTTP/2 and HTTP/1.1 otherwise; when the
//! app turns out to speak only HTTP/1.1, non-gRPC HTTP/2 requests are
//! converted to HTTP/1.1 from then on. Hop-by-hop headers are removed, `Via`
//! and `X-Forwarded-*` are set, `Host` is kept, and HTTP/1.1 `Upgrade`
//! (WebSocket) connections are tunnelled.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use filters::{
    body::{Eos, EosBody, OnEos},
    classify::{BadRequest, UpstreamError, UpstreamErrorKind},
    metrics::{graph::CLIENT_HEADER, HttpMetrics, Outcome, RequestRecording},
    HttpBody,
};
use futures_util::future::BoxFuture;
use http::{
    header::{self, HeaderValue},
    uri::{Authority, PathAndQuery, Scheme},
    Request, Response, Uri, Version,
};
use http_body::Body;
use http_body_util::BodyExt;
use hyper_util::{
    client::legacy::{
        connect::{capture_connection, CaptureConnection, HttpConnector},
        Client,
    },
    rt::{TokioExecutor, TokioTimer},
};

mod body_taken;
mod errors;
mod headers;
mod loops;
mod protocol;
mod replay;
mod upgrade;

pub(crate) use self::loops::is_self;
use self::{
    body_taken::BodyTaken,
    errors::{
        client_body_error, tls_error_kind, upstream_body_error, upstream_error,
        upstream_error_kind, Failed,
    },
    headers::prepare_headers,
    protocol::Plan,
    replay::Replay,
    upgrade::tunnel,
};
pub use self::{
    errors::UpstreamBodyError,
    headers::{is_grpc, remove_hop_by_hop, strip_hop_by_hop},
};
use crate::{
    client_body::BodyFailure,
    config::{HostPattern, Upstream, UpstreamProtocol},
    connect::LimitedConnector,
    tls::client::{Alpn, ClientTls},
};

/// Where requests go.
#[derive(Clone, Debug)]
pub enum Destination {
    /// Inbound: always the app.
    Fixed(Upstream),
    /// Outbound: the request's own `Host` / `:authority`; `own` is the
    /// outbound listener's address, which must never be a destination.
    FromRequest {
        /// The outbound listener's bound address.
        own: SocketAddr,
    },
}

/// The `Upgrade` header of an HTTP/1.1 upgrade request, kept aside when the
/// hop-by-hop headers are removed at the edge of the stack.
#[derive(Clone, Debug)]
pub struct UpgradeRequest(pub HeaderValue);

/// How the forwarder treats its upstream.
#[derive(Clone)]
pub struct ForwardOptions {
    /// Protocol spoken to the upstream.
    pub protocol: UpstreamProtocol,
    /// Time the upstream has to send its response head; `None` waits forever.
    pub response_head_timeout: Option<Duration>,
    /// Open upstream connections at most.
    pub max_connections: usize,
    /// Time a request waits for a free upstream connection.
    pub queue_timeout: Duration,
    /// Open upstream connections, as a gauge.
    pub connections_open: metrics::Gauge,
    /// Requests shed because every upstream connection stayed busy.
    pub shed: metrics::Counter,
    /// TLS for `https://` destinations; without it they are refused.
    pub tls: Option<Arc<ClientTls>>,
    /// Outbound destinations reached over TLS although the app calls them in
    /// plain HTTP.
    pub originate_tls: Arc<[HostPattern]>,
}

/// The forwarding service. Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct Forward {
    shared: Arc<Shared>,
}

struct Shared {
    destination: Destination,
    protocol: UpstreamProtocol,
    response_head_timeout: Option<Duration>,
    shed: metrics::Counter,
    http1: Client<LimitedConnector, HttpBody>,
    http2: Client<LimitedConnector, HttpBody>,
    /// Over TLS in `auto`, the server's ALPN choice picks HTTP/2 or HTTP/1.1.
    alpn: Client<LimitedConnector, HttpBody>,
    originate_tls: Arc<[HostPattern]>,
    /// The app failed an HTTP/2 preface: send non-gRPC requests as HTTP/1.1.
    h2_unsupported: AtomicBool,
    /// The app has answered over HTTP/2 at least once.
    h2_confirmed: AtomicBool,
    /// The upstream hop's metrics (inbound); the outbound listener's own
    /// RED layer already measures its calls.
    metrics: Option<Arc<HttpMetrics>>,
    /// `x-sidetrace-client` for outbound calls: names this service to the
    /// next sidetrace for the service graph.
    client_name: Option<HeaderValue>,
}

struct ClientEnd(
    RequestRecording,
    http::StatusCode,
    Option<filters::classify::GrpcCode>,
);

/// Read buffer per HTTP/1.1 upstream connection.
const UPSTREAM_READ_BUFFER: usize = 64 * 1024;
/// Receive windows towards an HTTP/2 upstream: what it may send unread.
const UPSTREAM_H2_STREAM_WINDOW: u32 = 256 * 1024;
const UPSTREAM_H2_CONNECTION_WINDOW: u32 = 1024 * 1024;

// === impl Forward ===

impl Forward {
    /// A forwarder to `destination`, recording the upstream hop in `metrics`
    /// when given. `service` is this service's name, announced to outbound
    /// destinations in `x-sidetrace-client`.
    pub fn new(
        destination: Destination,
        options: ForwardOptions,
        metrics: Option<Arc<HttpMetrics>>,
        service: &str,
    ) -> Self {
        let client_name = match destination {
            Destination::FromRequest { .. } => HeaderValue::from_str(service).ok(),
            Destination::Fixed(_) => None,
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.enforce_http(false);
        // One cap for every client: the descriptors are the same.
        let connector = LimitedConnector::new(
            connector,
            options.max_connections,
            options.queue_timeout,
            options.connections_open,
        )
        .with_tls(options.tls);
        let mut h1 = Client::builder(TokioExecutor::new());
        h1.pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(options.max_connections)
            // What one response may hold in the read buffer while the client
            // is not reading it: unread responses push back on the upstream
            // instead of piling up here.
            .http1_max_buf_size(UPSTREAM_READ_BUFFER);
        let mut h2 = Client::builder(TokioExecutor::new());
        h2.http2_only(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_while_idle(false)
            // The same for an HTTP/2 app: its windows bound what it may send
            // ahead of a client that is not reading.
            .http2_initial_stream_window_size(UPSTREAM_H2_STREAM_WINDOW)
            .http2_initial_connection_window_size(UPSTREAM_H2_CONNECTION_WINDOW);
        // HTTP/1.1 settings with HTTP/2's for the connections where the
        // server chooses `h2` in ALPN.
        let mut alpn = h1.clone();
        alpn.timer(TokioTimer::new())
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_while_idle(false)
            .http2_initial_stream_window_size(UPSTREAM_H2_STREAM_WINDOW)
            .http2_initial_connection_window_size(UPSTREAM_H2_CONNECTION_WINDOW);
        Self {
            shared: Arc::new(Shared {
                destination,
                protocol: options.protocol,
                response_head_timeout: options.response_head_timeout,
                shed: options.shed,
                http1: h1.build(connector.with_alpn(Alpn::Http1)),
                http2: h2.build(connector.with_alpn(Alpn::H2)),
                alpn: alpn.build(connector.with_alpn(Alpn::Any)),
                originate_tls: options.originate_tls,
                h2_unsupported: AtomicBool::new(false),
                h2_confirmed: AtomicBool::new(false),
                metrics,
                client_name,
            }),
        }
    }
}

impl tower::Service<Request<HttpBody>> for Forward {
    type Response = Response<HttpBody>;
    type Error = filters::Error;
    type Future = BoxFuture<'static, Result<Response<HttpBody>, filters::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<HttpBody>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { shared.forward(req).await })
    }
}

// === impl Shared ===

impl Shared {
    async fn forward(
        &self,
        mut req: Request<HttpBody>,
    ) -> Result<Response<HttpBody>, filters::Error> {
        let (scheme, authority) = self.destination(&req)?;
        let incoming_version = req.version();
        let plan = Plan::new(
            self.protocol,
            self.h2_unsupported.load(Ordering::Relaxed),
            &scheme,
            &req,
        );
        let Plan {
            tls,
            upgrade,
            use_h2,
            alpn_decides,
            ..
        } = plan;

        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        prepare_headers(&mut req, incoming_version, upgrade);
        plan.set_version(&mut req, &authority);
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = build_uri(scheme, authority.clone(), path)?;

        // Until the app has answered over HTTP/2 once, keep what is needed to
        // resend a bodiless request as HTTP/1.1 if it turns out not to speak it.
        let fallback = (self.may_downgrade(&plan) && req.body().is_end_stream())
            .then(|| Replay::capture(&req));

        let recording = self.metrics.as_ref().map(|m| {
            let scheme = if scheme_is_https(req.uri()) {
                "https"
            } else {
                "http"
            };
            m.start(
                req.method(),
                req.version(),
                scheme,
                None,
                Some(authority.clone()),
                None,
            )
        });
        if let Some(name) = &self.client_name {
            req.headers_mut().insert(CLIENT_HEADER, name.clone());
        }
        let client = if alpn_decides {
            &self.alpn
        } else if use_h2 {
            &self.http2
        } else {
            &self.http1
        };
        // Over TLS, keep hold of the connection: an error that broke it
        // after the handshake tells a refused handshake from a reset.
        // With a body, to close an HTTP/1 connection whose upstream stops
        // reading it.
        let captured = (tls || !req.body().is_end_stream()).then(|| capture_connection(&mut req));
        let h1_conn = captured.as_ref().filter(|_| !use_h2);
        let replay = Replay::of(&req).filter(|_| !upgrade);
        let body_failure = req.extensions().get::<BodyFailure>().cloned();
        let result = match self.request(client, req, h1_conn, replay).await {
            Ok(resp) => Ok(resp),
            Err(Failed::Client(e)) => Err(e),
            Err(Failed::HeadTimeout(limit)) => {
                let error = UpstreamError {
                    kind: UpstreamErrorKind::ResponseHeadTimeout,
                    addr: authority.clone(),
                    source: format!("no response head within {limit:?}").into(),
                };
                return Err(self.fail(recording, error.into()));
            }
            Err(Failed::BodyNotTaken(limit)) => {
                let error = UpstreamError {
                    kind: UpstreamErrorKind::ResponseHeadTimeout,
                    addr: authority.clone(),
                    source: format!("request body not read for {limit:?}").into(),
                };
                return Err(self.fail(recording, error.into()));
            }
        };
        let mut resp = match result {
            Ok(resp) => {
                if use_h2 {
                    self.h2_confirmed.store(true, Ordering::Relaxed);
                }
                resp
            }
            Err(e) => {
                if let Some(client_fault) = client_body_error(&e, body_failure.as_ref()) {
                    return Err(self.fail(recording, client_fault));
                }
                let kind = captured
                    .as_ref()
                    .and_then(tls_error_kind)
                    .unwrap_or_else(|| upstream_error_kind(&e));
                if kind == UpstreamErrorKind::Saturated {
                    self.shed.increment(1);
                }
                if kind != UpstreamErrorKind::Connect && self.may_downgrade(&plan) {
                    if !self.h2_unsupported.swap(true, Ordering::Relaxed) {
                        tracing::warn!(upstream = %authority, "upstream does not speak HTTP/2; converting HTTP/2 requests to HTTP/1.1 from now on");
                    }
                    if let Some(fallback) = fallback {
                        let resp = self
                            .http1
                            .request(fallback.into_http1())
                            .await
                            .map_err(|e| upstream_error(upstream_error_kind(&e), &authority, e))?;
                        return Ok(self.finish_response(resp, recording, None));
                    }
                }
                return Err(self.fail(recording, upstream_error(kind, &authority, e)));
            }
        };
        let upstream_upgrade = (resp.status() == http::StatusCode::SWITCHING_PROTOCOLS)
            .then(|| hyper::upgrade::on(&mut resp));
        if let (Some(client), Some(upstream)) = (client_upgrade, upstream_upgrade) {
            tokio::spawn(tunnel(client, upstream, authority.clone()));
            let mut resp = self.finish_response(resp, recording, None);
            // The client side of an upgrade needs the handshake headers back.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            return Ok(resp);
        }
        Ok(self.finish_response(resp, recording, Some(incoming_version)))
    }

    /// Sends `req`; the response-head timeout runs from the end of the
    /// request body, as the upstream cannot be expected to answer before it
    /// has the whole request (a client that stalls its body meets the body
    /// idle timeout instead). With `replay`, a request whose connection the
    /// app closed before answering is sent once more, on another connection.
    async fn request(
        &self,
        client: &Client<LimitedConnector, HttpBody>,
        req: Request<HttpBody>,
        h1_conn: Option<&CaptureConnection>,
        replay: Option<Replay>,
    ) -> Result<Response<hyper::body::Incoming>, Failed> {
        match (self.request_once(client, req, h1_conn).await, replay) {
            (Err(Failed::Client(e)), Some(replay)) if replay::closed_before_head(&e) => {
                tracing::debug!(error = %e, "upstream closed the connection before answering; request sent once more");
                self.request_once(client, replay.into_request(), None).await
            }
            (result, _) => result,
        }
    }

    /// One attempt of [`Self::request`].
    async fn request_once(
        &self,
        client: &Client<LimitedConnector, HttpBody>,
        mut req: Request<HttpBody>,
        h1_conn: Option<&CaptureConnection>,
    ) -> Result<Response<hyper::body::Incoming>, Failed> {
        let Some(limit) = self.response_head_timeout else {
            return client.request(req).await.map_err(Failed::Client);
        };
        let mut body_sent = None;
        if !req.body().is_end_stream() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let (parts, body) = req.into_parts();
            let (body, taken) = BodyTaken::watch(body);
            req = Request::from_parts(parts, EosBody::new(body, BodySent(tx)).boxed_unsync());
            body_sent = Some((rx, taken));
        }
        let response = client.request(req);
        tokio::pin!(response);
        if let Some((mut body_sent, taken)) = body_sent {
            tokio::select! {
                result = &mut response => {
                    // Answered before taking the whole body (an early 413):
                    // the rest may never be taken either.
                    if let Some(abort) = body_taken::http1_abort(h1_conn) {
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = body_sent => {}
                                () = taken.stalled(limit) => abort.abort(),
                            }
                        });
                    }
                    return result.map_err(Failed::Client);
                }
                // Sent, failed or dropped: either way the wait for a head starts.
                _ = &mut body_sent => {}
                // An upstream that does not read the body never answers either.
                () = taken.stalled(limit) => {
                    if let Some(abort) = body_taken::http1_abort(h1_conn) {
                        abort.abort();
                    }
                    return Err(Failed::BodyNotTaken(limit));
                }
            }
        }
        match tokio::time::timeout(limit, response).await {
            Ok(result) => result.map_err(Failed::Client),
            Err(_) => Err(Failed::HeadTimeout(limit)),
        }
    }

    /// Ends the upstream hop's recording with `error`'s classification.
    /// Whether a failed HTTP/2 exchange may mean the app only speaks
    /// HTTP/1.1: in clear text under `auto`, not gRPC, and the app has not
    /// answered over HTTP/2 yet.
    fn may_downgrade(&self, plan: &Plan) -> bool {
        plan.use_h2
            && !plan.tls
            && !plan.grpc
            && self.protocol == UpstreamProtocol::Auto
            && !self.h2_confirmed.load(Ordering::Relaxed)
    }

    fn fail(&self, recording: Option<RequestRecording>, error: filters::Error) -> filters::Error {
        if let Some(recording) = recording {
            recording.finish(Outcome {
                failure: Some(filters::classify::classify_error(&*error).failure),
                ..Outcome::default()
            });
        }
        error
    }

    fn finish_response(
        &self,
        mut resp: Response<hyper::body::Incoming>,
        recording: Option<RequestRecording>,
        // The client's version, for a response to pass on as the proxy's own;
        // `None` leaves an upgrade's or a downgrade retry's response as is.
        strip_for: Option<Version>,
    ) -> Response<HttpBody> {
        if let Some(client_version) = strip_for {
            remove_hop_by_hop(resp.headers_mut());
            // The proxy speaks its own version to its client whatever the
            // app speaks (RFC 9110 section 6.2): an HTTP/1.0 app must not
            // turn the client's keep-alive connection into one per request.
            *resp.version_mut() = client_version;
        }
        let grpc = filters::classify::GrpcCode::from_headers(resp.headers());
        let status = resp.status();
        resp.map(|body| {
            let body = body.map_err(|e| filters::Error::from(upstream_body_error(e)));
            match recording {
                Some(recording) => {
                    EosBody::new(body, ClientEnd(recording, status, grpc)).boxed_unsync()
                }
                None => body.boxed_unsync(),
            }
        })
    }

    fn destination(&self, req: &Request<HttpBody>) -> Result<(Scheme, Authority), filters::Error> {
        match &self.destination {
            Destination::Fixed(up) => Ok((up.scheme.clone(), up.authority.clone())),
            Destination::FromRequest { own } => {
                let authority = match req.uri().authority() {
                    Some(a) => a.clone(),
                    None => {
                        let host = req
                            .headers()
                            .get(header::HOST)
                            .ok_or(BadRequest("outbound request without Host or :authority"))?;
                        Authority::try_from(host.as_bytes())
                            .map_err(|_| BadRequest("outbound request with an invalid Host"))?
                    }
                };
                if is_self(&authority, *own) {
                    return Err(BadRequest(
                        "outbound request addressed to the outbound listener itself (loop)",
                    )
                    .into());
                }
                let host = authority.host();
                if self.originate_tls.iter().any(|p| p.matches(host)) {
                    // The app calls in plain HTTP; the destination gets TLS,
                    // on port 443 unless the app named a port.
                    return Ok((Scheme::HTTPS, authority));
                }
                Ok((Scheme::HTTP, authority))
            }
        }
    }
}

impl OnEos for ClientEnd {
    fn on_eos(self, eos: Eos<'_>, bytes: u64) {
        let ClientEnd(recording, status, grpc) = self;
        let mut outcome = Outcome {
            status: Some(status),
            grpc,
            ..Outcome::default()
        };
        outcome.end(eos, bytes);
        recording.finish(outcome);
    }
}

fn scheme_is_https(uri: &Uri) -> bool {
    uri.scheme() == Some(&Scheme::HTTPS)
}

fn build_uri(
    scheme: Scheme,
    authority: Authority,
    path: PathAndQuery,
) -> Result<Uri, filters::Error> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).map_err(|_| BadRequest("request target cannot be forwarded").into())
}

/// Told once the request body has been read to the end (or failed, or was
/// dropped), through the shared end-of-body observer.
struct BodySent(tokio::sync::oneshot::Sender<()>);

impl OnEos for BodySent {
    fn on_eos(self, _: Eos<'_>, _: u64) {
        let _ = self.0.send(());
    }
}
