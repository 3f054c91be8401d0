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

    fn layer(&self, _: &BuildContext) -> Result<HttpLayer, ConfigError> {
        self.check()?;
        Ok(HttpLayer::new(RetryLayer::new(self)))
    }
}
