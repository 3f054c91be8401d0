//! TLS termination: ALPN h2 and http/1.1, post-quantum key exchange, mTLS,
//! certificate reload.

use std::{path::Path, sync::Arc};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

use crate::{client::Client, metric_sum, proxy::Proxy, upstream::Upstream};

struct Pki {
    ca_pem: String,
    ca: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
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
    fn leaf(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn connect(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
    client_cert: Option<(&str, &str)>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
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
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

async fn get(
    stream: TlsStream<TcpStream>,
    h2: bool,
    path: &str,
) -> Result<(StatusCode, serde_json::Value), hyper::Error> {
    let req = Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        let mut req = req;
        *req.uri_mut() = format!("https://localhost{path}").parse().unwrap();
        send.send_request(req).await?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        send.send_request(req).await?
    };
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or_default()))
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

    let (client_cert, client_key) = pki.leaf("client");
    let stream = connect(
        proxy.inbound,
        &pki.ca_pem,
        &[b"h2"],
        Some((&client_cert, &client_key)),
    )
    .await
    .unwrap();
    let (status, _) = get(stream, true, "/headers").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    proxy.shutdown();
}
