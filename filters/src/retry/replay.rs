//! The replay buffer: a request body small enough to be sent again.
//!
//! Only bodies that announce their length (`Content-Length`, or an empty
//! body) and fit `max_replay_bytes` are kept; the body is read whole before
//! the first attempt, which is safe because a client that announced a length
//! sends it without waiting for the response. Streams of unknown length
//! (chunked uploads, gRPC client and bidirectional streams) are never
//! buffered, so they are never retried.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::{classify::BadRequest, HttpBody};

/// A request body on its way into the buffer, or already there.
pub(super) enum Replay {
    /// Reading the body; `limit` is its announced length.
    Reading {
        body: HttpBody,
        buf: BytesMut,
        trailers: Option<HeaderMap>,
        limit: usize,
    },
    /// The whole body, ready to be sent any number of times.
    Ready {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
}

/// One copy of a buffered body.
struct ReplayBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

/// How large a body may be kept: `Some(len)` for a body of announced length
/// within `max`, `None` for one that cannot be replayed.
pub(super) fn replayable_len(body: &HttpBody, max: u64) -> Option<usize> {
    if body.is_end_stream() {
        return Some(0);
    }
    body.size_hint()
        .exact()
        .filter(|&n| n <= max)
        .and_then(|n| usize::try_from(n).ok())
}

// === impl Replay ===

impl Replay {
    /// Starts buffering `body` of announced length `len`.
    pub(super) fn new(body: HttpBody, len: usize) -> Self {
        if len == 0 && body.is_end_stream() {
            return Self::Ready {
                data: Bytes::new(),
                trailers: None,
            };
        }
        Self::Reading {
            body,
            buf: BytesMut::with_capacity(len),
            trailers: None,
            limit: len,
        }
    }

    /// Reads until the body is whole. A body longer than it announced is a
    /// bad request; a failing body fails the request with its error.
    pub(super) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), crate::Error>> {
        let Self::Reading {
            body,
            buf,
            trailers,
            limit,
        } = self
        else {
            return Poll::Ready(Ok(()));
        };
        loop {
            match std::task::ready!(Pin::new(&mut *body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if buf.len() + data.len() > *limit {
                            return Poll::Ready(Err(BadRequest(
                                "request body longer than its content-length",
                            )
                            .into()));
                        }
                        buf.extend_from_slice(&data);
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            trailers.get_or_insert_with(HeaderMap::new).extend(t);
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => break,
            }
        }
        *self = Self::Ready {
            data: std::mem::take(buf).freeze(),
            trailers: trailers.take(),
        };
        Poll::Ready(Ok(()))
    }

    /// A fresh copy of the body. Call only once [`poll_read`](Self::poll_read)
    /// is done; before that the copy is empty.
    pub(super) fn body(&self) -> HttpBody {
        match self {
            Self::Ready {
                data,
                trailers: None,
            } if data.is_empty() => crate::empty_body(),
            Self::Ready { data, trailers } => ReplayBody {
                data: (!data.is_empty()).then(|| data.clone()),
                trailers: trailers.clone(),
            }
            .boxed_unsync(),
            Self::Reading { .. } => crate::empty_body(),
        }
    }
}

// === impl ReplayBody ===

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = crate::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::Error>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::future::poll_fn;

    #[tokio::test]
    async fn reads_once_and_replays_many_times() {
        let mut replay = Replay::new(crate::full_body("hello"), 5);
        poll_fn(|cx| replay.poll_read(cx)).await.unwrap();
        for _ in 0..3 {
            let body = replay.body();
            assert_eq!(body.size_hint().exact(), Some(5));
            let bytes = body.collect().await.unwrap().to_bytes();
            assert_eq!(bytes, "hello");
        }
    }

    #[tokio::test]
    async fn a_body_longer_than_announced_is_refused() {
        let mut replay = Replay::new(crate::full_body("hello"), 3);
        let err = poll_fn(|cx| replay.poll_read(cx)).await.unwrap_err();
        assert!(err.is::<BadRequest>());
    }

    #[test]
    fn only_known_small_lengths_are_replayable() {
        assert_eq!(replayable_len(&crate::empty_body(), 0), Some(0));
        assert_eq!(replayable_len(&crate::full_body("abc"), 3), Some(3));
        assert_eq!(replayable_len(&crate::full_body("abcd"), 3), None);
        let chunks = futures_util::stream::iter([Ok::<_, crate::Error>(Frame::data(Bytes::new()))]);
        let stream = http_body_util::StreamBody::new(chunks).boxed_unsync();
        assert_eq!(replayable_len(&stream, 1 << 20), None, "unknown length");
    }
}
