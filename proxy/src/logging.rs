//! Log setup: JSON lines on stdout by default, `--log-format text` for
//! humans, and the proxy's warnings and errors into the OpenTelemetry logs
//! pipeline ([`crate::logs::events`]).
//!
//! The two outputs filter apart: the level (`--log-level`, `RUST_LOG`)
//! applies to stdout, and `logs.stdout: false` silences stdout
//! ([`set_stdout`]) while WARN and ERROR events still reach the pipeline.

use std::{
    io::IsTerminal,
    sync::atomic::{AtomicBool, Ordering},
};

use tracing::{subscriber::Interest, Metadata};
use tracing_subscriber::{
    filter::FilterExt,
    fmt,
    layer::{Context, Filter, SubscriberExt},
    registry::Registry,
    util::SubscriberInitExt,
    EnvFilter, Layer,
};

use crate::cli::LogFormat;

/// Whether stdout gets log lines (`logs.stdout`).
static STDOUT: AtomicBool = AtomicBool::new(true);

/// Turns the stdout lines on or off (`logs.stdout`, at start and reload).
pub fn set_stdout(on: bool) {
    STDOUT.store(on, Ordering::Relaxed);
}

/// Lets lines through to stdout while [`set_stdout`] says so; asked per
/// event, since the answer changes at run time.
struct StdoutGate;

impl<S> Filter<S> for StdoutGate {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        STDOUT.load(Ordering::Relaxed)
    }

    fn callsite_enabled(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }
}

/// Installs the global subscriber. `level` wins over `RUST_LOG`; default `info`.
pub fn init(format: LogFormat, level: Option<&str>) -> Result<(), String> {
    let filter = match level {
        Some(level) => {
            EnvFilter::try_new(level).map_err(|e| format!("invalid --log-level {level:?}: {e}"))?
        }
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // Colour only for a person at a terminal, never into a file or a pipe.
    let stdout = fmt::layer()
        .with_writer(std::io::stdout)
        .with_ansi(std::io::stdout().is_terminal());
    let stdout: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => stdout
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Text => stdout.boxed(),
    };
    tracing_subscriber::registry()
        .with(stdout.with_filter(filter.and(StdoutGate)))
        .with(crate::logs::events::layer())
        .try_init()
        .map_err(|e| e.to_string())
}

/// Installs a global subscriber that only forwards WARN and ERROR events to
/// the logs pipelines, for a program embedding the proxy without stdout
/// logging (the integration tests). Does nothing when one is installed.
pub fn init_events_only() {
    let _ = tracing_subscriber::registry()
        .with(crate::logs::events::layer())
        .try_init();
}
