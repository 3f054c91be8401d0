//! TLS termination: ALPN h2 and http/1.1, post-quantum key exchange, mTLS,
//! certificate reload; what each connection negotiated on its requests'
//! spans; handshakes counted by version and result, under their own
//! deadline.

use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{client::TlsStream, TlsConnector};

use super::tracing_common::{only_span, stored_trace};
use crate::{client::Client, metric_sum, proxy::Proxy, upstream::Upstream, PATIENCE};

pub(super) struct Pki {
    pub(super) ca_pem: String,
    ca: Issuer<'static, KeyPair>,
}

impl Pki {
    pub(super) fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "sidetrace test CA");
        let cert = params.self_signed(&key).unwrap();
        Self {
            ca_pem: cert.pem(),
            ca: Issuer::new(params, key),
        }
    }

    /// A leaf certificate for `localhost` and 127.0.0.1: (cert PEM, key PEM).
    pub(super) fn leaf(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate with this subject (in encoding order) and a
    /// URI name: (cert PEM, key PEM).
    fn client(&self, subject: &[(DnType, &str)], uri: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

pub(super) fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

pub(super) async fn connect(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
    client_cert: Option<(&str, &str)>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let config = client_config(ca_pem, alpn, client_cert, rustls::ALL_VERSIONS);
    let handshake = async {
        let tcp = TcpStream::connect(addr).await?;
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    };
    tokio::time::timeout(PATIENCE, handshake)
        .await
        .expect("the TLS handshake ends within PATIENCE")
}

fn client_config(
    ca_pem: &str,
    alpn: &[&[u8]],
    client_cert: Option<(&str, &str)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_protocol_versions(versions)
        .with_root_certificates(roots);
    let mut config = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// One response: status, JSON body, and the trace id the proxy gave it.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    json: serde_json::Value,
    trace_id: String,
}

async fn get(
    stream: TlsStream<TcpStream>,
    h2: bool,
    path: &str,
) -> Result<(StatusCode, serde_json::Value), hyper::Error> {
    let answer = get_n(stream, h2, path, 1).await?.remove(0);
    Ok((answer.status, answer.json))
}

/// `n` requests one after the other on one connection.
pub(super) async fn get_n(
    stream: TlsStream<TcpStream>,
    h2: bool,
    path: &str,
    n: usize,
) -> Result<Vec<Answer>, hyper::Error> {
    tokio::time::timeout(PATIENCE, requests(stream, h2, path, n))
        .await
        .expect("the requests are answered (or fail) within PATIENCE")
}

async fn requests(
    stream: TlsStream<TcpStream>,
    h2: bool,
    path: &str,
    n: usize,
) -> Result<Vec<Answer>, hyper::Error> {
    let request = || {
        let uri = if h2 {
            format!("https://localhost{path}")
        } else {
            path.to_string()
        };
        Request::get(uri)
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let mut answers = Vec::new();
    if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        for _ in 0..n {
            answers.push(answer(send.send_request(request()).await?).await?);
        }
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        for _ in 0..n {
            answers.push(answer(send.send_request(request()).await?).await?);
        }
    }
    Ok(answers)
}

async fn answer(resp: http::Response<hyper::body::Incoming>) -> Result<Answer, hyper::Error> {
    let status = resp.status();
    let trace_id = resp
        .headers()
        .get("x-trace-id")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        json: serde_json::from_slice(&body).unwrap_or_default(),
        trace_id,
    })
}

/// The attributes of the SERVER span of a request, from the embedded store.
async fn span_attributes(proxy: &Proxy, trace_id: &str) -> serde_json::Value {
    assert!(!trace_id.is_empty(), "the response carries x-trace-id");
    let trace = stored_trace(proxy, trace_id).await;
    let span = only_span(&trace);
    assert_eq!(span["kind"], "SERVER", "{span}");
    span["attributes"].clone()
}

/// `sidetrace_tls_handshakes_total{side="inbound"}` of a version and result.
pub(super) async fn handshakes(proxy: &Proxy, version: &str, result: &str) -> f64 {
    let text = Client::http1()
        .get(&proxy.admin_url("/metrics"))
        .await
        .text();
    metric_sum(
        &text,
        "sidetrace_tls_handshakes_total",
        &[
            ("side", "inbound"),
            ("version", version),
            ("result", result),
        ],
    )
}

