//! Starts and stops a proxy: metrics, listeners, admin server and drain.
//!
//! [`start`] binds everything and returns a [`Running`] handle, so the binary
//! and the integration tests start the proxy the same way.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use filters::filter_metrics::FilterMetrics;
use filters::{
    metrics::{graph::ServiceGraph, names, HttpMetrics, MetricsConfig, Side},
    route::{RouteTable, Routes},
};
use metrics::{Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use tokio::{net::TcpListener, task::JoinHandle};

use filters::trace::{Resource, ServiceInfo, TraceLayer, TraceMetrics, TraceOptions};

use crate::{
    admin::{self, AdminState},
    config::{
        reload::{self, Reloader, TraceReload},
        ClientTlsConfig, ConfigError, IpNetwork, Settings,
    },
    drain::{self, Drain, DrainTrigger},
    export::{ExportMetrics, ExportSettings, Pipeline, StoreBounds},
    forward::{Destination, Forward, ForwardOptions},
    listen::{self, ConnectionCount, ServeOptions},
    stack::{self, Chain},
    tls::client::ClientTls,
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
    let recorder = Arc::new(build_recorder(&settings));
    let prometheus = recorder.handle();
    let md = Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
    recorder
        .register_gauge(
            &Key::from_parts(
                "sidetrace_build_info",
                vec![Label::new("version", env!("CARGO_PKG_VERSION"))],
            ),
            &md,
        )
        .set(1.0);
    // Handshakes of both sides, inbound (below) and to upstreams.
    let tls_handshakes = crate::tls::metrics::HandshakeMetrics::register(&*recorder);
    let connections_gauge = |listener: &'static str| {
        recorder.register_gauge(
            &Key::from_parts(
                "sidetrace_connections_open",
                vec![Label::new("listener", listener)],
            ),
            &md,
        )
    };
    // One table for every listener, replaced whole on reload.
    let routes = Routes::new(RouteTable::from_config(&settings.routes));
    let metrics_config = MetricsConfig {
        series_limit: settings.metrics.series_limit,
        duration_buckets: settings.metrics.duration_buckets.as_slice().into(),
    };
    let dyn_recorder: Arc<dyn Recorder + Send + Sync> = recorder.clone();
    let graph = ServiceGraph::new(
        dyn_recorder.clone(),
        &settings.service_name,
        settings.metrics.series_limit,
    );
    let metrics = |side, graph| {
        HttpMetrics::new(
            side,
            dyn_recorder.clone(),
            routes.clone(),
            &metrics_config,
            graph,
        )
    };
    // Inbound requests feed the server side of the service graph; the hop to
    // the app is the same service, so it stays out of the graph.
    let server_metrics = metrics(Side::Server, Some(graph.clone()));
    let hop_metrics = metrics(Side::Client, None);

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

    let client_tls = |config: &ClientTlsConfig, field| {
        ClientTls::counted(config.clone(), field, tls_handshakes.clone())
            .map_err(|e| ConfigError::invalid(e.field, e.message))
    };
    let upstream_tls = match settings.upstream.scheme == http::uri::Scheme::HTTPS {
        true => Some(client_tls(
            &settings.upstream_tls.clone().unwrap_or_default(),
            "inbound.upstream_tls",
        )?),
        false => None,
    };
    let outbound_tls = match outbound.is_some() && !settings.originate_tls.is_empty() {
        true => Some(client_tls(&settings.outbound_tls, "outbound.tls")?),
        false => None,
    };
    let mut chains = Vec::new();
    let mut chain_over = |destination: Destination| -> Result<Chain, ConfigError> {
        let hop = match destination {
            Destination::Fixed(_) => Some(hop_metrics.clone()),
            Destination::FromRequest { .. } => None,
        };
        let listener = match destination {
            Destination::Fixed(_) => "inbound",
            Destination::FromRequest { .. } => "outbound",
        };
        let labels = || vec![Label::new("listener", listener)];
        let (tls, originate_tls) = match destination {
            Destination::Fixed(_) => (upstream_tls.clone(), Arc::from([])),
            Destination::FromRequest { .. } => (
                outbound_tls.clone(),
                Arc::from(settings.originate_tls.as_slice()),
            ),
        };
        let options = ForwardOptions {
            tls,
            originate_tls,
            protocol: settings.upstream_protocol,
            response_head_timeout: settings.limits.response_head_timeout,
            max_connections: settings.limits.upstream_max_connections,
            queue_timeout: settings.limits.upstream_queue_timeout,
            connections_open: recorder.register_gauge(
                &Key::from_parts("sidetrace_upstream_connections_open", labels()),
                &md,
            ),
            shed: recorder.register_counter(
                &Key::from_parts(
                    "sidetrace_requests_shed_total",
                    vec![
                        Label::new("listener", listener),
                        Label::new("reason", "upstream_connections"),
                    ],
                ),
                &md,
            ),
        };
        let forward = Forward::new(destination, options, hop, &settings.service_name);
        let filter_metrics = FilterMetrics::new(dyn_recorder.clone(), listener, "");
        let chain = Chain::build(
            &settings.filters,
            &settings.routes,
            &routes.table(),
            forward,
            filter_metrics,
        )
        .map_err(|e| ConfigError::invalid(e.path, e.message))?;
        chains.push(chain.clone());
        Ok(chain)
    };
    let inbound_chain = chain_over(Destination::Fixed(settings.upstream.clone()))?;
    let outbound_chain = match outbound {
        Some(own) => Some(chain_over(Destination::FromRequest { own })?),
        None => None,
    };
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

    // Tracing: one span queue and pipeline for both listeners.
    let trace_metrics = TraceMetrics::register(&*recorder);
    let export = ExportSettings::resolve(&settings.tracing.export, env)
        .map_err(|e| ConfigError::invalid(e.source_name, e.message))?;
    // The forwarder's TLS client, for an https:// collector.
    let export_tls = export
        .client_tls()
        .map_err(|e| ConfigError::invalid(e.source_name, e.message))?;
    let resource = Resource::new(
        ServiceInfo {
            name: Some(&settings.service_name),
            version: settings.service_version.as_deref(),
            environment: settings.environment.as_deref(),
        },
        env,
    );
    let pipeline = Pipeline::start(
        &export,
        export_tls.clone(),
        &resource,
        StoreBounds::of(&settings.tracing),
        trace_metrics.spans_dropped_queue_full.clone(),
        ExportMetrics::register(&*recorder),
    );
    // Logs: access records and the proxy's warnings, with the spans' resource.
    let logs = crate::logs::Logs::start(&settings.logs, env, &resource, &*recorder)
        .map_err(|e| ConfigError::invalid(e.source_name, e.message))?;
    // Metrics over OTLP: the text /metrics serves, pushed from the export
    // runtime with the spans' resource.
    // Calls the app makes are CLIENT requests: measured as such, and as the
    // client side of the service graph.
    let outbound_metrics = outbound_listener
        .as_ref()
        .map(|_| metrics(Side::Client, Some(graph.clone())));
    let source_handle = prometheus.clone();
    let red: Vec<Arc<HttpMetrics>> = std::iter::once(server_metrics.clone())
        .chain(outbound_metrics.clone())
        .collect();
    let exemplar_red = red.clone();
    let metrics_push = crate::metrics_export::MetricsPush::start(
        &settings.metrics.export,
        env,
        &resource,
        Arc::new(move || admin::exposition(&source_handle)),
        Some(Arc::new(move || {
            exemplar_red.iter().flat_map(|m| m.exemplars()).collect()
        })),
        &*recorder,
    )
    .map_err(|e| ConfigError::invalid(e.source_name, e.message))?;
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
            trace_metrics.clone(),
            &proxy_hooks,
            &extensions.propagators,
            &settings.logs,
        )
        .map_err(|e| ConfigError::invalid(e.field, e.message))?,
    );
    let inbound_trace = TraceLayer::new(
        TraceOptions::server(inbound_scheme, Some(settings.upstream.authority.clone())),
        trace_settings.clone(),
        pipeline.sink.clone(),
    )
    .logging_to(logs.sink.clone());
    let outbound_trace = TraceLayer::new(
        TraceOptions::client(),
        trace_settings,
        pipeline.sink.clone(),
    )
    .logging_to(logs.sink.clone());
    let trace_layers = vec![inbound_trace.clone(), outbound_trace.clone()];
    let inbound_svc = stack::listener(
        server_metrics.clone(),
        inbound_scheme,
        inbound_trace,
        inbound_chain,
        settings.limits.body_idle_timeout,
        ConnectPolicy::Refuse,
    );

    let (trigger, drain) = drain::channel();
    let state = Arc::new(AdminState {
        prometheus: prometheus.clone(),
        config_json: Arc::new(admin::ConfigView::new(&settings)),
        access: admin::Access::new(&settings.admin_expose),
        ready: false.into(),
        drain: trigger.clone(),
        traces: pipeline.store.clone(),
        red,
    });
    let (admin_stop_tx, admin_stop) = drain::channel();
    let admin_task = tokio::spawn(admin::serve(admin_listener, state.clone(), admin_stop));
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
        rejected_connections: recorder.register_counter(
            &Key::from_parts(
                "sidetrace_connections_rejected_total",
                vec![
                    Label::new("listener", name),
                    Label::new("reason", "max_connections"),
                ],
            ),
            &md,
        ),
        max_requests_in_flight: limits.max_requests_in_flight,
        shed_in_flight: recorder.register_counter(
            &Key::from_parts(
                "sidetrace_requests_shed_total",
                vec![
                    Label::new("listener", name),
                    Label::new("reason", "requests_in_flight"),
                ],
            ),
            &md,
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
    let logs_tls = logs.tls().cloned();
    let metrics_tls = metrics_push.tls().cloned();
    for tls in upstream_tls
        .iter()
        .chain(&outbound_tls)
        .chain(&export_tls)
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
                    tls_handshakes.clone(),
                ))
            }),
            Some(trusted_clients),
        ),
        inbound_conns,
        connections_gauge("inbound"),
        signaled(drain.clone()),
        drain.clone(),
    ));
    let outbound_task = match outbound_listener {
        Some(listener) => {
            let chain = outbound_chain.expect("built with the outbound listener");
            let outbound_metrics = outbound_metrics.expect("made with the outbound listener");
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
                connections_gauge("outbound"),
                stop,
                // Outbound connections are not told to close: the app decides.
                Drain::never(),
            )))
        }
        None => None,
    };
    if let Some(path) = settings.config_file.clone() {
        let reloads = |result: &'static str| {
            recorder.register_counter(
                &Key::from_parts(
                    "sidetrace_config_reloads_total",
                    vec![Label::new("result", result)],
                ),
                &md,
            )
        };
        let tracing = TraceReload {
            layers: trace_layers,
            metrics: trace_metrics,
            env: env.clone(),
        };
        let reloader = Reloader::new(
            path,
            Settings::clone(&settings),
            routes,
            chains,
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

fn build_recorder(settings: &Settings) -> PrometheusRecorder {
    let mut builder = PrometheusBuilder::new();
    for name in [
        names::SERVER_DURATION,
        names::CLIENT_DURATION,
        filters::metrics::graph::names::SERVER_SECONDS,
        filters::metrics::graph::names::CLIENT_SECONDS,
    ] {
        builder = builder
            .set_buckets_for_metric(
                Matcher::Full(name.to_string()),
                &settings.metrics.duration_buckets,
            )
            .expect("duration buckets are validated non-empty");
    }
    for name in [names::SERVER_REQUEST_SIZE, names::SERVER_RESPONSE_SIZE] {
        builder = builder
            .set_buckets_for_metric(
                Matcher::Full(name.to_string()),
                filters::metrics::SIZE_BUCKETS,
            )
            .expect("size buckets are non-empty");
    }
    let recorder = builder.build_recorder();
    crate::admin::help::describe(&recorder);
    recorder
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
