//! Configuration: the YAML file's types, the loader that reports errors with
//! file, line and field, and the resolution of flags, env and file into the
//! effective [`Settings`].
//!
//! Precedence is flag > env > config file > default (DESIGN section 3).

mod file;
mod hosts;
mod limits;
mod load;
mod locate;
mod network;
pub mod reload;
mod settings;

pub use filters::trace::{RouteConfig, TracingConfig};

pub use self::{
    file::{
        AdminConfig, ClientTlsConfig, FileConfig, InboundConfig, MetricsFileConfig, OutboundConfig,
        ServiceConfig, ServiceGraphConfig, TlsConfig, UpstreamProtocol,
    },
    hosts::HostPattern,
    limits::{open_files_limit, LimitsConfig, DEFAULT_HEADER_READ_TIMEOUT, DESCRIPTOR_RESERVE},
    load::{load_file, parse_yaml, ConfigError},
    network::IpNetwork,
    settings::{
        Overrides, Settings, Upstream, DEFAULT_ADMIN, DEFAULT_DRAIN, DEFAULT_DRAIN_DELAY,
        DEFAULT_INBOUND, DEFAULT_MAX_HEADER_BYTES, DEFAULT_UPSTREAM,
    },
};
