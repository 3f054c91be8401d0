//! The command line of `sidetrace bench` and the [`BenchConfig`] it turns into.
//!
//! The flags follow wrk2, h2load and oha where they overlap; the library API
//! ([`BenchConfig`] and [`super::execute`]) is what the tests and the
//! `--compare` rounds drive.

use std::{path::PathBuf, time::Duration};

use bytes::Bytes;
use clap::ValueEnum;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};

use super::BenchError;

/// `sidetrace bench` arguments.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Target URL (through the proxy when `--compare` is given), e.g. `http://127.0.0.1:15080/`.
    pub url: String,
    /// How long to measure, e.g. `10s`, `1m` [default: 10s unless `--requests` is given].
    #[arg(long, short = 'd', value_parser = humantime::parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Measure exactly this many requests instead of a duration.
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,
    /// Load sent before measuring starts, on the same connections (not recorded).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Number of connections.
    #[arg(long, short = 'c', default_value_t = 32)]
    pub connections: usize,
    /// Concurrent streams per HTTP/2 connection (h2c and grpc; HTTP/1.1 has one).
    #[arg(long, short = 'm', default_value_t = 1)]
    pub streams: usize,
    /// Protocol spoken to the target.
    #[arg(long, short = 'p', value_enum, default_value_t = Protocol::Http1)]
    pub protocol: Protocol,
    /// Request method [default: GET, or POST with a body or gRPC].
    #[arg(long, short = 'X')]
    pub method: Option<String>,
    /// Extra request header `Name: value` (repeatable); gRPC metadata for `--protocol grpc`.
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Request body; for gRPC, the message payload (the 5-byte frame header is added).
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Read the request body (or gRPC message) from a file.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Open loop: requests per second at a constant arrival rate, latency
    /// measured from each request's intended send time. Closed loop when absent.
    #[arg(long, short = 'r')]
    pub rate: Option<f64>,
    /// Per-request timeout (connect, and send to last body byte).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write a latency-percentile plot to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Also run the same load straight at the app (this URL), alternating
    /// rounds with the proxy URL, and report the proxy's added latency.
    #[arg(long, value_name = "DIRECT_URL")]
    pub compare: Option<String>,
    /// Rounds per target with `--compare` (the duration or request count is split across them).
    #[arg(long, default_value_t = 4)]
    pub rounds: u32,
    /// Never draw the progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// Protocols the harness speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1, one request at a time per connection.
    Http1,
    /// HTTP/2 over cleartext (prior knowledge), `--streams` per connection.
    H2c,
    /// gRPC (unary) over h2c: length-prefixed body, `te: trailers`, `grpc-status` read.
    Grpc,
}

impl Protocol {
    /// Name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::H2c => "h2c",
            Self::Grpc => "grpc",
        }
    }
}

/// How much load to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    /// Measure for this long.
    Duration(Duration),
    /// Measure exactly this many requests.
    Requests(u64),
}

/// One run's settings, validated. Build it with [`BenchConfig::new`] and
/// adjust the public fields, or from the command line.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Target URL (`http://` only).
    pub url: Uri,
    /// Protocol spoken.
    pub protocol: Protocol,
    /// Request method.
    pub method: Method,
    /// Extra request headers.
    pub headers: HeaderMap,
    /// Request body (gRPC: the message payload, unframed).
    pub body: Bytes,
    /// Number of connections.
    pub connections: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub streams: usize,
    /// Open-loop arrival rate (requests per second); `None` is closed loop.
    pub rate: Option<f64>,
    /// Duration or request count.
    pub length: Length,
    /// Unrecorded load before measuring.
    pub warmup: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Draw the progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// Label shown on the progress bar.
    pub label: String,
}

impl BenchConfig {
    /// Defaults for `url`: HTTP/1.1, GET, 32 connections, closed loop, 10 s, no warm-up, 10 s timeout.
    pub fn new(url: &str) -> Result<Self, BenchError> {
        Ok(Self {
            url: parse_url(url)?,
            protocol: Protocol::Http1,
            method: Method::GET,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            connections: 32,
            streams: 1,
            rate: None,
            length: Length::Duration(Duration::from_secs(10)),
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(10),
            progress: false,
            label: String::new(),
        })
    }

