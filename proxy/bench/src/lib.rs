//! `sidetrace bench`: the load harness the `sidetrace` binary links.
//!
//! A crate of its own because it is a client, not a part of the proxy: it
//! depends on nothing of `sidetrace`, and of it the proxy names only
//! [`BenchArgs`] (the `bench` command's flags) and [`run`].
//!
//! Use it to load-test a service, or with `--compare` to measure what the
//! proxy adds in front of it. It speaks HTTP/1.1, h2c and unary gRPC, runs
//! closed loop (each connection sends back to back) or open loop (`--rate`:
//! constant arrival, latency from the intended send time, as wrk2 does), and
//! reports HDR-histogram percentiles, throughput, status and error counts as
//! a table, JSON (`--json`) or an SVG plot (`--plot`). It is not a scenario
//! runner: one request shape per run. Guide: `docs/bench.md`.
//!
//! The library API is what the command uses:
//!
//! ```no_run
//! # async fn demo() -> Result<(), sidetrace_bench::BenchError> {
//! use sidetrace_bench::{execute, BenchConfig, Length};
//! let mut config = BenchConfig::new("http://127.0.0.1:8080/")?;
//! config.rate = Some(1000.0);
//! config.length = Length::Requests(5000);
//! let report = execute(config).await?;
//! println!("p99 = {:?}", report.latency_at(99.0));
//! # Ok(())
//! # }
//! ```

mod args;
mod client;
mod compare;
mod h1;
mod load;
mod plot;
mod progress;
mod report;
mod schedule;
mod stats;

use std::{io::Write as _, path::PathBuf, process::ExitCode};

pub use args::{BenchArgs, BenchConfig, Length, Protocol};
pub use compare::{compare, Added, Comparison, Round};
pub use plot::svg;
pub use report::{Bytes, Latency, Percentile, Report};
pub use stats::ErrorCounts;

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag or URL is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The body file cannot be read.
    #[error("cannot read the body file {path}: {source}")]
    BodyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The target's host does not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// A connection task panicked or was cancelled.
    #[error("a load worker failed: {0}")]
    Worker(String),
    /// The plot cannot be written.
    #[error("cannot write the plot {path}: {source}")]
    Plot {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl BenchError {
    /// 2 for usage errors, 1 for runtime failures (the CLI's exit codes).
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Invalid(_) | Self::BodyFile { .. } => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }
}

/// Runs one load test and reports on it.
pub async fn execute(config: BenchConfig) -> Result<Report, BenchError> {
    let out = load::run(&config).await?;
    Ok(Report::new(&config, &out))
}

/// Runs the harness from the command line: exit 0 when the run completed and
/// at least one request succeeded, 1 otherwise, 2 on usage errors.
pub async fn run(args: BenchArgs) -> ExitCode {
    match run_inner(&args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sidetrace bench: {e}");
            e.exit_code()
        }
    }
}

async fn run_inner(args: &BenchArgs) -> Result<ExitCode, BenchError> {
    let config = BenchConfig::try_from(args)?;
    let (text, json, plot, ok) = match &args.compare {
        None => {
            let report = execute(config).await?;
            let plot = svg(
                &format!("sidetrace bench {}", report.url),
                &[(report.url.as_str(), &report)],
            );
            let json = serde_json::to_string_pretty(&report);
            (report.table(), json, plot, report.succeeded > 0)
        }
        Some(direct) => {
            let c = compare(&config, direct, args.rounds).await?;
            let plot = svg(
                "sidetrace bench --compare",
                &[
                    (&format!("direct {}", c.direct.url), &c.direct),
                    (&format!("proxy {}", c.proxy.url), &c.proxy),
                ],
            );
            let json = serde_json::to_string_pretty(&c);
            let ok = c.direct.succeeded > 0 && c.proxy.succeeded > 0;
            (c.table(), json, plot, ok)
        }
    };
    if let Some(path) = &args.plot {
        std::fs::write(path, plot).map_err(|source| BenchError::Plot {
            path: path.clone(),
            source,
        })?;
    }
    let text = if args.json {
        json.map(|j| j + "\n")
            .map_err(|e| BenchError::Worker(format!("cannot encode JSON: {e}")))?
    } else {
        text
    };
    // Not print!: a closed pipe (`| head`) must not panic.
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
