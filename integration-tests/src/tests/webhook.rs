//! The admission webhook over real TLS: reviews over HTTP/1.1 and h2 (by
//! ALPN) answered with what the injector decides, health and metrics on the
//! same port, the certificate reloaded from disk, and the drain.

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use sidetrace::{
    config::TlsConfig,
    inject::{ChartValues, Injector, Mode},
    webhook::{review::Reviewer, start, WebhookConfig},
};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

use crate::{
    pki::{temp_dir, write, Pki},
    PATIENCE,
};

/// A review as the API server sends it when a ReplicaSet creates a pod.
fn review(uid: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "generateName": "checkout-6b7d9c8f4-",
                    "namespace": "shop",
                    "labels": {"app.kubernetes.io/name": "checkout", "pod-template-hash": "6b7d9c8f4"}
                },
                "spec": {"containers": [{"name": "checkout", "image": "ghcr.io/acme/checkout:1.4.2",
                                          "ports": [{"name": "http", "containerPort": 8080}]}]}
            },
            "oldObject": null,
            "dryRun": false
        }
    }))
    .unwrap()
}

async fn connect(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[u8],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    tokio::time::timeout(
        PATIENCE,
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("the handshake ends within PATIENCE")
}

/// Sends `requests` on one connection, over h2 or HTTP/1.1.
async fn exchange(
    stream: TlsStream<TcpStream>,
    h2: bool,
    requests: Vec<Request<Full<Bytes>>>,
) -> Vec<(StatusCode, Bytes)> {
    let io = TokioIo::new(stream);
    let mut out = Vec::new();
    if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        for req in requests {
            let resp = send.send_request(req).await.unwrap();
            out.push((
                resp.status(),
                resp.into_body().collect().await.unwrap().to_bytes(),
            ));
        }
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        for req in requests {
            send.ready().await.unwrap();
            let resp = send.send_request(req).await.unwrap();
            out.push((
                resp.status(),
                resp.into_body().collect().await.unwrap().to_bytes(),
            ));
        }
    }
    out
}

fn post(body: Vec<u8>) -> Request<Full<Bytes>> {
    Request::post("https://localhost/mutate")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("https://localhost{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_over_tls_h1_and_h2_certificate_reload_and_drain() {
    let dir = temp_dir("webhook");
    let pki = Pki::new("webhook test CA");
    let first = pki.leaf("first", &["localhost", "127.0.0.1"]);
    let cert = write(&dir, "tls.crt", &first.cert_pem);
    let key = write(&dir, "tls.key", &first.key_pem);
    let running = start(WebhookConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: TlsConfig {
            cert: cert.clone().into(),
            key: key.clone().into(),
            client_ca: None,
        },
        values: Vec::new(),
        release: "shop".into(),
        mode: Mode::Native,
    })
    .await
    .unwrap();
    let addr = running.addr();
    // What the server must answer: the injector's own decision for the same body.
    let reviewer = Reviewer::new(
        Injector::new(&ChartValues::defaults().unwrap(), "shop").unwrap(),
        Mode::Native,
    );

    for (alpn, h2) in [(&b"h2"[..], true), (&b"http/1.1"[..], false)] {
        let stream = connect(addr, &pki.ca_pem, alpn).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
        let uid = if h2 { "uid-h2" } else { "uid-h1" };
        let answers = exchange(
            stream,
            h2,
            vec![
                post(review(uid)),
                post(b"{\"not\": \"a review\"}".to_vec()),
                get("/live"),
                get("/ready"),
                get("/nope"),
                get("/mutate"),
            ],
        )
        .await;
        let (status, body) = &answers[0];
        assert_eq!(*status, StatusCode::OK);
        assert_eq!(body.as_ref(), reviewer.review(&review(uid)).0.as_slice());
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(json["response"]["uid"], uid);
        assert_eq!(json["response"]["allowed"], true);
        assert_eq!(json["response"]["patchType"], "JSONPatch");
        let garbage: serde_json::Value = serde_json::from_slice(&answers[1].1).unwrap();
        assert_eq!(answers[1].0, StatusCode::OK);
        assert_eq!(garbage["response"]["allowed"], true);
        assert!(garbage["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("sidetrace: sidecar not injected"));
        let statuses: Vec<StatusCode> = answers[2..].iter().map(|(s, _)| *s).collect();
        assert_eq!(
            statuses,
            [
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::NOT_FOUND,
                StatusCode::METHOD_NOT_ALLOWED
            ]
        );
    }

    let stream = connect(addr, &pki.ca_pem, b"http/1.1").await.unwrap();
    let metrics = exchange(stream, false, vec![get("/metrics")]).await;
    let text = String::from_utf8_lossy(&metrics[0].1).to_string();
    assert_eq!(
        crate::metric_sum(
            &text,
            "sidetrace_webhook_reviews_total",
            &[("result", "injected")]
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        crate::metric_sum(
            &text,
            "sidetrace_webhook_reviews_total",
            &[("result", "malformed")]
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        crate::metric_sum(
            &text,
            "sidetrace_webhook_review_duration_seconds_count",
            &[]
        ),
        4.0,
        "{text}"
    );
    assert!(
        crate::metric_sum(&text, "sidetrace_tls_handshakes_total", &[("result", "ok")]) >= 3.0,
        "{text}"
    );

    // A renewed certificate (cert-manager rewriting the Secret) is served to new connections.
    let second = pki.leaf("second", &["localhost", "127.0.0.1"]);
    write(&dir, "tls.key", &second.key_pem);
    write(&dir, "tls.crt", &second.cert_pem);
    crate::assert_eventually!(
        {
            let stream = connect(addr, &pki.ca_pem, b"h2").await.unwrap();
            stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first().map(|c| c.as_ref().to_vec()))
                == Some(second.cert_der.clone())
        },
        "the renewed certificate is served"
    );
    // A broken pair on disk is refused; the current one stays.
    write(&dir, "tls.crt", "not a certificate");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let stream = connect(addr, &pki.ca_pem, b"http/1.1").await.unwrap();
    let live = exchange(stream, false, vec![get("/live")]).await;
    assert_eq!(live[0].0, StatusCode::OK);

    // The drain: no new connections, and the server stops.
    running.drain();
    tokio::time::timeout(PATIENCE, running.wait())
        .await
        .expect("the webhook stops after the drain");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}
