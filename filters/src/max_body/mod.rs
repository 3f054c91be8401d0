#![doc = include_str!("../../../docs/filters/max_body.md")]

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use metrics::Counter;
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use tower::{Layer, Service};

use crate::{
    classify::BodyTooLarge,
    filter_metrics,
    registry::{BuildContext, ConfigError, Filter},
    HttpLayer,
};

/// Config of the `max_body` filter.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaxBodyConfig {
    /// The largest request body admitted, in bytes.
    pub bytes: ByteSize,
}

/// A size as written in the config: a number of bytes or a string with a
/// unit (`512KiB`, `10MB`). Kept as written so that it serializes back to
/// the same text; [`ByteSize::bytes`] parses it, and `validate` reports a
/// bad one against its field.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ByteSize {
    /// A plain number of bytes.
    Count(u64),
    /// A number with a unit.
    Text(String),
}

/// Applies [`MaxBody`] to a service.
#[derive(Clone, Debug)]
pub struct MaxBodyLayer {
    limit: u64,
    rejected: Counter,
}

/// Answers requests whose body is larger than the limit with
/// [`BodyTooLarge`] (413): at once when the declared length says so, or
/// when a streamed body passes the limit.
#[derive(Clone, Debug)]
pub struct MaxBody<S> {
    inner: S,
    limit: u64,
    rejected: Counter,
}

/// A request body that fails with [`BodyTooLarge`] once more than `limit`
/// data bytes have passed.
pub struct LimitedBody<B> {
    inner: B,
    remaining: u64,
    limit: u64,
    /// Told to the response future: whatever error the upstream call ends
    /// with after this body failed (a reset stream, a closed connection)
    /// is this body's doing.
    tripped: Arc<AtomicBool>,
    rejected: Counter,
}

pin_project! {
    /// Response future of [`MaxBody`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        TooLarge { limit: u64 },
        Inner { #[pin] fut: F, tripped: Option<Arc<AtomicBool>>, limit: u64 },
    }
}

// === impl ByteSize ===

impl ByteSize {
    /// The size in bytes, or why it is not one.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            Self::Count(n) => Ok(*n),
            Self::Text(text) => parse_size(text),
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

const UNITS: [(&str, u64); 7] = [
    ("B", 1),
    ("kB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
];

/// `1048576`, `1MiB`, `1 MiB`, `10kB`: an integer and an optional unit.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let unit = unit.trim_start();
    let bad = || {
        format!("{text:?} is not a size: write an integer number of bytes or one with a unit (B, kB, MB, GB, KiB, MiB, GiB), e.g. 1MiB")
    };
    if number.is_empty() {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| bad())?;
    let scale = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|&(_, scale)| scale)
            .ok_or_else(bad)?
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is more than {} bytes", u64::MAX))
}

// === impl MaxBodyConfig ===

impl Filter for MaxBodyConfig {
    const NAME: &'static str = "max_body";

    fn validate(&self) -> Result<(), ConfigError> {
        self.limit().map(drop)
    }

    fn layer(&self, cx: &BuildContext) -> Result<HttpLayer, ConfigError> {
        let layer = MaxBodyLayer::new(self.limit()?)
            .counting(cx.metrics.counter(filter_metrics::BODY_TOO_LARGE));
        Ok(HttpLayer::new(layer))
    }
}

impl MaxBodyConfig {
    fn limit(&self) -> Result<u64, ConfigError> {
        match self.bytes.bytes() {
            Ok(0) => Err(ConfigError {
                field: "bytes",
                message: "must be at least 1 (a body of 0 bytes is no body: leave the filter out or use a method check)".into(),
            }),
            Ok(n) => Ok(n),
            Err(message) => Err(ConfigError {
                field: "bytes",
                message,
            }),
        }
    }
}

// === impl MaxBodyLayer ===

impl MaxBodyLayer {
    /// A layer admitting request bodies of at most `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            rejected: Counter::noop(),
        }
    }

    /// Counts the requests it turns away in `rejected`.
    pub fn counting(mut self, rejected: Counter) -> Self {
        self.rejected = rejected;
        self
    }
}

impl<S> Layer<S> for MaxBodyLayer {
    type Service = MaxBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MaxBody {
            inner,
            limit: self.limit,
            rejected: self.rejected.clone(),
        }
    }
}

// === impl MaxBody ===

/// The declared `Content-Length`; `None` when absent or not a number (hyper
/// refuses such a request before it gets here).
fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl<S> Service<crate::Request> for MaxBody<S>
where
    S: Service<crate::Request>,
    S::Error: Into<crate::Error>,
{
    type Response = S::Response;
    type Error = crate::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: crate::Request) -> Self::Future {
        let limit = self.limit;
        let hint = req.body().size_hint();
        let declared = content_length(req.headers()).unwrap_or(0).max(hint.lower());
        if declared > limit {
            self.rejected.increment(1);
            return ResponseFuture {
                kind: Kind::TooLarge { limit },
            };
        }
        // A body whose length is known (Content-Length, which the server
        // enforces) cannot grow past it: only the others are counted, so a
        // request that fits costs nothing.
        if hint.upper().is_some_and(|upper| upper <= limit) || req.body().is_end_stream() {
            return ResponseFuture {
                kind: Kind::Inner {
                    fut: self.inner.call(req),
                    tripped: None,
                    limit,
                },
            };
        }
        let tripped = Arc::new(AtomicBool::new(false));
        let rejected = self.rejected.clone();
        let watch = tripped.clone();
        let req = req.map(|inner| {
            LimitedBody {
                inner,
                remaining: limit,
                limit,
                tripped: watch,
                rejected,
            }
            .boxed_unsync()
        });
        ResponseFuture {
            kind: Kind::Inner {
                fut: self.inner.call(req),
                tripped: Some(tripped),
                limit,
            },
        }
    }
}

// === impl ResponseFuture ===

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<crate::Error>,
{
    type Output = Result<T, crate::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::TooLarge { limit } => Poll::Ready(Err(BodyTooLarge { limit: *limit }.into())),
            KindProj::Inner {
                fut,
                tripped,
                limit,
            } => match fut.poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(res)) => Poll::Ready(Ok(res)),
                Poll::Ready(Err(e)) => {
                    // Over HTTP/2 hyper's client drops a failed request
                    // body's error and the call fails with the stream reset
                    // it sent, which names no cause: the limit is the cause
                    // once this request's body tripped it.
                    if tripped.as_ref().is_some_and(|t| t.load(Ordering::Acquire)) {
                        return Poll::Ready(Err(BodyTooLarge { limit: *limit }.into()));
                    }
                    Poll::Ready(Err(e.into()))
                }
            },
        }
    }
}

// === impl LimitedBody ===

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes, Error = crate::Error> + Unpin,
{
    type Data = Bytes;
    type Error = crate::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.tripped.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            let len = u64::try_from(data.remaining()).unwrap_or(u64::MAX);
            match this.remaining.checked_sub(len) {
                Some(left) => this.remaining = left,
                None => {
                    this.tripped.store(true, Ordering::Release);
                    this.rejected.increment(1);
                    return Poll::Ready(Some(Err(BodyTooLarge { limit: this.limit }.into())));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.tripped.load(Ordering::Relaxed) || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> fmt::Debug for LimitedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitedBody")
            .field("limit", &self.limit)
            .field("remaining", &self.remaining)
            .finish()
    }
}

#[cfg(test)]
mod tests;
