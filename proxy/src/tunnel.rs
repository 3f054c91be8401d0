//! `CONNECT`: tunnelled by the outbound listener, refused by the inbound one.
//!
//! An app that does its own TLS (or speaks something other than HTTP)
//! reaches a destination through the outbound listener with
//! `CONNECT host:port`: the proxy opens a TCP connection there (5 s to
//! connect), answers 200 and copies bytes both ways until both sides have
//! closed. It sees nothing of what flows inside; the tunnel is one request
//! to the layers above: a CLIENT span with the target, the whole duration
//! and the bytes each way, and one request in the RED metrics. A target it
//! cannot reach is a 502 NETWORK like any upstream connect error; the
//! outbound listener's own address is a loop, refused with 400.
//!
//! The app behind the inbound listener is not a proxy: `CONNECT` there is
//! answered 405 (VALIDATION) and never reaches it.
//!
//! The 200's body stays open until the tunnel closes and carries its byte
//! counts in [`EndAttributes`], so everything that ends with the response
//! body (span, metrics, the listener's in-flight count) lasts as long as the
//! tunnel. hyper sends a 2xx answer to `CONNECT` without a body and drops
//! the body unread: the listener reads it instead, with [`hold`].

use std::{
    borrow::Cow,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use filters::{
    classify::{
        BadRequest, ErrorType, Failure, FailureCategory, GrpcCode, Synthetic, UpstreamError,
        UpstreamErrorKind,
    },
    trace::{span::AttrValue, EndAttributes},
    HttpBody,
};
use futures_util::future::{BoxFuture, Either};
use http::{uri::Authority, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::oneshot,
};
use tower::{Layer, Service};

use crate::{drain::Drain, forward::is_self, rescue};

/// Span attribute: bytes the app sent through the tunnel to the target.
pub const BYTES_SENT: &str = "sidetrace.tunnel.bytes_sent";
/// Span attribute: bytes the target sent back through the tunnel.
pub const BYTES_RECEIVED: &str = "sidetrace.tunnel.bytes_received";

/// Time allowed to open the TCP connection to a tunnel's target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The body of the inbound listener's 405.
const REFUSED: &str = "405 Method Not Allowed: CONNECT is served by the outbound listener only\n";

/// What a listener does with `CONNECT`.
#[derive(Clone, Debug)]
pub enum ConnectPolicy {
    /// Answer 405: the inbound listener's app is not a proxy.
    Refuse,
    /// Tunnel to the target: the outbound listener.
    Tunnel(Arc<TunnelOptions>),
}

/// How the outbound listener tunnels.
#[derive(Debug)]
pub struct TunnelOptions {
    /// The outbound listener's bound address, never a tunnel's target.
    pub own: SocketAddr,
    /// The proxy's drain.
    pub drain: Drain,
    /// The drain's deadline: tunnels still open just before it (see
    /// [`closing_time`]) are closed, so that their spans end in time to be
    /// flushed.
    pub drain_timeout: Duration,
}

/// Applies [`Tunnel`].
#[derive(Clone, Debug)]
pub struct TunnelLayer {
    policy: ConnectPolicy,
}

/// Answers `CONNECT` by its [`ConnectPolicy`]; passes every other request on.
#[derive(Clone, Debug)]
pub struct Tunnel<S> {
    inner: S,
    policy: ConnectPolicy,
}

/// The body of a tunnel's 200: open until the tunnel closes, then ends, or
/// fails when the target's side of the tunnel broke.
struct TunnelBody {
    closed: Option<oneshot::Receiver<Result<(), UpstreamError>>>,
}

/// A stream that counts what passes and remembers whether it failed.
struct Counted<T> {
    io: T,
    read: u64,
    written: u64,
    error: Option<io::ErrorKind>,
}

// === impl TunnelLayer ===

impl TunnelLayer {
    /// A layer answering `CONNECT` by `policy`.
    pub fn new(policy: ConnectPolicy) -> Self {
        Self { policy }
    }
}

impl<S> Layer<S> for TunnelLayer {
    type Service = Tunnel<S>;

    fn layer(&self, inner: S) -> Tunnel<S> {
        Tunnel {
            inner,
            policy: self.policy.clone(),
        }
    }
}

// === impl Tunnel ===

impl<S> Service<Request<HttpBody>> for Tunnel<S>
where
    S: Service<Request<HttpBody>, Response = Response<HttpBody>, Error = filters::Error>,
{
    type Response = Response<HttpBody>;
    type Error = filters::Error;
    type Future = Either<BoxFuture<'static, Result<Response<HttpBody>, filters::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<HttpBody>) -> Self::Future {
        if req.method() != Method::CONNECT {
            return Either::Right(self.inner.call(req));
        }
        match &self.policy {
            ConnectPolicy::Refuse => {
                tracing::info!(authority = %req.uri(), "CONNECT refused on the inbound listener (405)");
                Either::Left(Box::pin(std::future::ready(Ok(refused()))))
            }
            ConnectPolicy::Tunnel(options) => Either::Left(Box::pin(open(options.clone(), req))),
        }
    }
}

