//! The accept loop: one port for HTTP/1.1 and HTTP/2 (prior-knowledge h2c),
//! via hyper-util's auto connection builder, with graceful drain.
//!
//! On drain the listener stops accepting, HTTP/2 connections get GOAWAY,
//! HTTP/1 responses carry `Connection: close`, and in-flight requests finish.
//! Malformed requests are answered by hyper itself (400, 431 for heads over
//! the limit) and logged here with the peer address.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use filters::HttpBody;
use http::{header, HeaderValue, Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::net::{TcpListener, TcpStream};
use tower::{Service, ServiceExt};

use crate::{
    drain::Drain,
    forward::{ClientAddr, ConnTls, ForwardedFor},
    smuggling::{GuardedIo, REJECTED},
};

/// How a listener serves connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// `inbound` or `outbound`, for logs.
    pub name: &'static str,
    /// Largest request head, bytes.
    pub max_header_bytes: usize,
    /// Time allowed for a request head (and a TLS handshake) to arrive.
    pub header_read_timeout: Duration,
    /// TLS termination, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
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
        .max_concurrent_streams(1024);
    let builder = Arc::new(builder);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = options.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        connections.0.fetch_add(1, Ordering::Relaxed);
        gauge.increment(1.0);
        let guard = ConnGuard {
            count: connections.clone(),
            gauge: gauge.clone(),
        };
        tokio::spawn(serve_connection(
            builder.clone(),
            stream,
            peer,
            service.clone(),
            drain.clone(),
            options.clone(),
            guard,
        ));
    }
    drop(listener);
    while connections.get() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn serve_connection<S>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    peer: SocketAddr,
    service: S,
    drain: Drain,
    options: ServeOptions,
    _guard: ConnGuard,
) where
    S: Service<Request<Incoming>, Response = Response<HttpBody>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let name = options.name;
    let is_tls = options.tls.is_some();
    let draining = drain.clone();
    let forwarded_for = HeaderValue::from_str(&peer.ip().to_string())
        .ok()
        .map(ForwardedFor);
    let hyper_service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let service = service.clone();
        let draining = draining.clone();
        if let Some(xff) = &forwarded_for {
            req.extensions_mut().insert(xff.clone());
        }
        async move {
            req.extensions_mut().insert(ClientAddr(peer));
            req.extensions_mut().insert(ConnTls(is_tls));
            let version = req.version();
            let mut resp = service.oneshot(req).await?;
            if version != Version::HTTP_2 && draining.is_draining() {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let timeout = options.header_read_timeout;
    let Some(acceptor) = &options.tls else {
        let io = GuardedIo::new(stream, timeout);
        return serve_io(&builder, io, hyper_service, drain, name, peer).await;
    };
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let io = GuardedIo::new(stream, timeout);
            serve_io(&builder, io, hyper_service, drain, name, peer).await;
        }
        Ok(Err(e)) => {
            tracing::info!(listener = name, client = %peer, error = %e, "TLS handshake failed")
        }
        Err(_) => {
            tracing::info!(listener = name, client = %peer, "TLS handshake not completed in time")
        }
    }
}

async fn serve_io<IO, S>(
    builder: &auto::Builder<TokioExecutor>,
    (io, rejected): (GuardedIo<IO>, Arc<std::sync::atomic::AtomicU8>),
    service: S,
    mut drain: Drain,
    name: &'static str,
    peer: SocketAddr,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<HttpBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = drain.signaled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if rejected.load(std::sync::atomic::Ordering::Relaxed) == REJECTED {
        tracing::warn!(listener = name, client = %peer, "rejected a request with both Content-Length and Transfer-Encoding (400)");
    } else if let Err(e) = result {
        log_connection_error(name, peer, &*e);
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
