//! The accept loop: one port for HTTP/1.1 and HTTP/2 (prior-knowledge h2c),
//! via hyper-util's auto connection builder, with graceful drain.
//!
//! On drain the listener stops accepting, HTTP/2 connections get GOAWAY,
//! HTTP/1 responses carry `Connection: close`, and in-flight requests finish.
//! Malformed requests are answered by hyper itself (400, 431 for heads over
//! the limit) and logged here with the peer address.
//!
//! What one client may hold is bounded here: connections per listener (past
//! the cap, new ones are refused at once and counted: see `refuse`), a TLS handshake
//! deadline, a head deadline from accept or the handshake's end (in the
//! framing guard), an idle timeout for connections with no request in
//! flight, and HTTP/2 streams per connection with a bounded send buffer
//! each, so a client that does not read pushes back on the upstream.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use filters::{connection::ConnectionInfo, metrics::graph::CLIENT_HEADER, HttpBody};
use http::{header, HeaderValue, Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tower::{Service, ServiceExt};

use crate::{
    config::IpNetwork,
    drain::Drain,
    smuggling::{is_upgrade_request, GuardHandle, GuardedIo},
    tls::{facts::TlsFacts, server::Handshakes},
    validate::OverBudget,
};

/// How a listener serves connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// `inbound` or `outbound`, for logs.
    pub name: &'static str,
    /// Largest request head, bytes.
    pub max_header_bytes: usize,
    /// Time allowed for a request head to arrive, from accept or the end
    /// of the TLS handshake (which has its own deadline).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Open connections at most; past it new ones are refused.
    pub max_connections: usize,
    /// Connections refused because the listener had `max_connections` open.
    pub rejected_connections: metrics::Counter,
    /// Requests in flight across the listener's connections, at most.
    pub max_requests_in_flight: usize,
    /// Requests refused because the listener had its maximum in flight.
    pub shed_in_flight: metrics::Counter,
    /// Concurrent HTTP/2 streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// Response bytes buffered per HTTP/2 stream for a client not reading.
    pub http2_stream_buffer_bytes: usize,
    /// TLS termination, when configured: handshakes under their own
    /// deadline, counted, their facts put on each request.
    pub tls: Option<Arc<Handshakes>>,
    /// Peers whose `x-sidetrace-client` header is believed (inbound only;
    /// `None` leaves the header alone). Verified client certificates are
    /// trusted too.
    pub trusted_clients: Option<Arc<[IpNetwork]>>,
}

/// Open connections of one listener, for the drain and the gauge.
#[derive(Clone, Debug, Default)]
pub struct ConnectionCount(Arc<AtomicUsize>);

impl ConnectionCount {
    /// Connections currently open.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

struct ConnGuard {
    count: ConnectionCount,
    gauge: metrics::Gauge,
    _permit: OwnedSemaphorePermit,
}

/// Requests in flight on one connection and since when it has had none, for
/// the idle timeout. Shared by the connection task and its requests.
struct Activity {
    started: tokio::time::Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `started` to when `in_flight` last went to zero.
    idle_since_ms: std::sync::atomic::AtomicU64,
}

/// Held by a request until its response body is done or dropped: its place
/// in its connection's activity and in the listener's in-flight budget.
struct InFlight {
    activity: Arc<Activity>,
    listener: Arc<Listener>,
    /// Requests the listener had in flight, this one included, when it came.
    listener_count: usize,
}

/// The response body hyper writes: the stack's body, plus the request's
/// place in its connection's activity.
struct ConnBody {
    inner: HttpBody,
    _in_flight: Option<InFlight>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.count.0.fetch_sub(1, Ordering::Relaxed);
        self.gauge.decrement(1.0);
    }
}

