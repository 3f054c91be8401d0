//! Context propagation: read the caller's trace context from request headers
//! and write the proxy's own into the upstream request.
//!
//! Formats are tried in the configured order (by default `tracecontext`,
//! `baggage`, `b3`, `legacy`; `xray`, `jaeger` and `datadog` when listed);
//! the first one that yields a trace id wins. A malformed header is ignored
//! (a fresh trace starts) and reported in [`Extracted::errors`] so the caller
//! counts `sidetrace_propagation_errors_total{format}`; parsing never panics.
//!
//! Ids are byte arrays parsed straight from header bytes, and header values
//! are kept as the [`HeaderValue`]s they arrived in (a refcount, not a copy):
//! no per-request `String` or map. Formats sidetrace does not build in come
//! through the OpenTelemetry API instead ([`custom`]), off this byte path.
//!
//! ```
//! use filters::trace::propagation::{extract, inject, Propagators, InjectContext};
//! use filters::trace::{SpanId, TraceId};
//!
//! let mut headers = http::HeaderMap::new();
//! headers.insert(
//!     "traceparent",
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap(),
//! );
//! let all = Propagators::default();
//! let ctx = extract(&all, &headers);
//! assert_eq!(ctx.sampled, Some(true));
//! let trace_id = ctx.trace_id.unwrap();
//! let x_trace_id = inject(&all, &mut headers, &InjectContext {
//!     trace_id,
//!     span_id: SpanId::random(),
//!     sampled: true,
//!     extracted: &ctx,
//! });
//! assert!(headers["traceparent"].to_str().unwrap().contains("4bf92f3577b34da6a3ce929d0e0e4736"));
//! assert!(headers.contains_key("x-request-id"));
//! assert_eq!(x_trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
//! ```

pub mod b3;
pub mod baggage;
pub mod custom;
pub mod datadog;
mod encoded;
pub mod jaeger;
pub mod legacy;
pub mod w3c;
pub mod xray;

use std::fmt;

use http::{header::HeaderName, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

pub(crate) use self::encoded::Encoded;
use super::context::{SpanId, TraceId};

/// One propagation format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Propagator {
    /// W3C `traceparent` + `tracestate`.
    #[serde(rename = "tracecontext")]
    TraceContext,
    /// W3C `baggage`, kept verbatim.
    Baggage,
    /// Zipkin B3, single `b3` header or multi `x-b3-*` headers (`b3multi`
    /// is accepted as another name for it).
    #[serde(alias = "b3multi")]
    B3,
    /// `x-trace-id` / `x-request-id`.
    Legacy,
    /// AWS X-Ray `X-Amzn-Trace-Id`, as load balancers and X-Ray SDKs send it.
    #[serde(rename = "xray")]
    XRay,
    /// Jaeger `uber-trace-id` (and `uberctx-*` baggage).
    Jaeger,
    /// Datadog `x-datadog-trace-id`, `x-datadog-parent-id`,
    /// `x-datadog-sampling-priority` (and `x-datadog-tags`).
    Datadog,
}

/// The configured formats, in order; `Copy`, so a layer clones it for free.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Propagators {
    order: [Propagator; Propagator::COUNT],
    len: u8,
    /// The same formats as a bit set, for [`contains`](Self::contains).
    mask: u8,
}

/// Formats whose headers were present but malformed, as a small bit set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PropagationErrors(u8);

/// What the incoming request said about its trace.
#[derive(Clone, Debug, Default)]
pub struct Extracted {
    /// The caller's trace id, when a format supplied one.
    pub trace_id: Option<TraceId>,
    /// The caller's span, the parent of the proxy's span (none for legacy ids).
    pub parent_span_id: Option<SpanId>,
    /// The caller's sampling decision, when it made one.
    pub sampled: Option<bool>,
    /// Which format supplied the context.
    pub format: Option<Propagator>,
    /// `tracestate`, verbatim, when it accompanied a valid `traceparent`.
    pub tracestate: Option<HeaderValue>,
    /// `baggage`, verbatim, when valid.
    pub baggage: Option<HeaderValue>,
    /// An `x-request-id` that is not an id: recorded as the attribute
    /// `http.request.header.x-request-id`.
    pub request_id: Option<HeaderValue>,
    /// The X-Ray fields other than `Root`, `Parent` and `Sampled` (`Self`,
    /// `Lineage`, ...), `;`-joined, when X-Ray supplied the context: they go
    /// back out in the rewritten header.
    pub xray_extra: Option<HeaderValue>,
    /// `x-datadog-sampling-priority` as it came, when Datadog supplied the
    /// context: passed on unchanged while the decision agrees with it.
    pub datadog_priority: Option<HeaderValue>,
    /// `x-datadog-tags` as it came (valid), when Datadog supplied the context.
    pub datadog_tags: Option<HeaderValue>,
    /// Formats whose headers were present but malformed.
    pub errors: PropagationErrors,
}

