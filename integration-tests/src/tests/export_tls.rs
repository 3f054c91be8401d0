//! Span export to an `https://` collector: a real TLS receiver (rustls, a
//! test CA, optionally requiring client certificates) reached through the
//! forwarder's connector, with the CA and client certificate given by the
//! OpenTelemetry variables or by `tracing.export.tls`. A collector that
//! cannot be verified, or that refuses the proxy, gets nothing, the failure
//! is counted, and requests through the proxy still succeed.

use std::{collections::HashMap, path::Path};

use bytes::Bytes;
use http::StatusCode;
use sidetrace::export::{ExportMetrics, ExportSettings, Exporter};

use super::tracing_common::metrics;
use crate::{
    assert_eventually,
    client::Client,
    metric_sum,
    otlp::{Otlp, OtlpBuilder},
    pki::{temp_dir, write, Leaf, Pki},
    proxy::Proxy,
    upstream::Upstream,
};

/// A collector CA, its collector certificate, and a client CA with the
/// proxy's client certificate, written to `dir`.
struct Certs {
    collector_ca_pem: String,
    collector_leaf: Leaf,
    clients: Pki,
    client_leaf: Leaf,
    ca: String,
    client_cert: String,
    client_key: String,
}

fn certs(dir: &Path) -> Certs {
    let collector = Pki::new("collector CA");
    let collector_leaf = collector.leaf("collector", &["localhost"]);
    let clients = Pki::new("sidecar CA");
    let client_leaf = clients.leaf("sidetrace", &["sidetrace.internal"]);
    Certs {
        ca: write(dir, "ca.pem", &collector.ca_pem),
        client_cert: write(dir, "client.pem", &client_leaf.cert_pem),
        client_key: write(dir, "client-key.pem", &client_leaf.key_pem),
        collector_ca_pem: collector.ca_pem,
        collector_leaf,
        clients,
        client_leaf,
    }
}

fn builder(protocol: &str) -> OtlpBuilder {
    match protocol {
        "grpc" => Otlp::grpc(),
        _ => Otlp::http(),
    }
}

/// Sends `n` requests through the proxy; each must succeed.
async fn requests_succeed(proxy: &Proxy, n: usize) {
    let client = Client::http1();
    for i in 0..n {
        let resp = client.get(&proxy.url(&format!("/tls/{i}"))).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    }
}

/// Spans reach `otlp` over TLS; the negotiated protocol is `alpn`, and
/// nothing failed.
async fn spans_arrive(otlp: &Otlp, proxy: &Proxy, alpn: &str) {
    requests_succeed(proxy, 2).await;
    let spans = otlp.wait_for_spans(2).await;
    assert!(
        spans.iter().all(|s| s.str("url.path").is_some()),
        "{spans:#?}"
    );
    for conn in otlp.tls_connections() {
        assert_eq!(conn.alpn.as_deref(), Some(alpn), "{conn:?}");
    }
    assert_eventually!(
        metric_sum(&metrics(proxy).await, "sidetrace_spans_exported_total", &[]) >= 2.0,
        "exported spans are counted"
    );
    let text = metrics(proxy).await;
    assert_eq!(
        metric_sum(&text, "sidetrace_export_errors_total", &[]),
        0.0,
        "{text}"
    );
}

