//! The drain signal: one sender flips it on SIGTERM, every listener and
//! connection watches it.
//!
//! SIGTERM reaches the pod while its endpoints are still being removed from
//! Services and load balancers, so the drain may be announced first: `/ready`
//! answers 503 at once while the listeners keep accepting for the drain
//! delay, and only then does the drain itself start.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::watch;

/// Starts a drain.
#[derive(Clone, Debug)]
pub struct DrainTrigger(watch::Sender<bool>, Arc<AtomicBool>);

/// Observes a drain.
#[derive(Clone, Debug)]
pub struct Drain(watch::Receiver<bool>);

/// A new trigger and its observer.
pub fn channel() -> (DrainTrigger, Drain) {
    let (tx, rx) = watch::channel(false);
    (DrainTrigger(tx, Arc::default()), Drain(rx))
}

// === impl DrainTrigger ===

impl DrainTrigger {
    /// Starts draining; idempotent.
    pub fn drain(&self) {
        self.0.send_replace(true);
    }

    /// Whether a drain has started or been announced: from then on `/ready`
    /// answers 503.
    pub fn is_draining(&self) -> bool {
        self.1.load(Ordering::Relaxed) || *self.0.borrow()
    }

    /// Announces the drain, keeps everything running for `delay` (or until
    /// `cut_short` resolves: a second signal), then starts it. Clients that
    /// still pick this pod while it leaves the endpoints are served.
    pub async fn drain_after(&self, delay: Duration, cut_short: impl Future<Output = ()>) {
        self.1.store(true, Ordering::Relaxed);
        if !delay.is_zero() && !*self.0.borrow() {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cut_short => tracing::info!("second signal: draining now"),
            }
        }
        self.drain();
    }

    /// A new observer.
    pub fn subscribe(&self) -> Drain {
        Drain(self.0.subscribe())
    }
}

// === impl Drain ===

impl Drain {
    /// Whether a drain has started.
    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a drain has started; never, when every trigger is gone
    /// without starting one.
    pub async fn signaled(&mut self) {
        if self.0.wait_for(|draining| *draining).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// An observer that never sees a drain.
    pub fn never() -> Self {
        channel().1
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_after_announces_at_once_and_drains_after_the_delay() {
        let (trigger, drain) = channel();
        let announced = trigger.clone();
        let task = tokio::spawn(async move {
            announced
                .drain_after(Duration::from_secs(5), std::future::pending())
                .await;
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(trigger.is_draining(), "/ready turns 503 at once");
        assert!(!drain.is_draining(), "listeners keep accepting");
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!drain.is_draining());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(drain.is_draining(), "the drain starts after the delay");
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_signal_cuts_the_delay_short() {
        let (trigger, drain) = channel();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let announced = trigger.clone();
        let task = tokio::spawn(async move {
            announced
                .drain_after(Duration::from_secs(60), async {
                    let _ = rx.await;
                })
                .await;
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!drain.is_draining());
        tx.send(()).unwrap();
        task.await.unwrap();
        assert!(drain.is_draining());
    }

    #[tokio::test]
    async fn a_zero_delay_drains_at_once() {
        let (trigger, drain) = channel();
        trigger
            .drain_after(Duration::ZERO, std::future::pending())
            .await;
        assert!(drain.is_draining() && trigger.is_draining());
    }
}
