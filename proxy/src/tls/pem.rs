//! PEM certificates and keys, read with the error naming the config field.

use std::{path::Path, sync::Arc};

use rustls::{crypto::CryptoProvider, sign::CertifiedKey};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// Why TLS could not be set up: the config field at fault and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TlsError {
    /// The config field at fault, in full (`inbound.tls.cert`).
    pub field: String,
    /// What went wrong.
    pub message: String,
}

impl TlsError {
    pub(crate) fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Every certificate in a PEM file; none is an error.
pub fn read_certs(path: &Path, field: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::new(field, format!("{}: {e}", path.display())))?
        .collect();
    let certs = certs.map_err(|e| TlsError::new(field, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            field,
            format!("{}: no PEM certificate found", path.display()),
        ));
    }
    Ok(certs)
}

/// A certificate chain and its private key, checked to match.
pub fn read_certified_key(
    cert: &Path,
    key: &Path,
    cert_field: &str,
    key_field: &str,
) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(cert, cert_field)?;
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::new(key_field, format!("{}: {e}", key.display())))?;
    CertifiedKey::from_der(chain, der, &provider()).map_err(|e| {
        TlsError::new(
            key_field,
            format!("does not match the certificate or is unsupported: {e}"),
        )
    })
}

/// The process's crypto provider: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}
