//! The upstream connector: TCP, TLS for `https://` destinations, and a cap
//! on open connections.
//!
//! An `https://` destination is always reached over verified TLS (see
//! [`crate::tls::client`]); the server's ALPN choice tells the pool whether
//! the connection speaks HTTP/2. A connector without TLS refuses `https://`
//! destinations rather than dialling them in clear text.
//!
//! Without a cap, one HTTP/2 client opening many streams to an HTTP/1.1 app
//! makes one upstream connection per stream, and a few such clients use every
//! file descriptor the process has. Each connection holds a permit from a
//! semaphore until it closes; a connect that finds none waits up to the
//! queue time (the pool may hand the request an idle connection meanwhile)
//! and then fails with [`Saturated`], which the forwarder turns into a
//! counted 503.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use http::{uri::Scheme, Uri};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::{
    client::legacy::connect::{Connected, Connection, HttpConnector},
    rt::TokioIo,
};
use tokio::{
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_rustls::client::TlsStream;

use crate::tls::client::{Alpn, ClientTls};

/// Every allowed upstream connection stayed busy for the whole queue time.
#[derive(Debug, thiserror::Error)]
#[error("all {max} upstream connections busy for {waited:?}")]
pub struct Saturated {
    /// The cap.
    pub max: usize,
    /// How long the request waited.
    pub waited: Duration,
}

/// An `https://` destination, but no TLS configured for this connector.
#[derive(Debug, thiserror::Error)]
#[error("{0} is https:// but no TLS client is configured for it")]
pub struct NoTlsClient(Uri);

/// A connector that opens at most `max` connections at once.
#[derive(Clone)]
pub struct LimitedConnector {
    inner: HttpConnector,
    tls: Option<Arc<ClientTls>>,
    alpn: Alpn,
    permits: Arc<Semaphore>,
    max: usize,
    queue_timeout: Duration,
    open: metrics::Gauge,
}

/// An upstream connection holding its permit.
pub struct LimitedConn {
    io: Stream,
    _permit: OwnedSemaphorePermit,
    open: metrics::Gauge,
    abort: UpstreamAbort,
}

/// Closes a connection from outside the pool, found through hyper-util's
/// connection capture ([`Connected::extra`]): an HTTP/1 connection whose
/// upstream stopped reading the request body waits for the socket forever,
/// whatever becomes of the request.
#[derive(Clone, Default)]
pub struct UpstreamAbort(Arc<AbortState>);

#[derive(Default)]
struct AbortState {
    aborted: AtomicBool,
    writer: futures_util::task::AtomicWaker,
}

impl UpstreamAbort {
    /// Fails the connection's next write; a write waiting for the socket
    /// is woken to fail.
    pub fn abort(&self) {
        self.0.aborted.store(true, Ordering::Release);
        self.0.writer.wake();
    }

    fn check(&self, cx: &Context<'_>) -> io::Result<()> {
        self.0.writer.register(cx.waker());
        if self.0.aborted.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed by the proxy: the upstream stopped reading the request",
            ));
        }
        Ok(())
    }
}

/// The TLS error (an alert, most often) that broke a connection after its
/// handshake, kept for the requests that were on it. In TLS 1.3 a server
/// refuses a client certificate only after the client has finished its
/// handshake, so the refusal arrives on the first read, where HTTP/2
/// reports nothing more than a closed stream. Found through hyper-util's
/// connection capture ([`Connected::extra`]).
#[derive(Clone)]
pub struct TlsConnError {
    error: Arc<std::sync::OnceLock<rustls::Error>>,
    /// Whether the server ever sent application data on the connection.
    received: Arc<std::sync::atomic::AtomicBool>,
    /// For the log line, once per cause.
    tls: Arc<ClientTls>,
    server: Arc<str>,
}

impl TlsConnError {
    /// The error, once one broke the connection.
    pub fn get(&self) -> Option<&rustls::Error> {
        self.error.get()
    }

