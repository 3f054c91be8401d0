//! The filter registry: config names to layers.
//!
//! [`FilterConfig`] *is* the registry. Serde maps each YAML key (`timeout`,
//! `retry`, ...) to its typed config and rejects unknown names and fields with
//! their line and column; [`FilterConfig::layer`] is one exhaustive `match`,
//! so no filter can be half-registered.
//!
//! ```yaml
//! filters:
//!   - timeout: { request: 5s }
//! ```

use serde::{Deserialize, Serialize};

use crate::{timeout::TimeoutConfig, HttpLayer};

/// A filter: a typed config that builds a layer.
pub trait Filter {
    /// The name used in config files, e.g. `timeout`.
    const NAME: &'static str;

    /// Checks what serde cannot (ranges, relations between fields).
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Builds the layer. Runs at config load, never per request.
    fn layer(&self, cx: &BuildContext) -> Result<HttpLayer, ConfigError>;
}

/// One entry of the `filters:` list.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FilterConfig {
    /// Deadline for the whole request.
    Timeout(TimeoutConfig),
}

/// What a filter may use while it builds its layer.
#[derive(Clone, Debug, Default)]
pub struct BuildContext {
    /// Where in the config this filter sits, for error messages (`filters[2]`).
    pub path: String,
}

/// A config value that serde accepted but the filter cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The field, relative to the filter (`budget_percent`).
    pub field: &'static str,
    /// What is wrong and what would be right.
    pub message: String,
}

// === impl FilterConfig ===

impl FilterConfig {
    /// The filter's registry name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Timeout(_) => crate::timeout::TimeoutConfig::NAME,
        }
    }

    /// Checks the filter's config.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Self::Timeout(c) => c.validate(),
        }
    }

    /// Builds the filter's layer.
    pub fn layer(&self, cx: &BuildContext) -> Result<HttpLayer, ConfigError> {
        match self {
            Self::Timeout(c) => c.layer(cx),
        }
    }
}

/// Builds the configured chain over `inner`, first filter outermost.
pub fn build_chain(
    filters: &[FilterConfig],
    inner: crate::HttpService,
) -> Result<crate::HttpService, (usize, ConfigError)> {
    let mut layers = Vec::with_capacity(filters.len());
    for (i, f) in filters.iter().enumerate() {
        let cx = BuildContext {
            path: format!("filters[{i}].{}", f.name()),
        };
        f.validate().map_err(|e| (i, e))?;
        layers.push(f.layer(&cx).map_err(|e| (i, e))?);
    }
    Ok(layers
        .into_iter()
        .rev()
        .fold(inner, |svc, layer| tower::Layer::layer(&layer, svc)))
}
