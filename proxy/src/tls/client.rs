//! TLS towards upstreams and collectors: one client configuration per use,
//! verified against the system roots (honouring `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` as OpenSSL-based tools do) plus an optional CA bundle,
//! with SNI, an optional client certificate (mTLS) and ALPN.
//!
//! There is no switch that skips verification: a server whose certificate
//! does not verify is refused, and the request fails with a 502 that says
//! why (`tls_certificate`), never falling back to clear text.
//!
//! The CA bundle and the client certificate are read again when their files
//! change; new connections use the new files, a bad new set is logged and
//! ignored.

use std::{
    collections::HashSet,
    fmt,
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{
    metrics::{HandshakeMetrics, HandshakeResult, HandshakeSide},
    pem::read_certs,
    TlsError,
};
use crate::config::ClientTlsConfig;

/// Time a TLS handshake with an upstream or a collector may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Distinct failure causes logged at most once each; past this, failures
/// are only counted.
const LOGGED_CAUSES: usize = 256;

/// Which application protocols a connection offers in ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// `h2` then `http/1.1`: the server's choice decides the protocol.
    Any,
    /// `http/1.1` only.
    Http1,
    /// `h2` only.
    H2,
}

/// A client TLS setup for one use (the app, outbound destinations, a
/// collector), reloadable.
pub struct ClientTls {
    /// Where the files came from, for reloads and log lines.
    config: ClientTlsConfig,
    /// Config field prefix in error messages (`inbound.upstream_tls`).
    field: &'static str,
    current: ArcSwap<Configs>,
    logged: Mutex<HashSet<String>>,
    handshakes: HandshakeMetrics,
}

/// One rustls configuration per ALPN offer, built together.
struct Configs {
    any: Arc<ClientConfig>,
    http1: Arc<ClientConfig>,
    h2: Arc<ClientConfig>,
}

/// Why a TLS connection could not be made.
#[derive(Debug, thiserror::Error)]
#[error("TLS {kind} with {server}: {source}")]
pub struct TlsFailure {
    /// Certificate or other handshake failure.
    pub kind: TlsFailureKind,
    /// The name the certificate was checked against.
    pub server: String,
    /// What rustls (or the socket) said.
    #[source]
    pub source: std::io::Error,
}

/// What went wrong in a failed handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFailureKind {
    /// The peer's certificate was refused (unknown issuer, expired, name
    /// mismatch, revoked, unsupported).
    Certificate,
    /// Anything else: no TLS on the other side, no common parameters, an
    /// alert (a refused client certificate among them), a timeout.
    Handshake,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("field", &self.field)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for TlsFailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Certificate => "certificate refused",
            Self::Handshake => "handshake failed",
        })
    }
}

// === impl ClientTls ===

impl ClientTls {
    /// Reads the files `config` names; `field` prefixes error messages.
    /// Handshakes are not counted.
    pub fn new(config: ClientTlsConfig, field: &'static str) -> Result<Arc<Self>, TlsError> {
        Self::counted(config, field, HandshakeMetrics::noop())
    }

    /// As [`ClientTls::new`], counting every handshake in `handshakes`
    /// (`side="upstream"`).
    pub fn counted(
        config: ClientTlsConfig,
        field: &'static str,
        handshakes: HandshakeMetrics,
    ) -> Result<Arc<Self>, TlsError> {
        let configs = build(&config, field)?;
        Ok(Arc::new(Self {
            config,
            field,
            current: ArcSwap::from_pointee(configs),
            logged: Mutex::new(HashSet::new()),
            handshakes,
        }))
    }

    /// The rustls configuration offering `alpn`.
    pub fn rustls_config(&self, alpn: Alpn) -> Arc<ClientConfig> {
        let configs = self.current.load();
        match alpn {
            Alpn::Any => configs.any.clone(),
            Alpn::Http1 => configs.http1.clone(),
            Alpn::H2 => configs.h2.clone(),
        }
    }