/// What [`inject`] writes: the proxy span's context.
#[derive(Clone, Copy, Debug)]
pub struct InjectContext<'a> {
    /// The trace id (the caller's, or a fresh one).
    pub trace_id: TraceId,
    /// The proxy's span: the parent of the upstream's span.
    pub span_id: SpanId,
    /// The sampling decision passed on.
    pub sampled: bool,
    /// What came in (tracestate, baggage and which b3 form to answer in).
    pub extracted: &'a Extracted,
}

/// Header names, as constants so lookups never parse a name.
pub mod headers {
    use http::header::HeaderName;

    /// W3C `traceparent`.
    pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
    /// W3C `tracestate`.
    pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
    /// W3C `baggage`.
    pub const BAGGAGE: HeaderName = HeaderName::from_static("baggage");
    /// B3 single header.
    pub const B3: HeaderName = HeaderName::from_static("b3");
    /// B3 multi: trace id.
    pub const X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
    /// B3 multi: span id.
    pub const X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
    /// B3 multi: parent span id.
    pub const X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
    /// B3 multi: sampled.
    pub const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
    /// B3 multi: debug flag.
    pub const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
    /// Legacy trace id.
    pub const X_TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");
    /// Request id.
    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    /// AWS X-Ray.
    pub const X_AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");
    /// Jaeger.
    pub const UBER_TRACE_ID: HeaderName = HeaderName::from_static("uber-trace-id");
    /// Datadog: the low 64 bits of the trace id, in decimal.
    pub const X_DATADOG_TRACE_ID: HeaderName = HeaderName::from_static("x-datadog-trace-id");
    /// Datadog: the caller's span id, in decimal.
    pub const X_DATADOG_PARENT_ID: HeaderName = HeaderName::from_static("x-datadog-parent-id");
    /// Datadog: the sampling priority (`-1`, `0`, `1`, `2`).
    pub const X_DATADOG_SAMPLING_PRIORITY: HeaderName =
        HeaderName::from_static("x-datadog-sampling-priority");
    /// Datadog: propagated tags, among them `_dd.p.tid` (the high 64 bits).
    pub const X_DATADOG_TAGS: HeaderName = HeaderName::from_static("x-datadog-tags");
}

// === impl Propagator ===

impl Propagator {
    /// The config name, also the `format` label of the error counter.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TraceContext => "tracecontext",
            Self::Baggage => "baggage",
            Self::B3 => "b3",
            Self::Legacy => "legacy",
            Self::XRay => "xray",
            Self::Jaeger => "jaeger",
            Self::Datadog => "datadog",
        }
    }

    /// How many formats there are.
    pub const COUNT: usize = 7;

    /// Every format, in index order (per-format counters are registered for
    /// all of them).
    pub const ALL: [Self; Self::COUNT] = [
        Self::TraceContext,
        Self::Baggage,
        Self::B3,
        Self::Legacy,
        Self::XRay,
        Self::Jaeger,
        Self::Datadog,
    ];

    /// The formats configured when `tracing.propagators` is not set. X-Ray,
    /// Jaeger and Datadog are opt-in: each adds headers to every upstream
    /// request.
    pub const DEFAULT: [Self; 4] = [Self::TraceContext, Self::Baggage, Self::B3, Self::Legacy];

    const fn bit(self) -> u8 {
        1 << self.index()
    }

    /// Index into per-format arrays (counters).
    pub const fn index(self) -> usize {
        match self {
            Self::TraceContext => 0,
            Self::Baggage => 1,
            Self::B3 => 2,
            Self::Legacy => 3,
            Self::XRay => 4,
            Self::Jaeger => 5,
            Self::Datadog => 6,
        }
    }

    /// The format an `OTEL_PROPAGATORS` name stands for, by the names of the
    /// OpenTelemetry specification and contrib (`b3multi` is B3 too);
    /// `None` for a name sidetrace does not build in.
    pub fn from_otel_name(name: &str) -> Option<Self> {
        Some(match name {
            "tracecontext" => Self::TraceContext,
            "baggage" => Self::Baggage,
            "b3" | "b3multi" => Self::B3,
            "legacy" => Self::Legacy,
            "xray" => Self::XRay,
            "jaeger" => Self::Jaeger,
            "datadog" => Self::Datadog,
            _ => return None,
        })
    }
}

impl fmt::Display for Propagator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Propagators ===

impl Propagators {
    /// No format: context is neither read nor written.
    pub const NONE: Self = Self {
        order: Propagator::ALL,
        len: 0,
        mask: 0,
    };

    /// The given formats in order; a repeated format is kept once.
    pub fn new(list: &[Propagator]) -> Self {
        let mut out = Self::NONE;
        for &p in list {
            if !out.contains(p) && usize::from(out.len) < out.order.len() {
                out.order[usize::from(out.len)] = p;
                out.len += 1;
                out.mask |= p.bit();
            }
        }
        out
    }

    /// Every format, in the order of [`Propagator::ALL`].
    pub fn all() -> Self {
        Self::new(&Propagator::ALL)
    }

