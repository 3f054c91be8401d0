//! Graceful drain: readiness flips, in-flight requests finish, also under a
//! steady load.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client as HyperClient},
    rt::TokioExecutor,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    client::Client,
    otlp::Otlp,
    proxy::Proxy,
    report::{record, Row},
    upstream::{Gate, Upstream},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_flips_ready_and_lets_in_flight_requests_finish() {
    let (up, gate) = Upstream::gated().await;
    let proxy = Proxy::builder().upstream(up.url()).run().await;
    let admin = Client::http1();
    assert_eq!(
        admin.get(&proxy.admin_url("/ready")).await.status,
        StatusCode::OK
    );

    let h1 = Client::http1();
    let h2 = Client::h2c();
    let slow_h1 = tokio::spawn({
        let url = proxy.url("/held");
        async move { h1.get(&url).await }
    });
    let slow_h2 = tokio::spawn({
        let url = proxy.url("/held");
        async move { h2.get(&url).await }
    });
    // Both are in flight: the app holds them until the drain has begun.
    gate.arrived(2).await;
    proxy.drain();
    crate::assert_eventually!(
        admin.get(&proxy.admin_url("/ready")).await.status == StatusCode::SERVICE_UNAVAILABLE,
        "/ready turns 503 while draining"
    );
    assert!(
        tokio::net::TcpStream::connect(proxy.inbound).await.is_err(),
        "the inbound listener stopped accepting"
    );
    gate.open();
    let h1 = slow_h1.await.unwrap();
    assert_eq!(
        h1.status,
        StatusCode::OK,
        "in-flight HTTP/1 request completed"
    );
    assert_eq!(
        h1.headers["connection"], "close",
        "HTTP/1 responses carry Connection: close"
    );
    assert_eq!(
        slow_h2.await.unwrap().status,
        StatusCode::OK,
        "in-flight h2 request completed"
    );
    proxy.join();
}

const BODY: usize = 2048;

/// What one load worker saw.
#[derive(Default)]
struct Tally {
    /// 200 with the whole body.
    completed: usize,
    /// Anything else after a response head, or an error after the
    /// connection was made: each with why.
    failed: Vec<String>,
    /// Connection refused: the listener no longer accepts.
    refused: usize,
    /// The keep-alive connection was closed as the next request was being
    /// written, before any answer: the request was never read (the app's
    /// count proves it) and a client may retry it.
    closed_unread: usize,
    first_refused: Option<Instant>,
    latencies: Vec<Duration>,
}

async fn load_worker(
    client: HyperClient<HttpConnector, Full<Bytes>>,
    url: String,
    version: http::Version,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while !stop.load(Ordering::Relaxed) && tally.refused < 3 {
        tick.tick().await;
        let req = http::Request::get(&url)
            .version(version)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let sent = Instant::now();
        let outcome = tokio::time::timeout(crate::PATIENCE, async {
            let resp = client.request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes());
            Ok::<_, hyper_util::client::legacy::Error>((status, body))
        })
        .await
        .expect("an answer within PATIENCE");
        match outcome {
            Ok((StatusCode::OK, Ok(body))) if body.len() == BODY => {
                tally.completed += 1;
                tally.latencies.push(sent.elapsed());
            }
            Ok((status, Ok(body))) => tally
                .failed
                .push(format!("{status} with {} body bytes", body.len())),
            Ok((status, Err(e))) => tally.failed.push(format!("{status}, body broke: {e}")),
            Err(e) if e.is_connect() => {
                tally.refused += 1;
                tally.first_refused.get_or_insert_with(Instant::now);
            }
            Err(e)
                if std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<hyper::Error>())
                    .is_some_and(hyper::Error::is_incomplete_message) =>
            {
                tally.closed_unread += 1;
            }
            Err(e) => tally.failed.push(format!("no response: {e:?}")),
        }
    }
    tally
}

/// Polls `/ready` until the admin server goes away: the last 200 and the
/// first 503 seen.
async fn watch_ready(url: String, stop: Arc<AtomicBool>) -> (Option<Instant>, Option<Instant>) {
    let client = HyperClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let (mut last_ok, mut first_503) = (None, None);
    while !stop.load(Ordering::Relaxed) {
        let req = http::Request::get(&url)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let asked = Instant::now();
        match tokio::time::timeout(Duration::from_secs(2), client.request(req)).await {
            Ok(Ok(resp)) if resp.status() == StatusCode::OK => last_ok = Some(asked),
            Ok(Ok(resp)) if resp.status() == StatusCode::SERVICE_UNAVAILABLE => {
                first_503.get_or_insert(asked);
            }
            _ => break,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (last_ok, first_503)
}

/// An h2c connection by hand, one request on it that the app holds until
/// this connection has received GOAWAY: returns the frame types received,
/// in order, until the server closed the connection.
async fn h2_frames_around_drain(addr: std::net::SocketAddr, path: &str, gate: Gate) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec();
    // HPACK: :method GET, :scheme http (static), :path and :authority literal.
    let mut block = vec![0x82, 0x86, 0x04, u8::try_from(path.len()).unwrap()];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 0x01, b'x']);
    let len = u32::try_from(block.len()).unwrap().to_be_bytes();
    // HEADERS, END_STREAM | END_HEADERS, stream 1.
    out.extend_from_slice(&[len[1], len[2], len[3], 0x01, 0x05, 0, 0, 0, 1]);
    out.extend_from_slice(&block);
    s.write_all(&out).await.unwrap();
    let mut types = Vec::new();
    let mut head = [0u8; 9];
    loop {
        match tokio::time::timeout(crate::PATIENCE, s.read_exact(&mut head)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return types,
            Err(_) => panic!("h2 connection still open after PATIENCE: {types:?}"),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        s.read_exact(&mut payload).await.unwrap();
        types.push(head[3]);
        if head[3] == 0x07 {
            gate.open();
        }
        if head[3] == 0x04 && head[4] & 1 == 0 {
            // SETTINGS ACK, so the server is not left waiting for it.
            let _ = s.write_all(&[0, 0, 0, 0x04, 0x01, 0, 0, 0, 0]).await;
        }
    }
}