    /// Connects TLS over `tcp` to `host` (the configured `server_name` wins
    /// for SNI and verification).
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        host: &str,
        alpn: Alpn,
    ) -> Result<TlsStream<TcpStream>, TlsFailure> {
        let name = self.config.server_name.as_deref().unwrap_or(host);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let server = ServerName::try_from(name.to_string()).map_err(|e| TlsFailure {
            kind: TlsFailureKind::Handshake,
            server: name.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        let connector = tokio_rustls::TlsConnector::from(self.rustls_config(alpn));
        let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(server, tcp)).await;
        let failure = |kind, source| TlsFailure {
            kind,
            server: name.to_string(),
            source,
        };
        let count = |version, result| {
            self.handshakes
                .record(HandshakeSide::Upstream, version, result)
        };
        let error = match result {
            Ok(Ok(stream)) => {
                count(stream.get_ref().1.protocol_version(), HandshakeResult::Ok);
                return Ok(stream);
            }
            Ok(Err(e)) => {
                count(None, HandshakeResult::Error);
                failure(failure_kind(&e), e)
            }
            Err(_) => {
                count(None, HandshakeResult::Timeout);
                failure(
                    TlsFailureKind::Handshake,
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
                    ),
                )
            }
        };
        self.log_once(&error);
        Err(error)
    }

    /// Logs a failure the first time its cause is seen: a broken upstream
    /// fails every request, and one line per cause is what an operator needs.
    fn log_once(&self, failure: &TlsFailure) {
        if self.first_time(failure.to_string()) {
            tracing::warn!(
                tls = self.field,
                server = %failure.server,
                error = %failure.source,
                "TLS {} (logged once per cause; every failure is counted)",
                failure.kind
            );
        }
    }

    /// Logs, once per cause, a TLS error that broke an established
    /// connection (a client certificate refused after a TLS 1.3 handshake).
    pub fn log_broken(&self, server: &str, error: &rustls::Error) {
        if self.first_time(format!("{server}: {error}")) {
            tracing::warn!(
                tls = self.field,
                server,
                error = %error,
                "TLS connection refused by the server after the handshake \
                 (logged once per cause; every failure is counted)"
            );
        }
    }

    fn first_time(&self, cause: String) -> bool {
        let mut logged = self.logged.lock();
        logged.len() < LOGGED_CAUSES && logged.insert(cause)
    }

    /// Reads the files again; on error the current ones stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let configs = build(&self.config, self.field)?;
        self.current.store(Arc::new(configs));
        self.logged.lock().clear();
        Ok(())
    }

    /// Reloads when the CA bundle or the client certificate change, until
    /// the drain starts.
    pub fn watch(self: &Arc<Self>, drain: crate::drain::Drain) {
        let files: Vec<PathBuf> = [&self.config.ca, &self.config.cert, &self.config.key]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        if files.is_empty() {
            return;
        }
        let tls = self.clone();
        super::watch::on_change(self.field, files, drain, move || match tls.reload() {
            Ok(()) => tracing::info!(tls = tls.field, "TLS client files reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "TLS client files reload failed; keeping the current ones")
            }
        });
    }
}

fn failure_kind(e: &std::io::Error) -> TlsFailureKind {
    match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_)) => TlsFailureKind::Certificate,
        _ => TlsFailureKind::Handshake,
    }
}

fn build(config: &ClientTlsConfig, field: &'static str) -> Result<Configs, TlsError> {
    let mut roots = RootCertStore::empty();
    if config.system_roots {
        roots.add_parsable_certificates(system_roots().iter().cloned());
    }
    if let Some(path) = &config.ca {
        let ca_field = format!("{field}.ca");
        for ca in read_certs(path, &ca_field)? {
            roots
                .add(ca)
                .map_err(|e| TlsError::new(&ca_field, format!("{}: {e}", path.display())))?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::new(
            field,
            "no trusted certificate authority: the system has none (SSL_CERT_FILE, SSL_CERT_DIR) \
             and no `ca` is configured",
        ));
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let base = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, &format!("{field}.cert"))?;
            builder
                .with_client_auth_cert(chain, key_der(key, field)?)
                .map_err(|e| {
                    TlsError::new(
                        &format!("{field}.key"),
                        format!("does not match the certificate or is unsupported: {e}"),
                    )
                })?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => {
            return Err(TlsError::new(
                &format!("{field}.key"),
                "a client certificate needs its key",
            ))
        }
        (None, Some(_)) => {
            return Err(TlsError::new(
                &format!("{field}.cert"),
                "a client key needs its certificate",
            ))
        }
    };
    let with_alpn = |alpn: &[&[u8]]| {
        let mut config = base.clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    };
    Ok(Configs {
        any: with_alpn(&[b"h2", b"http/1.1"]),
        http1: with_alpn(&[b"http/1.1"]),
        h2: with_alpn(&[b"h2"]),
    })
}

fn key_der(
    path: &std::path::Path,
    field: &str,
) -> Result<rustls_pki_types::PrivateKeyDer<'static>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TlsError::new(&format!("{field}.key"), format!("{}: {e}", path.display())))
}

/// The system's trust anchors, read once per process: the same places
/// OpenSSL looks, `SSL_CERT_FILE` and `SSL_CERT_DIR` first.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "some system CA certificates could not be read");
        }
        found.certs
    })
}
