//! The retry budget: retries may add at most a share of first attempts.
//!
//! Like linkerd's and tower's `TpsBudget`, every request deposits and every
//! retry withdraws; the balance is counted over a rolling 10 s window of
//! atomics, plus a reserve of `min_per_second` retries per second so a quiet
//! service can still retry. Checking and withdrawing are two steps, so
//! concurrent retries can overdraw by at most the number racing: a budget
//! bounds retry storms, it is not an accountant.

use std::time::Duration;

use crate::circuit_breaker::window::{Clock, Window};

/// The span over which deposits and withdrawals count.
pub(super) const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// Shared by every clone of one retry layer.
#[derive(Debug)]
pub(super) struct Budget {
    clock: Clock,
    /// `a`: deposits (requests), `b`: withdrawals (retries).
    window: Window,
    percent: u64,
    /// Retries always allowed in the window, times 100.
    reserve_x100: u64,
}

// === impl Budget ===

impl Budget {
    pub(super) fn new(percent: u32, min_per_second: u32) -> Self {
        Self {
            clock: Clock::new(),
            window: Window::new(BUDGET_WINDOW),
            percent: u64::from(percent),
            reserve_x100: u64::from(min_per_second) * BUDGET_WINDOW.as_secs() * 100,
        }
    }

    /// Records a request's first attempt.
    pub(super) fn deposit(&self) {
        self.window.add(self.clock.now_ns(), 1, 0);
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub(super) fn withdraw(&self) -> bool {
        let now = self.clock.now_ns();
        let (deposits, withdrawals) = self.window.sum(now);
        let allowed_x100 = deposits * self.percent + self.reserve_x100;
        if withdrawals * 100 >= allowed_x100 {
            return false;
        }
        self.window.add(now, 0, 1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn percent_of_deposits_plus_reserve() {
        let b = Budget::new(20, 0);
        assert!(!b.withdraw(), "no traffic, no reserve: no retries");
        for _ in 0..10 {
            b.deposit();
        }
        assert!(b.withdraw());
        assert!(b.withdraw());
        assert!(!b.withdraw(), "20 % of 10 is 2");
        // Deposits and withdrawals age out together.
        tokio::time::advance(BUDGET_WINDOW + Duration::from_secs(1)).await;
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn reserve_allows_min_per_second() {
        let b = Budget::new(0, 1);
        let allowed = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(allowed, 10, "1/s over a 10 s window");
    }
}
