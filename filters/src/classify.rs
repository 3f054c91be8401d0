//! Failure classification: one function from an outcome (HTTP status, gRPC
//! status, or a typed error from the stack) to a [`Failure`].
//!
//! The same answer feeds span status, the `failure_category` and `error_type`
//! metric labels, the `x-sidetrace-error` header and the access log, so the
//! three can never disagree. Categories follow DESIGN section 5:
//!
//! | category   | severity | from |
//! |------------|----------|------|
//! | VALIDATION | medium   | any 4xx; gRPC INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, UNAUTHENTICATED, FAILED_PRECONDITION, OUT_OF_RANGE, RESOURCE_EXHAUSTED, ABORTED |
//! | NETWORK    | high     | connect refused, reset, timeouts, 502/503/504; gRPC UNAVAILABLE, DEADLINE_EXCEEDED |
//! | INTERNAL   | critical | other 5xx, proxy errors, panics; gRPC INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED |
//!
//! A client that goes away (gRPC CANCELLED, a dropped body) is `cancelled`, not
//! a failure.

use std::{borrow::Cow, fmt, time::Duration};

use http::StatusCode;

/// The failure categories of DESIGN section 5.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureCategory {
    /// The request was wrong: 4xx and the gRPC codes that mean "bad input".
    Validation,
    /// The network or a dependency failed: connect errors, resets, timeouts, 502/503/504.
    Network,
    /// Something broke inside: other 5xx, proxy bugs, panics.
    Internal,
}

/// What a failed outcome was, as the `error_type` label and `error.type` attribute carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// An HTTP status that counts as an error.
    Status(StatusCode),
    /// A non-OK gRPC status.
    Grpc(GrpcCode),
    /// The request ran past its deadline.
    Timeout,
    /// The upstream could not be reached.
    ConnectError,
    /// The upstream connection broke mid-request.
    UpstreamReset,
    /// The upstream spoke a protocol we could not use.
    UpstreamProtocol,
    /// The TLS handshake with the upstream failed (not a certificate problem).
    TlsHandshake,
    /// The upstream's certificate was refused: unknown issuer, expired,
    /// wrong name, or revoked.
    TlsCertificate,
    /// A rate limit turned the request away.
    RateLimited,
    /// A concurrency limit turned the request away.
    Overloaded,
    /// A circuit breaker is open.
    CircuitOpen,
    /// The request body was larger than a `max_body` limit.
    BodyTooLarge,
    /// A filter panicked.
    Panic,
    /// The request itself was malformed.
    BadRequest,
    /// An error nobody typed; a bug in the proxy.
    Internal,
}

/// A gRPC status code (0..=16; other values are kept as they came).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrpcCode(pub u16);

/// A classified failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Failure {
    /// VALIDATION, NETWORK or INTERNAL.
    pub category: FailureCategory,
    /// What exactly happened.
    pub error_type: ErrorType,
}

/// A failure the proxy answered itself: the response it sends and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Synthetic {
    /// HTTP status of the synthetic response (gRPC requests still get 200 + `grpc-status`).
    pub status: StatusCode,
    /// `grpc-status` for gRPC requests.
    pub grpc: GrpcCode,
    /// The classification.
    pub failure: Failure,
}

/// The request ran past the configured deadline.
#[derive(Debug, thiserror::Error)]
#[error("request timed out after {0:?}")]
pub struct RequestTimeout(pub Duration);

/// A rate limit turned the request away.
#[derive(Debug, thiserror::Error)]
#[error("rate limit of {per_second}/s exceeded")]
pub struct RateLimited {
    /// The configured rate.
    pub per_second: u32,
}

/// Too many requests in flight.
#[derive(Debug, thiserror::Error)]
#[error("concurrency limit of {max} in-flight requests reached")]
pub struct Overloaded {
    /// The configured limit.
    pub max: usize,
}

/// The circuit breaker is open.
#[derive(Debug, thiserror::Error)]
#[error("circuit open: upstream failing, retry after {retry_after:?}")]
pub struct CircuitOpen {
    /// How long until the breaker lets a probe through.
    pub retry_after: Duration,
}

