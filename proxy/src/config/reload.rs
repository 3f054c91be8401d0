//! Config reload on SIGHUP or file change: the routes and the filter chains
//! are rebuilt from the new file and swapped atomically; connections and
//! in-flight requests are untouched. A filter whose config and position did
//! not change keeps its live state. A bad new file is rejected, logged and
//! counted, and the running configuration stays.
//!
//! `filters:`, `routes:` (matching, sampling, per-route chains), `tracing:`
//! (sampling, propagators, capture, hooks) and `logs.access` /
//! `logs.stdout` take effect on reload; listen addresses, the upstream,
//! limits, TLS settings other than the files themselves and the export
//! destinations need a restart, and a reload that changes them says so in
//! the log.

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use filters::{
    route::{RouteTable, Routes},
    trace::{hooks::SpanHooks, propagation::custom::DynPropagator, TraceLayer, TraceMetrics},
};
use metrics::Counter;

use super::{load_file, ConfigError, Settings};
use crate::{admin::ConfigView, drain::Drain, stack::Chain};

/// Rebuilds and swaps the filter chains and the trace settings.
pub struct Reloader {
    path: PathBuf,
    current: parking_lot::Mutex<Settings>,
    chains: Vec<Chain>,
    routes: Routes,
    tracing: TraceReload,
    /// The proxy's own span hooks, added after the built-ins again.
    span_hooks: Vec<Arc<dyn SpanHooks>>,
    /// Propagators an embedding program added, added again.
    propagators: Vec<DynPropagator>,
    succeeded: Counter,
    failed: Counter,
    config_view: Option<Arc<ConfigView>>,
}

/// What a reload needs to rebuild the trace layers' settings.
pub struct TraceReload {
    /// The layers of every listener.
    pub layers: Vec<TraceLayer>,
    /// Their counters, kept across reloads.
    pub metrics: TraceMetrics,
    /// The environment (`OTEL_TRACES_SAMPLER`, ...), applied again.
    pub env: HashMap<String, String>,
}

// === impl Reloader ===

impl Reloader {
    /// A reloader for the routes and chains built from
    /// `settings.config_file`.
    pub fn new(
        path: PathBuf,
        settings: Settings,
        routes: Routes,
        chains: Vec<Chain>,
        tracing: TraceReload,
        succeeded: Counter,
        failed: Counter,
    ) -> Self {
        Self {
            path,
            current: parking_lot::Mutex::new(settings),
            chains,
            routes,
            tracing,
            span_hooks: Vec::new(),
            propagators: Vec::new(),
            succeeded,
            failed,
            config_view: None,
        }
    }

    /// Renders the admin `/config` again after each accepted reload (with the
    /// same redaction as at start).
    pub fn rendering_to(mut self, view: Arc<ConfigView>) -> Self {
        self.config_view = Some(view);
        self
    }

    /// Adds `hooks` after the built-ins of every rebuilt trace setting, as
    /// at start.
    pub fn with_span_hooks(mut self, hooks: Vec<Arc<dyn SpanHooks>>) -> Self {
        self.span_hooks = hooks;
        self
    }

    /// Adds `propagators` after the configured formats of every rebuilt
    /// trace setting, as at start.
    pub fn with_propagators(mut self, propagators: Vec<DynPropagator>) -> Self {
        self.propagators = propagators;
        self
    }

