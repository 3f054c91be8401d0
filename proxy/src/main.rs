//! The `sidetrace` binary: parse the command line, call the library, exit
//! 0 (ok), 1 (runtime failure) or 2 (usage or config error).

use std::{collections::HashMap, io::Write, process::ExitCode, time::Duration};

use clap::Parser;
use filters::registry::FilterConfig;
use sidetrace::{
    app,
    cli::{Cli, Command, LogFormat, RunArgs},
    config::{self, Overrides, Settings},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo is for a person reading its summary: text, and only warnings,
    // unless asked otherwise.
    let demo = matches!(cli.command, Command::Demo(_));
    let format = cli.log_format.unwrap_or(if demo {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let level = match (&cli.log_level, demo) {
        (Some(level), _) => Some(level.as_str()),
        (None, true) if !std::env::var("RUST_LOG").is_ok_and(|v| !v.is_empty()) => Some("warn"),
        (None, _) => None,
    };
    if let Err(e) = sidetrace::logging::init(format, level) {
        eprintln!("sidetrace: {e}");
        return ExitCode::from(2);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // A sidecar shares the node with the app it fronts: a fixed, small number of workers (as
    // meshes cap their proxies), not one per node CPU. The other commands keep tokio's default.
    if matches!(cli.command, Command::Run(_)) {
        match worker_threads(std::env::var("SIDETRACE_WORKER_THREADS").ok().as_deref()) {
            Ok(n) => {
                builder.worker_threads(n);
            }
            Err(e) => {
                eprintln!("sidetrace: invalid configuration: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sidetrace: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    match cli.command {
        Command::Run(args) => runtime.block_on(run(args, env)),
        Command::Demo(args) => runtime.block_on(sidetrace::demo::run(args, env)),
        Command::Echo(args) => match runtime.block_on(sidetrace::echo::run(args.listen)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sidetrace echo: cannot listen on {}: {e}", args.listen);
                ExitCode::from(1)
            }
        },
        Command::CheckConfig(args) => check_config(&args.file, args.without_files, &env),
        Command::Bench(args) => runtime.block_on(sidetrace_bench::run(args)),
        Command::Inject(args) => sidetrace::inject::run(args),
        Command::Webhook(args) => {
            runtime.block_on(sidetrace::webhook::run(args, wait_for_signal()))
        }
    }
}

/// Worker threads of `run`: `SIDETRACE_WORKER_THREADS`, default 2.
fn worker_threads(value: Option<&str>) -> Result<usize, String> {
    const DEFAULT: usize = 2;
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(n),
            _ => Err(format!(
                "SIDETRACE_WORKER_THREADS: {v:?} is not a number of worker threads from 1 to 1024"
            )),
        },
    }
}

fn settings(
    args: &RunArgs,
    env: &HashMap<String, String>,
) -> Result<Settings, config::ConfigError> {
    let file = match &args.config {
        Some(path) => config::load_file(path)?,
        None => config::FileConfig::default(),
    };
    let overrides = Overrides {
        inbound: args.inbound,
        upstream: args.upstream.clone(),
        outbound: args.outbound,
        admin: args.admin,
        service_name: args.service_name.clone(),
        drain_timeout: args.drain_timeout,
    };
    let settings = Settings::resolve(overrides, file, args.config.clone(), env);
    settings.map_err(|e| match &args.config {
        Some(path) => e.at_field_in(path),
        None => e,
    })
}

async fn run(args: RunArgs, env: HashMap<String, String>) -> ExitCode {
    let settings = match settings(&args, &env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sidetrace: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // Listen for the signals before the proxy says it is ready: a SIGTERM
    // that comes right after the ready line must drain, not kill (the
    // default action until a handler is installed).
    let signals = term_and_int();
    let running = match app::start(settings, &env).await {
        Ok(r) => r,
        Err(app::StartError::Config(e)) => {
            let e = match &args.config {
                Some(path) => e.at_field_in(path),
                None => e,
            };
            eprintln!("sidetrace: invalid configuration: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("sidetrace: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        "runtime"
    );
    let trigger = running.trigger();
    let delay = running.drain_delay;
    tokio::spawn(async move {
        // SIGTERM: the pod is leaving the endpoints, which takes a moment to
        // reach every client; keep serving them, not ready, for the delay.
        // Ctrl-C (or a second signal) is a person who wants it gone now.
        let delay = match wait_for_term_or_int(signals).await {
            SignalKind::Term => delay,
            SignalKind::Int => Duration::ZERO,
        };
        tracing::info!(delay = ?delay, "signal received, not ready; draining after the delay");
        trigger.drain_after(delay, wait_for_signal()).await;
    });
    running.wait().await;
    ExitCode::SUCCESS
}

enum SignalKind {
    Term,
    Int,
}

type Signals = Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>;

/// SIGTERM and SIGINT handlers, installed now.
fn term_and_int() -> Signals {
    use tokio::signal::unix::{signal, SignalKind as Kind};
    Some((
        signal(Kind::terminate()).ok()?,
        signal(Kind::interrupt()).ok()?,
    ))
}

async fn wait_for_term_or_int(signals: Signals) -> SignalKind {
    let Some((mut term, mut int)) = signals else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => SignalKind::Term,
        _ = int.recv() => SignalKind::Int,
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn check_config(
    path: &std::path::Path,
    without_files: bool,
    env: &HashMap<String, String>,
) -> ExitCode {
    // The upstream often comes from the environment (the Helm chart sets
    // SIDETRACE_UPSTREAM): check the file against the one `run` would use.
    let args = RunArgs {
        config: Some(path.to_path_buf()),
        inbound: None,
        upstream: env.get("SIDETRACE_UPSTREAM").cloned(),
        outbound: None,
        admin: None,
        service_name: None,
        drain_timeout: None,
    };
    let checked = settings(&args, env).and_then(|s| {
        if without_files {
            return Ok(s);
        }
        sidetrace::preflight::check_files(&s, env)
            .map(|()| s)
            .map_err(|e| e.at_field_in(path))
    });
    match checked {
        Ok(s) => {
            let names = |filters: &[FilterConfig]| -> String {
                filters.iter().map(|f| format!("{} > ", f.name())).collect()
            };
            let chain = names(&s.filters);
            let mut routes = String::new();
            for r in &s.routes {
                let own = match (&r.filters, r.inherit) {
                    (None, _) => format!("{chain}forward (the default chain)"),
                    (Some(own), false) => format!("{}forward", names(own)),
                    (Some(own), true) => format!("{chain}{}forward", names(own)),
                };
                routes.push_str(&format!("route {} ({}): {own}\n", r.name, r.prefix));
            }
            // The same rendering as the admin /config: secrets redacted.
            let json = sidetrace::admin::render_config(&s);
            let text = format!(
                "{}: valid\nfilter chain (outermost first): metrics > trace > rescue > catch_panic > {chain}forward\n{routes}{}\n",
                path.display(),
                String::from_utf8_lossy(&json)
            );
            // Not print!: a reader that stops early (`| head -1`) closes the
            // pipe, and the verdict stands all the same.
            let mut stdout = std::io::stdout().lock();
            let _ = stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
