//! Hands out request tickets to the connections, without locks.
//!
//! A connection takes a ticket only when it has a free slot. Closed loop: a
//! ticket is just permission to send now. Open loop (wrk2's constant
//! arrival): ticket `i` is due at `start + i / rate`; a free connection sleeps
//! until it is due, and a ticket taken late (every connection was busy when it
//! fell due) is measured from its due time, so queueing shows in the latency
//! instead of being omitted ("coordinated omission").

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::{Duration, Instant};

use super::args::{BenchConfig, Length};

/// One request's permission to be sent.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ticket {
    /// Open loop: when the request is due.
    pub(super) due: Option<Instant>,
    /// False during warm-up.
    pub(super) record: bool,
}

/// The shared ticket dispenser of one run.
#[derive(Debug)]
pub(super) struct Schedule {
    start: Instant,
    measure_start: Instant,
    end: Option<Instant>,
    total: Option<u64>,
    rate: Option<f64>,
    warm: AtomicU64,
    main: AtomicU64,
}

impl Schedule {
    /// A schedule whose warm-up begins at `start`.
    pub(super) fn new(config: &BenchConfig, start: Instant) -> Self {
        let measure_start = start + config.warmup;
        let (end, total) = match config.length {
            Length::Duration(d) => (Some(measure_start + d), None),
            Length::Requests(n) => (None, Some(n)),
        };
        Self {
            start,
            measure_start,
            end,
            total,
            rate: config.rate,
            warm: AtomicU64::new(0),
            main: AtomicU64::new(0),
        }
    }

    /// When recording starts.
    pub(super) fn measure_start(&self) -> Instant {
        self.measure_start
    }

    /// When a `--duration` run stops sending new requests.
    pub(super) fn end(&self) -> Option<Instant> {
        self.end
    }

    /// The next ticket, or `None` when the run is over. `now` is the caller's clock.
    pub(super) fn next(&self, now: Instant) -> Option<Ticket> {
        match self.rate {
            None => self.next_closed(now),
            Some(rate) => self.next_open(rate),
        }
    }

    fn next_closed(&self, now: Instant) -> Option<Ticket> {
        if now < self.measure_start {
            return Some(Ticket {
                due: None,
                record: false,
            });
        }
        let go = match (self.total, self.end) {
            (Some(total), _) => self.main.fetch_add(1, Ordering::Relaxed) < total,
            (None, Some(end)) => now < end,
            (None, None) => false,
        };
        go.then_some(Ticket {
            due: None,
            record: true,
        })
    }

    fn next_open(&self, rate: f64) -> Option<Ticket> {
        if self.measure_start > self.start {
            let i = self.warm.fetch_add(1, Ordering::Relaxed);
            let due = self.start + at(i, rate);
            if due < self.measure_start {
                return Some(Ticket {
                    due: Some(due),
                    record: false,
                });
            }
        }
        let i = self.main.fetch_add(1, Ordering::Relaxed);
        let due = self.measure_start + at(i, rate);
        let go = match (self.total, self.end) {
            (Some(total), _) => i < total,
            (None, Some(end)) => due < end,
            (None, None) => false,
        };
        go.then_some(Ticket {
            due: Some(due),
            record: true,
        })
    }
}

/// Offset of the `i`th arrival at `rate` per second.
#[allow(clippy::cast_precision_loss)] // exact below 2^53 requests
fn at(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(length: Length, rate: Option<f64>, warmup: u64) -> BenchConfig {
        let mut c = BenchConfig::new("http://127.0.0.1:1/").unwrap();
        c.length = length;
        c.rate = rate;
        c.warmup = Duration::from_secs(warmup);
        c
    }

    #[test]
    fn open_loop_counts_arrivals() {
        let now = Instant::now();
        let s = Schedule::new(
            &config(Length::Duration(Duration::from_secs(3)), Some(200.0), 1),
            now,
        );
        let tickets: Vec<Ticket> = std::iter::from_fn(|| s.next(now)).collect();
        assert_eq!(tickets.iter().filter(|t| !t.record).count(), 200);
        assert_eq!(tickets.iter().filter(|t| t.record).count(), 600);
        assert_eq!(tickets[200].due, Some(now + Duration::from_secs(1)));
    }

    #[test]
    fn closed_loop_counts_requests() {
        let now = Instant::now();
        let s = Schedule::new(&config(Length::Requests(7), None, 0), now);
        assert_eq!(std::iter::from_fn(|| s.next(now)).count(), 7);
        assert!(s.next(now).is_none(), "stays over");
    }
}
