//! Tests of `sidetrace bench` against an in-process echo app (and a few tiny
//! purpose-built servers) on 127.0.0.1:0. Every wait is bounded by
//! `PATIENCE`; nothing asserts absolute performance.

#![allow(clippy::unwrap_used)] // the test harness states its invariants by panicking

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use http_body_util::Full;
use sidetrace_bench::{execute, BenchConfig, Length, Protocol, Report};
use tokio::{net::TcpListener, sync::oneshot};

/// A load run takes longer than other waits: three times the kit's patience.
const PATIENCE: Duration = kit::PATIENCE.saturating_mul(3);

/// The echo app, stopped when dropped.
struct Echo {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Echo {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(sidetrace::echo::serve(listener, async {
            let _ = stopped.await;
        }));
        Self { addr, _stop: stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn config(url: &str) -> BenchConfig {
    let mut c = BenchConfig::new(url).unwrap();
    c.connections = 4;
    c.timeout = Duration::from_secs(5);
    c
}

async fn bench(config: BenchConfig) -> Report {
    tokio::time::timeout(PATIENCE, execute(config))
        .await
        .expect("the run ends within PATIENCE")
        .expect("the run completes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_mode_counts_exactly_for_each_protocol() {
    let echo = Echo::start().await;
    for (protocol, streams, n) in [
        (Protocol::Http1, 1, 1000),
        (Protocol::H2c, 8, 1000),
        (Protocol::Grpc, 4, 300),
    ] {
        let mut c = config(&echo.url(match protocol {
            Protocol::Grpc => sidetrace::echo::GRPC_UNARY,
            _ => "/",
        }));
        c.protocol = protocol;
        c.streams = streams;
        c.length = Length::Requests(n);
        c.body = Bytes::from_static(b"hello");
        let r = bench(c).await;
        assert_eq!(r.requests, n, "{protocol:?}");
        assert_eq!(r.succeeded, n, "{protocol:?}: {:?}", r.errors);
        assert_eq!(r.responses(), n, "every response has a latency");
        assert_eq!(r.status_codes.get("200"), Some(&n), "{protocol:?}");
        let expected_body = if protocol == Protocol::Grpc { 10 } else { 5 };
        assert_eq!(r.bytes.sent, n * expected_body, "{protocol:?}");
        assert_eq!(r.bytes.received, n * expected_body, "echoed");
        if protocol == Protocol::Grpc {
            assert_eq!(r.grpc_status.get("0"), Some(&n));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_is_not_counted() {
    let echo = Echo::start().await;
    let mut c = config(&echo.url("/"));
    c.warmup = Duration::from_millis(300);
    c.length = Length::Requests(50);
    let r = bench(c).await;
    assert_eq!(r.requests, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_at_the_rate() {
    let echo = Echo::start().await;
    let mut c = config(&echo.url("/"));
    c.rate = Some(200.0);
    c.length = Length::Duration(Duration::from_secs(3));
    let r = bench(c).await;
    assert!((588..=612).contains(&r.requests), "sent {}", r.requests);
    assert_eq!(r.mode, "open");
}

/// An HTTP/1.1 server that holds every 10th request for 200 ms.
async fn every_tenth_slow() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                    async move {
                        if n.is_multiple_of(10) {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_corrects_coordinated_omission() {
    let addr = every_tenth_slow().await;
    let url = format!("http://{addr}/");
    // 20 req/s on one connection: a 200 ms stall holds up the next three
    // arrivals too (150, 100, 50 ms late), so ~40 % of requests are slow.
    let mut open = config(&url);
    open.connections = 1;
    open.rate = Some(20.0);
    open.length = Length::Requests(60);
    let r = bench(open).await;
    assert_eq!(r.requests, 60);
    assert!(
        r.latency_at(90.0) >= Duration::from_millis(140),
        "p90 {:?}",
        r.latency_at(90.0)
    );
    assert!(
        r.latency_at(75.0) >= Duration::from_millis(40),
        "p75 {:?}",
        r.latency_at(75.0)
    );
    assert!(r.latency_us.max >= 190_000.0, "{:?}", r.latency_us);

    // Closed loop measures from the actual send: only the stalled 10 % are slow.
    let mut closed = config(&url);
    closed.connections = 1;
    closed.length = Length::Requests(60);
    let r = bench(closed).await;
    assert!(
        r.latency_at(75.0) < Duration::from_millis(40),
        "p75 {:?}",
        r.latency_at(75.0)
    );
    assert!(r.latency_at(99.0) >= Duration::from_millis(190));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_connect_errors() {
    let addr = kit::refusing_addr();
    let mut c = config(&format!("http://{addr}/"));
    c.length = Length::Requests(20);
    let r = bench(c).await;
    assert_eq!(r.requests, 20);
    assert_eq!(r.errors.connect, 20, "{:?}", r.errors);
    assert_eq!((r.succeeded, r.failed), (0, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_responses_are_timeouts() {
    let echo = Echo::start().await;
    let mut c = config(&echo.url("/?delay_ms=3000"));
    c.timeout = Duration::from_millis(200);
    c.connections = 2;
    c.length = Length::Requests(6);
    let r = bench(c).await;
    assert_eq!(r.errors.timeout, 6, "{:?}", r.errors);
    assert_eq!(r.responses(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duration_run_says_when_requests_in_flight_outlast_it() {
    // 700 ms responses on 2 connections: at the 1 s deadline the second pair
    // is in flight and ends 0.4 s later.
    let echo = Echo::start().await;
    let mut c = config(&echo.url("/?delay_ms=700"));
    c.connections = 2;
    c.length = Length::Duration(Duration::from_secs(1));
    let r = bench(c).await;
    assert_eq!(r.planned_s, Some(1.0));
    assert!(r.duration_s > 1.0, "{}", r.duration_s);
    assert!(r.late_requests >= 1, "{}", r.late_requests);
    assert_eq!(r.responses(), r.requests, "in-flight requests are counted");
    let text = r.table();
    assert!(text.contains("past the 1.00s asked for"), "{text}");
    assert!(
        text.contains(&format!(
            "{} requests in flight at the deadline",
            r.late_requests
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connections_are_resets() {
    // Accepts, reads the request, and hangs up without answering.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
            });
        }
    });
    let mut c = config(&format!("http://{addr}/"));
    c.length = Length::Requests(10);
    let r = bench(c).await;
    assert_eq!(r.errors.reset, 10, "{:?}", r.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_grpc_errors_are_classified() {
    let echo = Echo::start().await;
    for (query, field) in [("/?status=503", "503"), ("/?status=404", "404")] {
        let mut c = config(&echo.url(query));
        c.length = Length::Requests(30);
        let r = bench(c).await;
        assert_eq!(r.status_codes.get(field), Some(&30));
        let (e4, e5) = (r.errors.http_4xx, r.errors.http_5xx);
        assert_eq!(if field == "503" { (e4, e5) } else { (e5, e4) }, (0, 30));
        assert_eq!(r.failed, 30);
    }
    let mut c = config(&echo.url(sidetrace::echo::GRPC_UNARY));
    c.protocol = Protocol::Grpc;
    c.length = Length::Requests(30);
    c.headers.insert(
        HeaderName::from_static("x-echo-grpc-status"),
        HeaderValue::from_static("5"),
    );
    let r = bench(c).await;
    assert_eq!(r.errors.grpc, 30, "{:?}", r.errors);
    assert_eq!(r.grpc_status.get("5"), Some(&30));
    assert_eq!(
        r.status_codes.get("200"),
        Some(&30),
        "gRPC errors travel in trailers"
    );
    // An unknown method answers UNIMPLEMENTED (12).
    let mut c = config(&echo.url("/nope.Svc/Nope"));
    c.protocol = Protocol::Grpc;
    c.length = Length::Requests(10);
    let r = bench(c).await;
    assert_eq!(r.grpc_status.get("12"), Some(&10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_runs_both_sides() {
    let echo = Echo::start().await;
    let mut c = config(&echo.url("/?size=64"));
    c.length = Length::Requests(400);
    let cmp = tokio::time::timeout(PATIENCE, sidetrace_bench::compare(&c, &echo.url("/"), 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cmp.direct.requests, 400);
    assert_eq!(cmp.proxy.requests, 400);
    assert_eq!(cmp.rounds.len(), 2);
    assert_eq!(cmp.proxy.bytes.received, 400 * 64);
    assert!(cmp.throughput_ratio > 0.0);
    assert!(cmp.table().contains("added"));
}

/// Runs the real binary with `args`, bounded by PATIENCE.
async fn binary(args: Vec<String>) -> std::process::Output {
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sidetrace"))
            .arg("bench")
            .args(args)
            .output()
            .unwrap()
    });
    tokio::time::timeout(PATIENCE, run).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_json_has_every_field_and_the_plot_is_xml() {
    let echo = Echo::start().await;
    let dir = kit::temp_dir("bench");
    let plot = dir.join("latency.svg");
    let out = binary(vec![
        echo.url("/?a=1&b=2"),
        "--requests".into(),
        "300".into(),
        "--protocol".into(),
        "h2c".into(),
        "--streams".into(),
        "4".into(),
        "--connections".into(),
        "2".into(),
        "--json".into(),
        "--plot".into(),
        plot.display().to_string(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "url",
        "protocol",
        "mode",
        "rate",
        "connections",
        "streams",
        "duration_s",
        "requests",
        "succeeded",
        "failed",
        "throughput_rps",
        "latency_us",
        "percentiles",
        "status_codes",
        "grpc_status",
        "errors",
        "bytes",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    for key in ["min", "mean", "stdev", "p50", "p90", "p99", "p99_9", "max"] {
        assert!(v["latency_us"][key].as_f64().is_some(), "latency_us.{key}");
    }
    for key in [
        "connect", "timeout", "reset", "http_4xx", "http_5xx", "grpc", "other",
    ] {
        assert_eq!(v["errors"][key].as_u64(), Some(0), "errors.{key}");
    }
    assert_eq!(v["requests"], 300);
    assert_eq!(v["protocol"], "h2c");
    assert_eq!(v["status_codes"]["200"], 300);
    assert!(v["latency_us"]["p50"].as_f64().unwrap() > 0.0);
    assert!(v["percentiles"].as_array().unwrap().len() >= 10);
    let svg = std::fs::read_to_string(&plot).unwrap();
    check_xml(&svg);
    assert!(svg.contains("<polyline"));
    assert!(svg.contains("a=1&amp;b=2"), "the URL label is escaped");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_reports_usage_errors() {
    let out = binary(vec!["https://127.0.0.1:1/".into()]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only http://"));
}

/// A small well-formedness check: one root, balanced tags, quoted attributes,
/// known entities only.
fn check_xml(doc: &str) {
    let mut rest = doc.trim_start();
    if let Some(decl) = rest.strip_prefix("<?xml") {
        rest = &decl[decl.find("?>").expect("declaration ends") + 2..];
    }
    let mut stack: Vec<&str> = Vec::new();
    let mut roots = 0;
    while let Some(lt) = rest.find('<') {
        check_text(&rest[..lt]);
        let gt = rest[lt..].find('>').expect("tag ends") + lt;
        let tag = &rest[lt + 1..gt];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop(), Some(name.trim()), "balanced close");
        } else {
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name = body.split_whitespace().next().expect("tag name");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'),
                "{name}"
            );
            check_attributes(&body[name.len()..]);
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(name);
            }
        }
        rest = &rest[gt + 1..];
    }
    check_text(rest);
    assert!(stack.is_empty(), "unclosed {stack:?}");
    assert_eq!(roots, 1, "one root element");
}

fn check_attributes(mut attrs: &str) {
    loop {
        attrs = attrs.trim_start();
        if attrs.is_empty() {
            return;
        }
        let eq = attrs.find('=').expect("attribute has a value");
        assert!(!attrs[..eq].trim().contains(char::is_whitespace));
        let value = attrs[eq + 1..].strip_prefix('"').expect("quoted value");
        let end = value.find('"').expect("value ends");
        check_text(&value[..end]);
        attrs = &value[end + 1..];
    }
}

fn check_text(text: &str) {
    assert!(!text.contains('<'), "{text}");
    let mut parts = text.split('&');
    parts.next();
    for p in parts {
        let entity = &p[..p.find(';').expect("entity ends")];
        assert!(
            ["amp", "lt", "gt", "quot", "apos"].contains(&entity),
            "&{entity};"
        );
    }
}