/// The request body is larger than a `max_body` filter admits: declared so
/// by its `Content-Length`, or found so as it streamed. The client's fault:
/// 413, VALIDATION.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than the limit of {limit} bytes")]
pub struct BodyTooLarge {
    /// The configured limit in bytes.
    pub limit: u64,
}

/// A filter or hook panicked while handling the request.
#[derive(Debug, thiserror::Error)]
#[error("panic in request handling: {message}")]
pub struct Panicked {
    /// The panic payload, when it was a string.
    pub message: String,
}

/// The request was rejected before it reached any filter.
#[derive(Debug, thiserror::Error)]
#[error("bad request: {0}")]
pub struct BadRequest(pub &'static str);

/// The client's request body failed: broken framing (a bad chunk size, a
/// connection closed mid-body) or no data for the body idle timeout. The
/// client's fault, never the upstream's: 400 or 408, VALIDATION.
#[derive(Debug, thiserror::Error)]
#[error("request body from the client: {kind}")]
pub struct ClientBodyError {
    /// What went wrong.
    pub kind: ClientBodyErrorKind,
}

/// How a client's request body failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientBodyErrorKind {
    /// The body was malformed or cut off.
    #[error("malformed or incomplete")]
    Framing,
    /// The body stopped arriving for longer than the body idle timeout.
    #[error("no data for {0:?}")]
    Idle(Duration),
}

/// How a call to the upstream failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// TCP connect failed.
    Connect,
    /// The TLS handshake failed for a reason other than the certificate
    /// (no common protocol, a peer that does not speak TLS, an alert).
    TlsHandshake,
    /// The upstream's certificate did not verify.
    TlsCertificate,
    /// The connection closed or reset before the response completed.
    Reset,
    /// The upstream broke the protocol (e.g. an HTTP/1-only app spoken to in HTTP/2).
    Protocol,
    /// The upstream did not start its response (status and headers) in time.
    ResponseHeadTimeout,
    /// Every allowed upstream connection was busy for the whole queue time:
    /// the request was shed with 503 before it reached the upstream.
    Saturated,
}

/// A call to the upstream failed.
#[derive(Debug, thiserror::Error)]
#[error("upstream {addr}: {kind:?}: {source}")]
pub struct UpstreamError {
    /// What failed.
    pub kind: UpstreamErrorKind,
    /// The upstream authority.
    pub addr: http::uri::Authority,
    /// The underlying error.
    #[source]
    pub source: crate::Error,
}

// === impl FailureCategory ===

impl FailureCategory {
    /// The label value: `VALIDATION`, `NETWORK` or `INTERNAL`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Validation => "VALIDATION",
            Self::Network => "NETWORK",
            Self::Internal => "INTERNAL",
        }
    }

    /// The severity DESIGN assigns: medium, high, critical.
    pub const fn severity(self) -> &'static str {
        match self {
            Self::Validation => "medium",
            Self::Network => "high",
            Self::Internal => "critical",
        }
    }
}

impl fmt::Display for FailureCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl GrpcCode ===

impl GrpcCode {
    /// OK.
    pub const OK: Self = Self(0);
    /// CANCELLED: the client went away.
    pub const CANCELLED: Self = Self(1);
    /// DEADLINE_EXCEEDED.
    pub const DEADLINE_EXCEEDED: Self = Self(4);
    /// RESOURCE_EXHAUSTED.
    pub const RESOURCE_EXHAUSTED: Self = Self(8);
    /// INTERNAL.
    pub const INTERNAL: Self = Self(13);
    /// UNAVAILABLE.
    pub const UNAVAILABLE: Self = Self(14);
    /// INVALID_ARGUMENT.
    pub const INVALID_ARGUMENT: Self = Self(3);

