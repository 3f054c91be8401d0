//! `CircuitBreakerConfig`: the YAML of the `circuit_breaker` filter.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::registry::ConfigError;

/// Config of the `circuit_breaker` filter.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Share of failed requests in the window that opens the breaker (0 < r ≤ 1).
    #[serde(default = "default_failure_ratio")]
    pub failure_ratio: f64,
    /// Fewest requests in the window before the ratio is trusted.
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    /// How long the breaker stays open before it lets one probe through.
    #[serde(default = "default_open_for", with = "crate::duration")]
    pub open_for: Duration,
    /// The rolling window over which requests and failures are counted.
    #[serde(default = "default_window", with = "crate::duration")]
    pub window: Duration,
}

fn default_failure_ratio() -> f64 {
    0.5
}

fn default_min_requests() -> u32 {
    20
}

fn default_open_for() -> Duration {
    Duration::from_secs(10)
}

fn default_window() -> Duration {
    Duration::from_secs(10)
}

// === impl CircuitBreakerConfig ===

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_ratio: default_failure_ratio(),
            min_requests: default_min_requests(),
            open_for: default_open_for(),
            window: default_window(),
        }
    }
}

impl CircuitBreakerConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if !(self.failure_ratio > 0.0 && self.failure_ratio <= 1.0) {
            return Err(ConfigError {
                field: "failure_ratio",
                message: format!("{} is not in (0, 1]", self.failure_ratio),
            });
        }
        if self.min_requests == 0 {
            return Err(ConfigError {
                field: "min_requests",
                message: "must be at least 1".into(),
            });
        }
        if self.open_for.is_zero() {
            return Err(ConfigError {
                field: "open_for",
                message: "must be greater than 0".into(),
            });
        }
        if self.open_for > Duration::from_secs(24 * 3600) {
            return Err(ConfigError {
                field: "open_for",
                message: "is above 24h".into(),
            });
        }
        if self.window < Duration::from_millis(10) {
            return Err(ConfigError {
                field: "window",
                message: "must be at least 10ms".into(),
            });
        }
        Ok(())
    }
}
