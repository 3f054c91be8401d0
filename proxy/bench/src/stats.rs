//! What one connection records: an HDR latency histogram, status and error
//! counts, bytes. Each connection task owns its own [`Stats`] (no sharing on
//! the hot path); the run merges them at the end. Live counters for the
//! progress bar are per-connection atomics written by one task only.

use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::{Duration, Instant};

/// Largest latency tracked (larger values are clamped): one hour, in nanoseconds.
const MAX_NANOS: u64 = 3_600_000_000_000;
/// Status codes 0..=599 are counted in an array.
const STATUS_SLOTS: usize = 600;
/// gRPC codes 0..=16; anything else lands in the last slot.
const GRPC_SLOTS: usize = 18;

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A complete response: HTTP status, gRPC status (gRPC only), body bytes received.
    Response {
        /// HTTP status.
        status: u16,
        /// `grpc-status`, for gRPC.
        grpc: Option<u16>,
        /// Response body bytes.
        received: u64,
    },
    /// No complete response.
    Failed(Failure),
}

/// Why a request got no complete response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// TCP connect (or HTTP/2 handshake) failed.
    Connect,
    /// No complete response within `--timeout`.
    Timeout,
    /// Connection closed or reset, or the HTTP/2 stream reset, mid-request.
    Reset,
    /// Protocol errors: unparsable response, gRPC reply without `grpc-status`.
    Other,
}

/// Error counts by category, as reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    /// Connect failures.
    pub connect: u64,
    /// Timeouts.
    pub timeout: u64,
    /// Connections or streams reset mid-request.
    pub reset: u64,
    /// HTTP 4xx responses.
    pub http_4xx: u64,
    /// HTTP 5xx responses.
    pub http_5xx: u64,
    /// gRPC responses with a non-zero `grpc-status`.
    pub grpc: u64,
    /// Other protocol errors.
    pub other: u64,
}

impl ErrorCounts {
    /// All errors.
    pub fn total(&self) -> u64 {
        self.connect
            + self.timeout
            + self.reset
            + self.http_4xx
            + self.http_5xx
            + self.grpc
            + self.other
    }

    fn merge(&mut self, o: &Self) {
        self.connect += o.connect;
        self.timeout += o.timeout;
        self.reset += o.reset;
        self.http_4xx += o.http_4xx;
        self.http_5xx += o.http_5xx;
        self.grpc += o.grpc;
        self.other += o.other;
    }
}

/// One connection's (and, merged, one run's) records.
#[derive(Clone, Debug)]
pub(super) struct Stats {
    pub(super) latency: Histogram<u64>,
    pub(super) status: Vec<u64>,
    pub(super) grpc: Vec<u64>,
    pub(super) errors: ErrorCounts,
    pub(super) requests: u64,
    pub(super) sent: u64,
    pub(super) received: u64,
    pub(super) last: Option<Instant>,
    /// Requests that were in flight when a `--duration` run stopped sending
    /// and completed after it.
    pub(super) late: u64,
}

impl Stats {
    pub(super) fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, MAX_NANOS, 3)
                .expect("1 ns .. 1 h at 3 significant digits is a valid histogram"),
            status: vec![0; STATUS_SLOTS],
            grpc: vec![0; GRPC_SLOTS],
            errors: ErrorCounts::default(),
            requests: 0,
            sent: 0,
            received: 0,
            last: None,
            late: 0,
        }
    }

    /// Records one measured request that ended at `done`, `latency` after it
    /// was due (open loop, late) or sent; returns whether it was an error.
    pub(super) fn record(
        &mut self,
        outcome: Outcome,
        latency: Duration,
        done: Instant,
        sent: u64,
    ) -> bool {
        self.requests += 1;
        self.sent += sent;
        self.last = Some(self.last.map_or(done, |l| l.max(done)));
        match outcome {
            Outcome::Response {
                status,
                grpc,
                received,
            } => {
                let nanos = u64::try_from(latency.as_nanos()).unwrap_or(MAX_NANOS);
                self.latency.saturating_record(nanos.max(1));
                self.received += received;
                self.status[usize::from(status).min(STATUS_SLOTS - 1)] += 1;
                if let Some(code) = grpc {
                    self.grpc[usize::from(code).min(GRPC_SLOTS - 1)] += 1;
                }
                match (status, grpc) {
                    (400..=499, _) => self.errors.http_4xx += 1,
                    (500..=599, _) => self.errors.http_5xx += 1,
                    (_, Some(code)) if code != 0 => self.errors.grpc += 1,
                    _ => return false,
                }
            }
            Outcome::Failed(Failure::Connect) => self.errors.connect += 1,
            Outcome::Failed(Failure::Timeout) => self.errors.timeout += 1,
            Outcome::Failed(Failure::Reset) => self.errors.reset += 1,
            Outcome::Failed(Failure::Other) => self.errors.other += 1,
        }
        true
    }

    /// Adds `other` into `self`.
    pub(super) fn merge(&mut self, other: &Self) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        for (a, b) in self.status.iter_mut().zip(&other.status) {
            *a += b;
        }
        for (a, b) in self.grpc.iter_mut().zip(&other.grpc) {
            *a += b;
        }
        self.errors.merge(&other.errors);
        self.requests += other.requests;
        self.sent += other.sent;
        self.received += other.received;
        self.late += other.late;
        self.last = match (self.last, other.last) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// Non-zero status counts as `(code, count)`.
    pub(super) fn statuses(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.status
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, n)| *n > 0)
    }

    /// Non-zero gRPC status counts; code 17 stands for "any other code".
    pub(super) fn grpc_statuses(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.grpc
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, n)| *n > 0)
    }
}

/// Live counts of one connection for the progress bar, written by that
/// connection's task only; padded so connections do not share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(super) struct Live {
    requests: AtomicU64,
    errors: AtomicU64,
}

impl Live {
    pub(super) fn add(&self, error: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(requests, errors)` so far.
    pub(super) fn read(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_and_merges() {
        let now = Instant::now();
        let ms = Duration::from_millis(1);
        let mut a = Stats::new();
        assert!(!a.record(
            Outcome::Response {
                status: 200,
                grpc: None,
                received: 3
            },
            ms,
            now,
            0
        ));
        assert!(a.record(
            Outcome::Response {
                status: 503,
                grpc: None,
                received: 0
            },
            ms,
            now,
            0
        ));
        let mut b = Stats::new();
        assert!(b.record(
            Outcome::Response {
                status: 200,
                grpc: Some(5),
                received: 0
            },
            ms,
            now,
            0
        ));
        assert!(b.record(Outcome::Failed(Failure::Connect), ms, now, 0));
        a.merge(&b);
        assert_eq!(a.requests, 4);
        assert_eq!(a.latency.len(), 3, "failures carry no latency");
        assert_eq!(
            (a.errors.http_5xx, a.errors.grpc, a.errors.connect),
            (1, 1, 1)
        );
        assert_eq!(a.statuses().collect::<Vec<_>>(), vec![(200, 2), (503, 1)]);
        assert_eq!(a.grpc_statuses().collect::<Vec<_>>(), vec![(5, 1)]);
    }
}
