//! `/config`: the effective settings as JSON, with secrets redacted.
//!
//! Redaction happens twice, so that neither a new field nor a new way of
//! printing the config leaks a credential on its own:
//! - the types: header maps that may hold credentials (`tracing.export.headers`,
//!   the `headers` filter's additions) are [`SecretHeaders`], and the export
//!   endpoint drops its userinfo, whoever serializes them;
//! - this rendering: any string under a key that names a credential
//!   (`token`, `secret`, `password`, `api_key`, ...) becomes `[REDACTED]`,
//!   and URLs lose their userinfo and query.
//!
//! Key material is referred to by path (`inbound.tls.key`), which stays
//! visible; the contents of the files never enter the settings. Export
//! headers from `OTEL_EXPORTER_OTLP_HEADERS` are resolved by the exporter and
//! never reach the settings either.
//!
//! [`SecretHeaders`]: filters::secret::SecretHeaders

use bytes::Bytes;
use filters::{secret::REDACTED, trace::config::is_builtin_secret};
use serde_json::Value;

use crate::config::Settings;

/// What `/config` serves: rendered at start and again after each accepted
/// reload.
#[derive(Debug)]
pub struct ConfigView(arc_swap::ArcSwap<Bytes>);

/// `settings` as pretty JSON with secrets redacted.
pub fn render(settings: &Settings) -> Bytes {
    let mut value = match serde_json::to_value(settings) {
        Ok(v) => v,
        Err(e) => serde_json::json!({ "error": format!("cannot render the configuration: {e}") }),
    };
    redact(&mut value);
    Bytes::from(serde_json::to_vec_pretty(&value).unwrap_or_default())
}

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if names_a_secret(key)
                    && !matches!(v, Value::Null | Value::Bool(_) | Value::Number(_))
                {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) if s.contains("://") => {
            if let std::borrow::Cow::Owned(clean) = filters::secret::redact_url(s) {
                *s = clean;
            }
        }
        _ => {}
    }
}

/// Config keys are snake_case; the built-in header list is kebab-case.
fn names_a_secret(key: &str) -> bool {
    is_builtin_secret(&key.to_ascii_lowercase().replace('_', "-"))
}

// === impl ConfigView ===

impl ConfigView {
    /// The view of `settings`.
    pub fn new(settings: &Settings) -> Self {
        Self(arc_swap::ArcSwap::from_pointee(render(settings)))
    }

    /// Renders `settings` again (after a reload).
    pub fn update(&self, settings: &Settings) {
        self.0.store(std::sync::Arc::new(render(settings)));
    }

    /// The current rendering.
    pub fn json(&self) -> Bytes {
        Bytes::clone(&self.0.load())
    }
}

#[cfg(test)]
mod tests;
