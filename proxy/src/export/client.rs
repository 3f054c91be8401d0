//! The connection both transports use: the forwarder's connector
//! ([`LimitedConnector`]), so an `https://` collector is reached over the
//! same verified TLS as an `https://` app, and what a failed connection
//! means for a batch.
//!
//! A refused certificate (the collector's, or ours refused by the
//! collector) does not heal within a retry's backoff: the batch fails at
//! once, like a batch the collector rejected, and the next batch tries a
//! new connection. Other TLS failures (a timeout, a reset) are retried.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{uri::Scheme, Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::connect::{capture_connection, CaptureConnection, HttpConnector};
use rustls::AlertDescription;

use super::exporter::Attempt;
use crate::{
    connect::{LimitedConnector, TlsConnError},
    tls::client::{Alpn, ClientTls, TlsFailure, TlsFailureKind},
};

/// The pooled client of a transport.
pub(super) type ExportClient = hyper_util::client::legacy::Client<LimitedConnector, Full<Bytes>>;

/// Far above what an exporter opens: it sends one batch at a time.
const MAX_CONNECTIONS: usize = 16;

/// How long a connect may wait for a free connection (never, in practice).
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connector to `http://` collectors, and to `https://` ones over `tls`
/// offering `alpn`.
pub(super) fn connector(tls: Option<Arc<ClientTls>>, alpn: Alpn) -> LimitedConnector {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(Duration::from_secs(5)));
    tcp.enforce_http(false);
    LimitedConnector::new(tcp, MAX_CONNECTIONS, QUEUE_TIMEOUT, metrics::Gauge::noop())
        .with_tls(tls)
        .with_alpn(alpn)
}

/// Over TLS, keeps hold of the request's connection: the error that broke
/// it after the handshake tells a refused client certificate from a reset.
pub(super) fn capture<B>(target: &Uri, req: &mut Request<B>) -> Option<CaptureConnection> {
    (target.scheme() == Some(&Scheme::HTTPS)).then(|| capture_connection(req))
}

/// The attempt's outcome when the collector could not be asked.
pub(super) fn unreachable(
    e: &hyper_util::client::legacy::Error,
    captured: Option<&CaptureConnection>,
) -> Attempt {
    // A TLS error that reached us only as text: h2 keeps the kind and
    // message of the I/O error that broke a connection, not the error.
    let mut tls_text = None;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(failure) = s.downcast_ref::<TlsFailure>() {
            let reason = format!("collector unreachable: {failure}");
            return match failure.kind {
                TlsFailureKind::Certificate => Attempt::Fail(reason),
                TlsFailureKind::Handshake => Attempt::Retry(reason, None),
            };
        }
        let io = s
            .downcast_ref::<std::io::Error>()
            .or_else(|| s.downcast_ref::<h2::Error>().and_then(h2::Error::get_io));
        if let Some(io) = io {
            if let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                return broken(tls);
            }
            // tokio-rustls reports every TLS error as InvalidData.
            if captured.is_some() && io.kind() == std::io::ErrorKind::InvalidData {
                tls_text = Some(io.to_string());
            }
        }
        source = s.source();
    }
    if let Some(conn) = captured.and_then(tls_conn) {
        if let Some(tls) = conn.get() {
            return broken(tls);
        }
        if tls_text.is_none() && conn.refused_before_data() {
            return Attempt::Retry(
                "the collector closed the TLS connection before answering \
                 (does it require a client certificate?)"
                    .into(),
                None,
            );
        }
    }
    match tls_text {
        Some(text) => Attempt::Retry(
            format!("the collector broke the TLS connection: {text}"),
            None,
        ),
        None => Attempt::Retry(format!("collector unreachable: {e}"), None),
    }
}

/// The TLS state of the captured connection, when it was TLS.
fn tls_conn(captured: &CaptureConnection) -> Option<TlsConnError> {
    let metadata = captured.connection_metadata();
    let mut extensions = http::Extensions::new();
    metadata.as_ref()?.get_extras(&mut extensions);
    extensions.remove::<TlsConnError>()
}

/// A TLS error that broke an established connection: in TLS 1.3 a
/// collector refuses a client certificate after the handshake, with an
/// alert.
fn broken(error: &rustls::Error) -> Attempt {
    let certificate = match error {
        rustls::Error::InvalidCertificate(_) => true,
        rustls::Error::AlertReceived(alert) => matches!(
            alert,
            AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateRequired
                | AlertDescription::AccessDenied
        ),
        _ => false,
    };
    let reason = format!("the collector broke the TLS connection: {error}");
    if certificate {
        Attempt::Fail(reason)
    } else {
        Attempt::Retry(reason, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_certificates_are_not_retried() {
        let table = [
            (
                rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
                false,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::UnknownCA),
                false,
            ),
            (
                rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
                false,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::InternalError),
                true,
            ),
            (rustls::Error::DecryptError, true),
        ];
        for (error, retried) in table {
            let attempt = broken(&error);
            assert_eq!(
                matches!(attempt, Attempt::Retry(..)),
                retried,
                "{error}: {attempt:?}"
            );
            let reason = match attempt {
                Attempt::Retry(reason, _) | Attempt::Fail(reason) => reason,
                Attempt::Done => panic!("{error}: done"),
            };
            assert!(reason.contains("TLS"), "{reason}");
        }
    }
}
