//! A rolling window of two counters on atomics, shared by the circuit
//! breaker (requests, failures) and the retry budget (deposits, withdrawals).
//!
//! The window is cut into [`SLOTS`] slots; each slot holds the index of the
//! time slice it counts and both counters packed in one `u64`, so recording is
//! one `fetch_add` and a slot is recycled with one compare-and-swap on its
//! index. Under contention at a slot boundary a count can land in the slice
//! before or be lost to the reset: the window is a statistic, never a lock.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::time::Instant;

/// Number of slots a window is cut into.
pub(crate) const SLOTS: usize = 10;

/// Nanoseconds since a fixed instant, read from tokio's clock so paused
/// tests drive it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    base: Instant,
}

/// Two counters (`a`, `b`) summed over the last `span` of time.
#[derive(Debug)]
pub(crate) struct Window {
    slots: [Slot; SLOTS],
    slot_ns: u64,
}

#[derive(Debug, Default)]
struct Slot {
    /// Index of the time slice counted here, plus one (0: never used).
    slice: AtomicU64,
    /// `b` in the high 32 bits, `a` in the low 32 bits.
    counts: AtomicU64,
}

// === impl Clock ===

impl Clock {
    /// A clock starting now.
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
        }
    }

    /// Nanoseconds since the clock was made.
    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

// === impl Window ===

impl Window {
    /// A window over `span` (at least one nanosecond per slot).
    pub(crate) fn new(span: Duration) -> Self {
        let span_ns = u64::try_from(span.as_nanos()).unwrap_or(u64::MAX);
        Self {
            slots: Default::default(),
            slot_ns: (span_ns / SLOTS as u64).max(1),
        }
    }

    fn slice(&self, now_ns: u64) -> u64 {
        now_ns / self.slot_ns + 1
    }

    /// Adds `a` and `b` to the slice holding `now_ns`.
    pub(crate) fn add(&self, now_ns: u64, a: u32, b: u32) {
        let slice = self.slice(now_ns);
        let slot = &self.slots[(slice % SLOTS as u64) as usize];
        let seen = slot.slice.load(Ordering::Acquire);
        if seen < slice
            && slot
                .slice
                .compare_exchange(seen, slice, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.counts.store(0, Ordering::Release);
        }
        slot.counts
            .fetch_add(u64::from(a) | (u64::from(b) << 32), Ordering::AcqRel);
    }

    /// Sums `(a, b)` over the slices of the last `span` up to `now_ns`.
    pub(crate) fn sum(&self, now_ns: u64) -> (u64, u64) {
        let slice = self.slice(now_ns);
        let (mut a, mut b) = (0, 0);
        for slot in &self.slots {
            let seen = slot.slice.load(Ordering::Acquire);
            // Slices ahead of `now` belong to a racing writer: count them too.
            if seen != 0 && seen + SLOTS as u64 > slice {
                let counts = slot.counts.load(Ordering::Acquire);
                a += counts & u64::from(u32::MAX);
                b += counts >> 32;
            }
        }
        (a, b)
    }

    /// Forgets everything counted so far.
    pub(crate) fn reset(&self) {
        for slot in &self.slots {
            slot.slice.store(0, Ordering::Release);
            slot.counts.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn counts_roll_out_of_the_window() {
        let w = Window::new(Duration::from_secs(1));
        w.add(0, 1, 0);
        w.add(50 * MS, 2, 1);
        w.add(550 * MS, 3, 2);
        assert_eq!(w.sum(600 * MS), (6, 3));
        // At 1.05 s the first slice (0..100 ms) is out of the window.
        assert_eq!(w.sum(1_050 * MS), (3, 2));
        assert_eq!(w.sum(1_650 * MS), (0, 0));
        // A recycled slot starts from zero.
        w.add(1_000 * MS, 1, 1);
        assert_eq!(w.sum(1_000 * MS), (4, 3));
        assert_eq!(w.sum(1_600 * MS), (1, 1));
    }

    #[test]
    fn reset_forgets() {
        let w = Window::new(Duration::from_secs(10));
        w.add(5, 7, 7);
        w.reset();
        assert_eq!(w.sum(5), (0, 0));
    }
}
