//! The receiver over TLS: rustls with a certificate from a test CA,
//! optionally requiring client certificates, serving the same gRPC or HTTP
//! receiver through hyper-util's auto builder (tonic is built without TLS).
//!
//! Both receivers accept ALPN `h2` and `http/1.1`, `h2` preferred, as most
//! collectors do: the protocol a connection negotiated shows what the
//! exporter offered.

use std::{convert::Infallible, sync::atomic::Ordering, sync::Arc, time::Duration};

use http::Request;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use rustls::{server::WebPkiClientVerifier, RootCertStore, ServerConfig};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::{net::TcpListener, sync::oneshot};
use tokio_rustls::TlsAcceptor;

use super::{http_server::handle_http, signal::grpc_routes, Protocol, Shared};
use crate::pki::Leaf;

/// How long a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The receiver's certificate and, for mTLS, the CA its clients need.
#[derive(Clone, Debug)]
pub(super) struct TlsOptions {
    pub(super) cert_pem: String,
    pub(super) key_pem: String,
    pub(super) client_ca: Option<String>,
}

/// One TLS connection the receiver accepted.
#[derive(Clone, Debug)]
pub struct TlsConnection {
    /// The negotiated ALPN protocol, if any.
    pub alpn: Option<String>,
    /// DER of the client's certificate, when it presented one.
    pub client_cert: Option<Vec<u8>>,
}

// === impl TlsOptions ===

impl TlsOptions {
    pub(super) fn new(leaf: &Leaf) -> Self {
        Self {
            cert_pem: leaf.cert_pem.clone(),
            key_pem: leaf.key_pem.clone(),
            client_ca: None,
        }
    }

    fn acceptor(&self) -> TlsAcceptor {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        let builder = ServerConfig::builder();
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    roots.add(cert.unwrap()).unwrap();
                }
                let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

/// Accepts TLS on `listener` until `stop`, serving `protocol`'s receiver.
pub(super) async fn serve(
    listener: TcpListener,
    options: TlsOptions,
    protocol: Protocol,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let acceptor = options.acceptor();
    // Both services on one connection, routed by path, as a collector does.
    let grpc = grpc_routes(&shared);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => continue },
        };
        let (acceptor, shared, grpc) = (acceptor.clone(), shared.clone(), grpc.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                _ => {
                    shared.handshake_failures.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            };
            let (_, session) = tls.get_ref();
            let connection = TlsConnection {
                alpn: session
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned()),
                client_cert: session
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.to_vec()),
            };
            shared.tls_connections.send_modify(|c| c.push(connection));
            let builder = auto::Builder::new(TokioExecutor::new());
            let io = TokioIo::new(tls);
            let _ = match protocol {
                Protocol::Grpc => {
                    // tonic's generated server is a tower service over any body.
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let mut grpc = grpc.clone();
                        tonic::codegen::Service::call(&mut grpc, req)
                    });
                    builder.serve_connection(io, svc).await
                }
                Protocol::HttpProtobuf => {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle_http(&shared, req).await) }
                    });
                    builder.serve_connection(io, svc).await
                }
            };
        });
    }
}
