//! Upstreams that do not take the request body, and keep-alive connections
//! the upstream closed while they were idle in the proxy's pool.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{client::Client, proxy::Proxy};

/// An app that reads a request head and then never reads again: `/early`
/// answers 413 at once, anything else gets no answer. Sockets are held
/// until the test ends.
async fn app_that_never_reads_bodies() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match tokio::time::timeout(crate::PATIENCE, s.read(&mut byte)).await {
                    Ok(Ok(1)) => head.push(byte[0]),
                    _ => break,
                }
            }
            if head.starts_with(b"POST /early ") {
                let _ = s
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
            held.push(s);
        }
    });
    addr
}

/// Sends a 32 MiB POST to `path`; returns the status (or the error) and how
/// long it took, bounded by [`crate::PATIENCE`].
async fn big_post(client: &Client, url: String) -> (String, Duration) {
    let started = Instant::now();
    let req = client
        .request("POST", &url)
        .body(Full::new(Bytes::from(vec![b'x'; 32 << 20])))
        .unwrap();
    let inner = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(req.version() == http::Version::HTTP_2)
        .build_http::<Full<Bytes>>();
    let outcome = match tokio::time::timeout(crate::PATIENCE, inner.request(req)).await {
        Err(_) => "no answer in 20 s".to_string(),
        Ok(Err(e)) => format!("error: {e}"),
        Ok(Ok(resp)) => {
            let status = resp.status();
            let error = resp
                .headers()
                .get("x-sidetrace-error")
                .map(|v| format!(" {}", v.to_str().unwrap_or("?")))
                .unwrap_or_default();
            let _ = tokio::time::timeout(crate::PATIENCE, resp.into_body().collect()).await;
            format!("{}{error}", status.as_u16())
        }
    };
    (outcome, started.elapsed())
}

/// A 32 MiB POST to an app that never reads the body: the proxy must not
/// wait forever for the body to be taken. With `response_head_timeout: 1s`
/// the request ends with 504 `NETWORK`; an app that answers 413 without
/// reading has its answer forwarded. HTTP/1.1 and h2c clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_reads_the_body_cannot_hang_the_request() {
    let app = app_that_never_reads_bodies().await;
    let proxy = Proxy::from_yaml(
        "limits: { response_head_timeout: 1s }\ninbound: { upstream_protocol: http1 }\n",
    )
    .upstream(format!("http://{app}"))
    .run()
    .await;
    let mut seen = Vec::new();
    for (name, client) in [("HTTP/1.1", Client::http1()), ("h2c", Client::h2c())] {
        for path in ["/never", "/early"] {
            let (outcome, took) = big_post(&client, proxy.url(path)).await;
            seen.push(format!(
                "{name} {path}: {outcome} after {:.2} s",
                took.as_secs_f64()
            ));
        }
    }
    // Nothing is left holding a connection: the app's sockets stay open,
    // so the proxy must close its side of them.
    let admin = proxy.admin_url("/metrics");
    let open = |text: &str, name: &str| crate::metric_sum(text, name, &[("listener", "inbound")]);
    crate::assert_eventually!(
        open(
            &Client::http1().get(&admin).await.text(),
            "sidetrace_upstream_connections_open"
        ) == 0.0,
        "the connections to the app that stopped reading are closed"
    );
    let text = Client::http1().get(&admin).await.text();
    seen.push(format!(
        "then {} connections to the app and {} client connections open",
        open(&text, "sidetrace_upstream_connections_open"),
        open(&text, "sidetrace_connections_open")
    ));
    let report = seen.join("; ");
    crate::report::record(&crate::report::Row {
        key: "24-upstream-never-reads-body",
        situation: "32 MiB POST to an app that reads the head and never the body: it never answers (/never), or answers 413 at once (/early); response_head_timeout 1s; HTTP/1.1 and h2c clients",
        expected: "never a hang: /never ends with 504 NETWORK once the app has taken no body bytes for response_head_timeout; /early's 413 reaches the client; the proxy closes its connections to the app (they would wait for the socket forever)",
        measured: report.clone(),
    });
    for line in seen.iter().filter(|l| l.contains(": ")) {
        assert!(!line.contains("no answer"), "{report}");
        if line.contains("/never") {
            assert!(line.contains(": 504 NETWORK"), "{report}");
        } else {
            assert!(line.contains(": 413"), "{report}");
        }
    }
    proxy.shutdown();
}

