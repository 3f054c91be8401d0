#![doc = include_str!("../../../docs/filters/circuit_breaker.md")]

mod config;
mod future;
mod service;
mod state;
pub(crate) mod window;

#[cfg(test)]
mod tests;

pub use self::{
    config::CircuitBreakerConfig,
    future::ResponseFuture,
    service::{CircuitBreaker, CircuitBreakerLayer},
};

use crate::{
    registry::{BuildContext, ConfigError, Filter},
    HttpLayer,
};

// === impl CircuitBreakerConfig ===

impl Filter for CircuitBreakerConfig {
    const NAME: &'static str = "circuit_breaker";

    fn validate(&self) -> Result<(), ConfigError> {
        self.check()
    }

    fn layer(&self, cx: &BuildContext) -> Result<HttpLayer, ConfigError> {
        self.check()?;
        Ok(HttpLayer::new(CircuitBreakerLayer::recording(
            self,
            &cx.metrics,
        )))
    }
}