    /// The `grpc-status` of a trailers-only response's headers, or of trailers.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        // A `HeaderName` rather than a `&str`: a `&str` key is parsed and
        // validated again on every lookup (every response, twice).
        static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
        Self::parse(headers.get(&GRPC_STATUS)?.as_bytes())
    }

    /// Parses a `grpc-status` value; `None` when it is not a number.
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.is_empty() || value.len() > 5 {
            return None;
        }
        let mut n: u16 = 0;
        for &b in value {
            if !b.is_ascii_digit() {
                return None;
            }
            n = n.checked_mul(10)?.checked_add(u16::from(b - b'0'))?;
        }
        Some(Self(n))
    }

    /// The numeric value as the `rpc_grpc_status_code` label carries it.
    pub fn as_str(self) -> Cow<'static, str> {
        const CODES: [&str; 17] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16",
        ];
        match CODES.get(usize::from(self.0)) {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(self.0.to_string()),
        }
    }

    /// The canonical name, e.g. `NOT_FOUND`.
    pub const fn name(self) -> &'static str {
        match self.0 {
            0 => "OK",
            1 => "CANCELLED",
            2 => "UNKNOWN",
            3 => "INVALID_ARGUMENT",
            4 => "DEADLINE_EXCEEDED",
            5 => "NOT_FOUND",
            6 => "ALREADY_EXISTS",
            7 => "PERMISSION_DENIED",
            8 => "RESOURCE_EXHAUSTED",
            9 => "FAILED_PRECONDITION",
            10 => "ABORTED",
            11 => "OUT_OF_RANGE",
            12 => "UNIMPLEMENTED",
            13 => "INTERNAL",
            14 => "UNAVAILABLE",
            15 => "DATA_LOSS",
            16 => "UNAUTHENTICATED",
            _ => "UNKNOWN",
        }
    }
}

// === impl ErrorType ===

impl ErrorType {
    /// The `error_type` label value: a status code as a string, a gRPC code
    /// name, or a short word for proxy errors.
    pub fn as_str(self) -> Cow<'static, str> {
        match self {
            Self::Status(s) => status_str(s),
            Self::Grpc(code) => Cow::Borrowed(code.name()),
            Self::Timeout => Cow::Borrowed("timeout"),
            Self::ConnectError => Cow::Borrowed("connect_error"),
            Self::UpstreamReset => Cow::Borrowed("upstream_reset"),
            Self::UpstreamProtocol => Cow::Borrowed("upstream_protocol_error"),
            Self::TlsHandshake => Cow::Borrowed("tls_handshake"),
            Self::TlsCertificate => Cow::Borrowed("tls_certificate"),
            Self::RateLimited => Cow::Borrowed("rate_limited"),
            Self::Overloaded => Cow::Borrowed("overloaded"),
            Self::CircuitOpen => Cow::Borrowed("circuit_open"),
            Self::BodyTooLarge => Cow::Borrowed("body_too_large"),
            Self::Panic => Cow::Borrowed("panic"),
            Self::BadRequest => Cow::Borrowed("bad_request"),
            Self::Internal => Cow::Borrowed("internal"),
        }
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// A status code as a `'static` string where it is a registered one.
pub fn status_str(status: StatusCode) -> Cow<'static, str> {
    macro_rules! table {
        ($($n:literal),*) => {
            match status.as_u16() {
                $($n => Cow::Borrowed(stringify!($n)),)*
                other => Cow::Owned(other.to_string()),
            }
        };
    }
    table!(
        100, 101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 402, 403, 404,
        405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 421, 422, 423, 424,
        425, 426, 428, 429, 431, 451, 499, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511
    )
}

// === impl Failure ===

impl Failure {
    /// Builds a failure.
    pub const fn new(category: FailureCategory, error_type: ErrorType) -> Self {
        Self {
            category,
            error_type,
        }
    }
}

/// Classifies an HTTP status; `None` when it is not a failure (1xx–3xx).
pub fn classify_status(status: StatusCode) -> Option<Failure> {
    let category = match status.as_u16() {
        400..=499 => FailureCategory::Validation,
        502..=504 => FailureCategory::Network,
        500..=599 => FailureCategory::Internal,
        _ => return None,
    };
    Some(Failure::new(category, ErrorType::Status(status)))
}

