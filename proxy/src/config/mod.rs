//! Configuration: the YAML file's types, the loader that reports errors with
//! file, line and field, and the resolution of flags, env and file into the
//! effective [`Settings`].
//!
//! Precedence is flag > env > config file > default (DESIGN section 3).

mod file;
mod load;
pub mod reload;
mod settings;

pub use filters::trace::{RouteConfig, TracingConfig};

pub use self::{
    file::{
        AdminConfig, FileConfig, InboundConfig, MetricsFileConfig, OutboundConfig, ServiceConfig,
        TlsConfig, UpstreamProtocol,
    },
    load::{load_file, parse_yaml, ConfigError},
    settings::{
        Overrides, Settings, Upstream, DEFAULT_ADMIN, DEFAULT_DRAIN, DEFAULT_INBOUND,
        DEFAULT_MAX_HEADER_BYTES, DEFAULT_UPSTREAM,
    },
};
