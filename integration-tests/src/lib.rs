//! In-process end-to-end tests of sidetrace against real peers on loopback.
//!
//! The harness starts the real proxy (on its own runtime thread, as in
//! production), the real echo app or purpose-built upstreams, and drives them
//! with real clients: hyper HTTP/1.1 and h2c, curl, Python `grpcio`. Every
//! socket binds `127.0.0.1:0`; every wait is bounded by [`PATIENCE`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod client;
pub mod otlp;
pub mod peers;
pub mod pki;
pub mod proxy;
pub mod tls_upstream;
pub mod upstream;

#[cfg(test)]
mod tests;

// The waits, the metrics parser and the reliability figures are the test
// kit's, shared with the proxy's own tests of the real binary (proxy/tests).
pub use kit::{assert_eventually, metric_sum, parse_metrics, report, PATIENCE};