/// The inbound listener's answer to `CONNECT`.
fn refused() -> Response<HttpBody> {
    let status = StatusCode::METHOD_NOT_ALLOWED;
    let synthetic = Synthetic {
        status,
        grpc: GrpcCode::INVALID_ARGUMENT,
        failure: Failure::new(FailureCategory::Validation, ErrorType::Status(status)),
    };
    let mut resp = rescue::respond(&synthetic, false, REFUSED);
    *resp.body_mut() = filters::full_body(REFUSED);
    resp
}

/// Connects to the target of `req` and answers 200, leaving the tunnel to a
/// task of its own.
async fn open(
    options: Arc<TunnelOptions>,
    mut req: Request<HttpBody>,
) -> Result<Response<HttpBody>, filters::Error> {
    let target = target(&req)?;
    if is_self(&target, options.own) {
        return Err(BadRequest("CONNECT to the outbound listener itself (loop)").into());
    }
    let client = hyper::upgrade::on(&mut req);
    drop(req);
    let connect_error = |source: io::Error| UpstreamError {
        kind: UpstreamErrorKind::Connect,
        addr: target.clone(),
        source: source.into(),
    };
    let upstream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target.as_str()))
        .await
        .map_err(|_| {
            connect_error(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("not connected within {CONNECT_TIMEOUT:?}"),
            ))
        })?
        .map_err(connect_error)?;
    let peer = upstream.peer_addr().map_err(connect_error)?;
    // A name that resolves to the listener is as much a loop as its address.
    if Authority::try_from(peer.to_string()).is_ok_and(|a| is_self(&a, options.own)) {
        return Err(BadRequest("CONNECT to the outbound listener itself (loop)").into());
    }
    let _ = upstream.set_nodelay(true);

    let (closed_tx, closed_rx) = oneshot::channel();
    let end = EndAttributes::default();
    tokio::spawn(run(
        client,
        upstream,
        peer,
        target,
        options,
        end.clone(),
        closed_tx,
    ));
    let body = TunnelBody {
        closed: Some(closed_rx),
    };
    let mut resp = Response::new(body.boxed_unsync());
    resp.extensions_mut().insert(end);
    Ok(resp)
}

/// The tunnel's target: `host:port`, from the authority-form request target
/// (HTTP/1.1) or `:authority` (HTTP/2).
fn target<B>(req: &Request<B>) -> Result<Authority, BadRequest> {
    match req.uri().authority() {
        Some(a) if a.port_u16().is_some() && req.uri().path_and_query().is_none() => Ok(a.clone()),
        _ => Err(BadRequest("CONNECT target is not host:port")),
    }
}

