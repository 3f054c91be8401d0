//! Each listener's forwarder and the filter chains over it: the
//! destination, the TLS client, the upstream connection cap.

use std::{net::SocketAddr, sync::Arc};

use filters::filter_metrics::FilterMetrics;
use metrics::Recorder;

use super::telemetry::Telemetry;
use crate::{
    config::{ClientTlsConfig, ConfigError, Settings},
    forward::{Destination, Forward, ForwardOptions},
    stack::Chain,
    tls::client::ClientTls,
};

/// The listeners' chains, and the TLS clients whose files are watched.
pub(super) struct Chains {
    pub(super) inbound: Chain,
    pub(super) outbound: Option<Chain>,
    pub(super) tls: Vec<Arc<ClientTls>>,
}

/// The inbound chain to the app and, with `outbound` (the outbound
/// listener's bound address), the outbound chain to the request's own
/// destination.
pub(super) fn build(
    settings: &Settings,
    telemetry: &Telemetry,
    outbound: Option<SocketAddr>,
) -> Result<Chains, ConfigError> {
    let client_tls = |config: &ClientTlsConfig, field| {
        ClientTls::counted(config.clone(), field, telemetry.tls_handshakes.clone())
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
    let recorder: Arc<dyn Recorder + Send + Sync> = telemetry.recorder.clone();
    let chain_over = |destination: Destination| -> Result<Chain, ConfigError> {
        let (listener, hop, tls, originate_tls) = match destination {
            Destination::Fixed(_) => (
                "inbound",
                Some(telemetry.hop.clone()),
                upstream_tls.clone(),
                Arc::from([]),
            ),
            Destination::FromRequest { .. } => (
                "outbound",
                None,
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
            connections_open: telemetry.gauge(
                "sidetrace_upstream_connections_open",
                &[("listener", listener)],
            ),
            shed: telemetry.counter(
                "sidetrace_requests_shed_total",
                &[("listener", listener), ("reason", "upstream_connections")],
            ),
        };
        let forward = Forward::new(destination, options, hop, &settings.service_name);
        Chain::build(
            &settings.filters,
            &settings.routes,
            &telemetry.routes.table(),
            forward,
            FilterMetrics::new(recorder.clone(), listener, ""),
        )
        .map_err(|e| ConfigError::invalid(e.path, e.message))
    };
    let inbound = chain_over(Destination::Fixed(settings.upstream.clone()))?;
    let outbound = match outbound {
        Some(own) => Some(chain_over(Destination::FromRequest { own })?),
        None => None,
    };
    Ok(Chains {
        inbound,
        outbound,
        tls: upstream_tls.into_iter().chain(outbound_tls).collect(),
    })
}
