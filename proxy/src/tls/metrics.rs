//! `sidetrace_tls_handshakes_total{side,version,result}`: every TLS
//! handshake the proxy takes part in, inbound (clients of the app) and
//! upstream (the proxy as a TLS client).
//!
//! The handles are registered once with the proxy's recorder, every series
//! up front (as the other self-metrics), so `rate()` sees zeros rather than
//! missing series; recording is an array index and an atomic add.
//!
//! ```
//! use sidetrace::tls::metrics::{HandshakeMetrics, HandshakeResult, HandshakeSide};
//!
//! let handshakes = HandshakeMetrics::noop();
//! handshakes.record(
//!     HandshakeSide::Upstream,
//!     Some(rustls::ProtocolVersion::TLSv1_3),
//!     HandshakeResult::Ok,
//! );
//! ```

use std::sync::Arc;

use metrics::{Counter, Key, Label, Metadata, Recorder};
use rustls::ProtocolVersion;

/// The metric's name.
pub const HANDSHAKES: &str = "sidetrace_tls_handshakes_total";

/// Which end of a connection the proxy was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeSide {
    /// The proxy terminated TLS for a client of the inbound listener.
    Inbound,
    /// The proxy was the client, towards an upstream.
    Upstream,
}

/// How a handshake ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeResult {
    /// Completed.
    Ok,
    /// Failed: a protocol error, a refused or missing certificate, or the
    /// peer closing the connection.
    Error,
    /// Not completed within its deadline; the connection was closed.
    Timeout,
}

/// Counter handles for every `side`, `version` and `result`.
#[derive(Clone, Debug)]
pub struct HandshakeMetrics {
    /// By side, then version (1.2, 1.3, unknown), then result.
    counters: Arc<[[[Counter; 3]; 3]; 2]>,
}

/// The `version` label values, by index.
const VERSIONS: [&str; 3] = ["1.2", "1.3", "unknown"];

/// The `version` label (and `tls.protocol.version` value) of a negotiated
/// version: `1.2`, `1.3`, or `unknown` (no version agreed yet, or one
/// rustls does not offer).
pub fn version_label(version: Option<ProtocolVersion>) -> &'static str {
    VERSIONS[version_index(version)]
}

fn version_index(version: Option<ProtocolVersion>) -> usize {
    match version {
        Some(ProtocolVersion::TLSv1_2) => 0,
        Some(ProtocolVersion::TLSv1_3) => 1,
        _ => 2,
    }
}

// === impl HandshakeSide ===

impl HandshakeSide {
    const ALL: [Self; 2] = [Self::Inbound, Self::Upstream];

    /// The `side` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Upstream => "upstream",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

// === impl HandshakeResult ===

impl HandshakeResult {
    const ALL: [Self; 3] = [Self::Ok, Self::Error, Self::Timeout];

    /// The `result` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Timeout => "timeout",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

// === impl HandshakeMetrics ===

impl HandshakeMetrics {
    /// Registers every series with `recorder` (the proxy's
    /// `PrometheusRecorder`), at zero.
    pub fn register(recorder: &dyn Recorder) -> Self {
        let md = Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
        let counters = HandshakeSide::ALL.map(|side| {
            VERSIONS.map(|version| {
                HandshakeResult::ALL.map(|result| {
                    let labels = vec![
                        Label::new("side", side.as_str()),
                        Label::new("version", version),
                        Label::new("result", result.as_str()),
                    ];
                    recorder.register_counter(&Key::from_parts(HANDSHAKES, labels), &md)
                })
            })
        });
        Self {
            counters: Arc::new(counters),
        }
    }

    /// Handles that record nothing (tests, benches).
    pub fn noop() -> Self {
        Self {
            counters: Arc::new(std::array::from_fn(|_| {
                std::array::from_fn(|_| std::array::from_fn(|_| Counter::noop()))
            })),
        }
    }

    /// Counts one handshake. `version` is the one the server chose, when
    /// the handshake got that far.
    pub fn record(
        &self,
        side: HandshakeSide,
        version: Option<ProtocolVersion>,
        result: HandshakeResult,
    ) {
        self.counters[side.index()][version_index(version)][result.index()].increment(1);
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    #[test]
    fn every_series_exists_and_counts_under_its_labels() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handshakes = HandshakeMetrics::register(&recorder);
        handshakes.record(
            HandshakeSide::Inbound,
            Some(ProtocolVersion::TLSv1_3),
            HandshakeResult::Ok,
        );
        handshakes.record(
            HandshakeSide::Inbound,
            Some(ProtocolVersion::TLSv1_3),
            HandshakeResult::Ok,
        );
        handshakes.record(HandshakeSide::Upstream, None, HandshakeResult::Timeout);
        handshakes.record(
            HandshakeSide::Inbound,
            Some(ProtocolVersion::TLSv1_0),
            HandshakeResult::Error,
        );
        let text = recorder.handle().render();
        let series = |labels: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{HANDSHAKES}{{{labels}}} ")))
                .unwrap_or_else(|| panic!("no series {labels} in\n{text}"))
                .to_string()
        };
        assert_eq!(series(r#"side="inbound",version="1.3",result="ok""#), "2");
        assert_eq!(
            series(r#"side="upstream",version="unknown",result="timeout""#),
            "1"
        );
        assert_eq!(
            series(r#"side="inbound",version="unknown",result="error""#),
            "1"
        );
        assert_eq!(
            series(r#"side="upstream",version="1.2",result="error""#),
            "0"
        );
        let count = text
            .lines()
            .filter(|l| l.starts_with(&format!("{HANDSHAKES}{{")))
            .count();
        assert_eq!(count, 18, "2 sides x 3 versions x 3 results\n{text}");
    }

    #[test]
    fn version_labels() {
        assert_eq!(version_label(Some(ProtocolVersion::TLSv1_2)), "1.2");
        assert_eq!(version_label(Some(ProtocolVersion::TLSv1_3)), "1.3");
        assert_eq!(version_label(None), "unknown");
    }
}
