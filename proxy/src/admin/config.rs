//! `/config`: the settings in force as JSON, with secrets redacted: those
//! of the last accepted reload, numbered by `generation` (1 at start) and
//! stamped with `loaded_at`.
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
pub struct ConfigView {
    rendered: arc_swap::ArcSwap<Bytes>,
    /// Renderings so far; updated only under the reloader's lock.
    generation: std::sync::atomic::AtomicU64,
}

/// `settings` as pretty JSON with secrets redacted.
pub fn render(settings: &Settings) -> Bytes {
    render_value(redacted(settings))
}

fn redacted(settings: &Settings) -> Value {
    let mut value = match serde_json::to_value(settings) {
        Ok(v) => v,
        Err(e) => serde_json::json!({ "error": format!("cannot render the configuration: {e}") }),
    };
    redact(&mut value);
    value
}

fn render_value(value: Value) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(&value).unwrap_or_default())
}

/// `settings` with the generation that put them in force and when.
fn render_live(settings: &Settings, generation: u64) -> Bytes {
    let mut value = redacted(settings);
    if let Value::Object(map) = &mut value {
        map.insert("generation".into(), generation.into());
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        map.insert("loaded_at".into(), now.to_string().into());
    }
    render_value(value)
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
    /// The view of `settings`, generation 1.
    pub fn new(settings: &Settings) -> Self {
        Self {
            rendered: arc_swap::ArcSwap::from_pointee(render_live(settings, 1)),
            generation: 1.into(),
        }
    }

    /// Renders `settings` again as the next generation (after a reload).
    pub fn update(&self, settings: &Settings) {
        use std::sync::atomic::Ordering::Relaxed;
        let generation = self.generation.fetch_add(1, Relaxed) + 1;
        self.rendered
            .store(std::sync::Arc::new(render_live(settings, generation)));
    }

    /// The current rendering.
    pub fn json(&self) -> Bytes {
        Bytes::clone(&self.rendered.load())
    }
}

#[cfg(test)]
mod tests;