    /// Checks the settings that cannot be expressed in the types.
    pub fn validate(&self) -> Result<(), BenchError> {
        let invalid = |m: &str| Err(BenchError::Invalid(m.to_string()));
        if self.connections == 0 {
            return invalid("--connections must be at least 1");
        }
        if self.streams == 0 {
            return invalid("--streams must be at least 1");
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return invalid("--rate must be a positive number");
            }
        }
        match self.length {
            Length::Duration(d) if d.is_zero() => invalid("--duration must be positive"),
            Length::Requests(0) => invalid("--requests must be at least 1"),
            _ if self.timeout.is_zero() => invalid("--timeout must be positive"),
            _ => Ok(()),
        }
    }

    /// In-flight requests per connection: `streams` for HTTP/2, 1 for HTTP/1.1.
    pub fn per_connection(&self) -> usize {
        match self.protocol {
            Protocol::Http1 => 1,
            Protocol::H2c | Protocol::Grpc => self.streams,
        }
    }
}

impl TryFrom<&BenchArgs> for BenchConfig {
    type Error = BenchError;

    fn try_from(args: &BenchArgs) -> Result<Self, BenchError> {
        let mut config = BenchConfig::new(&args.url)?;
        config.protocol = args.protocol;
        config.body = match (&args.body, &args.body_file) {
            (Some(b), _) => Bytes::from(b.clone().into_bytes()),
            (None, Some(path)) => {
                std::fs::read(path)
                    .map(Bytes::from)
                    .map_err(|source| BenchError::BodyFile {
                        path: path.clone(),
                        source,
                    })?
            }
            (None, None) => Bytes::new(),
        };
        let has_body = args.body.is_some() || args.body_file.is_some();
        config.method = match (&args.method, args.protocol) {
            (Some(m), _) => Method::from_bytes(m.as_bytes())
                .map_err(|_| BenchError::Invalid(format!("invalid method {m:?}")))?,
            (None, Protocol::Grpc) => Method::POST,
            (None, _) if has_body => Method::POST,
            (None, _) => Method::GET,
        };
        for h in &args.headers {
            let (name, value) = parse_header(h)?;
            config.headers.append(name, value);
        }
        config.connections = args.connections;
        config.streams = args.streams;
        config.rate = args.rate;
        config.length = match (args.requests, args.duration) {
            (Some(n), _) => Length::Requests(n),
            (None, Some(d)) => Length::Duration(d),
            (None, None) => Length::Duration(Duration::from_secs(10)),
        };
        config.warmup = args.warmup;
        config.timeout = args.timeout;
        config.progress = !args.no_progress;
        config.validate()?;
        Ok(config)
    }
}

/// Parses and checks a target URL: `http://host[:port]/path?query`.
pub(super) fn parse_url(url: &str) -> Result<Uri, BenchError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| BenchError::Invalid(format!("invalid URL {url:?}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(BenchError::Invalid(format!(
                "unsupported scheme {other:?} in {url:?}: only http:// (cleartext) is supported"
            )))
        }
        None => return Err(BenchError::Invalid(format!("URL {url:?} needs http://"))),
    }
    if uri.host().is_none() {
        return Err(BenchError::Invalid(format!("URL {url:?} has no host")));
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Uri::builder()
        .scheme("http")
        .authority(uri.authority().map_or("", |a| a.as_str()))
        .path_and_query(if path.is_empty() { "/" } else { path })
        .build()
        .map_err(|_| BenchError::Invalid(format!("invalid URL {url:?}")))
}

/// Parses `Name: value`.
fn parse_header(h: &str) -> Result<(HeaderName, HeaderValue), BenchError> {
    let bad = || BenchError::Invalid(format!("invalid header {h:?}, expected `Name: value`"));
    let (name, value) = h.split_once(':').ok_or_else(bad)?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
    if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
        return Err(BenchError::Invalid(format!(
            "header {name} is set by the harness"
        )));
    }
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080").unwrap().to_string(),
            "http://127.0.0.1:8080/"
        );
        assert!(parse_url("https://x/").is_err());
        assert!(parse_url("127.0.0.1:80").is_err());
    }

    #[test]
    fn headers() {
        let (n, v) = parse_header("X-Echo-Grpc-Status: 5").unwrap();
        assert_eq!(
            (n.as_str(), v.to_str().unwrap()),
            ("x-echo-grpc-status", "5")
        );
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header("content-length: 3").is_err());
    }
}
