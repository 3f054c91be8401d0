//! Inbound TLS termination: ALPN `h2` and `http/1.1`, optional
//! client-certificate verification (mTLS) and certificate hot reload.
//!
//! The certificate and key are read again when either file changes; new
//! handshakes use the new pair, established connections keep theirs, and a
//! bad new pair is logged and ignored.
//!
//! [`Handshakes`] runs each connection's handshake under
//! `limits.tls_handshake_timeout`, counts it in
//! `sidetrace_tls_handshakes_total{side="inbound"}`, and reads the
//! connection's [`TlsFacts`] once for the spans of its requests.

use std::{
    fmt, io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use rustls::{
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    ProtocolVersion, RootCertStore, ServerConfig,
};
use tokio::{net::TcpStream, time::Instant};
use tokio_rustls::TlsAcceptor;

use super::{
    facts::TlsFacts,
    metrics::{HandshakeMetrics, HandshakeResult, HandshakeSide},
    pem::{read_certified_key, read_certs},
    probe::VersionProbe,
    TlsError,
};
use crate::config::TlsConfig;

/// A client connection whose handshake completed.
pub type InboundStream = tokio_rustls::server::TlsStream<VersionProbe<TcpStream>>;

/// The handshakes of one listener.
pub struct Handshakes {
    acceptor: TlsAcceptor,
    timeout: Duration,
    metrics: HandshakeMetrics,
    failures: FailureLog,
}

/// How often failed handshakes are logged: a client that fails many
/// handshakes (a scanner, a sidecar with the wrong certificate in a
/// reconnect loop) gets one line per window, and at most
/// [`LOGGED_PEERS`] clients get one per window; the rest are counted, and
/// their number is logged with the next window's first line. The metric
/// counts every failure.
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Client addresses whose failures are logged per [`LOG_WINDOW`].
const LOGGED_PEERS: usize = 10;

/// The rate limit of failure log lines.
#[derive(Default)]
struct FailureLog {
    window: parking_lot::Mutex<LogWindow>,
}

#[derive(Default)]
struct LogWindow {
    started: Option<Instant>,
    /// Addresses logged in this window (at most [`LOGGED_PEERS`]).
    peers: Vec<IpAddr>,
    /// Failures not logged in this window.
    suppressed: u64,
}

/// The server certificate, swapped whole on reload.
pub struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Builds the acceptor's config; the returned handle reloads the certificate.
pub fn server_config(
    config: &TlsConfig,
) -> Result<(Arc<ServerConfig>, Arc<ReloadingCert>), TlsError> {
    let cert = Arc::new(ReloadingCert {
        current: ArcSwap::from_pointee(load_certified_key(config)?),
    });
    let builder = ServerConfig::builder();
    let builder = match &config.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certs(path, "inbound.tls.client_ca")? {
                roots.add(ca).map_err(|e| {
                    TlsError::new("inbound.tls.client_ca", format!("{}: {e}", path.display()))
                })?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| TlsError::new("inbound.tls.client_ca", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder.with_cert_resolver(cert.clone());
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(server), cert))
}

fn load_certified_key(config: &TlsConfig) -> Result<CertifiedKey, TlsError> {
    read_certified_key(
        &config.cert,
        &config.key,
        "inbound.tls.cert",
        "inbound.tls.key",
    )
}

// === impl Handshakes ===

impl Handshakes {
    /// Handshakes with `acceptor`, each allowed `timeout`.
    pub fn new(acceptor: TlsAcceptor, timeout: Duration, metrics: HandshakeMetrics) -> Self {
        Self {
            acceptor,
            timeout,
            metrics,
            failures: FailureLog::default(),
        }
    }

    /// Runs the handshake of a connection from `peer`; on failure or
    /// timeout the connection is dropped (closed) and `None` returned.
    pub async fn accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        listener: &'static str,
    ) -> Option<(InboundStream, Arc<TlsFacts>)> {
        let (probe, seen) = VersionProbe::new(stream);
        let outcome = tokio::time::timeout(self.timeout, self.acceptor.accept(probe)).await;
        let (result, error) = match outcome {
            Ok(Ok(stream)) => {
                let facts = Arc::new(TlsFacts::new(stream.get_ref().1));
                self.metrics
                    .record(HandshakeSide::Inbound, facts.version(), HandshakeResult::Ok);
                return Some((stream, facts));
            }
            Ok(Err(e)) => (HandshakeResult::Error, Some(e)),
            Err(_) => (HandshakeResult::Timeout, None),
        };
        // The version the server chose before the failure, if it got that far.
        let version = seen.get();
        self.metrics.record(HandshakeSide::Inbound, version, result);
        self.failures.log(listener, peer, version, error.as_ref());
        None
    }
}