fn p99(all: &mut [Duration]) -> Duration {
    all.sort();
    all.get((all.len() * 99 / 100).min(all.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// SIGTERM under a steady HTTP/1.1 and h2c load: every request the app
/// received completes with its whole body at the client, no 5xx, /ready
/// turns 503 before any connection is refused, an h2 connection gets GOAWAY
/// and its in-flight stream completes after it, and every completed request's
/// span reaches the collector before the proxy exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_under_load_fails_no_accepted_request() {
    let (up, gate) = Upstream::gated().await;
    let otlp = Otlp::grpc().run().await;
    let yaml = format!(
        "drain_timeout: 10s\ntracing:\n  export: {{ endpoint: {}, protocol: grpc }}\n",
        otlp.endpoint()
    );
    let proxy = Proxy::from_yaml(&yaml).upstream(up.url()).run().await;
    let url = proxy.url(&format!("/slow?delay_ms=40&size={BODY}"));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for i in 0..6 {
        let builder = HyperClient::builder(TokioExecutor::new());
        let (client, version) = if i % 2 == 0 {
            (builder.build_http(), http::Version::HTTP_11)
        } else {
            (
                HyperClient::builder(TokioExecutor::new())
                    .http2_only(true)
                    .build_http(),
                http::Version::HTTP_2,
            )
        };
        workers.push(tokio::spawn(load_worker(
            client,
            url.clone(),
            version,
            stop.clone(),
        )));
    }
    let ready = tokio::spawn(watch_ready(proxy.admin_url("/ready"), stop.clone()));
    // The load runs a while before the signal.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let h2 = tokio::spawn(h2_frames_around_drain(proxy.inbound, "/held", gate.clone()));
    // Its stream is in flight: the app holds it (until the GOAWAY came).
    gate.arrived(1).await;
    let drained_at = Instant::now();
    proxy.sigterm(Duration::from_millis(300));
    let frames = h2.await.unwrap();
    // Load until every worker was refused (or long after the drain delay).
    let give_up = tokio::spawn({
        let stop = stop.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stop.store(true, Ordering::Relaxed);
        }
    });
    let mut total = Tally::default();
    let mut refusals = Vec::new();
    for w in workers {
        let t = w.await.unwrap();
        total.completed += t.completed;
        total.failed.extend(t.failed);
        total.refused += t.refused;
        total.closed_unread += t.closed_unread;
        refusals.extend(t.first_refused);
        total.latencies.extend(t.latencies);
    }
    stop.store(true, Ordering::Relaxed);
    give_up.abort();
    let (last_ready, first_503) = ready.await.unwrap();
    proxy.join();
    let exported = otlp.spans().len();

    assert!(
        total.failed.is_empty(),
        "failed requests: {:?}",
        total.failed
    );
    let first_503 = first_503.expect("/ready answered 503 during the drain");
    let first_refused = refusals.iter().min().copied();
    if let Some(refused) = first_refused {
        assert!(
            refused > first_503,
            "a connection was refused before /ready went 503"
        );
        assert!(last_ready.is_none_or(|ok| ok < refused));
    }
    let goaway = frames.iter().position(|&t| t == 0x07);
    let goaway = goaway.unwrap_or_else(|| panic!("no GOAWAY on the h2 connection: {frames:?}"));
    assert!(
        frames[goaway..].contains(&0x00),
        "the in-flight stream's DATA came after GOAWAY: {frames:?}"
    );
    // One server span per request the proxy read: the accepted requests are
    // exactly those that completed (plus the raw h2 one), and each span left
    // before the proxy exited.
    assert_eq!(
        exported,
        total.completed + 1,
        "spans exported before exit vs requests completed (+1 raw h2)"
    );
    let sent = total.completed + total.failed.len() + total.refused + total.closed_unread;
    record(&Row {
        key: "10-drain-under-load",
        situation: "SIGTERM under a steady load: 3 HTTP/1.1 + 3 h2c clients, one request each per 20 ms (40 ms app latency), drain delay 300 ms",
        expected: "no accepted request fails, /ready 503 before any refusal, h2 GOAWAY then the in-flight stream completes, all spans exported before exit",
        measured: format!(
            "{sent} sent: {} completed, 0 failed, {} refused after /ready went 503 ({} ms after SIGTERM), {} closed unread on an idle keep-alive connection (never reached the app); GOAWAY received, in-flight stream completed; {exported} spans exported before exit for {} accepted, all completed; p99 {} ms",
            total.completed,
            total.refused,
            first_refused.map_or(0, |r| r.duration_since(drained_at).as_millis()),
            total.closed_unread,
            total.completed + 1,
            p99(&mut total.latencies).as_millis()
        ),
    });
}
