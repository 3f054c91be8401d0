//! Inbound TLS termination: rustls 0.23 with its default aws-lc-rs provider,
//! ALPN `h2` and `http/1.1`, optional client-certificate verification (mTLS)
//! and certificate hot reload.
//!
//! The provider's defaults offer the post-quantum hybrid X25519MLKEM768 first.
//! The certificate and key are read again when either file changes (or the
//! directory holding them, as Kubernetes swaps Secret symlinks); new
//! handshakes use the new pair, established connections keep theirs, and a
//! bad new pair is logged and ignored.

use std::{fmt, path::Path, sync::Arc};

use arc_swap::ArcSwap;
use rustls::{
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    RootCertStore, ServerConfig,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("inbound.tls.{field}: {message}")]
pub struct TlsError {
    /// The config field at fault.
    pub field: &'static str,
    /// What went wrong.
    pub message: String,
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
            for ca in read_certs(path, "client_ca")? {
                roots.add(ca).map_err(|e| TlsError {
                    field: "client_ca",
                    message: format!("{}: {e}", path.display()),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| TlsError {
                    field: "client_ca",
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder.with_cert_resolver(cert.clone());
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(server), cert))
}

fn read_certs(path: &Path, field: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError {
            field,
            message: format!("{}: {e}", path.display()),
        })?
        .collect();
    let certs = certs.map_err(|e| TlsError {
        field,
        message: format!("{}: {e}", path.display()),
    })?;
    if certs.is_empty() {
        return Err(TlsError {
            field,
            message: format!("{}: no PEM certificate found", path.display()),
        });
    }
    Ok(certs)
}

fn load_certified_key(config: &TlsConfig) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(&config.cert, "cert")?;
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| TlsError {
        field: "key",
        message: format!("{}: {e}", config.key.display()),
    })?;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError {
        field: "key",
        message: format!("does not match the certificate or is unsupported: {e}"),
    })
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
pub fn watch(cert: Arc<ReloadingCert>, config: TlsConfig, mut drain: crate::drain::Drain) {
    use notify::Watcher;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let dirs: Vec<std::path::PathBuf> = [&config.cert, &config.key]
        .iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.try_send(());
        }
    });
    let watcher = match watcher {
        Ok(mut w) => {
            for dir in &dirs {
                if let Err(e) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch certificate files; they will not be reloaded");
                }
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch certificate files; they will not be reloaded");
            None
        }
    };
    tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            tokio::select! {
                () = drain.signaled() => return,
                Some(()) = rx.recv() => {}
            }
            // Certificate and key are often written one after the other.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            while rx.try_recv().is_ok() {}
            match cert.reload(&config) {
                Ok(()) => tracing::info!(cert = %config.cert.display(), "TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate reload failed; keeping the current certificate")
                }
            }
        }
    });
}
