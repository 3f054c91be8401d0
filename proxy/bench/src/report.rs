//! The report of one run: throughput, HDR latency percentiles, status and
//! error counts, bytes; rendered as a table for people or JSON for machines.

use std::{collections::BTreeMap, fmt::Write as _};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Duration;

use super::{
    args::{BenchConfig, Protocol},
    load::RunOutput,
    stats::ErrorCounts,
};

/// Percentiles listed in [`Report::percentiles`].
const LADDER: [f64; 13] = [
    0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0,
];

/// Latency summary in microseconds (responses only: failed requests carry no latency).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Fastest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub stdev: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Slowest.
    pub max: f64,
}

/// One point of the latency distribution.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Percentile {
    /// Percentile, 0..=100.
    pub percentile: f64,
    /// Latency at that percentile, microseconds.
    pub latency_us: f64,
}

/// Body bytes moved (headers are not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Bytes {
    /// Request body bytes sent (gRPC: framed).
    pub sent: u64,
    /// Response body bytes received.
    pub received: u64,
}

/// The result of one run (or, for `--compare`, of all rounds against one target).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Target URL.
    pub url: String,
    /// Protocol spoken.
    pub protocol: Protocol,
    /// `closed` (back-to-back on each connection) or `open` (constant arrival rate).
    pub mode: &'static str,
    /// Open-loop target rate, requests per second.
    pub rate: Option<f64>,
    /// Connections.
    pub connections: usize,
    /// In-flight requests per connection.
    pub streams: usize,
    /// Measured seconds (warm-up excluded), until the last response.
    pub duration_s: f64,
    /// With `--duration`: seconds of sending, after which requests still in
    /// flight ran to their end.
    pub planned_s: Option<f64>,
    /// Requests in flight at the end of `--duration` that completed after it
    /// (counted, with their whole latency).
    pub late_requests: u64,
    /// Requests measured, failed ones included.
    pub requests: u64,
    /// Requests that got a 1xx–3xx response (and `grpc-status: 0` for gRPC).
    pub succeeded: u64,
    /// `requests - succeeded`.
    pub failed: u64,
    /// Measured requests per second.
    pub throughput_rps: f64,
    /// Latency summary, microseconds.
    pub latency_us: Latency,
    /// Latency at fixed percentiles.
    pub percentiles: Vec<Percentile>,
    /// Responses by HTTP status.
    pub status_codes: BTreeMap<String, u64>,
    /// gRPC responses by `grpc-status` (`other` for codes above 16).
    pub grpc_status: BTreeMap<String, u64>,
    /// Failures by category.
    pub errors: ErrorCounts,
    /// Body bytes.
    pub bytes: Bytes,
    #[serde(skip)]
    histogram: Histogram<u64>,
}

