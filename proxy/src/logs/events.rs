//! The proxy's own warnings and errors into the logs pipeline: a
//! `tracing_subscriber` layer ([`EventLayer`], installed by
//! [`crate::logging`]) that turns every WARN and ERROR event into an
//! [`EventRecord`] and `try_send`s it to each running logs pipeline.
//!
//! Pipelines register while they run ([`register`]); with none, an event
//! costs one uncontended read lock. The layer never logs and never waits:
//! a full queue drops the record and counts it. The logs exporter's own
//! warnings ([`LOGS_EXPORT_TARGET`]) are not taken in, so a failing logs
//! export cannot feed itself.
//!
//! A process normally runs one proxy. One embedding several (the
//! integration tests do) hands each event to every running pipeline: the
//! subscriber is global and cannot tell the proxies apart.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use filters::trace::{span::unix_nanos, EventRecord, FieldValue, LogRecord, LogSink};
use parking_lot::RwLock;
use tracing::{
    field::{Field, Visit},
    Event, Level, Metadata, Subscriber,
};
use tracing_subscriber::{
    filter::{filter_fn, FilterFn},
    layer::Context,
    Layer,
};

use crate::export::LOGS_EXPORT_TARGET;

/// Forwards WARN and ERROR events to the registered logs pipelines.
#[derive(Clone, Copy, Debug, Default)]
pub struct EventLayer;

/// A pipeline's place in the list; removed on drop.
#[derive(Debug)]
pub struct Registration(u64);

static SINKS: RwLock<Vec<(u64, LogSink)>> = RwLock::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Sends every forwarded event to `sink` until the registration drops.
pub fn register(sink: LogSink) -> Registration {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    SINKS.write().push((id, sink));
    Registration(id)
}

/// Whether an event with `meta` is forwarded: WARN and ERROR, but not the
/// logs exporter's own.
pub fn forwards(meta: &Metadata<'_>) -> bool {
    meta.is_event()
        && *meta.level() <= Level::WARN
        && !meta.target().starts_with(LOGS_EXPORT_TARGET)
}

/// The layer with its filter, for a subscriber's `with`.
pub fn layer<S: Subscriber>() -> tracing_subscriber::filter::Filtered<EventLayer, FilterFn, S> {
    // Static per callsite: INFO and below never reach the layer, and the
    // hint keeps DEBUG callsites off the fast path entirely.
    EventLayer.with_filter(
        filter_fn(forwards as fn(&Metadata<'_>) -> bool).with_max_level_hint(Level::WARN),
    )
}

// === impl Registration ===

impl Drop for Registration {
    fn drop(&mut self) {
        SINKS.write().retain(|(id, _)| *id != self.0);
    }
}

// === impl EventLayer ===

impl<S: Subscriber> Layer<S> for EventLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !forwards(meta) {
            return;
        }
        let sinks = SINKS.read();
        if sinks.is_empty() {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let record = Arc::new(EventRecord {
            time_unix_nanos: unix_nanos(),
            level: *meta.level(),
            target: meta.target(),
            message: fields.message,
            fields: fields.fields,
        });
        for (_, sink) in sinks.iter() {
            sink.send(LogRecord::Event(record.clone()));
        }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(&'static str, FieldValue)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: FieldValue) {
        match field.name() {
            "message" => {
                if let FieldValue::Str(s) = value {
                    self.message = s;
                }
            }
            // What the `log` bridge adds about the call site.
            name if name.starts_with("log.") => {}
            name => self.fields.push((name, value)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, FieldValue::Str(value.to_string()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, FieldValue::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let value = match i64::try_from(value) {
            Ok(i) => FieldValue::Int(i),
            Err(_) => FieldValue::Str(value.to_string()),
        };
        self.put(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, FieldValue::Float(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, FieldValue::Bool(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, FieldValue::Str(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // The message is `format_args!`, whose Debug is its text.
        self.put(field, FieldValue::Str(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn warnings_and_errors_reach_registered_sinks() {
        let subscriber = tracing_subscriber::registry().with(layer());
        let (sink, mut rx) = LogSink::channel(16, metrics::Counter::noop());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("before anyone listens");
            let registration = register(sink);
            tracing::info!("not forwarded");
            tracing::error!(
                target: "sidetrace::config::reload",
                error = %"bad yaml",
                attempt = 2u64,
                huge = u64::MAX,
                ok = false,
                ratio = 0.25,
                path = ?std::path::Path::new("/etc/x"),
                "configuration reload rejected"
            );
            tracing::warn!(target: "sidetrace::export::logs", "not fed back");
            drop(registration);
            tracing::warn!("after the pipeline stopped");
        });
        let Ok(LogRecord::Event(e)) = rx.try_recv() else {
            panic!("one event")
        };
        assert!(rx.try_recv().is_err(), "exactly one");
        assert_eq!(e.level, Level::ERROR);
        assert_eq!(e.target, "sidetrace::config::reload");
        assert_eq!(e.message, "configuration reload rejected");
        assert_eq!(
            e.fields,
            vec![
                ("error", FieldValue::Str("bad yaml".into())),
                ("attempt", FieldValue::Int(2)),
                ("huge", FieldValue::Str(u64::MAX.to_string())),
                ("ok", FieldValue::Bool(false)),
                ("ratio", FieldValue::Float(0.25)),
                ("path", FieldValue::Str("\"/etc/x\"".into())),
            ]
        );
        assert!(e.time_unix_nanos > 0);
    }
}
