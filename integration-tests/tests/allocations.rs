//! Heap allocations per bodiless HTTP/1.1 GET through the whole traced
//! stack, next to the floor's: a bare hyper proxy (hyper-util's auto server
//! over its pooled legacy client, nothing added) serving the same request
//! from the same upstream to the same client.
//!
//! A counting global allocator sees every thread of this process: client,
//! upstream, proxy and the proxy's export thread alike. The client writes
//! and reads into fixed buffers, and the upstream is the same for both, so
//! the difference between the two figures is what sidetrace adds. The
//! figures are written to `target/reliability/allocations.txt` and printed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
// The client is a plain blocking thread on purpose: it allocates nothing.
#![allow(clippy::disallowed_methods)]

use std::{
    alloc::System,
    convert::Infallible,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, Request, Response};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use integration::proxy::Proxy;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const WARMUP: usize = 300;
const MEASURED: usize = 2000;
/// What sidetrace may allocate per request beyond the floor. Each one is
/// accounted for in docs/architecture.md ("Allocations per request").
const BUDGET_OVER_FLOOR: f64 = 40.0;

#[test]
fn a_traced_get_allocates_little_more_than_a_bare_hyper_proxy() {
    let upstream = upstream();
    let floor = floor(upstream);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let proxy = rt.block_on(
        Proxy::from_yaml("tracing: { sampler: { type: always_on }, access_log: false }\n")
            .upstream(format!("http://{upstream}"))
            .run(),
    );

    let floor_allocs = per_request(floor);
    let traced = per_request(proxy.inbound);
    let report = format!(
        "allocations per bodiless HTTP/1.1 GET, one keep-alive connection, {MEASURED} requests\n\
         floor (bare hyper proxy):          {:.1} allocations, {:.0} bytes\n\
         sidetrace, 100 % traced, stored:   {:.1} allocations, {:.0} bytes\n\
         sidetrace over the floor:          {:.1} allocations\n",
        floor_allocs.0,
        floor_allocs.1,
        traced.0,
        traced.1,
        traced.0 - floor_allocs.0,
    );
    print!("{report}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/reliability");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("allocations.txt"), &report);
    assert!(
        traced.0 - floor_allocs.0 <= BUDGET_OVER_FLOOR,
        "sidetrace allocates {:.1} more per request than the floor (budget {BUDGET_OVER_FLOOR}):\n{report}",
        traced.0 - floor_allocs.0
    );
    proxy.shutdown();
}

/// Allocations and bytes per request through `proxy`, from one client on
/// one connection.
fn per_request(proxy: SocketAddr) -> (f64, f64) {
    let mut conn = TcpStream::connect(proxy).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.set_nodelay(true).unwrap();
    let mut request = [0u8; 128];
    let head = format!("GET /items/42 HTTP/1.1\r\nHost: {proxy}\r\n\r\n");
    request[..head.len()].copy_from_slice(head.as_bytes());
    let request = &request[..head.len()];
    let mut buf = [0u8; 4096];
    for _ in 0..WARMUP {
        exchange(&mut conn, request, &mut buf);
    }
    // Let start-up work and the first batches settle.
    std::thread::sleep(Duration::from_millis(200));
    let region = Region::new(GLOBAL);
    for _ in 0..MEASURED {
        exchange(&mut conn, request, &mut buf);
    }
    // The spans of the measured requests reach the store within the
    // batcher's tick; wait so their storing is counted too.
    std::thread::sleep(Duration::from_millis(1200));
    let stats = region.change();
    let n = MEASURED as f64;
    (
        stats.allocations as f64 / n,
        stats.bytes_allocated as f64 / n,
    )
}

/// One request and its whole response (the upstream answers `ok\n` with a
/// Content-Length, so the response ends with those three bytes).
fn exchange(conn: &mut TcpStream, request: &[u8], buf: &mut [u8]) {
    conn.write_all(request).unwrap();
    let mut filled = 0;
    loop {
        let n = conn.read(&mut buf[filled..]).unwrap();
        assert!(n > 0, "connection closed mid-response");
        filled += n;
        let got = &buf[..filled];
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            assert!(
                got.starts_with(b"HTTP/1.1 200"),
                "{:?}",
                String::from_utf8_lossy(got)
            );
            if filled >= end + 4 + 3 {
                return;
            }
        }
    }
}

/// The app: `ok\n` to everything, on a thread of its own.
fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    spawn_runtime("upstream", async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// The floor: hyper-util's auto server over its pooled client, on a thread
/// of its own.
fn floor(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    spawn_runtime("floor", async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let client = client.clone();
                    async move {
                        let uri = format!("http://{upstream}{}", req.uri().path())
                            .parse()
                            .expect("a path makes a URI");
                        *req.uri_mut() = uri;
                        client.request(req).await
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn spawn_runtime(name: &str, task: impl std::future::Future<Output = ()> + Send + 'static) {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(task)
        })
        .unwrap();
}
