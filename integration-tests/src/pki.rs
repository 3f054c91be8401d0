//! A test certificate authority: server and client certificates, expired
//! ones, and files to point the proxy at.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A CA that signs leaves.
pub struct Pki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    ca: Issuer<'static, KeyPair>,
}

/// A signed certificate and its key.
pub struct Leaf {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Certificate, DER.
    pub cert_der: Vec<u8>,
    /// Private key, PEM.
    pub key_pem: String,
}

impl Pki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            ca_pem: cert.pem(),
            ca: Issuer::new(params, key),
        }
    }

    /// A certificate valid now for `names` (DNS names or IP addresses).
    pub fn leaf(&self, common_name: &str, names: &[&str]) -> Leaf {
        self.sign(common_name, names, false)
    }

    /// A certificate for `names` that expired in 2021.
    pub fn expired_leaf(&self, common_name: &str, names: &[&str]) -> Leaf {
        self.sign(common_name, names, true)
    }

    fn sign(&self, common_name: &str, names: &[&str], expired: bool) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        }
    }
}

// Test files live where the kit puts them (shared with proxy/tests).
pub use kit::{temp_dir, write};