/// Every inbound handshake series, for failure messages.
async fn handshake_series(proxy: &Proxy) -> String {
    let text = Client::http1()
        .get(&proxy.admin_url("/metrics"))
        .await
        .text();
    text.lines()
        .filter(|l| l.starts_with("sidetrace_tls_handshakes_total{side=\"inbound\""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until the proxy closes `tcp` (reading and dropping what it sends).
async fn until_closed(tcp: &mut TcpStream) {
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the proxy did not close the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_alpn_and_post_quantum_key_exchange() {
    let dir = std::env::temp_dir().join(format!("sidetrace-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pki = Pki::new();
    let (cert, key) = pki.leaf("first");
    let cert_path = write(&dir, "tls.crt", &cert);
    let key_path = write(&dir, "tls.key", &key);
    let up = Upstream::echo().await;
    let proxy = Proxy::from_yaml(&format!(
        "inbound: {{ tls: {{ cert: {cert_path}, key: {key_path} }} }}\n"
    ))
    .upstream(up.url())
    .run()
    .await;

    for (alpn, h2) in [(&b"h2"[..], true), (&b"http/1.1"[..], false)] {
        let stream = connect(proxy.inbound, &pki.ca_pem, &[alpn], None)
            .await
            .unwrap();
        let (_, session) = stream.get_ref();
        assert_eq!(session.alpn_protocol(), Some(alpn));
        let group = session
            .negotiated_key_exchange_group()
            .expect("a key exchange group");
        assert_eq!(
            group.name(),
            rustls::NamedGroup::X25519MLKEM768,
            "post-quantum hybrid by default"
        );
        let (status, seen) = get(stream, h2, "/headers").await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(seen["headers"]["x-forwarded-proto"][0], "https");
        assert_eq!(seen["version"], if h2 { "HTTP/2.0" } else { "HTTP/1.1" });
    }
    let text = Client::http1()
        .get(&proxy.admin_url("/metrics"))
        .await
        .text();
    assert_eq!(
        metric_sum(
            &text,
            "http_server_request_duration_seconds_count",
            &[("url_scheme", "https")]
        ),
        2.0,
        "{text}"
    );

    // A new certificate on disk is served to new connections.
    let (cert2, key2) = pki.leaf("second");
    write(&dir, "tls.key", &key2);
    write(&dir, "tls.crt", &cert2);
    let second = CertificateDer::pem_slice_iter(cert2.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    crate::assert_eventually!(
        {
            let stream = connect(proxy.inbound, &pki.ca_pem, &[b"h2"], None)
                .await
                .unwrap();
            stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first().cloned())
                == Some(second.clone())
        },
        "the reloaded certificate is served"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let dir = std::env::temp_dir().join(format!("sidetrace-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pki = Pki::new();
    let (cert, key) = pki.leaf("server");
    let cert_path = write(&dir, "tls.crt", &cert);
    let key_path = write(&dir, "tls.key", &key);
    let ca_path = write(&dir, "ca.crt", &pki.ca_pem);
    let up = Upstream::echo().await;
    let proxy = Proxy::from_yaml(&format!(
        "inbound: {{ tls: {{ cert: {cert_path}, key: {key_path}, client_ca: {ca_path} }} }}\n"
    ))
    .upstream(up.url())
    .run()
    .await;

    let anonymous = match connect(proxy.inbound, &pki.ca_pem, &[b"http/1.1"], None).await {
        Ok(stream) => get(stream, false, "/headers").await.is_err(),
        Err(_) => true,
    };
    assert!(anonymous, "a client without a certificate is refused");

    let other_ca = Pki::new();
    let (foreign_cert, foreign_key) = other_ca.leaf("intruder");
    let foreign = match connect(
        proxy.inbound,
        &pki.ca_pem,
        &[b"http/1.1"],
        Some((&foreign_cert, &foreign_key)),
    )
    .await
    {
        Ok(stream) => get(stream, false, "/headers").await.is_err(),
        Err(_) => true,
    };
    assert!(foreign, "a certificate from another CA is refused");
    // Both failed after the server chose TLS 1.3, and are counted so.
    crate::assert_eventually!(
        handshakes(&proxy, "1.3", "error").await == 2.0,
        "two refused client certificates counted as errors: {}",
        handshake_series(&proxy).await
    );

    let (client_cert, client_key) = pki.client(
        &[
            (DnType::OrganizationName, "Acme Payments, Inc."),
            (DnType::CommonName, "orders-client"),
        ],
        "spiffe://cluster.local/ns/shop/sa/orders",
    );
    let stream = connect(
        proxy.inbound,
        &pki.ca_pem,
        &[b"h2"],
        Some((&client_cert, &client_key)),
    )
    .await
    .unwrap();
    let answers = get_n(stream, true, "/headers", 1).await.unwrap();
    assert_eq!(answers[0].status, StatusCode::OK);
    let attributes = span_attributes(&proxy, &answers[0].trace_id).await;
    // RFC 4514: the last RDN first, the comma in a value escaped.
    assert_eq!(
        attributes["tls.client.subject"], r"CN=orders-client,O=Acme Payments\, Inc.",
        "{attributes}"
    );
    assert_eq!(
        attributes["sidetrace.tls.client.san"],
        "spiffe://cluster.local/ns/shop/sa/orders"
    );
    assert_eq!(attributes["tls.protocol.version"], "1.3");
    assert_eq!(handshakes(&proxy, "1.3", "ok").await, 1.0);
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_facts_on_every_server_span_and_handshakes_counted() {
    let dir = std::env::temp_dir().join(format!("sidetrace-tls-facts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pki = Pki::new();
    let (cert, key) = pki.leaf("server");
    let cert_path = write(&dir, "tls.crt", &cert);
    let key_path = write(&dir, "tls.key", &key);
    let config = format!(
        "inbound: {{ tls: {{ cert: {cert_path}, key: {key_path} }} }}\n\
         limits: {{ tls_handshake_timeout: 300ms }}\n"
    );
    let up = Upstream::echo().await;
    let config_path = dir.join("sidetrace.yaml");
    let proxy = Proxy::from_yaml(&config)
        .config_file(&config_path)
        .upstream(up.url())
        .run()
        .await;

    // TLS 1.3 by default, with the post-quantum hybrid group; two requests
    // on one connection both carry the connection's facts.
    let stream = connect(proxy.inbound, &pki.ca_pem, &[b"h2"], None)
        .await
        .unwrap();
    let group = stream.get_ref().1.negotiated_key_exchange_group().unwrap();
    assert_eq!(group.name(), rustls::NamedGroup::X25519MLKEM768);
    let answers = get_n(stream, true, "/headers", 2).await.unwrap();
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::OK);
        let attributes = span_attributes(&proxy, &answer.trace_id).await;
        assert_eq!(attributes["tls.protocol.name"], "tls", "{attributes}");
        assert_eq!(attributes["tls.protocol.version"], "1.3", "{attributes}");
        assert_eq!(attributes["tls.curve"], "X25519MLKEM768", "{attributes}");
        assert!(attributes.get("tls.client.subject").is_none(), "no mTLS");
    }
    assert_ne!(answers[0].trace_id, answers[1].trace_id);

    // A client that only speaks TLS 1.2 (the hybrid group is 1.3 only).
    let tls12 = client_config(
        &pki.ca_pem,
        &[b"http/1.1"],
        None,
        &[&rustls::version::TLS12],
    );
    let tcp = TcpStream::connect(proxy.inbound).await.unwrap();
    let handshake = TlsConnector::from(Arc::new(tls12))
        .connect(ServerName::try_from("localhost").unwrap(), tcp);
    let stream = tokio::time::timeout(PATIENCE, handshake)
        .await
        .expect("the TLS 1.2 handshake ends within PATIENCE")
        .unwrap();
    let group12 = stream.get_ref().1.negotiated_key_exchange_group().unwrap();
    let group12 = group12.name().as_str().unwrap().to_string();
    let answers = get_n(stream, false, "/headers", 1).await.unwrap();
    let attributes = span_attributes(&proxy, &answers[0].trace_id).await;
    assert_eq!(attributes["tls.protocol.version"], "1.2", "{attributes}");
    assert_eq!(attributes["tls.curve"], group12.as_str(), "{attributes}");

    assert_eq!(handshakes(&proxy, "1.3", "ok").await, 1.0);
    assert_eq!(handshakes(&proxy, "1.2", "ok").await, 1.0);

    // A client that connects and sends nothing is closed after
    // `limits.tls_handshake_timeout`, before any version was chosen.
    let started = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(proxy.inbound).await.unwrap();
    until_closed(&mut silent).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed after {:?}, before the handshake deadline",
        started.elapsed()
    );
    crate::assert_eventually!(
        handshakes(&proxy, "unknown", "timeout").await == 1.0,
        "the silent client counted as a timeout"
    );

    // One that sends its ClientHello and stalls: the server chose TLS 1.3.
    let mut hello = Vec::new();
    rustls::ClientConnection::new(
        Arc::new(client_config(
            &pki.ca_pem,
            &[b"h2"],
            None,
            rustls::ALL_VERSIONS,
        )),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap()
    .write_tls(&mut hello)
    .unwrap();
    let mut stalled = TcpStream::connect(proxy.inbound).await.unwrap();
    stalled.write_all(&hello).await.unwrap();
    until_closed(&mut stalled).await;
    crate::assert_eventually!(
        handshakes(&proxy, "1.3", "timeout").await == 1.0,
        "the stalled handshake counted as a TLS 1.3 timeout"
    );

    // Not TLS at all: an error, with no version.
    let mut plain = TcpStream::connect(proxy.inbound).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    until_closed(&mut plain).await;
    crate::assert_eventually!(
        handshakes(&proxy, "unknown", "error").await == 1.0,
        "plain HTTP on the TLS port counted as an error"
    );
    assert_eq!(
        handshakes(&proxy, "1.3", "ok").await,
        1.0,
        "nothing else counted"
    );

    // The span hook is added again when the tracing settings are reloaded.
    std::fs::write(
        &config_path,
        format!("{config}filters:\n  - timeout: {{ request: 5s }}\n"),
    )
    .unwrap();
    crate::assert_eventually!(
        metric_sum(
            &Client::http1()
                .get(&proxy.admin_url("/metrics"))
                .await
                .text(),
            "sidetrace_config_reloads_total",
            &[("result", "success")]
        ) >= 1.0,
        "the config reloaded"
    );
    let stream = connect(proxy.inbound, &pki.ca_pem, &[b"h2"], None)
        .await
        .unwrap();
    let answers = get_n(stream, true, "/headers", 1).await.unwrap();
    let attributes = span_attributes(&proxy, &answers[0].trace_id).await;
    assert_eq!(attributes["tls.protocol.version"], "1.3", "{attributes}");
    proxy.shutdown();
}
