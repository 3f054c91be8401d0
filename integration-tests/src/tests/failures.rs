//! Failures: dead and slow upstreams, malformed and hostile requests.

use http::StatusCode;

use crate::{
    client::{raw, Client},
    metric_sum,
    proxy::Proxy,
    upstream::Upstream,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502_network() {
    let dead = Upstream::dead().await;
    let proxy = Proxy::builder()
        .upstream(format!("http://{dead}"))
        .run()
        .await;
    for client in [Client::http1(), Client::h2c()] {
        let resp = client.get(&proxy.url("/x")).await;
        assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
        assert_eq!(resp.headers["x-sidetrace-error"], "NETWORK");
        assert!(resp.text().contains("connect_error"), "{}", resp.text());
    }
    let text = Client::http1()
        .get(&proxy.admin_url("/metrics"))
        .await
        .text();
    assert_eq!(
        metric_sum(
            &text,
            "http_server_request_duration_seconds_count",
            &[
                ("error_type", "connect_error"),
                ("failure_category", "NETWORK"),
                ("http_response_status_code", "502")
            ]
        ),
        2.0,
        "{text}"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_with_a_timeout_is_504() {
    let up = Upstream::echo().await;
    let proxy = Proxy::from_yaml("filters:\n  - timeout: { request: 200ms }\n")
        .upstream(up.url())
        .run()
        .await;
    let client = Client::http1();
    let resp = client.get(&proxy.url("/slow?delay_ms=3000")).await;
    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(resp.headers["x-sidetrace-error"], "NETWORK");
    let fast = client.get(&proxy.url("/fast?delay_ms=10")).await;
    assert_eq!(fast.status, StatusCode::OK, "the proxy keeps serving");
    let text = client.get(&proxy.admin_url("/metrics")).await.text();
    assert_eq!(
        metric_sum(
            &text,
            "http_server_request_duration_seconds_count",
            &[
                ("error_type", "timeout"),
                ("http_response_status_code", "504")
            ]
        ),
        1.0,
        "{text}"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_and_never_reach_the_app() {
    let up = Upstream::http1_only().await;
    let proxy = Proxy::builder().upstream(up.url()).run().await;

    let garbage = raw(proxy.inbound, b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage:?}");

    let bad_header = raw(
        proxy.inbound,
        b"GET / HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n",
    )
    .await;
    assert!(bad_header.starts_with("HTTP/1.1 400"), "{bad_header:?}");

    let mut huge = b"GET / HTTP/1.1\r\nhost: x\r\n".to_vec();
    for i in 0..700 {
        huge.extend_from_slice(format!("x-filler-{i}: {}\r\n", "y".repeat(100)).as_bytes());
    }
    huge.extend_from_slice(b"\r\n");
    let too_large = raw(proxy.inbound, &huge).await;
    assert!(too_large.starts_with("HTTP/1.1 431"), "{too_large:?}");

    let smuggle = raw(
        proxy.inbound,
        b"POST /evil HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    assert!(smuggle.starts_with("HTTP/1.1 400"), "{smuggle:?}");

    // A request pipelined before the bad one is still answered.
    let pipelined = raw(
        proxy.inbound,
        b"GET /first HTTP/1.1\r\nhost: x\r\n\r\nPOST /evil HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(pipelined.starts_with("HTTP/1.1 200"), "{pipelined:?}");
    assert!(pipelined.contains("legacy GET /first 0"), "{pipelined:?}");
    assert!(pipelined.contains("HTTP/1.1 400"), "{pipelined:?}");

    assert_eq!(up.count(), 1, "only /first reached the app");
    let ok = Client::http1().get(&proxy.url("/after")).await;
    assert_eq!(ok.status, StatusCode::OK, "the proxy keeps serving");
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_heads_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::echo().await;
    let proxy = Proxy::builder().upstream(up.url()).run().await;
    let mut stream = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Never finish the head: the proxy must close the connection by itself
    // (header read timeout), well within the test's patience.
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(crate::PATIENCE, stream.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "connection was closed by the proxy");
    proxy.shutdown();
}

/// An app that misbehaves at the socket, by path: `/close` reads the request
/// and closes, `/reset` resets the connection before any answer, `/midbody`
/// sends a head and 100 of 1000 promised bytes then resets, `/garbage`
/// answers with bytes that are not HTTP.
async fn faulty_app() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let reset = |s: tokio::net::TcpStream| {
                    // Linger 0: close sends RST rather than FIN.
                    let _ = s.set_zero_linger();
                    drop(s);
                };
                if head.contains(" /close ") {
                    drop(s);
                } else if head.contains(" /reset ") {
                    reset(s);
                } else if head.contains(" /midbody ") {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
                        .await;
                    let _ = s.write_all(&[b'x'; 100]).await;
                    let _ = s.flush().await;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    reset(s);
                } else {
                    let _ = s.write_all(b"SSH-2.0-not-http\r\n\r\n").await;
                }
            });
        }
    });
    addr
}

/// Upstream faults at the socket: every one before the response head is a
/// 502 `NETWORK`; a reset in the middle of the body reaches the client as a
/// broken body, never a short success, over HTTP/1.1 and HTTP/2; every one is
/// counted as `NETWORK`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_socket_faults_are_network_errors_never_short_successes() {
    use http_body_util::{BodyExt, Full};
    let app = faulty_app().await;
    let proxy = Proxy::builder()
        .upstream(format!("http://{app}"))
        .run()
        .await;
    let mut measured = Vec::new();
    for client in [Client::http1(), Client::h2c()] {
        for path in ["/close", "/reset", "/garbage"] {
            let resp = client.get(&proxy.url(path)).await;
            assert_eq!(resp.status, StatusCode::BAD_GATEWAY, "{path}");
            assert_eq!(resp.headers["x-sidetrace-error"], "NETWORK", "{path}");
            measured.push(format!("{path} {}", resp.status.as_u16()));
        }
        let req = client
            .request("GET", &proxy.url("/midbody"))
            .body(Full::new(bytes::Bytes::new()))
            .unwrap();
        let resp = client.send_streaming(req).await;
        assert_eq!(resp.status(), StatusCode::OK, "the head was already sent");
        let body = tokio::time::timeout(crate::PATIENCE, resp.into_body().collect())
            .await
            .expect("the body ends in time");
        let err = body.expect_err("a reset mid-body must break the client's body");
        measured.push(format!("/midbody 200 then broken body ({err})"));
    }
    let admin = Client::http1();
    crate::assert_eventually!(
        metric_sum(
            &admin.get(&proxy.admin_url("/metrics")).await.text(),
            "http_server_request_duration_seconds_count",
            &[("failure_category", "NETWORK")]
        ) == 8.0,
        "all 8 faults counted as NETWORK: {}",
        admin.get(&proxy.admin_url("/metrics")).await.text()
    );
    crate::report::record(&crate::report::Row {
        key: "20-upstream-socket-faults",
        situation: "app closes after reading, resets before the head, resets after 100 of 1000 body bytes, answers non-HTTP; HTTP/1.1 and h2c clients",
        expected: "502 NETWORK before the head; after it the client's body breaks (never a short 200); all counted NETWORK",
        measured: format!("8 sent, 8 counted NETWORK: {}", measured.join("; ")),
    });
    proxy.shutdown();
}