/// Accepts connections until `stop` resolves, serving each with `service`.
/// Returns once no connection is left open.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    options: ServeOptions,
    connections: ConnectionCount,
    gauge: metrics::Gauge,
    stop: impl std::future::Future<Output = ()>,
    drain: Drain,
) where
    S: Service<Request<Incoming>, Response = Response<HttpBody>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(options.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(options.http2_max_concurrent_streams)
        // Per stream, what is buffered for a client that does not read;
        // beyond it the response body is not polled, so the upstream waits.
        .max_send_buf_size(options.http2_stream_buffer_bytes);
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let refusing = Arc::new(Semaphore::new(refusals_answered(options.max_connections)));
    let shared = Arc::new(Listener {
        builder,
        options,
        requests_in_flight: AtomicUsize::new(0),
    });
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = shared.options.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // At the cap, refuse at once rather than leave the client waiting
        // in the kernel's queue with no answer: counted, and answered when
        // the refusals being answered leave room.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refuse(stream, peer, &shared.options, &refusing);
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections.0.fetch_add(1, Ordering::Relaxed);
        gauge.increment(1.0);
        let guard = ConnGuard {
            count: connections.clone(),
            gauge: gauge.clone(),
            _permit: permit,
        };
        tokio::spawn(serve_connection(
            shared.clone(),
            stream,
            peer,
            service.clone(),
            drain.clone(),
            guard,
        ));
    }
    drop(listener);
    while connections.get() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long a refused connection is held to answer it and read what the
/// client sent (so that closing does not reset the answer away).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Refused connections answered at once, at most: a share of the cap, so a
/// flood of refusals holds few descriptors; past it they are just closed.
fn refusals_answered(max_connections: usize) -> usize {
    (max_connections / 4).clamp(16, 64)
}

/// What a refused HTTP/1 client reads: 503 `overloaded`, `NETWORK`.
const HTTP1_REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    connection: close\r\n\
    content-type: text/plain\r\n\
    x-sidetrace-error: NETWORK\r\n\
    content-length: 57\r\n\r\n\
    too many connections to this listener (max_connections)\r\n";

/// What a refused HTTP/2 (prior knowledge) client reads: the server
/// preface (empty SETTINGS), then GOAWAY with last stream 0 and
/// REFUSED_STREAM: no stream was processed, every request can be retried.
const H2_REFUSAL: &[u8] = &[
    0, 0, 0, 4, 0, 0, 0, 0, 0, // SETTINGS, no parameters
    0, 0, 8, 7, 0, 0, 0, 0, 0, // GOAWAY, 8 bytes, stream 0
    0, 0, 0, 0, // last stream id 0
    0, 0, 0, 7, // REFUSED_STREAM
];

/// A connection over `max_connections`: counted, and answered (a 503 for
/// HTTP/1, GOAWAY for HTTP/2) when plain text and the refusals in progress
/// leave room; a TLS connection is closed (an answer would cost a handshake).
fn refuse(stream: TcpStream, peer: SocketAddr, options: &ServeOptions, refusing: &Arc<Semaphore>) {
    options.rejected_connections.increment(1);
    tracing::debug!(listener = options.name, client = %peer, "connection refused: max_connections reached");
    if options.tls.is_some() {
        return;
    }
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(REFUSAL_LINGER, answer_refusal(stream)).await;
    });
}

async fn answer_refusal(mut stream: TcpStream) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A client speaks first; its first bytes say which protocol.
    let mut first = [0u8; 3];
    let n = tokio::time::timeout(Duration::from_millis(100), stream.peek(&mut first))
        .await
        .unwrap_or(Ok(0))?;
    let answer = if first[..n] == b"PRI"[..] {
        H2_REFUSAL
    } else {
        HTTP1_REFUSAL
    };
    stream.write_all(answer).await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 4096];
    let mut left = 64 * 1024usize;
    while left > 0 {
        let n = stream.read(&mut sink).await?;
        if n == 0 {
            break;
        }
        left = left.saturating_sub(n);
    }
    Ok(())
}

/// How long an idle connection told to close may take to do so.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the connections of one listener share.
struct Listener {
    builder: auto::Builder<TokioExecutor>,
    options: ServeOptions,
    /// Requests in flight across the listener, for `max_requests_in_flight`.
    requests_in_flight: AtomicUsize,
}

/// What is known of one connection once it is accepted (and TLS is done).
#[derive(Clone, Copy)]
struct Peer {
    addr: SocketAddr,
    tls: bool,
    /// Whether its `x-sidetrace-client` is believed; `None`: not this
    /// listener's concern.
    trusted: Option<bool>,
}

