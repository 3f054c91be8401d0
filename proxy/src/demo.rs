//! `sidetrace demo`: the echo app, the proxy in front of it and the admin
//! server in one process, a little traffic of each kind, then where to look.

use std::{collections::HashMap, net::SocketAddr, process::ExitCode, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio::net::TcpListener;

use crate::{
    app,
    cli::DemoArgs,
    config::{FileConfig, Overrides, RouteConfig, Settings},
    echo,
};

/// Prints a line; a reader that stopped early (`| head`) closed the pipe,
/// which is no reason to panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Runs the demo until Ctrl-C (or once, with `--once`).
pub async fn run(args: DemoArgs, env: HashMap<String, String>) -> ExitCode {
    let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let app_listener = match TcpListener::bind(local(args.app_port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "sidetrace demo: cannot start the echo app on {}: {e} (use --app-port)",
                local(args.app_port)
            );
            return ExitCode::from(1);
        }
    };
    let app_addr = app_listener.local_addr().unwrap_or(local(args.app_port));
    tokio::spawn(echo::serve(app_listener, std::future::pending()));
    let file = FileConfig {
        routes: vec![
            RouteConfig {
                prefix: "/api/orders".into(),
                name: "orders".into(),
                ..RouteConfig::default()
            },
            RouteConfig {
                prefix: "/slow".into(),
                name: "slow".into(),
                ..RouteConfig::default()
            },
        ],
        ..FileConfig::default()
    };
    let overrides = Overrides {
        inbound: Some(local(args.port)),
        upstream: Some(format!("http://{app_addr}")),
        admin: Some(local(args.admin_port)),
        service_name: Some(
            env.get("OTEL_SERVICE_NAME")
                .cloned()
                .unwrap_or_else(|| "demo-app".into()),
        ),
        ..Overrides::default()
    };
    let settings = match Settings::resolve(overrides, file, None, &env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sidetrace demo: {e}");
            return ExitCode::from(2);
        }
    };
    let running = match app::start(settings, &env).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sidetrace demo: {e} (use --port / --admin-port)");
            return ExitCode::from(1);
        }
    };
    let proxy = running.inbound;
    let admin = running.admin;
    let results = sample_traffic(proxy).await;
    say!("\nsidetrace demo: sample traffic through the proxy (echo app behind it):");
    for (what, outcome) in &results {
        say!("  {what:<34} {outcome}");
    }
    if args.once {
        // Under --once everything stops now: no URLs that are about to die.
        say!("\n--once: stopped. Run `sidetrace demo` to keep it serving and look at the traces.");
        running.shutdown().await;
        return ExitCode::SUCCESS;
    }
    say!("\nserving: echo app http://{app_addr}, proxy http://{proxy}, admin http://{admin}");
    say!("\nlook at:");
    say!("  viewer      http://{admin}/debug/traces/ui   (trace list, waterfalls, RED per route)");
    say!("  traces      http://{admin}/debug/traces      (JSON)");
    say!("  metrics     http://{admin}/metrics");
    say!("  config      http://{admin}/config");
    say!("  try         curl -i http://{proxy}/api/orders/42");
    say!("              curl -i --http2-prior-knowledge 'http://{proxy}/slow?delay_ms=200'");
    say!("\nserving until Ctrl-C");
    let trigger = running.trigger();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        trigger.drain();
    });
    running.wait().await;
    ExitCode::SUCCESS
}

type DemoClient = Client<HttpConnector, Full<Bytes>>;

async fn sample_traffic(proxy: SocketAddr) -> Vec<(&'static str, String)> {
    let h1: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let base = format!("http://{proxy}");
    let mut out = Vec::new();
    let cases: [(&'static str, &DemoClient, &str, Version); 4] = [
        (
            "HTTP/1.1 GET /api/orders/42",
            &h1,
            "/api/orders/42",
            Version::HTTP_11,
        ),
        (
            "h2c GET /api/orders/7",
            &h2,
            "/api/orders/7",
            Version::HTTP_2,
        ),
        (
            "HTTP/1.1 error (status=500)",
            &h1,
            "/api/orders/1?status=500",
            Version::HTTP_11,
        ),
        (
            "h2c slow request (delay_ms=300)",
            &h2,
            "/slow?delay_ms=300",
            Version::HTTP_2,
        ),
    ];
    for (what, client, path, version) in cases {
        let req = Request::get(format!("{base}{path}"))
            .version(version)
            .body(Full::new(Bytes::new()));
        out.push((what, send(client, req).await));
    }
    let mut frame = vec![0u8, 0, 0, 0, 5];
    frame.extend_from_slice(b"hello");
    let grpc = |status: &'static str| {
        Request::post(format!("{base}{}", echo::GRPC_UNARY))
            .version(Version::HTTP_2)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers")
            .header("x-echo-grpc-status", HeaderValue::from_static(status))
            .body(Full::new(Bytes::from(frame.clone())))
    };
    out.push(("gRPC Echo/Unary (OK)", send(&h2, grpc("0")).await));
    out.push(("gRPC Echo/Unary (NOT_FOUND)", send(&h2, grpc("5")).await));
    out
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Result<Request<Full<Bytes>>, http::Error>,
) -> String {
    let Ok(req) = req else {
        return "could not build the request".into();
    };
    let call = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let trace = resp
            .headers()
            .get("x-trace-id")
            .and_then(|v| v.to_str().ok())
            .map(|t| format!(" trace {t}"))
            .unwrap_or_default();
        let collected = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let grpc = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .map(|s| format!(" grpc-status {s}"))
            .unwrap_or_default();
        Ok::<_, String>(format!("{}{grpc}{trace}", status.as_u16()))
    };
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => format!("failed: {e}"),
        Err(_) => "timed out".into(),
    }
}