    /// Parses `OTEL_PROPAGATORS` (`tracecontext,baggage,b3,b3multi,xray,
    /// jaeger,datadog,legacy,none`). A format sidetrace does not build in
    /// (`ottrace`, ...) is an error naming it: it can be added through the
    /// OpenTelemetry API ([`custom`]).
    pub fn from_otel_env(value: &str) -> Result<Self, String> {
        let mut list = Vec::new();
        for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match Propagator::from_otel_name(name) {
                Some(p) => list.push(p),
                None if name == "none" => {}
                None => {
                    return Err(format!(
                        "unsupported propagator {name:?} (built in: tracecontext, baggage, \
                         b3, b3multi, xray, jaeger, datadog, legacy, none)"
                    ))
                }
            }
        }
        Ok(Self::new(&list))
    }

    /// The formats in order.
    pub fn iter(&self) -> impl Iterator<Item = Propagator> + '_ {
        self.order[..usize::from(self.len)].iter().copied()
    }

    /// Whether `p` is configured.
    pub fn contains(&self, p: Propagator) -> bool {
        self.mask & p.bit() != 0
    }
}

impl Default for Propagators {
    fn default() -> Self {
        Self::new(&Propagator::DEFAULT)
    }
}

impl fmt::Debug for Propagators {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

// === impl PropagationErrors ===

impl PropagationErrors {
    /// Marks `p` as malformed.
    pub fn add(&mut self, p: Propagator) {
        self.0 |= p.bit();
    }

    /// Whether any format was malformed.
    pub fn any(&self) -> bool {
        self.0 != 0
    }

    /// Whether `p` was malformed.
    pub fn contains(&self, p: Propagator) -> bool {
        self.0 & p.bit() != 0
    }

    /// The malformed formats.
    pub fn iter(self) -> impl Iterator<Item = Propagator> {
        Propagator::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

// === extract and inject ===

/// Reads the trace context of a request, trying formats in order.
pub fn extract(propagators: &Propagators, headers: &HeaderMap) -> Extracted {
    let mut out = Extracted::default();
    for p in propagators.iter() {
        match p {
            Propagator::TraceContext => {
                if out.trace_id.is_none() {
                    w3c::extract(headers, &mut out);
                }
            }
            Propagator::Baggage => baggage::extract(headers, &mut out),
            Propagator::B3 => {
                if out.trace_id.is_none() {
                    b3::extract(headers, &mut out);
                }
            }
            // Legacy always runs so that a non-id x-request-id is recorded.
            Propagator::Legacy => legacy::extract(headers, &mut out),
            Propagator::XRay => {
                if out.trace_id.is_none() {
                    xray::extract(headers, &mut out);
                }
            }
            Propagator::Jaeger => {
                if out.trace_id.is_none() {
                    jaeger::extract(headers, &mut out);
                }
            }
            Propagator::Datadog => {
                if out.trace_id.is_none() {
                    datadog::extract(headers, &mut out);
                }
            }
        }
    }
    if propagators.contains(Propagator::Jaeger) && propagators.contains(Propagator::Baggage) {
        jaeger::merge_baggage(headers, &mut out);
    }
    out
}

/// Writes the proxy span's context into the upstream request in every
/// configured format, keeps `tracestate` and `baggage` when valid, and adds
/// `x-request-id` when absent.
///
/// Returns the trace id as a header value (32 hex digits) for the
/// `x-trace-id` response header. Every header value is encoded once into one
/// shared buffer that the written headers slice (a refcount each), so the
/// W3C, B3, X-Ray, Jaeger, Datadog and legacy headers together cost one
/// allocation.
pub fn inject(
    propagators: &Propagators,
    headers: &mut HeaderMap,
    cx: &InjectContext<'_>,
) -> HeaderValue {
    let encoded = Encoded::new(propagators, cx);
    for p in propagators.iter() {
        match p {
            Propagator::TraceContext => w3c::inject(headers, cx, &encoded),
            Propagator::Baggage => baggage::inject(headers, cx),
            Propagator::B3 => b3::inject(headers, cx, &encoded),
            Propagator::Legacy => legacy::inject(headers, &encoded),
            Propagator::XRay => xray::inject(headers, &encoded),
            Propagator::Jaeger => jaeger::inject(headers, cx, &encoded),
            Propagator::Datadog => datadog::inject(headers, cx, &encoded),
        }
    }
    if !headers.contains_key(headers::X_REQUEST_ID) {
        headers.insert(headers::X_REQUEST_ID, header_value(&cx.trace_id.to_uuid()));
    }
    encoded.trace_hex()
}

/// A header value from bytes we produced (hex digits and dashes). Every
/// such buffer is valid, so the fallback is never taken.
pub(crate) fn header_value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The only value of a header; `Err(())` when it is repeated (malformed for
/// every single-valued propagation header).
pub(crate) fn single<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a HeaderValue>, ()> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(());
    }
    Ok(first)
}

#[cfg(test)]
mod tests;