    /// Reads the file again and swaps the chains, or keeps them on error.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let result = self.try_reload();
        match &result {
            Ok((kept, filters)) => {
                self.succeeded.increment(1);
                tracing::info!(file = %self.path.display(), filters, kept, "configuration reloaded; unchanged filters kept their state");
            }
            Err(e) => {
                self.failed.increment(1);
                tracing::error!(error = %e, "configuration reload rejected; keeping the running configuration");
            }
        }
        result.map(drop)
    }

    /// Returns how many filters kept their state, of how many.
    fn try_reload(&self) -> Result<(usize, usize), ConfigError> {
        let file = load_file(&self.path)?;
        let mut current = self.current.lock();
        let table = RouteTable::from_config(&file.routes);
        let mut rebuilt = Vec::with_capacity(self.chains.len());
        for chain in &self.chains {
            let chains = chain
                .rebuild(&file.filters, &file.routes, &table)
                .map_err(|e| ConfigError::invalid(e.path, e.message).in_file(&self.path))?;
            rebuilt.push(chains);
        }
        let mut tracing = file.tracing.clone();
        tracing
            .apply_env(&self.tracing.env)
            .map_err(|e| ConfigError::invalid(e.field, e.message).in_file(&self.path))?;
        file.logs.validate().map_err(|e| e.in_file(&self.path))?;
        file.metrics
            .export
            .validate()
            .map_err(|e| e.in_file(&self.path))?;
        let trace_settings = crate::stack::trace_settings(
            &tracing,
            &file.routes,
            self.tracing.metrics.clone(),
            &self.span_hooks,
            &self.propagators,
            &file.logs,
        )
        .map_err(|e| ConfigError::invalid(e.field, e.message).in_file(&self.path))?;
        let trace_settings = Arc::new(trace_settings);
        let (kept, filters) = rebuilt.iter().fold((0, 0), |(k, n), c| {
            let (kept, all) = c.kept();
            (k + kept, n + all)
        });
        // Chains first: a request matched against the old table meanwhile
        // is looked up again in the new one by the chain.
        for (chain, chains) in self.chains.iter().zip(rebuilt) {
            chain.swap(chains);
        }
        self.routes.replace(table);
        for layer in &self.tracing.layers {
            layer.reload(trace_settings.clone());
        }
        crate::logging::set_stdout(file.logs.stdout);
        if tracing.export != current.tracing.export {
            tracing::warn!("tracing.export changes take effect on restart");
        }
        if file.logs.export != current.logs.export {
            tracing::warn!("logs.export changes take effect on restart");
        }
        if file.metrics.export != current.metrics.export {
            tracing::warn!("metrics.export changes take effect on restart");
        }
        let restart_needed = file.inbound.listen.is_some_and(|l| l != current.inbound)
            || file.admin.listen.is_some_and(|l| l != current.admin)
            || file.admin.expose != current.admin_expose
            || file.limits != current.limits
            || file
                .inbound
                .upstream
                .as_deref()
                .and_then(|u| super::settings::parse_upstream(u).ok())
                .is_some_and(|u| u.authority != current.upstream.authority);
        if restart_needed {
            tracing::warn!("listen addresses, upstream, limits and admin.expose changed in the file take effect on restart; routes and filters were reloaded");
        }
        current.filters = file.filters;
        current.routes = file.routes;
        current.tracing = tracing;
        current.logs = file.logs;
        if let Some(view) = &self.config_view {
            view.update(&current);
        }
        Ok((kept, filters))
    }
}

/// Reloads on SIGHUP and when the file (or the directory holding it, as
/// Kubernetes swaps ConfigMap symlinks) changes, until the drain starts.
pub fn spawn(reloader: Arc<Reloader>, mut drain: Drain) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let watched = reloader.path.clone();
    let dir = watched
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let file_name = watched.file_name().map(|n| n.to_os_string());
    let notify_tx = tx.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        let relevant = event.paths.iter().any(|p| {
            p.file_name().map(|n| n.to_os_string()) == file_name
                || p.file_name().is_some_and(|n| n == "..data")
        });
        if relevant {
            // A full channel means a reload is already pending.
            let _ = notify_tx.try_send(());
        }
    });
    let watcher = match watcher {
        Ok(mut w) => {
            use notify::Watcher;
            match w.watch(&dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => Some(w),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the config directory; reload with SIGHUP");
                    None
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch files; reload with SIGHUP");
            None
        }
    };
    tokio::spawn(async move {
        let _watcher = watcher;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            tokio::select! {
                () = drain.signaled() => return,
                Some(()) = rx.recv() => {}
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    tracing::info!("SIGHUP received");
                }
            }
            // Editors write in several steps: let the file settle.
            tokio::time::sleep(Duration::from_millis(100)).await;
            while rx.try_recv().is_ok() {}
            let _ = reloader.reload();
        }
    });
    drop(tx);
}