/// Copies between the client and the target until both have closed (or the
/// drain deadline passes), then ends the 200's body with the byte counts.
async fn run(
    client: hyper::upgrade::OnUpgrade,
    upstream: TcpStream,
    peer: SocketAddr,
    target: Authority,
    options: Arc<TunnelOptions>,
    end: EndAttributes,
    closed: oneshot::Sender<Result<(), UpstreamError>>,
) {
    let mut upstream = Counted {
        io: upstream,
        read: 0,
        written: 0,
        error: None,
    };
    let drain = options.drain.clone();
    let copied = tokio::select! {
        copied = copy(client, &mut upstream) => copied,
        () = deadline(drain, options.drain_timeout) => {
            tracing::info!(upstream = %target, "tunnel closed by the drain");
            Ok(())
        }
    };
    if let Err(e) = copied {
        tracing::debug!(upstream = %target, error = %e, "tunnel closed with an error");
    }
    let int = |n: u64| AttrValue::Int(i64::try_from(n).unwrap_or(i64::MAX));
    end.set(vec![
        (Cow::Borrowed(BYTES_SENT), int(upstream.written)),
        (Cow::Borrowed(BYTES_RECEIVED), int(upstream.read)),
        (
            Cow::Borrowed("network.peer.address"),
            AttrValue::Str(Cow::Owned(peer.ip().to_string())),
        ),
        (
            Cow::Borrowed("network.peer.port"),
            AttrValue::Int(i64::from(peer.port())),
        ),
    ]);
    // Only the target's side failing is the target's fault; a client that
    // resets its own tunnel has simply left.
    let result = match upstream.error {
        Some(kind) => Err(UpstreamError {
            kind: UpstreamErrorKind::Reset,
            addr: target,
            source: io::Error::from(kind).into(),
        }),
        None => Ok(()),
    };
    let _ = closed.send(result);
}

async fn copy(
    client: hyper::upgrade::OnUpgrade,
    upstream: &mut Counted<TcpStream>,
) -> Result<(), filters::Error> {
    let mut client = TokioIo::new(client.await?);
    tokio::io::copy_bidirectional(&mut client, upstream).await?;
    Ok(())
}

/// When, after a drain starts, its open tunnels are closed: a tenth of the
/// drain's time (at most a second) before its deadline, as the export
/// pipeline takes no more spans once the deadline has passed.
pub fn closing_time(drain_timeout: Duration) -> Duration {
    drain_timeout.saturating_sub((drain_timeout / 10).min(Duration::from_secs(1)))
}

/// Resolves when a drain's open tunnels are to close.
async fn deadline(mut drain: Drain, drain_timeout: Duration) {
    drain.signaled().await;
    tokio::time::sleep(closing_time(drain_timeout)).await;
}

/// Reads a 2xx `CONNECT` answer's body to its end on a task of its own,
/// keeping `guard` until then.
///
/// hyper sends such an answer without a body and drops the body unread,
/// but a tunnel's body ends only when the tunnel closes, and what wraps it
/// (span, metrics, the listener's in-flight count in `guard`) must last as
/// long.
pub fn hold(body: HttpBody, guard: impl Send + 'static) {
    tokio::spawn(async move {
        let _guard = guard;
        let mut body = body;
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                break;
            }
        }
    });
}

// === impl TunnelBody ===

