//! HTTP/1.1 and h2c through the proxy to real upstreams.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};

use crate::{client::Client, metric_sum, peers::curl, proxy::Proxy, upstream::Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_h2c_reach_the_app_with_forwarding_headers() {
    let up = Upstream::echo().await;
    let proxy = Proxy::builder().upstream(up.url()).run().await;
    for (client, version) in [(Client::http1(), "HTTP/1.1"), (Client::h2c(), "HTTP/2.0")] {
        let resp = client.get(&proxy.url("/headers?a=1")).await;
        assert_eq!(resp.status, StatusCode::OK, "{version}");
        let seen = resp.json();
        assert_eq!(seen["path"], "/headers");
        assert_eq!(seen["query"], "a=1");
        let headers = &seen["headers"];
        assert_eq!(
            headers["x-forwarded-for"][0], "127.0.0.1",
            "{version}: {headers}"
        );
        assert_eq!(headers["x-forwarded-proto"][0], "http");
        assert!(
            headers["via"][0].as_str().unwrap().ends_with("sidetrace"),
            "{headers}"
        );
        // Host is kept for HTTP/1.1 and comes from :authority for h2.
        if version == "HTTP/1.1" {
            assert_eq!(headers["host"][0], proxy.inbound.to_string());
            assert_eq!(seen["version"], "HTTP/1.1");
        } else {
            assert_eq!(
                seen["version"], "HTTP/2.0",
                "h2 requests stay h2 to an h2c app"
            );
        }
        // A caller's own X-Forwarded-For is kept, the client appended.
        let req = client
            .request("GET", &proxy.url("/headers"))
            .header("x-forwarded-for", "203.0.113.7, 198.51.100.2")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let seen = client.send(req).await.json();
        assert_eq!(
            seen["headers"]["x-forwarded-for"][0], "203.0.113.7, 198.51.100.2, 127.0.0.1",
            "{version}"
        );
    }
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_bodies_and_hop_by_hop_headers() {
    let up = Upstream::echo().await;
    let proxy = Proxy::builder().upstream(up.url()).run().await;
    let client = Client::http1();
    let resp = client.get(&proxy.url("/x?status=418")).await;
    assert_eq!(resp.status, StatusCode::IM_A_TEAPOT);
    let req = client
        .request("POST", &proxy.url("/headers"))
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not be forwarded")
        .header("keep-alive", "timeout=5")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let seen = client.send(req).await.json();
    let headers = &seen["headers"];
    assert!(headers.get("x-hop").is_none(), "{headers}");
    assert!(headers.get("keep-alive").is_none(), "{headers}");
    assert_eq!(headers["x-end-to-end"][0], "kept");
    let body = Bytes::from(vec![b'z'; 300_000]);
    let req = client
        .request("POST", &proxy.url("/echo"))
        .body(Full::new(body.clone()))
        .unwrap();
    let resp = client.send(req).await;
    assert_eq!(resp.body, body, "a 300 kB body comes back intact");
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_bodies_and_trailers_pass_through_http1_and_h2c() {
    let up = Upstream::echo().await;
    let proxy = Proxy::builder().upstream(up.url()).run().await;
    // HTTP/1.1 carries trailers in the last chunk when the client sent
    // `TE: trailers` and the response announced them in `Trailer`.
    for (name, client) in [("http1", Client::http1()), ("h2c", Client::h2c())] {
        let req = client
            .request("GET", &proxy.url("/stream?chunks=5&delay_ms=30&trailers=1"))
            .header("te", "trailers")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client.send_streaming(req).await;
        assert_eq!(resp.status(), StatusCode::OK, "{name}");
        let mut body = resp.into_body();
        let mut data_frames = 0;
        let mut trailers = None;
        while let Some(frame) = tokio::time::timeout(crate::PATIENCE, body.frame())
            .await
            .unwrap()
        {
            let frame = frame.unwrap();
            if frame.is_data() {
                data_frames += 1;
            } else if let Ok(t) = frame.into_trailers() {
                trailers = Some(t);
            }
        }
        assert!(
            data_frames >= 2,
            "{name}: body arrived streamed, in {data_frames} frames"
        );
        let trailers = trailers.unwrap_or_else(|| panic!("{name}: no trailers"));
        assert_eq!(trailers["x-echo-trailer"], "done", "{name}");
    }
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_http1_app_works_behind_h2_clients() {
    let up = Upstream::http1_only().await;
    let proxy = Proxy::builder().upstream(up.url()).run().await;
    let client = Client::h2c();
    let first = client.get(&proxy.url("/legacy")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.text(), "legacy GET /legacy 0");
    let req = client
        .request("POST", &proxy.url("/legacy"))
        .body(Full::new(Bytes::from_static(b"12345")))
        .unwrap();
    let second = client.send(req).await;
    assert_eq!(
        second.text(),
        "legacy POST /legacy 5",
        "later requests go straight to HTTP/1.1"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_proxy_in_both_protocols() {
    let up = Upstream::echo().await;
    let proxy = Proxy::builder().upstream(up.url()).run().await;
    let url = proxy.url("/headers");
    let (code, out) = curl(&["--http1.1", &url]).await;
    assert_eq!(code, 0);
    assert!(out.contains("\"version\":\"HTTP/1.1\""), "{out}");
    let (code, out) = curl(&["--http2-prior-knowledge", &url]).await;
    assert_eq!(code, 0);
    assert!(out.contains("\"version\":\"HTTP/2.0\""), "{out}");
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_tunnelled() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::http1_upgrade_echo().await;
    let proxy = Proxy::builder().upstream(up.url()).run().await;
    let mut stream = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: app\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(crate::PATIENCE, stream.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    stream.write_all(b"ping through the tunnel").await.unwrap();
    let mut echoed = [0u8; 23];
    tokio::time::timeout(crate::PATIENCE, stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping through the tunnel");
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_metrics_are_recorded_with_semconv_labels() {
    let up = Upstream::echo().await;
    let proxy = Proxy::from_yaml("routes:\n  - { prefix: /api/orders, name: orders }\n")
        .upstream(up.url())
        .run()
        .await;
    let client = Client::http1();
    for _ in 0..3 {
        client.get(&proxy.url("/api/orders/1")).await;
    }
    client.get(&proxy.url("/api/orders/2?status=503")).await;
    let purge = client
        .request("PURGE", &proxy.url("/unknown/path/123"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    client.send(purge).await;
    let text = Client::http1()
        .get(&proxy.admin_url("/metrics"))
        .await
        .text();
    let ok = metric_sum(
        &text,
        "http_server_request_duration_seconds_count",
        &[
            ("http_request_method", "GET"),
            ("http_response_status_code", "200"),
            ("http_route", "orders"),
            ("network_protocol_version", "1.1"),
            ("url_scheme", "http"),
        ],
    );
    assert_eq!(ok, 3.0, "{text}");
    let failed = metric_sum(
        &text,
        "http_server_request_duration_seconds_count",
        &[
            ("http_response_status_code", "503"),
            ("error_type", "503"),
            ("failure_category", "NETWORK"),
        ],
    );
    assert_eq!(failed, 1.0, "{text}");
    assert_eq!(
        metric_sum(
            &text,
            "http_server_request_duration_seconds_count",
            &[("http_request_method", "_OTHER"), ("http_route", "")]
        ),
        1.0,
        "unknown methods and paths never become label values: {text}"
    );
    assert!(
        !text.contains("/unknown/path"),
        "raw paths never become labels"
    );
    assert!(
        metric_sum(
            &text,
            "http_client_request_duration_seconds_count",
            &[("server_address", "127.0.0.1")]
        ) >= 5.0,
        "{text}"
    );
    assert_eq!(metric_sum(&text, "sidetrace_build_info", &[]), 1.0);
    assert!(metric_sum(&text, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(text.contains("sidetrace_connections_open{listener=\"inbound\"}"));
    assert!(text.contains("http_server_active_requests{"));
    assert!(text.contains("http_server_response_body_size_bytes_bucket{"));
    assert!(text.contains("http_server_request_body_size_bytes_bucket{"));
    let le: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("http_server_request_duration_seconds_bucket{")
                && l.contains("http_route=\"orders\"")
                && l.contains("\"200\"")
        })
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        le,
        [
            "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5",
            "5", "7.5", "10", "+Inf"
        ]
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let up = Upstream::echo().await;
    let proxy =
        Proxy::from_yaml("service: { name: checkout }\nfilters:\n  - timeout: { request: 5s }\n")
            .upstream(up.url())
            .run()
            .await;
    let client = Client::http1();
    assert_eq!(
        client.get(&proxy.admin_url("/live")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        client.get(&proxy.admin_url("/ready")).await.status,
        StatusCode::OK
    );
    let config = client.get(&proxy.admin_url("/config")).await.json();
    assert_eq!(config["service_name"], "checkout");
    assert_eq!(config["upstream"], up.url());
    assert_eq!(config["filters"][0]["timeout"]["request"], "5s");
    assert_eq!(
        client.get(&proxy.admin_url("/nope")).await.status,
        StatusCode::NOT_FOUND
    );
    let get_shutdown = client.get(&proxy.admin_url("/shutdown")).await;
    assert_eq!(
        get_shutdown.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "shutdown needs POST"
    );
    let post = client
        .request("POST", &proxy.admin_url("/shutdown"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(client.send(post).await.status, StatusCode::ACCEPTED);
    proxy.join();
}
