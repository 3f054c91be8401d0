//! Hostile clients: each probe that once got past a limit or the framing
//! guard, kept as a test. Raw-socket probes are one line each in [`PROBES`].

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    client::{raw, Client},
    metric_sum,
    proxy::Proxy,
    upstream::Upstream,
    PATIENCE,
};

/// A raw HTTP/1 probe: what is sent, the status lines expected back in
/// order, and the request lines the app must have seen (its answers are
/// `legacy METHOD PATH BODY_BYTES`).
struct Probe {
    name: &'static str,
    send: &'static [u8],
    statuses: &'static [u16],
    app_sees: &'static [&'static str],
}

const PROBES: &[Probe] = &[
    Probe { name: "bare-LF heads cannot smuggle", send: b"GET /a HTTP/1.1\nhost: x\n\nPOST /evil HTTP/1.1\nhost: x\ncontent-length: 6\ntransfer-encoding: chunked\n\n0\n\nGET /smuggled HTTP/1.1\nhost: x\n\n", statuses: &[200, 400], app_sees: &["legacy GET /a 0"] },
    Probe { name: "an upgrade the app refuses keeps the guard on", send: b"GET /a HTTP/1.1\r\nhost: x\r\nupgrade: h2c-not-really\r\nconnection: upgrade\r\n\r\nPOST /evil HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n", statuses: &[200, 400], app_sees: &["legacy GET /a 0"] },
    Probe { name: "Content-Length 2^64-1 is a bad request, not a large head", send: b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 18446744073709551615\r\n\r\n", statuses: &[400], app_sees: &[] },
    Probe { name: "Content-Length with a sign", send: b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: +5\r\n\r\nhello", statuses: &[400], app_sees: &[] },
    Probe { name: "two Host headers", send: b"GET /a HTTP/1.1\r\nhost: app\r\nhost: evil\r\nconnection: close\r\n\r\n", statuses: &[400], app_sees: &[] },
    Probe { name: "HTTP/1.1 without Host", send: b"GET /a HTTP/1.1\r\nconnection: close\r\n\r\n", statuses: &[400], app_sees: &[] },
    Probe { name: "a target that is not a path", send: b"GET abc HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", statuses: &[400], app_sees: &[] },
    Probe { name: "a GET body is forwarded, not dropped", send: b"GET /g HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n", statuses: &[200], app_sees: &["legacy GET /g 5"] },
    Probe { name: "a HEAD body is forwarded, not dropped", send: b"HEAD /h HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n", statuses: &[200], app_sees: &[] },
    Probe { name: "a DELETE body is forwarded", send: b"DELETE /d HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n", statuses: &[200], app_sees: &["legacy DELETE /d 2"] },
    Probe { name: "an OPTIONS body is forwarded", send: b"OPTIONS /o HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nconnection: close\r\n\r\nabcd", statuses: &[200], app_sees: &["legacy OPTIONS /o 4"] },
    Probe { name: "a bad chunk size is the client's fault", send: b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", statuses: &[400], app_sees: &[] },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_probes() {
    for probe in PROBES {
        let up = Upstream::http1_only().await;
        let proxy = Proxy::builder().upstream(up.url()).run().await;
        let answer = raw(proxy.inbound, probe.send).await;
        let statuses: Vec<u16> = answer
            .match_indices("HTTP/1.1 ")
            .filter_map(|(i, _)| answer.get(i + 9..i + 12)?.parse().ok())
            .collect();
        assert_eq!(statuses, probe.statuses, "{}: {answer:?}", probe.name);
        for line in probe.app_sees {
            assert!(answer.contains(line), "{}: {answer:?}", probe.name);
        }
        let text = Client::http1()
            .get(&proxy.admin_url("/metrics"))
            .await
            .text();
        assert_eq!(
            metric_sum(
                &text,
                "http_server_request_duration_seconds_count",
                &[("failure_category", "NETWORK")]
            ),
            0.0,
            "{}: a client's mistake is never blamed on the network: {text}",
            probe.name
        );
        if probe.app_sees.is_empty() && !probe.statuses.contains(&200) {
            assert_eq!(up.count(), 0, "{}: nothing reached the app", probe.name);
        }
        proxy.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_chunk_is_counted_as_validation() {
    let up = Upstream::http1_only().await;
    let proxy = Proxy::builder().upstream(up.url()).run().await;
    // The head is good, so the request is on its way when the body breaks.
    let answer = raw(
        proxy.inbound,
        b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    let text = Client::http1()
        .get(&proxy.admin_url("/metrics"))
        .await
        .text();
    assert_eq!(
        metric_sum(
            &text,
            "http_server_request_duration_seconds_count",
            &[
                ("failure_category", "VALIDATION"),
                ("http_response_status_code", "400")
            ]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric_sum(
            &text,
            "http_server_request_duration_seconds_count",
            &[("failure_category", "NETWORK")]
        ),
        0.0,
        "{text}"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_headers_cannot_remove_injected_trace_context() {
    let up = Upstream::echo().await;
    let proxy = Proxy::builder().upstream(up.url()).run().await;
    let answer = raw(
        proxy.inbound,
        b"GET /headers HTTP/1.1\r\nhost: x\r\nconnection: close, traceparent, x-request-id\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(
        answer.contains("traceparent"),
        "the app got trace context: {answer}"
    );
    assert!(answer.contains("x-request-id"), "{answer}");
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_host_must_match_authority() {
    let up = Upstream::http1_only().await;
    let proxy = Proxy::builder().upstream(up.url()).run().await;
    let client = Client::h2c();
    let req = client
        .request("GET", &proxy.url("/a"))
        .header("host", "evil.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.send(req).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.headers["x-sidetrace-error"], "VALIDATION");
    // The first HTTP/2 request teaches the proxy that the app speaks only
    // HTTP/1.1 (a request with a body cannot be resent after that failure).
    assert_eq!(
        client.get(&proxy.url("/learn")).await.status,
        StatusCode::OK
    );
    let get = client
        .request("GET", &proxy.url("/g"))
        .body(Full::new(Bytes::from_static(b"h2 body")))
        .unwrap();
    let resp = client.send(get).await;
    assert_eq!(
        resp.text(),
        "legacy GET /g 7",
        "HTTP/2 DATA on a GET reaches an HTTP/1.1 app"
    );
    assert_eq!(up.count(), 2);
    proxy.shutdown();
}

const SHORT_TIMEOUTS: &str = "limits:\n  header_read_timeout: 500ms\n  idle_timeout: 1s\n  body_idle_timeout: 500ms\n  response_head_timeout: 500ms\n";

/// Reads until the peer closes; `None` if it never does within [`PATIENCE`].
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(out)
}

/// A body that stops arriving is the client's 408 whether the app is
/// reached over HTTP/1.1 or HTTP/2, where hyper reports the body's failure
/// only as the stream reset it sent (and must not take it for an app that
/// cannot speak HTTP/2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_a_408_over_either_upstream_protocol() {
    let up = Upstream::echo().await;
    for protocol in ["http1", "h2c", "auto"] {
        let proxy = Proxy::from_yaml(&format!(
            "{SHORT_TIMEOUTS}inbound:\n  upstream_protocol: {protocol}\n"
        ))
        .upstream(up.url())
        .run()
        .await;
        let stalled = raw(
            proxy.inbound,
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nhello",
        )
        .await;
        assert!(
            stalled.starts_with("HTTP/1.1 408"),
            "{protocol}: {stalled:?}"
        );
        assert!(
            stalled.contains("x-sidetrace-error: VALIDATION"),
            "{protocol}: {stalled:?}"
        );
        proxy.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_idle_and_stalled_connections_are_closed() {
    let up = Upstream::http1_only().await;
    let proxy = Proxy::from_yaml(SHORT_TIMEOUTS)
        .upstream(up.url())
        .run()
        .await;

    // Sends nothing at all: closed by the head deadline, which starts at accept.
    let mut silent = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    assert!(
        read_until_closed(&mut silent).await.is_some(),
        "a silent connection is closed"
    );

    // HTTP/1.1 keep-alive after one response: closed by the idle timeout.
    let mut idle = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    idle.write_all(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut idle)
        .await
        .expect("idle keep-alive closed");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));

    // HTTP/2 preface and settings, then nothing: GOAWAY and close.
    let mut h2 = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let frames = read_until_closed(&mut h2)
        .await
        .expect("idle h2 connection closed");
    assert!(has_goaway(&frames), "GOAWAY before close: {frames:?}");

    // A body that stops arriving: 408, VALIDATION.
    let stalled = raw(
        proxy.inbound,
        b"POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nhello",
    )
    .await;
    assert!(stalled.starts_with("HTTP/1.1 408"), "{stalled:?}");
    proxy.shutdown();
}

fn has_goaway(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        if rest[3] == 0x7 {
            return true;
        }
        rest = rest.get(9 + len..).unwrap_or(&[]);
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_never_answers_times_out_as_network() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let proxy = Proxy::from_yaml(SHORT_TIMEOUTS)
        .upstream(format!("http://{addr}"))
        .run()
        .await;
    let resp = Client::http1().get(&proxy.url("/never")).await;
    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(resp.headers["x-sidetrace-error"], "NETWORK");
    let text = Client::http1()
        .get(&proxy.admin_url("/metrics"))
        .await
        .text();
    assert_eq!(
        metric_sum(
            &text,
            "http_server_request_duration_seconds_count",
            &[("error_type", "timeout"), ("failure_category", "NETWORK")]
        ),
        1.0,
        "{text}"
    );
    proxy.shutdown();
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_graph_believes_only_trusted_peers() {
    let up = Upstream::http1_only().await;
    let untrusted = Proxy::from_yaml("metrics: { series_limit: 10 }\n")
        .upstream(up.url())
        .run()
        .await;
    let trusted = Proxy::from_yaml(
        "metrics:\n  series_limit: 10\n  service_graph: { trusted_networks: [127.0.0.0/8] }\n",
    )
    .upstream(up.url())
    .run()
    .await;
    let client = Client::http1();
    for proxy in [&untrusted, &trusted] {
        for i in 0..50 {
            let req = client
                .request("GET", &proxy.url("/a"))
                .header("x-sidetrace-client", format!("random-{i}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            assert_eq!(client.send(req).await.status, StatusCode::OK);
        }
    }
    let edges = |text: &str, client: &str| {
        metric_sum(
            text,
            "traces_service_graph_request_total",
            &[("client", client)],
        )
    };
    let text = client.get(&untrusted.admin_url("/metrics")).await.text();
    assert_eq!(
        edges(&text, "user"),
        50.0,
        "untrusted callers are users: {text}"
    );
    assert_eq!(edges(&text, "random-0"), 0.0, "{text}");
    let text = client.get(&trusted.admin_url("/metrics")).await.text();
    assert_eq!(edges(&text, "random-0"), 1.0, "{text}");
    assert_eq!(
        edges(&text, "_overflow"),
        40.0,
        "past the cap, visibly: {text}"
    );
    assert_eq!(
        metric_sum(
            &text,
            "sidetrace_metric_overflow_total",
            &[("metric", "traces_service_graph_request_total")]
        ),
        40.0,
        "{text}"
    );
    untrusted.shutdown();
    trusted.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_capped_and_the_rest_shed() {
    let (up, gate) = Upstream::gated().await;
    let proxy = Proxy::from_yaml(
        "inbound: { upstream_protocol: http1 }\nlimits:\n  upstream_max_connections: 4\n  upstream_queue_timeout: 300ms\n",
    )
    .upstream(up.url())
    .run()
    .await;
    // HTTP/2 in, HTTP/1.1 out: every concurrent stream on the one client
    // connection needs an upstream connection of its own.
    let client = Client::h2c();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            let url = proxy.url("/held");
            tokio::spawn(async move {
                let req = client
                    .request("POST", &url)
                    .body(Full::new(Bytes::from_static(b"x")))
                    .unwrap();
                client.send(req).await.status
            })
        })
        .collect();
    // Every allowed upstream connection carries a request the app holds.
    gate.arrived(4).await;
    assert_eq!(
        Client::http1().get(&proxy.admin_url("/live")).await.status,
        StatusCode::OK,
        "admin answers under load"
    );
    // The rest wait out the queue timeout and are shed; only then does the
    // app answer the four it holds.
    let metrics = proxy.admin_url("/metrics");
    crate::assert_eventually!(
        metric_sum(
            &Client::http1().get(&metrics).await.text(),
            "sidetrace_requests_shed_total",
            &[("reason", "upstream_connections")]
        ) == 16.0,
        "16 requests shed"
    );
    gate.open();
    let mut ok = 0;
    let mut shed = 0;
    for call in calls {
        match call.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => shed += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 4, "one request per allowed upstream connection");
    assert_eq!(shed, 16);
    let text = Client::http1()
        .get(&proxy.admin_url("/metrics"))
        .await
        .text();
    assert_eq!(
        metric_sum(
            &text,
            "sidetrace_requests_shed_total",
            &[("reason", "upstream_connections")]
        ),
        16.0,
        "{text}"
    );
    assert_eq!(
        metric_sum(
            &text,
            "http_server_request_duration_seconds_count",
            &[
                ("error_type", "overloaded"),
                ("http_response_status_code", "503")
            ]
        ),
        16.0,
        "{text}"
    );
    proxy.shutdown();
}