// === impl FailureLog ===

impl FailureLog {
    /// Whether a failure from `ip` is logged now; if so, with the number of
    /// failures the previous window did not log.
    fn admit(&self, ip: IpAddr) -> Option<u64> {
        let now = Instant::now();
        let mut window = self.window.lock();
        let mut carried = 0;
        if window
            .started
            .is_none_or(|started| now.duration_since(started) >= LOG_WINDOW)
        {
            carried = std::mem::take(&mut window.suppressed);
            window.started = Some(now);
            window.peers.clear();
        }
        if window.peers.len() >= LOGGED_PEERS || window.peers.contains(&ip) {
            window.suppressed += 1;
            return None;
        }
        window.peers.push(ip);
        Some(carried)
    }

    fn log(
        &self,
        listener: &'static str,
        peer: SocketAddr,
        version: Option<ProtocolVersion>,
        error: Option<&io::Error>,
    ) {
        let Some(suppressed) = self.admit(peer.ip()) else {
            return;
        };
        if suppressed > 0 {
            tracing::info!(
                listener,
                suppressed,
                "more TLS handshakes failed than were logged in the previous {LOG_WINDOW:?} \
                 (one line per client address, {LOGGED_PEERS} addresses per window)"
            );
        }
        let version = super::metrics::version_label(version);
        match error {
            Some(e) => {
                tracing::info!(listener, client = %peer, version, error = %e, "TLS handshake failed")
            }
            None => {
                tracing::info!(listener, client = %peer, version, "TLS handshake not completed in time")
            }
        }
    }
}

// === impl ReloadingCert ===

impl ReloadingCert {
    /// Reads the pair again; on error the current pair stays.
    pub fn reload(&self, config: &TlsConfig) -> Result<(), TlsError> {
        let key = load_certified_key(config)?;
        self.current.store(Arc::new(key));
        Ok(())
    }
}

/// Reloads the certificate when its files change, until the drain starts.
pub fn watch(cert: Arc<ReloadingCert>, config: TlsConfig, drain: crate::drain::Drain) {
    let files = vec![config.cert.clone(), config.key.clone()];
    super::watch::on_change("inbound certificate", files, drain, move || {
        match cert.reload(&config) {
            Ok(()) => tracing::info!(cert = %config.cert.display(), "TLS certificate reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate reload failed; keeping the current certificate")
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failures_are_logged_once_per_client_and_window() {
        let log = FailureLog::default();
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        assert_eq!(log.admit(ip(1)), Some(0));
        for _ in 0..1000 {
            assert_eq!(log.admit(ip(1)), None, "a flood from one client");
        }
        for n in 2..=10 {
            assert_eq!(log.admit(ip(n)), Some(0));
        }
        assert_eq!(log.admit(ip(11)), None, "past the clients per window");
        tokio::time::advance(LOG_WINDOW - Duration::from_millis(1)).await;
        assert_eq!(log.admit(ip(1)), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            log.admit(ip(1)),
            Some(1002),
            "the next window says how many were not logged"
        );
        assert_eq!(log.admit(ip(2)), Some(0));
        tokio::time::advance(LOG_WINDOW).await;
        assert_eq!(log.admit(ip(1)), Some(0));
    }
}