impl Report {
    /// Builds the report of a run.
    pub(super) fn new(config: &BenchConfig, out: &RunOutput) -> Self {
        let s = &out.stats;
        let h = &s.latency;
        let secs = out.elapsed.as_secs_f64();
        #[allow(clippy::cast_precision_loss)] // request counts are far below 2^53
        let throughput_rps = if secs > 0.0 {
            s.requests as f64 / secs
        } else {
            0.0
        };
        let us = |nanos: u64| nanos_to_us(nanos as f64);
        let latency_us = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                min: us(h.min()),
                mean: nanos_to_us(h.mean()),
                stdev: nanos_to_us(h.stdev()),
                p50: us(h.value_at_quantile(0.5)),
                p90: us(h.value_at_quantile(0.9)),
                p99: us(h.value_at_quantile(0.99)),
                p99_9: us(h.value_at_quantile(0.999)),
                max: us(h.max()),
            }
        };
        let failed = s.errors.total();
        Self {
            url: config.url.to_string(),
            protocol: config.protocol,
            mode: if config.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            rate: config.rate,
            connections: config.connections,
            streams: config.per_connection(),
            duration_s: secs,
            planned_s: out.planned.map(|d| d.as_secs_f64()),
            late_requests: s.late,
            requests: s.requests,
            succeeded: s.requests - failed,
            failed,
            throughput_rps,
            latency_us,
            percentiles: LADDER
                .iter()
                .map(|&p| Percentile {
                    percentile: p,
                    latency_us: if h.is_empty() {
                        0.0
                    } else {
                        us(h.value_at_quantile(p / 100.0))
                    },
                })
                .collect(),
            status_codes: s.statuses().map(|(c, n)| (c.to_string(), n)).collect(),
            grpc_status: s
                .grpc_statuses()
                .map(|(c, n)| {
                    (
                        if c > 16 {
                            "other".to_string()
                        } else {
                            c.to_string()
                        },
                        n,
                    )
                })
                .collect(),
            errors: s.errors,
            bytes: Bytes {
                sent: s.sent,
                received: s.received,
            },
            histogram: h.clone(),
        }
    }

    /// Latency at `percentile` (0..=100), from the full histogram; zero when nothing was measured.
    pub fn latency_at(&self, percentile: f64) -> Duration {
        if self.histogram.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.histogram.value_at_quantile(percentile / 100.0))
    }

    /// Requests that got a response (and so a latency).
    pub fn responses(&self) -> u64 {
        self.histogram.len()
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let load = match self.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => "closed loop".to_string(),
        };
        let _ = writeln!(
            t,
            "{} ({}, {load}, {} connections x {} in flight)",
            self.url,
            self.protocol.as_str(),
            self.connections,
            self.streams
        );
        let _ = writeln!(
            t,
            "  requests    {} in {:.2}s: {} ok, {} failed",
            self.requests, self.duration_s, self.succeeded, self.failed
        );
        if let Some(planned) = self.planned_s.filter(|p| self.duration_s > p + 0.05) {
            // Never silently longer than asked: say how much and why.
            let _ = writeln!(
                t,
                "              {:.2}s past the {planned:.2}s asked for: {} requests in flight at the deadline ran to their end (counted, with their whole latency)",
                self.duration_s - planned,
                self.late_requests
            );
        }
        let _ = writeln!(t, "  throughput  {:.1} req/s", self.throughput_rps);
        let _ = writeln!(
            t,
            "  transfer    {} received, {} sent (bodies)",
            human_bytes(self.bytes.received),
            human_bytes(self.bytes.sent)
        );
        let l = &self.latency_us;
        let _ = writeln!(
            t,
            "  latency     {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        let _ = writeln!(
            t,
            "              {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            fmt_us(l.p50),
            fmt_us(l.p90),
            fmt_us(l.p99),
            fmt_us(l.p99_9),
            fmt_us(l.max),
            fmt_us(l.mean)
        );
        let _ = writeln!(t, "  status      {}", counts(&self.status_codes));
        if !self.grpc_status.is_empty() {
            let _ = writeln!(t, "  grpc-status {}", counts(&self.grpc_status));
        }
        let e = &self.errors;
        let errors: Vec<String> = [
            ("connect", e.connect),
            ("timeout", e.timeout),
            ("reset", e.reset),
            ("http 4xx", e.http_4xx),
            ("http 5xx", e.http_5xx),
            ("grpc", e.grpc),
            ("other", e.other),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
        let errors = if errors.is_empty() {
            "none".to_string()
        } else {
            errors.join(", ")
        };
        let _ = writeln!(t, "  errors      {errors}");
        t
    }
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_string();
    }
    map.iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn nanos_to_us(nanos: f64) -> f64 {
    (nanos / 1000.0 * 1000.0).round() / 1000.0
}

/// `85µs`, `1.23ms`, `2.50s`.
pub(super) fn fmt_us(us: f64) -> String {
    let a = us.abs();
    if a < 1000.0 {
        format!("{us:.0}µs")
    } else if a < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

#[allow(clippy::cast_precision_loss)] // display only
fn human_bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", n as f64 / 1_048_576.0),
        _ => format!("{:.2} GiB", n as f64 / 1_073_741_824.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_us(85.4), "85µs");
        assert_eq!(fmt_us(1234.0), "1.23ms");
        assert_eq!(fmt_us(2_500_000.0), "2.50s");
        assert_eq!(human_bytes(2048), "2.0 KiB");
    }
}