/// A keep-alive HTTP/1.1 app on `addr` that answers every request `200 ok`;
/// aborting the returned task closes its listener and every connection.
fn restartable_app(listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut s, _)) = listener.accept().await {
            conns.spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    })
}

/// The app restarts (every connection closed, the port rebound) while the
/// proxy holds idle keep-alive connections to it: while the app is down
/// requests are 502 NETWORK; after it the very first requests succeed (the
/// pool never hands out the connections the app closed), with no operator
/// action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_restart_recovers_with_no_operator_action() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = restartable_app(listener);
    let proxy = Proxy::builder()
        .upstream(format!("http://{addr}"))
        .run()
        .await;
    let clients = [
        Client::http1(),
        Client::h2c(),
        Client::http1(),
        Client::h2c(),
    ];
    // Several concurrent requests so the proxy pools several connections.
    let warm_url = proxy.url("/warm");
    let warm = futures_util::future::join_all(clients.iter().map(|c| c.get(&warm_url)));
    assert!(warm.await.iter().all(|r| r.status == StatusCode::OK));

    app.abort();
    let _ = app.await;
    let while_down = Client::http1().get(&proxy.url("/down")).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let app = restartable_app(listener);
    // The proxy's pooled connections are now all stale (closed by the app).
    let mut statuses = Vec::new();
    for c in &clients {
        statuses.push(c.get(&proxy.url("/after")).await.status);
    }
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "the first GETs after the restart succeed: {statuses:?}"
    );
    assert_eq!(while_down.status, StatusCode::BAD_GATEWAY);
    assert_eq!(while_down.headers["x-sidetrace-error"], "NETWORK");
    crate::report::record(&crate::report::Row {
        key: "30-upstream-restart",
        situation: "the app restarts (all its keep-alive connections closed, port rebound) while the proxy pools connections to it",
        expected: "502 NETWORK while it is down; the first requests after the restart succeed (no closed connection handed out); no operator action",
        measured: format!(
            "while down: {} NETWORK; after restart 4 of 4 GETs (2 HTTP/1.1, 2 h2c clients) answered 200",
            while_down.status
        ),
    });
    proxy.shutdown();
    app.abort();
}