/// An HTTP/1.1 app that closes keep-alive connections: after `idle` with no
/// request, or (with `close_second`) on reading the second request of a
/// connection, without answering it: the close racing a reused connection,
/// made certain. Answers `ok` otherwise; counts the requests it read.
async fn app_closing_keep_alive(
    idle: Duration,
    close_second: bool,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::{atomic::Ordering, Arc};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for n in 1.. {
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tokio::time::timeout(idle, s.read(&mut chunk)).await {
                            Ok(Ok(k)) if k > 0 => buf.extend_from_slice(&chunk[..k]),
                            _ => return, // idle, closed or broken: close
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    while buf.len() < end + length {
                        match s.read(&mut chunk).await {
                            Ok(k) if k > 0 => buf.extend_from_slice(&chunk[..k]),
                            _ => return,
                        }
                    }
                    buf.drain(..end + length);
                    count.fetch_add(1, Ordering::SeqCst);
                    if close_second && n == 2 {
                        return;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Keep-alive connections the app closes. (1) Realistically: the app closes
/// connections idle for 50 ms and the client's requests come 40 to 60 ms
/// apart, so some are sent as the app closes. (2) With certainty: the app
/// reads the second request of each connection and closes without
/// answering. A request safe to replay (a GET with no body) is retried once
/// on a new connection; a POST is not replayed (502 NETWORK).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_keep_alive_connection_is_retried_once_only_when_safe() {
    let (app, _) = app_closing_keep_alive(Duration::from_millis(50), false).await;
    let proxy = Proxy::from_yaml("inbound: { upstream_protocol: http1 }\n")
        .upstream(format!("http://{app}"))
        .run()
        .await;
    let client = Client::http1();
    let (mut sent, mut failed) = (0, 0);
    for i in 0..40u64 {
        tokio::time::sleep(Duration::from_millis(40 + (i * 7) % 21)).await;
        sent += 1;
        if client.get(&proxy.url("/")).await.status != http::StatusCode::OK {
            failed += 1;
        }
    }
    proxy.shutdown();

    let (app, seen) = app_closing_keep_alive(Duration::from_secs(5), true).await;
    let proxy = Proxy::from_yaml("inbound: { upstream_protocol: http1 }\n")
        .upstream(format!("http://{app}"))
        .run()
        .await;
    // Each request: its status and how many times the app read it.
    let (client, url) = (Client::http1(), proxy.url("/"));
    let mut seen_by_app = Vec::new();
    for method in ["GET", "GET", "POST", "POST"] {
        let body: &'static [u8] = if method == "GET" { b"" } else { b"{}" };
        let req = client
            .request(method, &url)
            .body(Full::new(Bytes::from_static(body)))
            .unwrap();
        let before = seen.load(std::sync::atomic::Ordering::SeqCst);
        let resp = client.send(req).await;
        let reads = seen.load(std::sync::atomic::Ordering::SeqCst) - before;
        let error = resp
            .headers
            .get("x-sidetrace-error")
            .map(|v| format!(" {}", v.to_str().unwrap_or("?")))
            .unwrap_or_default();
        seen_by_app.push((method, resp.status, error, reads));
    }
    let listed = seen_by_app
        .iter()
        .map(|(m, status, error, reads)| format!("{m} {}{error} (read {reads}x)", status.as_u16()))
        .collect::<Vec<_>>()
        .join(", ");
    crate::report::record(&crate::report::Row {
        key: "25-stale-keep-alive",
        situation: "the app closes keep-alive connections idle for 50 ms while a client's requests come 40 to 60 ms apart (40 GETs); then an app that reads the second request of every connection and closes without answering: GET, GET, POST, POST on one client connection",
        expected: "a request on a connection the app closed before answering is sent once more, on a new connection, only when it is safe to replay (idempotent method, no body); a POST is never replayed: 502 NETWORK",
        measured: format!(
            "racing idle closes: {sent} sent, {failed} failed; closed on the second request of each app connection: {listed}"
        ),
    });
    assert_eq!(failed, 0, "{listed}");
    for (method, status, _, reads) in &seen_by_app {
        if *method == "GET" {
            assert_eq!(*status, http::StatusCode::OK, "{listed}");
            assert!(*reads <= 2, "{listed}");
        } else {
            assert_eq!(*reads, 1, "a POST is never sent twice: {listed}");
        }
    }
    assert!(
        seen_by_app
            .iter()
            .any(|(m, s, _, _)| *m == "POST" && *s == http::StatusCode::BAD_GATEWAY),
        "{listed}"
    );
    proxy.shutdown();
}

/// A slow response head: the app answers after 2 s, the limit is 300 ms.
/// Each request ends with 504 NETWORK at the limit over HTTP/1.1 and h2c,
/// and a fast request right after is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_response_head_is_a_504_at_the_limit() {
    let up = crate::upstream::Upstream::echo().await;
    let proxy = Proxy::from_yaml("limits: { response_head_timeout: 300ms }\n")
        .upstream(up.url())
        .run()
        .await;
    let mut seen = Vec::new();
    for (name, client) in [("HTTP/1.1", Client::http1()), ("h2c", Client::h2c())] {
        let started = Instant::now();
        let slow = client.get(&proxy.url("/slow?delay_ms=2000")).await;
        let took = started.elapsed();
        assert_eq!(slow.status, http::StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(slow.headers["x-sidetrace-error"], "NETWORK");
        let fast = client.get(&proxy.url("/fast")).await;
        assert_eq!(fast.status, http::StatusCode::OK, "the proxy keeps serving");
        seen.push(format!(
            "{name}: 504 NETWORK after {} ms, the next request 200",
            took.as_millis()
        ));
    }
    crate::report::record(&crate::report::Row {
        key: "23-slow-head",
        situation: "the app starts its response after 2 s; response_head_timeout 300ms; HTTP/1.1 and h2c clients",
        expected: "504 NETWORK (error_type timeout) at the limit, the proxy keeps serving",
        measured: seen.join("; "),
    });
    proxy.shutdown();
}
