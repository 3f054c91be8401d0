//! The proxy span's context, encoded once per request into one buffer that
//! every injected header slices.
//!
//! `traceparent` comes first (its hex ids double as the B3 and legacy
//! values); X-Ray, Jaeger and Datadog values follow when those formats are
//! configured. One allocation covers every format.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderValue;

use super::{datadog, jaeger, xray, InjectContext, Propagator, Propagators};

/// The encoded headers of one request.
pub(crate) struct Encoded {
    buf: Bytes,
    xray: Range<usize>,
    jaeger: Range<usize>,
    datadog_trace: Range<usize>,
    datadog_parent: Range<usize>,
    datadog_tags: Range<usize>,
}

/// Where the part that `write` appends to `buf` lies.
fn part(buf: &mut BytesMut, write: impl FnOnce(&mut BytesMut)) -> Range<usize> {
    let start = buf.len();
    write(buf);
    start..buf.len()
}

// === impl Encoded ===

impl Encoded {
    pub(crate) fn new(propagators: &Propagators, cx: &InjectContext<'_>) -> Self {
        let has = |p| propagators.contains(p);
        let mut cap = 55;
        if has(Propagator::XRay) {
            cap += xray::encoded_len(cx);
        }
        if has(Propagator::Jaeger) {
            cap += jaeger::ENCODED_LEN;
        }
        if has(Propagator::Datadog) {
            cap += datadog::encoded_len(cx);
        }
        let mut buf = BytesMut::with_capacity(cap);
        buf.put_slice(b"00-");
        buf.put_slice(&cx.trace_id.to_hex());
        buf.put_slice(b"-");
        buf.put_slice(&cx.span_id.to_hex());
        buf.put_slice(if cx.sampled { b"-01" } else { b"-00" });
        let xray = match has(Propagator::XRay) {
            true => part(&mut buf, |b| xray::encode(b, cx)),
            false => 0..0,
        };
        let jaeger = match has(Propagator::Jaeger) {
            true => part(&mut buf, |b| jaeger::encode(b, cx)),
            false => 0..0,
        };
        let (datadog_trace, datadog_parent, datadog_tags) = match has(Propagator::Datadog) {
            true => (
                part(&mut buf, |b| datadog::encode_trace_id(b, cx)),
                part(&mut buf, |b| datadog::encode_parent_id(b, cx)),
                part(&mut buf, |b| datadog::encode_tags(b, cx)),
            ),
            false => (0..0, 0..0, 0..0),
        };
        Self {
            buf: buf.freeze(),
            xray,
            jaeger,
            datadog_trace,
            datadog_parent,
            datadog_tags,
        }
    }

    fn slice(&self, range: &Range<usize>) -> HeaderValue {
        shared(self.buf.slice(range.clone()))
    }

    /// `00-<trace>-<span>-<flags>`.
    pub(crate) fn traceparent(&self) -> HeaderValue {
        self.slice(&(0..55))
    }

    /// The trace id, 32 hex digits.
    pub(crate) fn trace_hex(&self) -> HeaderValue {
        self.slice(&(3..35))
    }

    /// The span id, 16 hex digits.
    pub(crate) fn span_hex(&self) -> HeaderValue {
        self.slice(&(36..52))
    }

    /// `X-Amzn-Trace-Id`.
    pub(crate) fn xray(&self) -> HeaderValue {
        self.slice(&self.xray)
    }

    /// `uber-trace-id`.
    pub(crate) fn jaeger(&self) -> HeaderValue {
        self.slice(&self.jaeger)
    }

    /// `x-datadog-trace-id`.
    pub(crate) fn datadog_trace_id(&self) -> HeaderValue {
        self.slice(&self.datadog_trace)
    }

    /// `x-datadog-parent-id`.
    pub(crate) fn datadog_parent_id(&self) -> HeaderValue {
        self.slice(&self.datadog_parent)
    }

    /// `x-datadog-tags`; `None` when there is nothing to send.
    pub(crate) fn datadog_tags(&self) -> Option<HeaderValue> {
        (!self.datadog_tags.is_empty()).then(|| self.slice(&self.datadog_tags))
    }
}

/// A header value over bytes we produced (hex and decimal digits, fixed
/// punctuation, and fields copied from valid header values), without copying
/// them. Every such buffer is valid, so the fallback is never taken.
fn shared(bytes: Bytes) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| HeaderValue::from_static(""))
}