/// Overload: 64 clients in a closed loop against an app that takes 100 ms,
/// with `max_requests_in_flight: 8` (about 80 requests/s sustainable, so
/// roughly 8x over): what is over the budget is shed with a fast 503,
/// counted, and the requests that are admitted do not queue behind the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_sheds_fast_503s_counted_and_admitted_requests_do_not_queue() {
    let up = Upstream::echo().await;
    let proxy = Proxy::from_yaml("limits: { max_requests_in_flight: 8 }\n")
        .upstream(up.url())
        .run()
        .await;
    let url = proxy.url("/slow?delay_ms=100");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = Client::http1();
            let mut seen = Vec::new();
            while std::time::Instant::now() < deadline {
                let start = std::time::Instant::now();
                let status = client.get(&url).await.status;
                seen.push((status, start.elapsed()));
            }
            seen
        }));
    }
    let (mut ok, mut shed) = (Vec::new(), Vec::new());
    for t in tasks {
        for (status, took) in t.await.unwrap() {
            match status {
                StatusCode::OK => ok.push(took),
                StatusCode::SERVICE_UNAVAILABLE => shed.push(took),
                other => panic!("neither served nor shed: {other}"),
            }
        }
    }
    assert!(
        !ok.is_empty() && !shed.is_empty(),
        "{} ok, {} shed",
        ok.len(),
        shed.len()
    );
    let text = Client::http1()
        .get(&proxy.admin_url("/metrics"))
        .await
        .text();
    assert_eq!(
        metric_sum(
            &text,
            "sidetrace_requests_shed_total",
            &[("reason", "requests_in_flight")]
        ),
        shed.len() as f64,
        "every shed request is counted: {text}"
    );
    let p99 = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        v[(v.len() * 99 / 100).min(v.len() - 1)]
    };
    let (ok_p99, shed_p99) = (p99(&mut ok), p99(&mut shed));
    crate::report::record(&crate::report::Row {
        key: "35-overload-shed",
        situation: "64 HTTP/1.1 clients in a closed loop for 2 s against a 100 ms app with max_requests_in_flight 8 (about 8x the sustainable 80/s)",
        expected: "over the budget: a fast 503, counted in sidetrace_requests_shed_total{reason=\"requests_in_flight\"}; admitted requests do not queue",
        measured: format!(
            "{} sent: {} served (p99 {} ms, the app takes 100), {} shed with 503 (p99 {:.1} ms), {} counted as shed",
            ok.len() + shed.len(),
            ok.len(),
            ok_p99.as_millis(),
            shed.len(),
            shed_p99.as_secs_f64() * 1000.0,
            shed.len()
        ),
    });
    proxy.shutdown();
}
