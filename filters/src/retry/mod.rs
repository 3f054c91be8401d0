#![doc = include_str!("../../../docs/filters/retry.md")]

mod budget;
mod config;
mod future;
mod replay;
mod service;

#[cfg(test)]
mod tests;

pub use self::{
    config::{RetryConfig, RetryOn},
    future::ResponseFuture,
    service::{Retry, RetryLayer},
};

use crate::{
    registry::{BuildContext, ConfigError, Filter},
    HttpLayer,
};

// === impl RetryConfig ===

impl Filter for RetryConfig {
    const NAME: &'static str = "retry";

    fn validate(&self) -> Result<(), ConfigError> {
        self.check()
    }

    fn layer(&self, cx: &BuildContext) -> Result<HttpLayer, ConfigError> {
        self.check()?;
        Ok(HttpLayer::new(RetryLayer::counting(
            self,
            cx.metrics.counter(crate::filter_metrics::RETRY_ATTEMPTS),
            cx.metrics
                .counter(crate::filter_metrics::RETRY_BUDGET_EXHAUSTED),
        )))
    }
}
