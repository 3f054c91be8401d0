//! Connection and stream limits under load: `limits.max_connections` refuses
//! the connections over the cap at once and counts them while the accepted
//! ones keep being served; `limits.http2_max_concurrent_streams` queues a
//! well-behaved client's extra streams and refuses a client that ignores it.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{client::Client, metric_sum, proxy::Proxy, upstream::Upstream};

fn p99(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get((v.len() * 99 / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// How a connection opened over the cap ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The proxy's 503.
    Refused503,
    /// Closed or reset with no answer.
    Closed,
    /// Served after all.
    Served,
}

/// One request on a new connection, read until the proxy closes it.
async fn fresh_connection_get(addr: std::net::SocketAddr) -> Outcome {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return Outcome::Closed;
    };
    let _ = s
        .write_all(b"GET /slow?delay_ms=20 HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(crate::PATIENCE, s.read_to_end(&mut out)).await;
    if out.starts_with(b"HTTP/1.1 503") {
        Outcome::Refused503
    } else if out.starts_with(b"HTTP/1.1 200") {
        Outcome::Served
    } else {
        Outcome::Closed
    }
}

/// `max_connections: 8` taken by 8 keep-alive clients in a closed loop
/// against a 20 ms app, then 16 more clients open new connections as fast
/// as they are answered for 2 s: each is refused at once (a 503 or a close,
/// never a wait), every refusal is counted, an h2c client over the cap gets
/// GOAWAY, and the accepted clients' p99 is measured before and during.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_at_once_counted_while_accepted_clients_are_served() {
    let up = Upstream::echo().await;
    let proxy = Proxy::from_yaml("limits: { max_connections: 8 }\n")
        .upstream(up.url())
        .run()
        .await;
    let url = proxy.url("/slow?delay_ms=20");
    let start = Instant::now();
    let (baseline, flood, end) = (
        Duration::from_secs(1),
        Duration::from_secs(3),
        Duration::from_secs(3),
    );
    // The 8 accepted clients: one keep-alive connection each, for 3 s.
    let mut accepted = Vec::new();
    for _ in 0..8 {
        let url = url.clone();
        accepted.push(tokio::spawn(async move {
            let client = Client::http1();
            let mut seen = Vec::new();
            while start.elapsed() < end {
                let at = start.elapsed();
                let t = Instant::now();
                let status = client.get(&url).await.status;
                seen.push((at, status, t.elapsed()));
            }
            seen
        }));
    }
    let admin = proxy.admin_url("/metrics");
    crate::assert_eventually!(
        metric_sum(
            &Client::http1().get(&admin).await.text(),
            "sidetrace_connections_open",
            &[("listener", "inbound")]
        ) == 8.0,
        "the 8 clients hold the 8 connections"
    );
    tokio::time::sleep(baseline.saturating_sub(start.elapsed())).await;
    // The flood: 16 clients, each a new connection per request.
    let mut extra = Vec::new();
    for _ in 0..16 {
        let addr = proxy.inbound;
        extra.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while start.elapsed() < flood {
                let t = Instant::now();
                seen.push((fresh_connection_get(addr).await, t.elapsed()));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        }));
    }
    // An h2c client over the cap: GOAWAY before any stream, so its request fails.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let h2_req = http::Request::get(proxy.url("/"))
        .version(http::Version::HTTP_2)
        .body(Default::default())
        .unwrap();
    let h2_result = tokio::time::timeout(crate::PATIENCE, h2.request(h2_req))
        .await
        .expect("the h2c client is answered in time");
    let h2_error = match h2_result {
        Ok(resp) => panic!("an h2c connection over the cap was served: {resp:?}"),
        Err(e) => {
            let mut cause: &dyn std::error::Error = &e;
            while let Some(c) = cause.source() {
                cause = c;
            }
            cause.to_string()
        }
    };
    let (mut before, mut during) = (Vec::new(), Vec::new());
    let mut failed = 0;
    for t in accepted {
        for (at, status, took) in t.await.unwrap() {
            if status != http::StatusCode::OK {
                failed += 1;
            } else if at < baseline {
                before.push(took);
            } else if at < flood {
                during.push(took);
            }
        }
    }
    let (mut refused_503, mut closed, mut served) = (0, 0, 0);
    let mut refusal_times = Vec::new();
    for t in extra {
        for (outcome, took) in t.await.unwrap() {
            match outcome {
                Outcome::Refused503 => refused_503 += 1,
                Outcome::Closed => closed += 1,
                Outcome::Served => served += 1,
            }
            refusal_times.push(took);
        }
    }
    assert_eq!(
        failed, 0,
        "every request of an accepted client answered 200"
    );
    assert_eq!(served, 0, "no connection over the cap was served");
    assert!(refused_503 > 0, "refusals are answered with 503");
    let text = Client::http1().get(&admin).await.text();
    let counted = metric_sum(
        &text,
        "sidetrace_connections_rejected_total",
        &[("listener", "inbound"), ("reason", "max_connections")],
    );
    // Every connection over the cap, the h2c one included, is counted once.
    assert_eq!(
        counted,
        f64::from(refused_503 + closed + 1),
        "every refused connection is counted: {text}"
    );
    let (p99_before, p99_during) = (p99(&mut before), p99(&mut during));
    crate::report::record(&crate::report::Row {
        key: "36-max-connections",
        situation: "max_connections 8 held by 8 keep-alive HTTP/1.1 clients in a closed loop (20 ms app), then 16 clients opening a new connection per request for 2 s, and one h2c client",
        expected: "over the cap a connection is refused at once: HTTP/1 a 503 (a close when many refusals are being answered), h2c GOAWAY (REFUSED_STREAM); each counted in sidetrace_connections_rejected_total{reason=\"max_connections\"}; accepted clients keep being served",
        measured: format!(
            "accepted clients: {} requests, 0 failed, p99 {} before the flood, {} during ({} requests); {} connections refused ({} answered 503, {} closed unanswered, p99 {} from connect to close), 0 served, {} counted; h2c client: {h2_error}",
            before.len() + during.len(),
            ms(p99_before),
            ms(p99_during),
            during.len(),
            refused_503 + closed,
            refused_503,
            closed,
            ms(p99(&mut refusal_times)),
            counted,
        ),
    });
    proxy.shutdown();
}

