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
pub mod report;
pub mod tls_upstream;
pub mod upstream;

#[cfg(test)]
mod tests;

use std::time::Duration;

/// How long any wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Retries an async condition until it holds or [`PATIENCE`] runs out.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $($msg:tt)+) => {{
        let deadline = tokio::time::Instant::now() + $crate::PATIENCE;
        loop {
            if $cond {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                panic!($($msg)+);
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }};
}

/// Parses a Prometheus text exposition into `(series, value)` pairs.
pub fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Sum of the values of series named `name` whose labels contain every
/// `key="value"` pair in `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse_metrics(text)
        .into_iter()
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series.as_str(), ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}
