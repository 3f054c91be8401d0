//! What a failed upstream call was: the client's body, the connection cap,
//! TLS, connect, protocol, reset, or the response-head timeout.

use std::time::Duration;

use filters::classify::{
    BodyTooLarge, ClientBodyError, ClientBodyErrorKind, UpstreamError, UpstreamErrorKind,
};
use http::uri::Authority;

use crate::client_body::BodyFailure;

use hyper_util::client::legacy::connect::CaptureConnection;

use crate::{
    connect::{Saturated, TlsConnError},
    tls::client::{TlsFailure, TlsFailureKind},
};

/// Why a request to the upstream got no response.
pub(super) enum Failed {
    Client(hyper_util::client::legacy::Error),
    HeadTimeout(Duration),
    /// The upstream left the request body untaken for this long.
    BodyNotTaken(Duration),
}

/// The client's own request body broke the call (its framing, or a size
/// over a `max_body` limit): its fault, not the upstream's.
///
/// `failure` is what the client's body said of its failure, which an HTTP/2
/// upstream call reports only as the reset this side sent.
pub(super) fn client_body_error(
    e: &hyper_util::client::legacy::Error,
    failure: Option<&BodyFailure>,
) -> Option<filters::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(body) = s.downcast_ref::<ClientBodyError>() {
            return Some(ClientBodyError { kind: body.kind }.into());
        }
        if let Some(large) = s.downcast_ref::<BodyTooLarge>() {
            return Some(BodyTooLarge { limit: large.limit }.into());
        }
        // hyper's HTTP/2 client keeps a failed request body's error to
        // itself: it resets the stream from this side and the call fails
        // with that reset. Nothing but the body makes this side reset a
        // stream it is still waiting on, so it is the client's fault (a
        // broken body, or a max_body limit, whose filter reports it as
        // such), not an upstream that cannot speak HTTP/2.
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            if h2.is_reset() && !h2.is_remote() && !h2.is_library() {
                let kind = failure
                    .and_then(BodyFailure::get)
                    .unwrap_or(ClientBodyErrorKind::Framing);
                return Some(ClientBodyError { kind }.into());
            }
        }
        source = s.source();
    }
    None
}

pub(super) fn upstream_error_kind(e: &hyper_util::client::legacy::Error) -> UpstreamErrorKind {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<Saturated>() {
            return UpstreamErrorKind::Saturated;
        }
        if let Some(tls) = s.downcast_ref::<TlsFailure>() {
            return match tls.kind {
                TlsFailureKind::Certificate => UpstreamErrorKind::TlsCertificate,
                TlsFailureKind::Handshake => UpstreamErrorKind::TlsHandshake,
            };
        }
        source = s.source();
    }
    if e.is_connect() {
        return UpstreamErrorKind::Connect;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
                return UpstreamErrorKind::Protocol;
            }
        }
        // h2 keeps the I/O error of a broken connection to itself.
        let io = s
            .downcast_ref::<std::io::Error>()
            .or_else(|| s.downcast_ref::<h2::Error>().and_then(h2::Error::get_io));
        if let Some(io) = io {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return UpstreamErrorKind::Connect;
            }
            // In TLS 1.3 a server refuses the client certificate after the
            // client has finished its handshake: the alert arrives on the
            // first read of the response.
            if let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                return rustls_error_kind(tls);
            }
        }
        source = s.source();
    }
    UpstreamErrorKind::Reset
}

pub(super) fn upstream_error(
    kind: UpstreamErrorKind,
    authority: &Authority,
    e: hyper_util::client::legacy::Error,
) -> filters::Error {
    UpstreamError {
        kind,
        addr: authority.clone(),
        source: Box::new(e),
    }
    .into()
}

/// The upstream broke off a response body.
#[derive(Debug, thiserror::Error)]
#[error("upstream response body: {0}")]
pub struct UpstreamBodyError(#[source] hyper::Error);

pub(super) fn upstream_body_error(e: hyper::Error) -> UpstreamBodyError {
    UpstreamBodyError(e)
}

/// The kind of a TLS error that broke the captured connection, if one did.
pub(super) fn tls_error_kind(captured: &CaptureConnection) -> Option<UpstreamErrorKind> {
    let metadata = captured.connection_metadata();
    let mut extensions = http::Extensions::new();
    metadata.as_ref()?.get_extras(&mut extensions);
    let conn = extensions.get::<TlsConnError>()?;
    match conn.get() {
        Some(error) => Some(rustls_error_kind(error)),
        None => conn
            .refused_before_data()
            .then_some(UpstreamErrorKind::TlsHandshake),
    }
}

fn rustls_error_kind(error: &rustls::Error) -> UpstreamErrorKind {
    match error {
        rustls::Error::InvalidCertificate(_) => UpstreamErrorKind::TlsCertificate,
        _ => UpstreamErrorKind::TlsHandshake,
    }
}