/// `http2_max_concurrent_streams: 4`: a real h2 client sending 40 requests
/// at once on one connection queues them (the app never holds more than 4),
/// all answered; a client that ignores the setting has its extra stream
/// refused with RST_STREAM(REFUSED_STREAM), and the others are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_stream_limit_queues_polite_clients_and_refuses_extra_streams() {
    let (up, most) = Upstream::slow_tracking_concurrency(Duration::from_millis(100)).await;
    let proxy = Proxy::from_yaml(
        "inbound: { upstream_protocol: http1 }\nlimits: { http2_max_concurrent_streams: 4 }\n",
    )
    .upstream(up.url())
    .run()
    .await;
    let client = Client::h2c();
    let _ = client.get(&proxy.url("/")).await;
    most.store(0, std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (client, url) = (client.clone(), proxy.url("/"));
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            (client.get(&url).await.status, t.elapsed())
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        let (status, took) = t.await.unwrap();
        assert_eq!(status, http::StatusCode::OK);
        times.push(took);
    }
    let total = started.elapsed();
    let at_once = most.load(std::sync::atomic::Ordering::SeqCst);
    assert!(at_once <= 4, "the app held {at_once} requests at once");
    let text = Client::http1()
        .get(&proxy.admin_url("/metrics"))
        .await
        .text();
    let conns = metric_sum(
        &text,
        "sidetrace_connections_open",
        &[("listener", "inbound")],
    );

    // A client that ignores the limit: 5 streams at once, raw frames.
    let (answered, refused) = raw_h2_streams(proxy.inbound, 5).await;
    assert_eq!(refused, vec![9], "the fifth stream is refused");
    assert_eq!(answered, vec![1, 3, 5, 7], "the first four are answered");
    crate::report::record(&crate::report::Row {
        key: "37-h2-stream-limit",
        situation: "http2_max_concurrent_streams 4: one h2c client sends 40 requests at once on one connection (100 ms app); a raw client opens 5 streams at once ignoring the setting",
        expected: "a client that honours the setting queues its streams (the app never sees more than 4 of them), all answered; past the limit a stream is refused with RST_STREAM(REFUSED_STREAM), nothing else on the connection fails",
        measured: format!(
            "40 of 40 answered 200 in {} (p99 {}), at most {at_once} at once at the app, {conns} client connection; raw client: streams 1, 3, 5, 7 answered, stream 9 RST_STREAM(REFUSED_STREAM)",
            ms(total),
            ms(p99(&mut times)),
        ),
    });
    proxy.shutdown();
}

/// Opens `n` GET streams at once over raw HTTP/2 frames, ignoring the
/// server's SETTINGS_MAX_CONCURRENT_STREAMS; returns the streams answered
/// with HEADERS and those reset with REFUSED_STREAM.
async fn raw_h2_streams(addr: std::net::SocketAddr, n: u32) -> (Vec<u32>, Vec<u32>) {
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(4, 0, 0, &[]));
    s.write_all(&hello).await.unwrap();
    let mut buf = Vec::new();
    // The server's SETTINGS: acknowledged, then its ack of ours awaited, so
    // its limit is in force on both sides.
    let mut acked = false;
    while !acked {
        let f = tokio::time::timeout(crate::PATIENCE, read_frame(&mut s, &mut buf))
            .await
            .expect("frames in time")
            .expect("a frame");
        if f[3] == 4 && f[4] & 1 == 0 {
            s.write_all(&frame(4, 1, 0, &[])).await.unwrap();
        } else if f[3] == 4 {
            acked = true;
        }
    }
    // :method GET, :scheme http, :path /, :authority app (HPACK, no Huffman).
    let headers = [0x82, 0x86, 0x84, 0x41, 3, b'a', b'p', b'p'];
    let mut burst = Vec::new();
    for i in 0..n {
        burst.extend(frame(1, 0x5, 2 * i + 1, &headers)); // END_STREAM | END_HEADERS
    }
    s.write_all(&burst).await.unwrap();
    let (mut answered, mut refused) = (Vec::new(), Vec::new());
    while answered.len() + refused.len() < n as usize {
        let Some(f) = tokio::time::timeout(crate::PATIENCE, read_frame(&mut s, &mut buf))
            .await
            .expect("frames in time")
        else {
            break;
        };
        let stream = u32::from_be_bytes([f[5], f[6], f[7], f[8]]) & 0x7fff_ffff;
        match f[3] {
            1 => answered.push(stream),
            3 if f[9..13] == [0, 0, 0, 7] => refused.push(stream),
            3 => panic!("stream {stream} reset with {:?}", &f[9..13]),
            7 => panic!("GOAWAY: {f:?}"),
            _ => {}
        }
    }
    answered.sort_unstable();
    (answered, refused)
}

/// The next whole frame, header included; `None` once the connection ends.
async fn read_frame(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() >= 9 + len {
                return Some(buf.drain(..9 + len).collect());
            }
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}