    /// Whether the connection broke before the server sent any data over
    /// it: the server refused the session (a TLS 1.3 server refusing the
    /// client certificate resets the connection, and the alert saying so
    /// is often lost with the reset).
    pub fn refused_before_data(&self) -> bool {
        !self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn received(&self) {
        if !self.received.load(std::sync::atomic::Ordering::Relaxed) {
            self.received
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn record(&self, e: &io::Error) {
        if let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            if self.error.set(tls.clone()).is_ok() {
                self.tls.log_broken(&self.server, tls);
            }
        }
    }
}

/// A plain or TLS connection; an enum, so reads and writes are not boxed.
enum Stream {
    Plain(TokioIo<TcpStream>),
    // Boxed: a TLS session is over a kilobyte, a plain stream a few words.
    Tls(Box<TokioIo<WatchedTls>>),
}

/// A TLS stream whose reads tell its [`TlsConnError`] what broke it and
/// whether the server ever sent data.
struct WatchedTls {
    stream: TlsStream<TcpStream>,
    conn: TlsConnError,
}

/// Dispatches a hyper IO call to whichever stream this is.
macro_rules! either {
    ($stream:expr, $io:ident => $call:expr) => {
        match $stream {
            Stream::Plain($io) => $call,
            Stream::Tls($io) => $call,
        }
    };
}

// === impl LimitedConnector ===

impl LimitedConnector {
    /// Caps `inner` at `max` open connections; `open` tracks how many are.
    pub fn new(
        inner: HttpConnector,
        max: usize,
        queue_timeout: Duration,
        open: metrics::Gauge,
    ) -> Self {
        Self {
            inner,
            tls: None,
            alpn: Alpn::Any,
            permits: Arc::new(Semaphore::new(max)),
            max,
            queue_timeout,
            open,
        }
    }

    /// Reaches `https://` destinations with `tls`.
    pub fn with_tls(mut self, tls: Option<Arc<ClientTls>>) -> Self {
        self.tls = tls;
        self
    }

    /// The same connector (sharing its cap) offering `alpn` over TLS.
    pub fn with_alpn(&self, alpn: Alpn) -> Self {
        Self {
            alpn,
            ..self.clone()
        }
    }
}

impl tower::Service<Uri> for LimitedConnector {
    type Response = LimitedConn;
    type Error = filters::Error;
    type Future = Pin<Box<dyn Future<Output = Result<LimitedConn, filters::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::<Uri>::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let permits = self.permits.clone();
        let (max, waited) = (self.max, self.queue_timeout);
        let open = self.open.clone();
        let mut inner = self.inner.clone();
        let (tls, alpn) = (self.tls.clone(), self.alpn);
        Box::pin(async move {
            let tls = match (dst.scheme() == Some(&Scheme::HTTPS), tls) {
                (false, _) => None,
                (true, Some(tls)) => Some(tls),
                (true, None) => return Err(NoTlsClient(dst).into()),
            };
            let permit = match permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => tokio::time::timeout(waited, permits.acquire_owned())
                    .await
                    .map_err(|_| Saturated { max, waited })?
                    .map_err(|_| Saturated { max, waited })?,
            };
            let host = dst.host().unwrap_or_default().to_string();
            let tcp = tower::Service::call(&mut inner, dst).await?;
            let io = match tls {
                None => Stream::Plain(tcp),
                Some(tls) => {
                    let stream = tls.handshake(tcp.into_inner(), &host, alpn).await?;
                    let broken = TlsConnError {
                        error: Arc::default(),
                        received: Arc::default(),
                        tls,
                        server: host.into(),
                    };
                    Stream::Tls(Box::new(TokioIo::new(WatchedTls {
                        stream,
                        conn: broken,
                    })))
                }
            };
            open.increment(1.0);
            Ok(LimitedConn {
                io,
                _permit: permit,
                open,
                abort: UpstreamAbort::default(),
            })
        })
    }
}

// === impl LimitedConn ===

impl Drop for LimitedConn {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

impl Connection for LimitedConn {
    fn connected(&self) -> Connected {
        let abort = self.abort.clone();
        match &self.io {
            Stream::Plain(io) => io.connected().extra(abort),
            Stream::Tls(io) => {
                let watched = io.inner();
                let (tcp, session) = watched.stream.get_ref();
                let connected = tcp.connected().extra(watched.conn.clone()).extra(abort);
                if session.alpn_protocol() == Some(b"h2") {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

impl Read for LimitedConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        either!(&mut self.get_mut().io, io => Pin::new(io).poll_read(cx, buf))
    }
}

impl Write for LimitedConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.abort.check(cx)?;
        either!(&mut self.get_mut().io, io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.abort.check(cx)?;
        either!(&mut self.get_mut().io, io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(&mut self.get_mut().io, io => Pin::new(io).poll_shutdown(cx))
    }

    fn is_write_vectored(&self) -> bool {
        either!(&self.io, io => io.is_write_vectored())
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.abort.check(cx)?;
        either!(&mut self.get_mut().io, io => Pin::new(io).poll_write_vectored(cx, bufs))
    }
}

// === impl WatchedTls ===

impl tokio::io::AsyncRead for WatchedTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        match &result {
            Poll::Ready(Ok(())) if buf.filled().len() > before => this.conn.received(),
            Poll::Ready(Err(e)) => this.conn.record(e),
            _ => {}
        }
        result
    }
}

impl tokio::io::AsyncWrite for WatchedTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_past_the_cap_wait_then_fail_saturated() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let mut connector = LimitedConnector::new(
            HttpConnector::new(),
            2,
            Duration::from_millis(100),
            metrics::Gauge::noop(),
        );
        let uri: Uri = format!("http://{addr}").parse().unwrap();
        let first = tower::Service::call(&mut connector, uri.clone())
            .await
            .unwrap();
        let _second = tower::Service::call(&mut connector, uri.clone())
            .await
            .unwrap();
        let third = tower::Service::call(&mut connector, uri.clone()).await;
        let err = third.err().unwrap();
        assert!(err.is::<Saturated>(), "{err}");
        drop(first);
        assert!(
            tower::Service::call(&mut connector, uri).await.is_ok(),
            "a closed connection frees its permit"
        );
    }
}
