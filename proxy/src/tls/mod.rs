//! TLS with rustls 0.23 and its default aws-lc-rs provider, whose defaults
//! offer the post-quantum hybrid X25519MLKEM768 first.
//!
//! - [`server`]: inbound termination (ALPN `h2`/`http/1.1`, optional mTLS),
//!   with a handshake deadline.
//! - [`facts`]: what an inbound handshake negotiated, as span attributes.
//! - [`client`]: TLS to upstreams and collectors (verification, SNI, mTLS, ALPN).
//! - [`metrics`]: `sidetrace_tls_handshakes_total`, for both sides.
//! - [`pem`]: reading certificates and keys, shared by every side.
//! - [`watch`]: reloading certificate files when they change.
//! - [`probe`], [`x509`]: the version of a failed handshake; a client
//!   certificate's subject.

pub mod client;
pub mod facts;
pub mod metrics;
pub mod pem;
pub mod probe;
pub mod server;
pub mod watch;
pub mod x509;

pub use self::{
    pem::TlsError,
    server::{server_config, ReloadingCert},
};