/// Requests succeed, the export fails and is counted, `otlp` takes nothing.
async fn export_fails(otlp: &Otlp, proxy: &Proxy) {
    requests_succeed(proxy, 3).await;
    let mut text: String;
    assert_eventually!(
        {
            text = metrics(proxy).await;
            metric_sum(&text, "sidetrace_export_errors_total", &[]) >= 1.0
        },
        "the failed export is counted: {text}"
    );
    assert!(
        metric_sum(
            &text,
            "sidetrace_spans_dropped_total",
            &[("reason", "export_failed")]
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric_sum(&text, "sidetrace_spans_exported_total", &[]),
        0.0
    );
    assert_eventually!(
        otlp.handshake_failures() >= 1,
        "the collector saw the handshake fail"
    );
    assert_eq!(otlp.attempts(), 0, "no export call got through");
    assert!(otlp.spans().is_empty());
    requests_succeed(proxy, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_tls_collector_trusted_by_env_over_grpc_and_http() {
    let dir = temp_dir("export-tls-env");
    let certs = certs(&dir);
    let up = Upstream::echo().await;
    for (protocol, alpn) in [("grpc", "h2"), ("http/protobuf", "http/1.1")] {
        let otlp = builder(protocol).tls(&certs.collector_leaf).run().await;
        assert!(otlp.endpoint().starts_with("https://"));
        let proxy = Proxy::builder()
            .upstream(up.url())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint())
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .env("OTEL_EXPORTER_OTLP_CERTIFICATE", &certs.ca)
            .run()
            .await;
        spans_arrive(&otlp, &proxy, alpn).await;
        let conns = otlp.tls_connections();
        assert!(conns.iter().all(|c| c.client_cert.is_none()), "{conns:?}");
        proxy.shutdown();
        otlp.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_tls_collector_trusted_by_file_over_grpc_and_http() {
    let dir = temp_dir("export-tls-file");
    let certs = certs(&dir);
    let up = Upstream::echo().await;
    for (protocol, alpn) in [("grpc", "h2"), ("http/protobuf", "http/1.1")] {
        let otlp = builder(protocol).tls(&certs.collector_leaf).run().await;
        let yaml = format!(
            "tracing:\n  export:\n    endpoint: {}\n    protocol: {protocol}\n    tls: {{ ca: {} }}\n",
            otlp.endpoint(),
            certs.ca
        );
        let proxy = Proxy::from_yaml(&yaml).upstream(up.url()).run().await;
        spans_arrive(&otlp, &proxy, alpn).await;
        proxy.shutdown();
        otlp.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_requiring_client_certificates_gets_spans_only_with_one() {
    let dir = temp_dir("export-tls-mtls");
    let certs = certs(&dir);
    let up = Upstream::echo().await;
    // gRPC with the generic variables, HTTP with the _TRACES_ ones.
    for (protocol, alpn, prefix) in [
        ("grpc", "h2", "OTEL_EXPORTER_OTLP"),
        ("http/protobuf", "http/1.1", "OTEL_EXPORTER_OTLP_TRACES"),
    ] {
        let otlp = builder(protocol)
            .tls(&certs.collector_leaf)
            .client_ca(&certs.clients.ca_pem)
            .run()
            .await;
        let proxy = Proxy::builder()
            .upstream(up.url())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint())
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .env("OTEL_EXPORTER_OTLP_CERTIFICATE", &certs.ca)
            .env(&format!("{prefix}_CLIENT_CERTIFICATE"), &certs.client_cert)
            .env(&format!("{prefix}_CLIENT_KEY"), &certs.client_key)
            .run()
            .await;
        spans_arrive(&otlp, &proxy, alpn).await;
        let conns = otlp.tls_connections();
        assert!(!conns.is_empty());
        for conn in &conns {
            assert_eq!(
                conn.client_cert.as_deref(),
                Some(&certs.client_leaf.cert_der[..]),
                "the collector saw the configured client certificate"
            );
        }
        proxy.shutdown();

        // The same collector, no client certificate.
        let proxy = Proxy::builder()
            .upstream(up.url())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint())
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .env("OTEL_EXPORTER_OTLP_CERTIFICATE", &certs.ca)
            .run()
            .await;
        let before = otlp.spans().len();
        let attempts = otlp.attempts();
        requests_succeed(&proxy, 3).await;
        let mut text: String;
        assert_eventually!(
            {
                text = metrics(&proxy).await;
                metric_sum(&text, "sidetrace_export_errors_total", &[]) >= 1.0
            },
            "the refused export is counted: {text}"
        );
        assert_eq!(
            metric_sum(&text, "sidetrace_spans_exported_total", &[]),
            0.0
        );
        assert_eq!(otlp.spans().len(), before, "no span without a certificate");
        assert_eq!(otlp.attempts(), attempts, "no export call got through");
        assert_eventually!(
            otlp.handshake_failures() >= 1,
            "the collector refused the handshake"
        );
        requests_succeed(&proxy, 1).await;
        proxy.shutdown();
        otlp.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_signed_by_another_ca_gets_nothing() {
    let dir = temp_dir("export-tls-other-ca");
    let certs = certs(&dir);
    let other = Pki::new("someone else's CA");
    let up = Upstream::echo().await;
    for protocol in ["grpc", "http/protobuf"] {
        let otlp = builder(protocol)
            .tls(&other.leaf("collector", &["localhost"]))
            .run()
            .await;
        let yaml = format!(
            "tracing:\n  export:\n    endpoint: {}\n    protocol: {protocol}\n    tls: {{ ca: {} }}\n",
            otlp.endpoint(),
            certs.ca
        );
        let proxy = Proxy::from_yaml(&yaml).upstream(up.url()).run().await;
        export_fails(&otlp, &proxy).await;
        assert!(otlp.tls_connections().is_empty());
        proxy.shutdown();
        otlp.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_file_reloads_when_it_changes() {
    let dir = temp_dir("export-tls-reload");
    let certs = certs(&dir);
    let other = Pki::new("someone else's CA");
    let ca = write(&dir, "reloaded-ca.pem", &other.ca_pem);
    let up = Upstream::echo().await;
    let otlp = Otlp::grpc().tls(&certs.collector_leaf).run().await;
    let yaml = format!(
        "tracing:\n  export:\n    endpoint: {}\n    protocol: grpc\n    tls: {{ ca: {ca} }}\n",
        otlp.endpoint()
    );
    let proxy = Proxy::from_yaml(&yaml).upstream(up.url()).run().await;
    export_fails(&otlp, &proxy).await;

    write(&dir, "reloaded-ca.pem", &certs.collector_ca_pem);
    let client = Client::http1();
    assert_eventually!(
        {
            let resp = client.get(&proxy.url("/after-reload")).await;
            assert_eq!(resp.status, StatusCode::OK);
            !otlp.spans().is_empty()
        },
        "spans arrive once the CA file names the collector's CA"
    );
    proxy.shutdown();
    otlp.shutdown().await;
}

/// The exporter itself, over both protocols: a refused collector
/// certificate fails the batch at the first attempt with a reason that says
/// TLS; a client certificate the collector requires but does not get fails
/// with a TLS reason too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_say_tls_and_a_refused_certificate_is_not_retried() {
    let dir = temp_dir("export-tls-exporter");
    let certs = certs(&dir);
    let other = Pki::new("someone else's CA");
    let exporter = |endpoint: &str, protocol: &str| {
        let env: HashMap<String, String> = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &certs.ca),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let settings = ExportSettings::resolve(&Default::default(), &env).unwrap();
        let tls = settings.client_tls().unwrap();
        assert!(tls.is_some(), "https:// gets the TLS client");
        Exporter::new(&settings, tls, ExportMetrics::noop()).unwrap()
    };
    for protocol in ["grpc", "http/protobuf"] {
        let stranger = builder(protocol)
            .tls(&other.leaf("collector", &["localhost"]))
            .run()
            .await;
        let e = exporter(&stranger.endpoint(), protocol)
            .export(Bytes::new(), 1)
            .await
            .unwrap_err();
        assert_eq!(e.attempts, 1, "a refused certificate is not retried: {e}");
        assert!(e.reason.contains("TLS certificate refused"), "{e}");
        assert!(e.reason.contains("UnknownIssuer"), "{e}");
        assert_eventually!(
            stranger.handshake_failures() >= 1,
            "the collector saw the handshake fail"
        );
        stranger.shutdown().await;

        let mtls = builder(protocol)
            .tls(&certs.collector_leaf)
            .client_ca(&certs.clients.ca_pem)
            .run()
            .await;
        let e = exporter(&mtls.endpoint(), protocol)
            .export(Bytes::new(), 1)
            .await
            .unwrap_err();
        // The collector's alert says why, unless the reset that follows
        // it overtakes it; either way the reason names TLS.
        assert!(e.reason.contains("TLS"), "{protocol}: {e}");
        assert_eq!(mtls.attempts(), 0);
        mtls.shutdown().await;
    }
}
