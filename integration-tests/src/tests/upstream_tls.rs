//! TLS towards the app and outbound destinations: verification, ALPN, mTLS,
//! origination, reload, and never a byte of clear text to an `https://` URL.

use http::StatusCode;

use crate::{
    assert_eventually,
    client::Client,
    metric_sum,
    pki::{temp_dir, write, Pki},
    proxy::Proxy,
    tls_upstream::{PlainRecorder, TlsUpstream, TlsUpstreamOptions},
};

const BOTH: &[&[u8]] = &[b"h2", b"http/1.1"];
const HTTP1: &[&[u8]] = &[b"http/1.1"];

fn upstream_tls_yaml(ca: &str, extra: &str) -> String {
    format!("inbound:\n  upstream_tls: {{ ca: {ca}, system_roots: false{extra} }}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_is_verified_and_alpn_picks_the_protocol() {
    let dir = temp_dir("upstream-tls-alpn");
    let pki = Pki::new("app CA");
    let ca = write(&dir, "ca.pem", &pki.ca_pem);
    let leaf = pki.leaf("app", &["localhost"]);
    for (alpn, expected) in [(BOTH, "HTTP/2.0"), (HTTP1, "HTTP/1.1")] {
        let app = TlsUpstream::start(TlsUpstreamOptions {
            leaf: &leaf,
            alpn,
            client_ca: None,
        })
        .await;
        let proxy = Proxy::from_yaml(&upstream_tls_yaml(&ca, ""))
            .upstream(app.url())
            .run()
            .await;
        for client in [Client::http1(), Client::h2c()] {
            let resp = client
                .send(
                    client
                        .request("GET", &proxy.url("/hello"))
                        .header("authorization", "Bearer secret")
                        .body(Default::default())
                        .unwrap(),
                )
                .await;
            assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
            let seen = resp.json();
            assert_eq!(seen["version"], expected, "{seen}");
            assert_eq!(seen["path"], "/hello");
            assert_eq!(seen["authorization"], "Bearer secret");
            assert_eq!(seen["client_cert"], false);
        }
        let metrics = Client::http1()
            .get(&proxy.admin_url("/metrics"))
            .await
            .text();
        assert_eq!(
            metric_sum(
                &metrics,
                "http_client_request_duration_seconds_count",
                &[
                    ("url_scheme", "https"),
                    ("http_response_status_code", "200")
                ]
            ),
            2.0,
            "the upstream hop is recorded as https: {metrics}"
        );
        assert!(
            metric_sum(
                &metrics,
                "sidetrace_tls_handshakes_total",
                &[("side", "upstream"), ("version", "1.3"), ("result", "ok")]
            ) >= 1.0,
            "{metrics}"
        );
        proxy.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_that_do_not_verify_are_502_tls_certificate() {
    let dir = temp_dir("upstream-tls-refused");
    let pki = Pki::new("app CA");
    let other = Pki::new("someone else's CA");
    let ca = write(&dir, "ca.pem", &pki.ca_pem);
    let cases = [
        ("unknown issuer", other.leaf("app", &["localhost"])),
        ("expired", pki.expired_leaf("app", &["localhost"])),
        ("name mismatch", pki.leaf("app", &["billing.internal"])),
    ];
    for (what, leaf) in cases {
        let app = TlsUpstream::start(TlsUpstreamOptions {
            leaf: &leaf,
            alpn: BOTH,
            client_ca: None,
        })
        .await;
        let proxy = Proxy::from_yaml(&upstream_tls_yaml(&ca, ""))
            .upstream(app.url())
            .run()
            .await;
        let resp = Client::http1().get(&proxy.url("/x")).await;
        assert_eq!(resp.status, StatusCode::BAD_GATEWAY, "{what}");
        assert_eq!(resp.headers["x-sidetrace-error"], "NETWORK", "{what}");
        assert!(
            resp.text().contains("tls_certificate"),
            "{what}: {}",
            resp.text()
        );
        let metrics = Client::http1()
            .get(&proxy.admin_url("/metrics"))
            .await
            .text();
        assert_eq!(
            metric_sum(
                &metrics,
                "http_server_request_duration_seconds_count",
                &[
                    ("error_type", "tls_certificate"),
                    ("failure_category", "NETWORK")
                ]
            ),
            1.0,
            "{what}: {metrics}"
        );
        assert_eq!(
            metric_sum(
                &metrics,
                "sidetrace_tls_handshakes_total",
                &[("side", "upstream"), ("result", "error")]
            ),
            1.0,
            "{what}: {metrics}"
        );
        proxy.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_text_server_behind_https_never_receives_a_request_line() {
    let dir = temp_dir("upstream-tls-plain");
    let pki = Pki::new("app CA");
    let ca = write(&dir, "ca.pem", &pki.ca_pem);
    let plain = PlainRecorder::start().await;
    let proxy = Proxy::from_yaml(&upstream_tls_yaml(&ca, ""))
        .upstream(format!("https://localhost:{}", plain.addr.port()))
        .run()
        .await;
    let resp = Client::http1()
        .send(
            Client::http1()
                .request("POST", &proxy.url("/pay"))
                .header("authorization", "Bearer do-not-leak")
                .body("card=4111".into())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert!(resp.text().contains("tls_handshake"), "{}", resp.text());
    let received = plain.received.lock().clone();
    assert!(!received.is_empty(), "the proxy did connect");
    for bytes in received {
        assert_eq!(bytes.first(), Some(&0x16), "a TLS handshake record");
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("POST"), "{text}");
        assert!(!text.contains("do-not-leak"), "{text}");
    }
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_to_the_app_presents_the_configured_client_certificate() {
    let dir = temp_dir("upstream-mtls");
    let pki = Pki::new("app CA");
    let clients = Pki::new("client CA");
    let ca = write(&dir, "ca.pem", &pki.ca_pem);
    let client = clients.leaf("sidetrace", &["sidetrace.internal"]);
    let cert = write(&dir, "client.crt", &client.cert_pem);
    let key = write(&dir, "client.key", &client.key_pem);
    let app = TlsUpstream::start(TlsUpstreamOptions {
        leaf: &pki.leaf("app", &["localhost"]),
        alpn: BOTH,
        client_ca: Some(&clients.ca_pem),
    })
    .await;

    let without = Proxy::from_yaml(&upstream_tls_yaml(&ca, ""))
        .upstream(app.url())
        .run()
        .await;
    let resp = Client::http1().get(&without.url("/x")).await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert!(resp.text().contains("tls_handshake"), "{}", resp.text());
    without.shutdown();

    let with = Proxy::from_yaml(&upstream_tls_yaml(
        &ca,
        &format!(", cert: {cert}, key: {key}"),
    ))
    .upstream(app.url())
    .run()
    .await;
    let resp = Client::http1().get(&with.url("/x")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.json()["client_cert"], true);
    assert!(
        app.client_certs.lock().contains(&client.cert_der),
        "the app saw the proxy's configured client certificate"
    );
    with.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_overrides_the_url_host_for_sni_and_verification() {
    let dir = temp_dir("upstream-tls-sni");
    let pki = Pki::new("app CA");
    let ca = write(&dir, "ca.pem", &pki.ca_pem);
    let app = TlsUpstream::start(TlsUpstreamOptions {
        leaf: &pki.leaf("billing", &["billing.internal"]),
        alpn: BOTH,
        client_ca: None,
    })
    .await;
    let url = format!("https://{}", app.addr);
    let proxy = Proxy::from_yaml(&upstream_tls_yaml(&ca, ", server_name: billing.internal"))
        .upstream(url)
        .run()
        .await;
    let resp = Client::http1().get(&proxy.url("/x")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_ca_bundle_is_used_without_a_restart() {
    let dir = temp_dir("upstream-tls-reload");
    let pki = Pki::new("app CA");
    let wrong = Pki::new("old CA");
    let ca = write(&dir, "ca.pem", &wrong.ca_pem);
    let app = TlsUpstream::start(TlsUpstreamOptions {
        leaf: &pki.leaf("app", &["localhost"]),
        alpn: BOTH,
        client_ca: None,
    })
    .await;
    let proxy = Proxy::from_yaml(&upstream_tls_yaml(&ca, ""))
        .upstream(app.url())
        .run()
        .await;
    let resp = Client::http1().get(&proxy.url("/x")).await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    write(&dir, "ca.pem", &pki.ca_pem);
    assert_eventually!(
        Client::http1().get(&proxy.url("/x")).await.status == StatusCode::OK,
        "the new CA bundle was not picked up"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_originates_tls_to_listed_destinations() {
    let dir = temp_dir("outbound-originate");
    let pki = Pki::new("mesh CA");
    let ca = write(&dir, "ca.pem", &pki.ca_pem);
    let app = TlsUpstream::start(TlsUpstreamOptions {
        leaf: &pki.leaf("billing", &["localhost"]),
        alpn: BOTH,
        client_ca: None,
    })
    .await;
    let proxy = Proxy::from_yaml(&format!(
        "outbound:\n  originate_tls: [localhost]\n  tls: {{ ca: {ca}, system_roots: false }}\n"
    ))
    .outbound()
    .run()
    .await;
    let outbound = proxy.outbound.expect("outbound listener");
    // The legacy app speaks plain HTTP to its outbound listener.
    let resp = Client::http1()
        .send(
            Client::http1()
                .request("GET", &format!("http://{outbound}/invoices"))
                .header("host", format!("localhost:{}", app.addr.port()))
                .body(Default::default())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let seen = resp.json();
    assert_eq!(seen["path"], "/invoices");
    assert_eq!(
        seen["alpn"], "h2",
        "ALPN lets the destination pick HTTP/2: {seen}"
    );
    // A destination not listed stays plain: the TLS-only app refuses it.
    let plain = Client::http1()
        .send(
            Client::http1()
                .request("GET", &format!("http://{outbound}/invoices"))
                .header("host", format!("127.0.0.1:{}", app.addr.port()))
                .body(Default::default())
                .unwrap(),
        )
        .await;
    assert_eq!(plain.status, StatusCode::BAD_GATEWAY, "{}", plain.text());
    proxy.shutdown();
}