async fn serve_connection<S>(
    listener: Arc<Listener>,
    stream: TcpStream,
    addr: SocketAddr,
    service: S,
    drain: Drain,
    guard: ConnGuard,
) where
    S: Service<Request<Incoming>, Response = Response<HttpBody>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let options = &listener.options;
    let timeout = options.header_read_timeout;
    // An open CONNECT tunnel outlives hyper's connection and keeps its place.
    let conn = Arc::new(guard);
    let in_trusted_network =
        |trusted: &Arc<[IpNetwork]>| trusted.iter().any(|n| n.contains(addr.ip()));
    let Some(handshakes) = &options.tls else {
        let peer = Peer {
            addr,
            tls: false,
            trusted: options.trusted_clients.as_ref().map(in_trusted_network),
        };
        let (io, guard) = GuardedIo::new(stream, timeout);
        return serve_io(&listener, io, guard, peer, None, service, drain, conn).await;
    };
    let Some((stream, facts)) = handshakes.accept(stream, addr, options.name).await else {
        return;
    };
    // The acceptor verified any certificate against `client_ca`: a peer
    // that presented one is a known sidecar.
    let peer = Peer {
        addr,
        tls: true,
        trusted: options
            .trusted_clients
            .as_ref()
            .map(|nets| facts.client_verified() || in_trusted_network(nets)),
    };
    let (io, guard) = GuardedIo::new(stream, timeout);
    serve_io(
        &listener,
        io,
        guard,
        peer,
        Some(facts),
        service,
        drain,
        conn,
    )
    .await;
}

/// Serves one connection: connection facts go into each request, the
/// framing guard is told how an upgrade ended, requests count against the
/// connection's idle timeout and the listener's in-flight budget.
// The parts of one accepted connection, each used once.
#[allow(clippy::too_many_arguments)]
async fn serve_io<IO, S>(
    listener: &Arc<Listener>,
    io: GuardedIo<IO>,
    guard: GuardHandle,
    peer: Peer,
    tls: Option<Arc<TlsFacts>>,
    service: S,
    mut drain: Drain,
    conn: Arc<ConnGuard>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<HttpBody>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let options = &listener.options;
    let name = options.name;
    let activity = Arc::new(Activity {
        started: tokio::time::Instant::now(),
        in_flight: AtomicUsize::new(0),
        idle_since_ms: std::sync::atomic::AtomicU64::new(0),
    });
    // Made once per connection; each request shares it.
    let connection = Arc::new(ConnectionInfo::new(peer.addr, peer.tls));
    let draining = drain.clone();
    let conn_activity = activity.clone();
    let shared = listener.clone();
    let upgrades = guard.clone();
    let hyper_service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let service = service.clone();
        let draining = draining.clone();
        let upgrades = upgrades.clone();
        let in_flight = InFlight::start(&conn_activity, &shared);
        let tunnel_conn = (req.method() == http::Method::CONNECT).then(|| conn.clone());
        if let Some(max) = in_flight.over_budget(&shared.options) {
            shared.options.shed_in_flight.increment(1);
            req.extensions_mut().insert(OverBudget { max });
        }
        req.extensions_mut().insert(connection.clone());
        if let Some(facts) = &tls {
            req.extensions_mut().insert(facts.clone());
        }
        if peer.trusted == Some(false) {
            req.headers_mut().remove(CLIENT_HEADER);
        }
        async move {
            let version = req.version();
            let upgrade = (version != Version::HTTP_2
                && is_upgrade_request(req.headers(), req.method()))
            .then(|| req.method() == http::Method::CONNECT);
            let mut resp = service.oneshot(req).await?;
            let mut in_flight = Some(in_flight);
            // hyper drops a 2xx CONNECT answer's body unread; a tunnel's ends
            // when the tunnel closes, in flight and counted until then.
            if let Some(conn) = tunnel_conn.filter(|_| resp.status().is_success()) {
                let body = std::mem::replace(resp.body_mut(), filters::empty_body());
                crate::tunnel::hold(body, (in_flight.take(), conn));
            }
            if let Some(connect) = upgrade {
                let status = resp.status();
                upgrades.upgrade_outcome(if connect {
                    status.is_success()
                } else {
                    status == http::StatusCode::SWITCHING_PROTOCOLS
                });
            }
            if version != Version::HTTP_2 && draining.is_draining() {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp.map(|inner| ConnBody {
                inner,
                _in_flight: in_flight,
            }))
        }
    });
    let conn = listener
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), hyper_service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = drain.signaled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = activity.idle(options.idle_timeout) => {
            tracing::debug!(listener = name, client = %peer.addr, "idle connection closed");
            conn.as_mut().graceful_shutdown();
            // An HTTP/2 client that never acknowledges the GOAWAY's ping would
            // hold the connection open: it has no request in flight, so it
            // loses nothing when the socket closes after a short grace.
            tokio::time::timeout(IDLE_CLOSE_GRACE, conn)
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Some(rejection) = guard.rejection() {
        tracing::warn!(listener = name, client = %peer.addr, reason = rejection.reason(), "request refused by the framing guard (400)");
    } else if let Err(e) = result {
        log_connection_error(name, peer.addr, &*e);
    }
}

