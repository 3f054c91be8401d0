//! sidetrace as a library: the binary is a thin CLI over it, and the
//! integration tests start proxies in process through [`app::start`].

pub mod admin;
pub mod app;
pub mod cli;
pub mod client_body;
pub mod config;
pub mod connect;
pub mod demo;
pub mod drain;
pub mod echo;
pub mod export;
pub mod exposition;
pub mod forward;
pub mod inject;
pub mod listen;
pub mod logging;
pub mod logs;
pub mod metrics_export;
pub mod preflight;
pub mod rescue;
pub mod smuggling;
pub mod stack;
pub mod tls;
pub mod tunnel;
pub mod validate;
pub mod webhook;