/// What a gRPC status means: `Ok(None)` for OK, `Err(())` for CANCELLED
/// (the client went away: not a failure, but not a success either).
pub fn classify_grpc(code: GrpcCode) -> Result<Option<Failure>, Cancelled> {
    let category = match code.0 {
        0 => return Ok(None),
        1 => return Err(Cancelled),
        3 | 5 | 6 | 7 | 8 | 9 | 10 | 11 | 16 => FailureCategory::Validation,
        4 | 14 => FailureCategory::Network,
        _ => FailureCategory::Internal,
    };
    Ok(Some(Failure::new(category, ErrorType::Grpc(code))))
}

/// Marker: the outcome was a cancellation, not a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cancelled;

/// Classifies a complete response: the gRPC status wins when there is one,
/// as a gRPC error travels in a 200.
pub fn classify_response(
    status: StatusCode,
    grpc: Option<GrpcCode>,
) -> Result<Option<Failure>, Cancelled> {
    match grpc {
        Some(code) if status == StatusCode::OK => classify_grpc(code),
        _ => Ok(classify_status(status)),
    }
}

/// Maps an error from the stack to the response the proxy answers with.
///
/// Walks the source chain so that wrapped errors (a timeout inside a retry)
/// keep their meaning.
pub fn classify_error(error: &(dyn std::error::Error + 'static)) -> Synthetic {
    use ErrorType as E;
    use FailureCategory::{Internal, Network, Validation};
    let synthetic = |status: StatusCode, grpc: GrpcCode, category, error_type| Synthetic {
        status,
        grpc,
        failure: Failure::new(category, error_type),
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.is::<RequestTimeout>() || e.is::<tokio::time::error::Elapsed>() {
            return synthetic(
                StatusCode::GATEWAY_TIMEOUT,
                GrpcCode::DEADLINE_EXCEEDED,
                Network,
                E::Timeout,
            );
        }
        if let Some(up) = e.downcast_ref::<UpstreamError>() {
            let (status, grpc, error_type) = match up.kind {
                UpstreamErrorKind::Connect => (
                    StatusCode::BAD_GATEWAY,
                    GrpcCode::UNAVAILABLE,
                    E::ConnectError,
                ),
                UpstreamErrorKind::TlsHandshake => (
                    StatusCode::BAD_GATEWAY,
                    GrpcCode::UNAVAILABLE,
                    E::TlsHandshake,
                ),
                UpstreamErrorKind::TlsCertificate => (
                    StatusCode::BAD_GATEWAY,
                    GrpcCode::UNAVAILABLE,
                    E::TlsCertificate,
                ),
                UpstreamErrorKind::Reset => (
                    StatusCode::BAD_GATEWAY,
                    GrpcCode::UNAVAILABLE,
                    E::UpstreamReset,
                ),
                UpstreamErrorKind::Protocol => (
                    StatusCode::BAD_GATEWAY,
                    GrpcCode::UNAVAILABLE,
                    E::UpstreamProtocol,
                ),
                UpstreamErrorKind::ResponseHeadTimeout => (
                    StatusCode::GATEWAY_TIMEOUT,
                    GrpcCode::DEADLINE_EXCEEDED,
                    E::Timeout,
                ),
                UpstreamErrorKind::Saturated => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    GrpcCode::UNAVAILABLE,
                    E::Overloaded,
                ),
            };
            return synthetic(status, grpc, Network, error_type);
        }
        if let Some(body) = e.downcast_ref::<ClientBodyError>() {
            let status = match body.kind {
                ClientBodyErrorKind::Framing => StatusCode::BAD_REQUEST,
                ClientBodyErrorKind::Idle(_) => StatusCode::REQUEST_TIMEOUT,
            };
            return synthetic(
                status,
                GrpcCode::INVALID_ARGUMENT,
                Validation,
                E::Status(status),
            );
        }
        if e.is::<RateLimited>() {
            return synthetic(
                StatusCode::TOO_MANY_REQUESTS,
                GrpcCode::RESOURCE_EXHAUSTED,
                Validation,
                E::RateLimited,
            );
        }
        if e.is::<BodyTooLarge>() {
            // gRPC's own answer to a message over the receiver's limit.
            return synthetic(
                StatusCode::PAYLOAD_TOO_LARGE,
                GrpcCode::RESOURCE_EXHAUSTED,
                Validation,
                E::BodyTooLarge,
            );
        }
        if e.is::<Overloaded>() {
            return synthetic(
                StatusCode::SERVICE_UNAVAILABLE,
                GrpcCode::UNAVAILABLE,
                Network,
                E::Overloaded,
            );
        }
        if e.is::<CircuitOpen>() {
            return synthetic(
                StatusCode::SERVICE_UNAVAILABLE,
                GrpcCode::UNAVAILABLE,
                Network,
                E::CircuitOpen,
            );
        }
        if e.is::<Panicked>() {
            return synthetic(
                StatusCode::INTERNAL_SERVER_ERROR,
                GrpcCode::INTERNAL,
                Internal,
                E::Panic,
            );
        }
        if e.is::<BadRequest>() {
            return synthetic(
                StatusCode::BAD_REQUEST,
                GrpcCode::INVALID_ARGUMENT,
                Validation,
                E::BadRequest,
            );
        }
        cause = e.source();
    }
    synthetic(
        StatusCode::INTERNAL_SERVER_ERROR,
        GrpcCode::INTERNAL,
        Internal,
        E::Internal,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureCategory::*;

    #[test]
    fn http_statuses() {
        let table: &[(u16, Option<FailureCategory>)] = &[
            (100, None),
            (200, None),
            (204, None),
            (304, None),
            (400, Some(Validation)),
            (404, Some(Validation)),
            (413, Some(Validation)),
            (429, Some(Validation)),
            (431, Some(Validation)),
            (499, Some(Validation)),
            (500, Some(Internal)),
            (501, Some(Internal)),
            (502, Some(Network)),
            (503, Some(Network)),
            (504, Some(Network)),
            (505, Some(Internal)),
            (599, Some(Internal)),
        ];
        for &(code, want) in table {
            let status = StatusCode::from_u16(code).unwrap();
            let got = classify_status(status);
            assert_eq!(got.map(|f| f.category), want, "status {code}");
            if let Some(f) = got {
                assert_eq!(f.error_type.as_str(), code.to_string());
            }
        }
    }

    #[test]
    fn grpc_codes() {
        let table: &[(u16, Result<Option<FailureCategory>, Cancelled>)] = &[
            (0, Ok(None)),
            (1, Err(Cancelled)),
            (2, Ok(Some(Internal))),
            (3, Ok(Some(Validation))),
            (4, Ok(Some(Network))),
            (5, Ok(Some(Validation))),
            (6, Ok(Some(Validation))),
            (7, Ok(Some(Validation))),
            (8, Ok(Some(Validation))),
            (9, Ok(Some(Validation))),
            (10, Ok(Some(Validation))),
            (11, Ok(Some(Validation))),
            (12, Ok(Some(Internal))),
            (13, Ok(Some(Internal))),
            (14, Ok(Some(Network))),
            (15, Ok(Some(Internal))),
            (16, Ok(Some(Validation))),
            (99, Ok(Some(Internal))),
        ];
        for &(code, want) in table {
            let got = classify_grpc(GrpcCode(code)).map(|f| f.map(|f| f.category));
            assert_eq!(got, want, "grpc {code}");
        }
    }

    #[test]
    fn grpc_status_wins_only_on_200() {
        let not_found = classify_response(StatusCode::OK, Some(GrpcCode(5))).unwrap();
        assert_eq!(not_found.unwrap().error_type.as_str(), "NOT_FOUND");
        let gateway = classify_response(StatusCode::BAD_GATEWAY, Some(GrpcCode(0))).unwrap();
        assert_eq!(gateway.unwrap().category, Network);
        assert_eq!(classify_response(StatusCode::OK, None), Ok(None));
    }

    #[test]
    fn grpc_status_parsing() {
        assert_eq!(GrpcCode::parse(b"0"), Some(GrpcCode(0)));
        assert_eq!(GrpcCode::parse(b"14"), Some(GrpcCode(14)));
        assert_eq!(GrpcCode::parse(b""), None);
        assert_eq!(GrpcCode::parse(b"-1"), None);
        assert_eq!(GrpcCode::parse(b"99999999"), None);
        assert_eq!(GrpcCode::parse(b"1x"), None);
        assert_eq!(GrpcCode(16).as_str(), "16");
        assert_eq!(GrpcCode(400).as_str(), "400");
    }

    #[test]
    fn errors() {
        let addr: http::uri::Authority = "127.0.0.1:1".parse().unwrap();
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let cases: Vec<(crate::Error, u16, u16, FailureCategory, &str)> = vec![
            (
                Box::new(RequestTimeout(Duration::from_secs(1))),
                504,
                4,
                Network,
                "timeout",
            ),
            (
                Box::new(UpstreamError {
                    kind: UpstreamErrorKind::Connect,
                    addr: addr.clone(),
                    source: Box::new(io),
                }),
                502,
                14,
                Network,
                "connect_error",
            ),
            (
                Box::new(UpstreamError {
                    kind: UpstreamErrorKind::Reset,
                    addr,
                    source: "reset".into(),
                }),
                502,
                14,
                Network,
                "upstream_reset",
            ),
            (
                Box::new(UpstreamError {
                    kind: UpstreamErrorKind::TlsHandshake,
                    addr: "127.0.0.1:1".parse().unwrap(),
                    source: "peer is not speaking TLS".into(),
                }),
                502,
                14,
                Network,
                "tls_handshake",
            ),
            (
                Box::new(UpstreamError {
                    kind: UpstreamErrorKind::TlsCertificate,
                    addr: "127.0.0.1:1".parse().unwrap(),
                    source: "certificate expired".into(),
                }),
                502,
                14,
                Network,
                "tls_certificate",
            ),
            (
                Box::new(RateLimited { per_second: 1 }),
                429,
                8,
                Validation,
                "rate_limited",
            ),
            (
                Box::new(Overloaded { max: 1 }),
                503,
                14,
                Network,
                "overloaded",
            ),
            (
                Box::new(CircuitOpen {
                    retry_after: Duration::from_secs(1),
                }),
                503,
                14,
                Network,
                "circuit_open",
            ),
            (
                Box::new(Panicked {
                    message: "boom".into(),
                }),
                500,
                13,
                Internal,
                "panic",
            ),
            (Box::new(BadRequest("x")), 400, 3, Validation, "bad_request"),
            (
                Box::new(BodyTooLarge { limit: 1024 }),
                413,
                8,
                Validation,
                "body_too_large",
            ),
            (
                Box::new(UpstreamError {
                    kind: UpstreamErrorKind::ResponseHeadTimeout,
                    addr: "127.0.0.1:1".parse().unwrap(),
                    source: "no response head".into(),
                }),
                504,
                4,
                Network,
                "timeout",
            ),
            (
                Box::new(UpstreamError {
                    kind: UpstreamErrorKind::Saturated,
                    addr: "127.0.0.1:1".parse().unwrap(),
                    source: "all connections busy".into(),
                }),
                503,
                14,
                Network,
                "overloaded",
            ),
            (
                Box::new(ClientBodyError {
                    kind: ClientBodyErrorKind::Framing,
                }),
                400,
                3,
                Validation,
                "400",
            ),
            (
                Box::new(ClientBodyError {
                    kind: ClientBodyErrorKind::Idle(Duration::from_secs(30)),
                }),
                408,
                3,
                Validation,
                "408",
            ),
            ("something untyped".into(), 500, 13, Internal, "internal"),
        ];
        for (error, status, grpc, category, error_type) in cases {
            let s = classify_error(&*error);
            assert_eq!(s.status.as_u16(), status, "{error}");
            assert_eq!(s.grpc, GrpcCode(grpc), "{error}");
            assert_eq!(s.failure.category, category, "{error}");
            assert_eq!(s.failure.error_type.as_str(), error_type, "{error}");
        }
    }

    #[test]
    fn wrapped_errors_keep_their_meaning() {
        #[derive(Debug, thiserror::Error)]
        #[error("retry gave up")]
        struct Wrapper(#[source] RequestTimeout);
        let s = classify_error(&Wrapper(RequestTimeout(Duration::from_millis(5))));
        assert_eq!(s.status, StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn severities() {
        assert_eq!(Validation.severity(), "medium");
        assert_eq!(Network.severity(), "high");
        assert_eq!(Internal.severity(), "critical");
    }
}
