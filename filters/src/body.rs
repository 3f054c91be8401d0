//! A body wrapper that reports, exactly once, how a body ended.
//!
//! Metrics and tracing both need the end of the *response body*, not the
//! arrival of headers: that is when a streaming or gRPC response is done, and
//! gRPC's status lives in the trailers. [`EosBody`] calls its [`OnEos`]
//! callback once with one of: ended (with trailers, if any), failed, or
//! cancelled (dropped before the end: the client went away).
//!
//! It fires as soon as the inner body reports `is_end_stream` after a frame,
//! because the peer may never poll again once it has seen the last frame.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Buf;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// How a body ended.
#[derive(Debug)]
pub enum Eos<'a> {
    /// All frames were read; `trailers` if the body had them.
    Done {
        /// The trailers, e.g. gRPC's `grpc-status`.
        trailers: Option<&'a HeaderMap>,
    },
    /// Reading the body failed.
    Error(&'a crate::Error),
    /// The body was dropped before its end.
    Cancelled,
}

/// How a request ended, as the metrics record it and span hooks see it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// Response status, when a response was produced.
    pub status: Option<http::StatusCode>,
    /// gRPC status, from trailers or a trailers-only response.
    pub grpc: Option<crate::classify::GrpcCode>,
    /// The failure, when the response was one (set by the proxy's rescue
    /// layer, or classified from status and gRPC status).
    pub failure: Option<crate::classify::Failure>,
    /// The client went away before the end (not a failure).
    pub cancelled: bool,
    /// Response body bytes sent.
    pub response_bytes: u64,
}

impl Outcome {
    /// Folds in how the response body ended: the gRPC status of its
    /// trailers, a broken body as an upstream reset (unless a failure was
    /// already known), a dropped body as cancelled.
    pub fn end(&mut self, eos: Eos<'_>, bytes: u64) {
        self.response_bytes = bytes;
        match eos {
            Eos::Done { trailers } => {
                if let Some(code) = trailers.and_then(crate::classify::GrpcCode::from_headers) {
                    self.grpc = Some(code);
                }
            }
            Eos::Error(_) => {
                if self.failure.is_none() {
                    self.failure = Some(crate::classify::Failure::new(
                        crate::classify::FailureCategory::Network,
                        crate::classify::ErrorType::UpstreamReset,
                    ));
                }
            }
            Eos::Cancelled => self.cancelled = true,
        }
    }
}

/// Receives the end of a body. Runs once, on the task that polls the body.
pub trait OnEos: Send + 'static {
    /// Called once with the outcome and the number of data bytes seen.
    fn on_eos(self, eos: Eos<'_>, bytes: u64);
}

pin_project! {
    /// A body that calls an [`OnEos`] once when it ends, fails or is dropped.
    pub struct EosBody<B, O: OnEos> {
        #[pin]
        inner: B,
        on_eos: Option<O>,
        bytes: u64,
    }

    impl<B, O: OnEos> PinnedDrop for EosBody<B, O> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(on_eos) = this.on_eos.take() {
                on_eos.on_eos(Eos::Cancelled, *this.bytes);
            }
        }
    }
}

// === impl EosBody ===

impl<B: Body, O: OnEos> EosBody<B, O> {
    /// Wraps `inner`. An already-finished body (no content) reports at once.
    pub fn new(inner: B, on_eos: O) -> Self {
        let mut on_eos = Some(on_eos);
        if inner.is_end_stream() {
            if let Some(o) = on_eos.take() {
                o.on_eos(Eos::Done { trailers: None }, 0);
            }
        }
        Self {
            inner,
            on_eos,
            bytes: 0,
        }
    }
}

impl<B, O> Body for EosBody<B, O>
where
    B: Body,
    B::Error: Into<crate::Error>,
    O: OnEos,
{
    type Data = B::Data;
    type Error = crate::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = match this.inner.as_mut().poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(f) => f,
        };
        match frame {
            None => {
                if let Some(o) = this.on_eos.take() {
                    o.on_eos(Eos::Done { trailers: None }, *this.bytes);
                }
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                let e: crate::Error = e.into();
                if let Some(o) = this.on_eos.take() {
                    o.on_eos(Eos::Error(&e), *this.bytes);
                }
                Poll::Ready(Some(Err(e)))
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.remaining() as u64;
                }
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(o) = this.on_eos.take() {
                        o.on_eos(
                            Eos::Done {
                                trailers: Some(trailers),
                            },
                            *this.bytes,
                        );
                    }
                } else if this.inner.is_end_stream() {
                    if let Some(o) = this.on_eos.take() {
                        o.on_eos(Eos::Done { trailers: None }, *this.bytes);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    };

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    #[derive(Clone, Default)]
    struct Record(Arc<parking_lot::Mutex<Vec<String>>>, Arc<AtomicU64>);

    impl OnEos for Record {
        fn on_eos(self, eos: Eos<'_>, bytes: u64) {
            let what = match eos {
                Eos::Done { trailers: None } => "done".to_string(),
                Eos::Done { trailers: Some(t) } => format!("trailers:{}", t.len()),
                Eos::Error(e) => format!("error:{e}"),
                Eos::Cancelled => "cancelled".to_string(),
            };
            self.0.lock().push(what);
            self.1.store(bytes, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn full_body_reports_done_once_with_bytes() {
        let rec = Record::default();
        let body = EosBody::new(Full::new(Bytes::from_static(b"hello")), rec.clone());
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected, "hello");
        assert_eq!(*rec.0.lock(), vec!["done"]);
        assert_eq!(rec.1.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn empty_body_reports_at_construction() {
        let rec = Record::default();
        let body = EosBody::new(http_body_util::Empty::<Bytes>::new(), rec.clone());
        assert_eq!(*rec.0.lock(), vec!["done"]);
        drop(body);
        assert_eq!(
            rec.0.lock().len(),
            1,
            "drop after end must not report again"
        );
    }

    #[tokio::test]
    async fn trailers_are_reported() {
        let rec = Record::default();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("5"));
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"abc"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = EosBody::new(
            StreamBody::new(futures_util::stream::iter(frames)),
            rec.clone(),
        );
        let _ = body.collect().await.unwrap();
        assert_eq!(*rec.0.lock(), vec!["trailers:1"]);
        assert_eq!(rec.1.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn dropped_mid_body_is_cancelled() {
        let rec = Record::default();
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"abc"))),
            Ok(Frame::data(Bytes::from_static(b"def"))),
        ];
        let mut body = EosBody::new(
            StreamBody::new(futures_util::stream::iter(frames)),
            rec.clone(),
        );
        let _first = body.frame().await.unwrap().unwrap();
        drop(body);
        assert_eq!(*rec.0.lock(), vec!["cancelled"]);
        assert_eq!(rec.1.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn errors_are_reported() {
        let rec = Record::default();
        let frames: Vec<Result<Frame<Bytes>, crate::Error>> = vec![Err("reset".into())];
        let body = EosBody::new(
            StreamBody::new(futures_util::stream::iter(frames)),
            rec.clone(),
        );
        assert!(body.collect().await.is_err());
        assert_eq!(*rec.0.lock(), vec!["error:reset"]);
    }
}
