//! gRPC end to end: Python grpcio client → proxy → Python grpcio server.

use crate::{
    client::Client,
    metric_sum,
    peers::{grpc_client, GrpcServer},
    proxy::Proxy,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_unary_errors_and_streaming_through_the_proxy() {
    let server = GrpcServer::start().await;
    let proxy = Proxy::builder()
        .upstream(format!("http://127.0.0.1:{}", server.port))
        .run()
        .await;
    let report = grpc_client(&proxy.inbound.to_string()).await;
    assert_eq!(report["ok"], "echo:hello", "{report}");
    assert_eq!(report["not_found"][0], "NOT_FOUND", "{report}");
    assert_eq!(
        report["not_found"][1], "no such order",
        "status message survives: {report}"
    );
    assert_eq!(
        report["stream"],
        serde_json::json!(["0:x", "1:x", "2:x"]),
        "{report}"
    );

    let text = Client::http1()
        .get(&proxy.admin_url("/metrics"))
        .await
        .text();
    let count = |labels: &[(&str, &str)]| {
        metric_sum(&text, "http_server_request_duration_seconds_count", labels)
    };
    assert_eq!(
        count(&[
            ("rpc_grpc_status_code", "0"),
            ("network_protocol_version", "2"),
            ("http_request_method", "POST")
        ]),
        2.0,
        "unary OK and the stream: {text}"
    );
    assert_eq!(
        count(&[
            ("rpc_grpc_status_code", "5"),
            ("error_type", "NOT_FOUND"),
            ("failure_category", "VALIDATION")
        ]),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric_sum(
            &text,
            "http_client_request_duration_seconds_count",
            &[("rpc_grpc_status_code", "5")]
        ),
        1.0,
        "the upstream hop sees the same status: {text}"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_to_a_dead_upstream_is_unavailable_trailers_only() {
    use bytes::Bytes;
    use http_body_util::Full;
    let dead = crate::upstream::Upstream::dead().await;
    let proxy = Proxy::builder()
        .upstream(format!("http://{dead}"))
        .run()
        .await;
    let client = Client::h2c();
    let req = client
        .request("POST", &proxy.url("/test.Echo/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    let resp = client.send(req).await;
    assert_eq!(resp.status, http::StatusCode::OK);
    assert_eq!(resp.headers["grpc-status"], "14", "UNAVAILABLE");
    assert_eq!(resp.headers["x-sidetrace-error"], "NETWORK");
    proxy.shutdown();
}
