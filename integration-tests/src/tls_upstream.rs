//! An upstream that speaks only TLS (rustls, ALPN `h2`/`http/1.1` as
//! configured, optional client-certificate verification) and answers with
//! what it saw: protocol, ALPN, `Host`, whether a client certificate came.
//! Also a plain-text listener that records the first bytes it gets, to prove
//! nothing is sent in clear text to an `https://` URL.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use parking_lot::Mutex;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use rustls::{server::WebPkiClientVerifier, RootCertStore, ServerConfig};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::{io::AsyncReadExt, net::TcpListener, sync::oneshot};

use crate::pki::Leaf;

/// A running TLS upstream.
pub struct TlsUpstream {
    /// Its address.
    pub addr: SocketAddr,
    /// DER of the client certificate of each connection that presented one.
    pub client_certs: Arc<Mutex<Vec<Vec<u8>>>>,
    _stop: oneshot::Sender<()>,
}

/// How the TLS upstream is set up.
pub struct TlsUpstreamOptions<'a> {
    /// Its certificate.
    pub leaf: &'a Leaf,
    /// ALPN protocols it accepts, in preference order.
    pub alpn: &'a [&'a [u8]],
    /// When set, clients must present a certificate this CA signed.
    pub client_ca: Option<&'a str>,
}

impl TlsUpstream {
    /// Starts it on 127.0.0.1.
    pub async fn start(options: TlsUpstreamOptions<'_>) -> Self {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(options.leaf.cert_pem.as_bytes())
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_slice(options.leaf.key_pem.as_bytes()).unwrap();
        let builder = ServerConfig::builder();
        let builder = match options.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    roots.add(cert.unwrap()).unwrap();
                }
                builder.with_client_cert_verifier(
                    WebPkiClientVerifier::builder(Arc::new(roots))
                        .build()
                        .unwrap(),
                )
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = options.alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client_certs = Arc::new(Mutex::new(Vec::new()));
        let seen = client_certs.clone();
        let (tx, mut rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = &mut rx => return,
                    accepted = listener.accept() => match accepted {
                        Ok(conn) => conn,
                        Err(_) => continue,
                    },
                };
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (_, session) = tls.get_ref();
                    let alpn = session
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .unwrap_or_default();
                    let client_cert = session
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.to_vec());
                    if let Some(der) = &client_cert {
                        seen.lock().push(der.clone());
                    }
                    let has_cert = client_cert.is_some();
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let alpn = alpn.clone();
                        async move { Ok::<_, Infallible>(answer(&req, &alpn, has_cert)) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            client_certs,
            _stop: tx,
        }
    }

    /// `https://localhost:port`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }
}

fn answer(req: &Request<Incoming>, alpn: &str, client_cert: bool) -> Response<Full<Bytes>> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let body = serde_json::json!({
        "version": format!("{:?}", req.version()),
        "alpn": alpn,
        "host": host,
        "path": req.uri().path(),
        "client_cert": client_cert,
        "authorization": req.headers().get("authorization").and_then(|v| v.to_str().ok()),
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A plain TCP listener that keeps the first bytes of each connection.
pub struct PlainRecorder {
    /// Its address.
    pub addr: SocketAddr,
    /// The first bytes each connection sent.
    pub received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl PlainRecorder {
    /// Starts it; it answers nothing and closes after the first read.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = received.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    if let Ok(n) = tcp.read(&mut buf).await {
                        buf.truncate(n);
                        seen.lock().push(buf);
                    }
                    // Answer like a plain HTTP server would.
                    let _ = tokio::io::AsyncWriteExt::write_all(
                        &mut tcp,
                        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
                    )
                    .await;
                });
            }
        });
        Self { addr, received }
    }
}
