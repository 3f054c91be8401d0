//! The upstream connector: TCP with a cap on open connections.
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
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::{
    client::legacy::connect::{Connected, Connection, HttpConnector},
    rt::TokioIo,
};
use tokio::{
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
};

/// Every allowed upstream connection stayed busy for the whole queue time.
#[derive(Debug, thiserror::Error)]
#[error("all {max} upstream connections busy for {waited:?}")]
pub struct Saturated {
    /// The cap.
    pub max: usize,
    /// How long the request waited.
    pub waited: Duration,
}

/// A connector that opens at most `max` connections at once.
#[derive(Clone)]
pub struct LimitedConnector {
    inner: HttpConnector,
    permits: Arc<Semaphore>,
    max: usize,
    queue_timeout: Duration,
    open: metrics::Gauge,
}

/// An upstream connection holding its permit.
pub struct LimitedConn {
    io: TokioIo<TcpStream>,
    _permit: OwnedSemaphorePermit,
    open: metrics::Gauge,
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
            permits: Arc::new(Semaphore::new(max)),
            max,
            queue_timeout,
            open,
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
        Box::pin(async move {
            let permit = match permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => tokio::time::timeout(waited, permits.acquire_owned())
                    .await
                    .map_err(|_| Saturated { max, waited })?
                    .map_err(|_| Saturated { max, waited })?,
            };
            let io = tower::Service::call(&mut inner, dst).await?;
            open.increment(1.0);
            Ok(LimitedConn {
                io,
                _permit: permit,
                open,
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
        self.io.connected()
    }
}

impl Read for LimitedConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for LimitedConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
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
