//! The drain signal: one sender flips it on SIGTERM, every listener and
//! connection watches it.

use tokio::sync::watch;

/// Starts a drain.
#[derive(Clone, Debug)]
pub struct DrainTrigger(watch::Sender<bool>);

/// Observes a drain.
#[derive(Clone, Debug)]
pub struct Drain(watch::Receiver<bool>);

/// A new trigger and its observer.
pub fn channel() -> (DrainTrigger, Drain) {
    let (tx, rx) = watch::channel(false);
    (DrainTrigger(tx), Drain(rx))
}

// === impl DrainTrigger ===

impl DrainTrigger {
    /// Starts draining; idempotent.
    pub fn drain(&self) {
        self.0.send_replace(true);
    }

    /// Whether a drain has started.
    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
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
