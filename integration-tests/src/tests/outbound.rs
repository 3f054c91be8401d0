//! The outbound listener and the service graph between two sidecars.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;

use crate::{client::Client, metric_sum, proxy::Proxy, upstream::Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_listener_routes_by_host_and_authority() {
    let up = Upstream::echo().await;
    let dead = Upstream::dead().await;
    // The inbound upstream is dead: outbound traffic must not go there.
    let proxy = Proxy::builder()
        .upstream(format!("http://{dead}"))
        .outbound()
        .run()
        .await;
    let outbound = proxy.outbound.expect("outbound listener");
    // HTTP/1.1 with a Host header naming the destination.
    let client = Client::http1();
    let req = client
        .request("GET", &format!("http://{outbound}/headers"))
        .header("host", up.addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.send(req).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.json()["headers"]["host"][0], up.addr.to_string());
    // The outbound listener drains only once the app has closed its connections.
    drop(client);
    // h2c: :authority names the destination.
    let resp = Client::h2c()
        .get(&format!("http://{outbound}/headers"))
        .await;
    assert_eq!(
        resp.status,
        StatusCode::BAD_REQUEST,
        "a request addressed to the outbound listener itself is a loop"
    );
    // Absolute-form HTTP/1.1 (proxy style) names the destination in the URI.
    let (code, out) = crate::peers::curl(&[
        "--proxy",
        &format!("http://{outbound}"),
        &format!("http://{}/headers", up.addr),
    ])
    .await;
    assert_eq!(code, 0);
    assert!(out.contains("\"path\":\"/headers\""), "{out}");
    let text = Client::http1()
        .get(&proxy.admin_url("/metrics"))
        .await
        .text();
    assert!(
        metric_sum(
            &text,
            "http_client_request_duration_seconds_count",
            &[
                ("server_address", "127.0.0.1"),
                ("server_port", &up.addr.port().to_string())
            ]
        ) >= 1.0,
        "{text}"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_graph_edges_between_two_sidecars() {
    let app = Upstream::echo().await;
    // checkout's sidecar calls from loopback: the network orders trusts.
    let b = Proxy::from_yaml("metrics: { service_graph: { trusted_networks: [127.0.0.1/32] } }\n")
        .upstream(app.url())
        .env("OTEL_SERVICE_NAME", "orders")
        .run()
        .await;
    let a = Proxy::builder()
        .upstream(app.url())
        .outbound()
        .env("OTEL_SERVICE_NAME", "checkout")
        .run()
        .await;
    // checkout's app calls orders through its outbound listener.
    let client = Client::http1();
    let req = client
        .request("GET", &format!("http://{}/headers", a.outbound.unwrap()))
        .header("host", b.inbound.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let seen = client.send(req).await.json();
    assert!(
        seen["headers"].get("x-sidetrace-client").is_none(),
        "the hop header stops at the inbound sidecar: {seen}"
    );
    // A direct call to orders, from a client without a sidecar.
    Client::http1().get(&b.url("/x?status=500")).await;
    drop(client);

    let b_text = Client::http1().get(&b.admin_url("/metrics")).await.text();
    let edge = [
        ("client", "checkout"),
        ("server", "orders"),
        ("connection_type", ""),
    ];
    assert_eq!(
        metric_sum(&b_text, "traces_service_graph_request_total", &edge),
        1.0,
        "{b_text}"
    );
    assert_eq!(
        metric_sum(
            &b_text,
            "traces_service_graph_request_server_seconds_count",
            &edge
        ),
        1.0
    );
    let user = [
        ("client", "user"),
        ("server", "orders"),
        ("connection_type", "virtual_node"),
    ];
    assert_eq!(
        metric_sum(&b_text, "traces_service_graph_request_total", &user),
        1.0,
        "{b_text}"
    );
    assert_eq!(
        metric_sum(&b_text, "traces_service_graph_request_failed_total", &user),
        1.0,
        "{b_text}"
    );

    let a_text = Client::http1().get(&a.admin_url("/metrics")).await.text();
    assert_eq!(
        metric_sum(
            &a_text,
            "traces_service_graph_request_client_seconds_count",
            &[("client", "checkout"), ("server", "127.0.0.1")]
        ),
        1.0,
        "{a_text}"
    );
    assert_eq!(
        metric_sum(&a_text, "http_server_request_duration_seconds_count", &[]),
        0.0,
        "outbound calls are not server requests: {a_text}"
    );
    assert_eq!(
        metric_sum(
            &a_text,
            "http_client_request_duration_seconds_count",
            &[("server_port", &b.inbound.port().to_string())]
        ),
        1.0,
        "{a_text}"
    );
    a.shutdown();
    b.shutdown();
}