impl Body for TunnelBody {
    type Data = Bytes;
    type Error = filters::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, filters::Error>>> {
        let Some(closed) = self.closed.as_mut() else {
            return Poll::Ready(None);
        };
        let result = match Pin::new(closed).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result,
        };
        self.closed = None;
        match result {
            Ok(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            // Closed, or the tunnel task is gone (the runtime is stopping).
            Ok(Ok(())) | Err(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.closed.is_none()
    }
}

// === impl Counted ===

impl<T> Counted<T> {
    fn note<R>(&mut self, result: &io::Result<R>) {
        if let Err(e) = result {
            self.error.get_or_insert(e.kind());
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = std::task::ready!(Pin::new(&mut self.io).poll_read(cx, buf));
        self.read += (buf.filled().len() - before) as u64;
        self.note(&result);
        Poll::Ready(result)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, buf));
        if let Ok(n) = &result {
            self.written += *n as u64;
        }
        self.note(&result);
        Poll::Ready(result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = std::task::ready!(Pin::new(&mut self.io).poll_flush(cx));
        self.note(&result);
        Poll::Ready(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = std::task::ready!(Pin::new(&mut self.io).poll_shutdown(cx));
        // Passing on the client's close to a target that has already gone
        // is no failure of the target.
        if !matches!(&result, Err(e) if e.kind() == io::ErrorKind::NotConnected) {
            self.note(&result);
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{service_fn, ServiceExt};

    fn connect(target: &str) -> Request<HttpBody> {
        Request::builder()
            .method(Method::CONNECT)
            .uri(target)
            .header(http::header::HOST, target)
            .body(filters::empty_body())
            .unwrap()
    }

    fn never_called() -> impl Service<
        Request<HttpBody>,
        Response = Response<HttpBody>,
        Error = filters::Error,
        Future = impl Send,
    > + Clone {
        service_fn(|_req: Request<HttpBody>| async {
            Err::<Response<HttpBody>, filters::Error>("the inner service was called".into())
        })
    }

    fn tunnel_policy(own: &str) -> ConnectPolicy {
        ConnectPolicy::Tunnel(Arc::new(TunnelOptions {
            own: own.parse().unwrap(),
            drain: Drain::never(),
            drain_timeout: Duration::from_secs(1),
        }))
    }

    #[tokio::test]
    async fn inbound_answers_405_validation() {
        let svc = TunnelLayer::new(ConnectPolicy::Refuse).layer(never_called());
        let resp = svc.oneshot(connect("example.com:443")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[rescue::X_SIDETRACE_ERROR], "VALIDATION");
        let failure = resp.extensions().get::<Failure>().copied().unwrap();
        assert_eq!(failure.category, FailureCategory::Validation);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, REFUSED);
    }

    #[tokio::test]
    async fn other_methods_pass_through() {
        let svc = TunnelLayer::new(ConnectPolicy::Refuse).layer(service_fn(
            |_req: Request<HttpBody>| async {
                Ok::<_, filters::Error>(Response::new(filters::empty_body()))
            },
        ));
        let req = Request::get("/").body(filters::empty_body()).unwrap();
        assert_eq!(svc.oneshot(req).await.unwrap().status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn targets_must_be_host_and_port_and_not_the_listener() {
        for (target, want) in [
            ("example.com", "CONNECT target is not host:port"),
            ("/path", "CONNECT target is not host:port"),
            (
                "127.0.0.1:15001",
                "CONNECT to the outbound listener itself (loop)",
            ),
            (
                "localhost:15001",
                "CONNECT to the outbound listener itself (loop)",
            ),
        ] {
            let svc = TunnelLayer::new(tunnel_policy("127.0.0.1:15001")).layer(never_called());
            let req = Request::builder()
                .method(Method::CONNECT)
                .uri(target)
                .body(filters::empty_body())
                .unwrap();
            let error = svc.oneshot(req).await.unwrap_err();
            let bad = error.downcast_ref::<BadRequest>().unwrap();
            assert_eq!(bad.0, want, "{target}");
        }
    }

    #[test]
    fn tunnels_close_shortly_before_the_drain_deadline() {
        let secs = Duration::from_secs;
        assert_eq!(closing_time(secs(30)), secs(29));
        assert_eq!(closing_time(secs(1)), Duration::from_millis(900));
        assert_eq!(closing_time(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn unreachable_target_is_an_upstream_connect_error() {
        // A port just released: nothing listens there.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let svc = TunnelLayer::new(tunnel_policy("127.0.0.1:15001")).layer(never_called());
        let error = svc.oneshot(connect(&addr.to_string())).await.unwrap_err();
        let up = error.downcast_ref::<UpstreamError>().unwrap();
        assert_eq!(up.kind, UpstreamErrorKind::Connect);
        assert_eq!(
            filters::classify::classify_error(&*error).status,
            StatusCode::BAD_GATEWAY
        );
    }
}
