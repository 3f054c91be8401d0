//! Starts and stops a proxy: metrics, listeners, admin server and drain.
//!
//! [`start`] binds everything and returns a [`Running`] handle, so the binary
//! and the integration tests start the proxy the same way.

mod chains;
mod telemetry;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use filters::trace::{TraceLayer, TraceOptions};
use tokio::{net::TcpListener, task::JoinHandle};

use self::telemetry::Telemetry;
use crate::{
    admin::{self, AdminState},
    config::{
        reload::{self, Reloader, TraceReload},
        ConfigError, IpNetwork, Settings,
    },
    drain::{self, Drain, DrainTrigger},
    listen::{self, ConnectionCount, ServeOptions},
    stack,
    tunnel::{ConnectPolicy, TunnelOptions},
};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The settings cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({listener}): {source}")]
    Bind {
        /// Which listener.
        listener: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A started proxy.
pub struct Running {
    /// Bound inbound address.
    pub inbound: SocketAddr,
    /// Bound outbound address, when enabled.
    pub outbound: Option<SocketAddr>,
    /// Bound admin address.
    pub admin: SocketAddr,
    /// How long SIGTERM leaves the listeners accepting before the drain.
    pub drain_delay: Duration,
    trigger: DrainTrigger,
    task: JoinHandle<()>,
}

/// Code a program embedding the proxy adds to it.
#[derive(Clone, Default)]
pub struct Extensions {
    /// OpenTelemetry propagators for formats sidetrace does not build in,
    /// after the configured ones (kept across reloads).
    pub propagators: Vec<filters::trace::propagation::custom::DynPropagator>,
    /// Span hooks, after the built-in and the proxy's own (kept across
    /// reloads).
    pub span_hooks: Vec<Arc<dyn filters::trace::hooks::SpanHooks>>,
}

/// Binds the listeners and starts serving.
pub async fn start(
    settings: Settings,
    env: &HashMap<String, String>,
) -> Result<Running, StartError> {
    start_with(settings, env, Extensions::default()).await
}

/// [`start`], with `extensions` on both listeners' trace layers.
pub async fn start_with(
    settings: Settings,
    env: &HashMap<String, String>,
    extensions: Extensions,
) -> Result<Running, StartError> {
    // Before anything is logged: `logs.stdout: false` means no line at all.
    crate::logging::set_stdout(settings.logs.stdout);
    let mut settings = settings;
    if let Some(open_files) = crate::config::open_files_limit() {
        let listeners = 1 + usize::from(settings.outbound.is_some());
        if let Some(change) = settings.limits.fit_descriptors(open_files, listeners) {
            tracing::warn!("{change}");
        }
    }
    let settings = Arc::new(settings);
    let telemetry = Telemetry::start(&settings, env, settings.outbound.is_some())?;

    let bind = |listener: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind {
                listener,
                addr,
                source,
            })
    };
    let inbound_listener = bind("inbound", settings.inbound).await?;
    let admin_listener = bind("admin", settings.admin).await?;
    let outbound_listener = match settings.outbound {
        Some(addr) => Some(bind("outbound", addr).await?),
        None => None,
    };
    let local = |l: &TcpListener, addr: SocketAddr| l.local_addr().unwrap_or(addr);
    let inbound = local(&inbound_listener, settings.inbound);
    let admin_addr = local(&admin_listener, settings.admin);
    let outbound = outbound_listener
        .as_ref()
        .zip(settings.outbound)
        .map(|(l, a)| local(l, a));

    let chains = chains::build(&settings, &telemetry, outbound)?;
    let tls = match &settings.tls {
        Some(config) => {
            let (server, cert) = crate::tls::server_config(config)
                .map_err(|e| ConfigError::invalid(e.field, e.message))?;
            Some((
                tokio_rustls::TlsAcceptor::from(server),
                cert,
                config.clone(),
            ))
        }
        None => None,
    };
    let inbound_scheme = if tls.is_some() { "https" } else { "http" };

    // The proxy's own span hooks, after the built-ins (and again on reload):
    // inbound TLS facts on SERVER spans.
    let mut proxy_hooks: Vec<Arc<dyn filters::trace::hooks::SpanHooks>> = match &tls {
        Some(_) => vec![Arc::new(crate::tls::facts::TlsSpanAttributes)],
        None => Vec::new(),
    };
    proxy_hooks.extend(extensions.span_hooks);
    let trace_settings = Arc::new(
        stack::trace_settings(
            &settings.tracing,
            &settings.routes,
            telemetry.trace_metrics.clone(),
            &proxy_hooks,
            &extensions.propagators,
            &settings.logs,
        )
        .map_err(|e| ConfigError::invalid(e.field, e.message))?,
    );
    let trace_layer = |options| {
        TraceLayer::new(
            options,
            trace_settings.clone(),
            telemetry.pipeline.sink.clone(),
        )
        .logging_to(telemetry.logs.sink.clone())
    };
    let inbound_trace = trace_layer(TraceOptions::server(
        inbound_scheme,
        Some(settings.upstream.authority.clone()),
    ));
    let outbound_trace = trace_layer(TraceOptions::client());
    let trace_layers = vec![inbound_trace.clone(), outbound_trace.clone()];
    let inbound_svc = stack::listener(
        telemetry.server.clone(),
        inbound_scheme,
        inbound_trace,
        chains.inbound.clone(),
        settings.limits.body_idle_timeout,
        ConnectPolicy::Refuse,
    );

    let (trigger, drain) = drain::channel();
    let state = Arc::new(AdminState {
        prometheus: telemetry.prometheus.clone(),
        config_json: Arc::new(admin::ConfigView::new(&settings)),
        access: admin::Access::new(&settings.admin_expose),
        ready: false.into(),
        drain: trigger.clone(),
        traces: telemetry.pipeline.store.clone(),
        red: telemetry.red(),
    });
    let (admin_stop_tx, admin_stop) = drain::channel();
    let admin_task = tokio::spawn(admin::serve(admin_listener, state.clone(), admin_stop));
    let prometheus = telemetry.prometheus.clone();
    let upkeep = tokio::spawn(async move {
        // Histograms keep raw samples until upkeep folds them into buckets:
        // at 15k requests/s a 5 s interval held ~3 MB of them, 1 s holds a fifth.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            prometheus.run_upkeep();
        }
    });

    let limits = &settings.limits;
    let options = |name: &'static str, tls, trusted_clients| ServeOptions {
        name,
        max_header_bytes: settings.max_header_bytes,
        header_read_timeout: limits.header_read_timeout,
        idle_timeout: limits.idle_timeout,
        max_connections: limits.max_connections,
        rejected_connections: telemetry.counter(
            "sidetrace_connections_rejected_total",
            &[("listener", name), ("reason", "max_connections")],
        ),
        max_requests_in_flight: limits.max_requests_in_flight,
        shed_in_flight: telemetry.counter(
            "sidetrace_requests_shed_total",
            &[("listener", name), ("reason", "requests_in_flight")],
        ),
        http2_max_concurrent_streams: limits.http2_max_concurrent_streams,
        http2_stream_buffer_bytes: limits.http2_stream_buffer_bytes,
        tls,
        trusted_clients,
    };
    let trusted_clients: Arc<[IpNetwork]> = settings
        .metrics
        .service_graph
        .trusted_networks
        .clone()
        .into();
    if let Some((_, cert, config)) = &tls {
        crate::tls::server::watch(cert.clone(), config.clone(), drain.clone());
    }
    let logs_tls = telemetry.logs.tls().cloned();
    let metrics_tls = telemetry.metrics_push.tls().cloned();
    for tls in chains
        .tls
        .iter()
        .chain(&telemetry.export_tls)
        .chain(&logs_tls)
        .chain(&metrics_tls)
    {
        tls.watch(drain.clone());
    }
    let inbound_conns = ConnectionCount::default();
    let inbound_task = tokio::spawn(listen::serve(
        inbound_listener,
        inbound_svc,
        options(
            "inbound",
            tls.map(|(acceptor, _, _)| {
                Arc::new(crate::tls::server::Handshakes::new(
                    acceptor,
                    settings.limits.tls_handshake_timeout,
                    telemetry.tls_handshakes.clone(),
                ))
            }),
            Some(trusted_clients),
        ),
        inbound_conns,
        telemetry.gauge("sidetrace_connections_open", &[("listener", "inbound")]),
        signaled(drain.clone()),
        drain.clone(),
    ));
    let outbound_task = match outbound_listener {
        Some(listener) => {
            let chain = chains
                .outbound
                .clone()
                .expect("built with the outbound listener");
            let outbound_metrics = telemetry
                .outbound
                .clone()
                .expect("made with the outbound listener");
            // The app's CONNECTs are tunnelled, never to this listener itself.
            let tunnels = TunnelOptions {
                own: outbound.expect("bound with the outbound listener"),
                drain: drain.clone(),
                drain_timeout: settings.drain_timeout,
            };
            let outbound_svc = stack::listener(
                outbound_metrics,
                "http",
                outbound_trace,
                chain,
                settings.limits.body_idle_timeout,
                ConnectPolicy::Tunnel(Arc::new(tunnels)),
            );
            let conns = ConnectionCount::default();
            // The app may still call out while it shuts down: keep accepting
            // until it has no outbound connection left (or the deadline).
            let stop = {
                let conns = conns.clone();
                let drain = drain.clone();
                async move {
                    signaled(drain).await;
                    while conns.get() > 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            };
            Some(tokio::spawn(listen::serve(
                listener,
                outbound_svc,
                options("outbound", None, None),
                conns,
                telemetry.gauge("sidetrace_connections_open", &[("listener", "outbound")]),
                stop,
                // Outbound connections are not told to close: the app decides.
                Drain::never(),
            )))
        }
        None => None,
    };
    if let Some(path) = settings.config_file.clone() {
        let reloads =
            |result| telemetry.counter("sidetrace_config_reloads_total", &[("result", result)]);
        let tracing = TraceReload {
            layers: trace_layers,
            metrics: telemetry.trace_metrics.clone(),
            env: env.clone(),
        };
        let reloader = Reloader::new(
            path,
            Settings::clone(&settings),
            telemetry.routes.clone(),
            std::iter::once(chains.inbound.clone())
                .chain(chains.outbound.clone())
                .collect(),
            tracing,
            reloads("success"),
            reloads("failure"),
        )
        .with_span_hooks(proxy_hooks)
        .with_propagators(extensions.propagators)
        .rendering_to(state.config_json.clone());
        reload::spawn(Arc::new(reloader), drain.clone());
    }
    state
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let outbound_text = outbound.map_or_else(|| "off".to_string(), |a| a.to_string());
    tracing::info!(%inbound, outbound = %outbound_text, admin = %admin_addr, upstream = %settings.upstream.authority, "sidetrace ready");

    let Telemetry {
        pipeline,
        logs,
        metrics_push,
        ..
    } = telemetry;
    let drain_timeout = settings.drain_timeout;
    let drain_delay = settings.drain_delay;
    let mut drain_for_task = drain;
    let task = tokio::spawn(async move {
        drain_for_task.signaled().await;
        tracing::info!(timeout = ?drain_timeout, "draining");
        let listeners = async {
            let _ = inbound_task.await;
            if let Some(t) = outbound_task {
                let _ = t.await;
            }
        };
        let deadline = tokio::time::Instant::now() + drain_timeout;
        if tokio::time::timeout_at(deadline, listeners).await.is_err() {
            tracing::warn!(timeout = ?drain_timeout, "drain deadline passed with requests in flight");
        }
        // Spans of the last requests go out before the process ends; a dead
        // collector gets what is left of the deadline, at least a second.
        let flush_for = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_secs(1));
        if !pipeline.handle.shutdown(flush_for).await {
            tracing::warn!("spans still queued at the end of the drain were dropped");
        }
        // The metrics as they stand at the end, after the span flush counted.
        let flush_for = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_secs(1));
        if !metrics_push.shutdown(flush_for).await {
            tracing::warn!("the last metrics push at the end of the drain failed");
        }
        // Log records last, so they include the warnings of the span flush.
        let flush_for = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_secs(1));
        if !logs.shutdown(flush_for).await {
            tracing::warn!("log records still queued at the end of the drain were dropped");
        }
        admin_stop_tx.drain();
        let _ = admin_task.await;
        upkeep.abort();
        tracing::info!("drained");
    });
    Ok(Running {
        inbound,
        outbound,
        admin: admin_addr,
        drain_delay,
        trigger,
        task,
    })
}

async fn signaled(mut drain: Drain) {
    drain.signaled().await;
}

// === impl Running ===

impl Running {
    /// Starts the graceful drain.
    pub fn drain(&self) {
        self.trigger.drain();
    }

    /// A handle that starts the drain, for signal handlers.
    pub fn trigger(&self) -> DrainTrigger {
        self.trigger.clone()
    }

    /// Waits until the proxy has drained and stopped.
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// Drains and waits.
    pub async fn shutdown(self) {
        self.drain();
        self.wait().await;
    }
}
