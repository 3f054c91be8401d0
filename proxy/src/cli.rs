//! Commands and flags. Every flag of `run` has a `SIDETRACE_*` variable.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// sidetrace: a sidecar proxy with built-in tracing.
#[derive(Debug, Parser)]
#[command(name = "sidetrace", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log format [default: json; text for `demo`].
    #[arg(long, global = true, env = "SIDETRACE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log level or filter (`info`, `sidetrace=debug`) [default: `RUST_LOG` when set, else info; warn
    /// for `demo`].
    #[arg(long, global = true, env = "SIDETRACE_LOG_LEVEL")]
    pub log_level: Option<String>,
}

/// Log output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// For humans.
    Text,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar proxy.
    Run(RunArgs),
    /// Run the embedded demo: echo app, proxy and admin, with sample traffic.
    Demo(DemoArgs),
    /// Run a test upstream (HTTP/1.1, h2c, gRPC echo).
    Echo(EchoArgs),
    /// Validate a config file and print the effective config and filter chain.
    CheckConfig(CheckConfigArgs),
    /// Load-test a URL, or compare a service with and without the proxy.
    Bench(sidetrace_bench::BenchArgs),
    /// Add the sidecar to the pod templates of Kubernetes manifests (or take it out).
    Inject(InjectArgs),
    /// Run the mutating admission webhook that injects the sidecar into new pods.
    Webhook(WebhookArgs),
}

/// `sidetrace run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// YAML config file (`-f`, as in "file": `bench` has `-c` for connections, as wrk and h2load do).
    #[arg(long, short = 'f', env = "SIDETRACE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Inbound listen address [default: 0.0.0.0:15080].
    #[arg(long, env = "SIDETRACE_INBOUND")]
    pub inbound: Option<SocketAddr>,
    /// The app's URL [default: http://127.0.0.1:8080].
    #[arg(long, env = "SIDETRACE_UPSTREAM")]
    pub upstream: Option<String>,
    /// Outbound listen address (off unless given) [e.g. 127.0.0.1:15081].
    #[arg(long, env = "SIDETRACE_OUTBOUND")]
    pub outbound: Option<SocketAddr>,
    /// Admin listen address [default: 127.0.0.1:15090].
    #[arg(long, env = "SIDETRACE_ADMIN")]
    pub admin: Option<SocketAddr>,
    /// `service.name` of the proxied app (also `OTEL_SERVICE_NAME`).
    #[arg(long, env = "SIDETRACE_SERVICE_NAME")]
    pub service_name: Option<String>,
    /// Time in-flight requests get after SIGTERM [default: 25s].
    #[arg(long, env = "SIDETRACE_DRAIN_TIMEOUT", value_parser = humantime::parse_duration)]
    pub drain_timeout: Option<Duration>,
}

/// `sidetrace demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Port of the proxy's inbound listener.
    #[arg(long, env = "SIDETRACE_DEMO_PORT", default_value_t = 15080)]
    pub port: u16,
    /// Port of the built-in echo app.
    #[arg(long, env = "SIDETRACE_DEMO_APP_PORT", default_value_t = 18080)]
    pub app_port: u16,
    /// Port of the admin server.
    #[arg(long, env = "SIDETRACE_DEMO_ADMIN_PORT", default_value_t = 15090)]
    pub admin_port: u16,
    /// Send the sample traffic, print the summary and exit instead of serving.
    #[arg(long)]
    pub once: bool,
}

/// `sidetrace echo`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Address to listen on.
    #[arg(long, env = "SIDETRACE_ECHO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

/// `sidetrace check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The YAML file to check.
    pub file: PathBuf,
    /// Check the file alone, without reading the certificates and keys it
    /// names (for a config rendered for another machine, e.g. a pod).
    #[arg(long)]
    pub without_files: bool,
}

/// `sidetrace inject`.
#[derive(Debug, Args)]
pub struct InjectArgs {
    /// Manifests: YAML (multi-document) or JSON; `-` or nothing reads stdin.
    pub file: Option<PathBuf>,
    /// How the proxy joins each pod (a pod's `sidetrace.io/mode` annotation wins).
    #[arg(long, value_enum, default_value = "native")]
    pub mode: crate::inject::Mode,
    /// The app's port in every pod [default: the pod's `sidetrace.io/app-port`
    /// annotation, else its only container port].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub app_port: Option<u16>,
    /// Values files of the sidetrace chart, merged over its defaults as `helm -f` does.
    #[arg(long = "values", short = 'f')]
    pub values: Vec<PathBuf>,
    /// The chart's release name, which names the config ConfigMap (`<release>-sidetrace-config`).
    #[arg(long, default_value = "sidetrace")]
    pub release: String,
    /// Remove the sidecar instead.
    #[arg(long)]
    pub uninject: bool,
}

/// `sidetrace webhook`.
#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// HTTPS listen address.
    #[arg(long, env = "SIDETRACE_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain; reloaded when it changes.
    #[arg(long, env = "SIDETRACE_WEBHOOK_CERT")]
    pub cert: PathBuf,
    /// PEM private key; reloaded when it changes.
    #[arg(long, env = "SIDETRACE_WEBHOOK_KEY")]
    pub key: PathBuf,
    /// Values files of the sidetrace chart, merged over its defaults.
    #[arg(
        long = "values",
        short = 'f',
        env = "SIDETRACE_WEBHOOK_VALUES",
        value_delimiter = ','
    )]
    pub values: Vec<PathBuf>,
    /// The chart's release name, which names the config ConfigMap.
    #[arg(long, env = "SIDETRACE_WEBHOOK_RELEASE", default_value = "sidetrace")]
    pub release: String,
    /// How the proxy joins each pod (a pod's `sidetrace.io/mode` annotation wins).
    #[arg(
        long,
        value_enum,
        env = "SIDETRACE_WEBHOOK_MODE",
        default_value = "native"
    )]
    pub mode: crate::inject::Mode,
}