// === impl Activity ===

impl Activity {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Resolves once the connection has had no request in flight for `limit`.
    async fn idle(&self, limit: Duration) {
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        loop {
            let wake = if self.in_flight.load(Ordering::Acquire) == 0 {
                let since = self.idle_since_ms.load(Ordering::Acquire);
                let now = self.now_ms();
                if now.saturating_sub(since) >= limit_ms
                    && self.in_flight.load(Ordering::Acquire) == 0
                {
                    return;
                }
                since.saturating_add(limit_ms).saturating_sub(now)
            } else {
                limit_ms
            };
            tokio::time::sleep(Duration::from_millis(wake.max(1))).await;
        }
    }
}

// === impl InFlight ===

impl InFlight {
    fn start(activity: &Arc<Activity>, listener: &Arc<Listener>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        let listener_count = listener.requests_in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        Self {
            activity: activity.clone(),
            listener: listener.clone(),
            listener_count,
        }
    }

    /// The listener's budget when this request is over it.
    fn over_budget(&self, options: &ServeOptions) -> Option<usize> {
        (self.listener_count > options.max_requests_in_flight)
            .then_some(options.max_requests_in_flight)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.listener
            .requests_in_flight
            .fetch_sub(1, Ordering::AcqRel);
        let now = self.activity.now_ms();
        self.activity.idle_since_ms.store(now, Ordering::Release);
        self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl ConnBody ===

impl http_body::Body for ConnBody {
    type Data = bytes::Bytes;
    type Error = filters::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn log_connection_error(
    name: &'static str,
    peer: SocketAddr,
    e: &(dyn std::error::Error + 'static),
) {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            if h.is_parse_too_large() {
                tracing::warn!(listener = name, client = %peer, error = %e, "request head over the limit (431)");
                return;
            }
            if h.is_parse() || h.is_parse_status() {
                tracing::warn!(listener = name, client = %peer, error = %e, "malformed request (400)");
                return;
            }
            if h.is_timeout() {
                tracing::info!(listener = name, client = %peer, "request head not received in time; connection closed");
                return;
            }
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                tracing::debug!(listener = name, client = %peer, error = %e, "client closed the connection");
                return;
            }
        }
        cause = c.source();
    }
    tracing::debug!(listener = name, client = %peer, error = %e, "connection error");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusals_parse() {
        let text = std::str::from_utf8(HTTP1_REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(
            head.ends_with(&format!("\r\ncontent-length: {}", body.len())),
            "{text:?}"
        );
        // Two frames of 9-byte headers, the second with its 8-byte payload.
        assert_eq!(H2_REFUSAL.len(), 9 + 9 + 8);
        assert_eq!((H2_REFUSAL[3], H2_REFUSAL[12]), (4, 7));
    }

    #[test]
    fn few_refusals_are_answered_at_once() {
        assert_eq!(refusals_answered(1), 16);
        assert_eq!(refusals_answered(128), 32);
        assert_eq!(refusals_answered(4096), 64);
    }
}
