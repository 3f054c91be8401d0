//! `RetryConfig`: the YAML of the `retry` filter.

use std::{fmt, time::Duration};

use http::StatusCode;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::registry::ConfigError;

/// Config of the `retry` filter.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Tries per request, the first one included (`2`: one retry).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Retries allowed on top of first attempts, in percent, over the last 10 s.
    #[serde(default = "default_budget_percent")]
    pub budget_percent: u32,
    /// Retries per second allowed whatever the traffic, so quiet services can retry.
    #[serde(default = "default_min_per_second")]
    pub min_per_second: u32,
    /// What to retry: `connect_error`, `reset`, `timeout`, or a status from 400 to 599.
    #[serde(default = "default_on")]
    pub on: Vec<RetryOn>,
    /// Wait before the first retry; doubles for each further one, with jitter.
    #[serde(default = "default_backoff", with = "crate::duration")]
    pub backoff: Duration,
    /// Largest request body kept to send again; larger bodies are not retried.
    #[serde(default = "default_max_replay_bytes")]
    pub max_replay_bytes: u64,
}

/// A condition under which a request is sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryOn {
    /// The upstream could not be reached: nothing was sent, so any method may
    /// be retried.
    ConnectError,
    /// The connection broke before the response: idempotent methods only.
    Reset,
    /// An inner `timeout` filter gave up on the attempt: idempotent methods only.
    Timeout,
    /// The upstream answered with this status: idempotent methods only.
    Status(StatusCode),
}

/// Most attempts a request may make.
pub(super) const MAX_ATTEMPTS: u32 = 10;
/// Largest replay buffer accepted.
pub(super) const MAX_REPLAY_BYTES: u64 = 16 * 1024 * 1024;

fn default_attempts() -> u32 {
    2
}

fn default_budget_percent() -> u32 {
    20
}

fn default_min_per_second() -> u32 {
    10
}

fn default_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectError]
}

fn default_backoff() -> Duration {
    Duration::from_millis(25)
}

fn default_max_replay_bytes() -> u64 {
    64 * 1024
}

// === impl RetryConfig ===

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: default_attempts(),
            budget_percent: default_budget_percent(),
            min_per_second: default_min_per_second(),
            on: default_on(),
            backoff: default_backoff(),
            max_replay_bytes: default_max_replay_bytes(),
        }
    }
}

impl RetryConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_ATTEMPTS).contains(&self.attempts) {
            return Err(ConfigError {
                field: "attempts",
                message: format!("{} is not in 1..={MAX_ATTEMPTS}", self.attempts),
            });
        }
        if self.budget_percent > 1000 {
            return Err(ConfigError {
                field: "budget_percent",
                message: format!("{} is above 1000", self.budget_percent),
            });
        }
        for on in &self.on {
            if let RetryOn::Status(s) = on {
                if !(s.is_client_error() || s.is_server_error()) {
                    return Err(ConfigError {
                        field: "on",
                        message: format!("status {} is not an error (400..=599)", s.as_u16()),
                    });
                }
            }
        }
        if self.max_replay_bytes > MAX_REPLAY_BYTES {
            return Err(ConfigError {
                field: "max_replay_bytes",
                message: format!("{} is above {MAX_REPLAY_BYTES}", self.max_replay_bytes),
            });
        }
        if self.backoff > Duration::from_secs(60) {
            return Err(ConfigError {
                field: "backoff",
                message: "is above 60s".into(),
            });
        }
        Ok(())
    }
}

// === impl RetryOn ===

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl de::Visitor<'_> for Visitor {
            type Value = RetryOn;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("connect_error, reset, timeout or an HTTP status such as 503")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RetryOn, E> {
                u16::try_from(v)
                    .ok()
                    .and_then(|v| StatusCode::from_u16(v).ok())
                    .map(RetryOn::Status)
                    .ok_or_else(|| E::custom(format!("{v} is not an HTTP status")))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RetryOn, E> {
                let v = u64::try_from(v)
                    .map_err(|_| E::custom(format!("{v} is not an HTTP status")))?;
                self.visit_u64(v)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RetryOn, E> {
                match v {
                    "connect_error" => Ok(RetryOn::ConnectError),
                    "reset" => Ok(RetryOn::Reset),
                    "timeout" => Ok(RetryOn::Timeout),
                    other => match other.parse::<u64>() {
                        Ok(n) => self.visit_u64(n),
                        Err(_) => Err(E::custom(format!(
                            "unknown retry condition `{other}`, expected connect_error, reset, \
                             timeout or an HTTP status such as 503"
                        ))),
                    },
                }
            }
        }

        d.deserialize_any(Visitor)
    }
}

impl Serialize for RetryOn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::ConnectError => s.serialize_str("connect_error"),
            Self::Reset => s.serialize_str("reset"),
            Self::Timeout => s.serialize_str("timeout"),
            Self::Status(status) => s.serialize_u16(status.as_u16()),
        }
    }
}
