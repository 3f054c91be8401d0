//! Inbound TLS termination: ALPN `h2` and `http/1.1`, optional
//! client-certificate verification (mTLS) and certificate hot reload.
//!
//! The certificate and key are read again when either file changes; new
//! handshakes use the new pair, established connections keep theirs, and a
//! bad new pair is logged and ignored.

use std::{fmt, sync::Arc};

use arc_swap::ArcSwap;
use rustls::{
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    RootCertStore, ServerConfig,
};

use super::{
    pem::{read_certified_key, read_certs},
    TlsError,
};
use crate::config::TlsConfig;

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
