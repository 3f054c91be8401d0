//! `CONNECT`: tunnels through the outbound listener (a real TLS session
//! inside, HTTP/1.1 and HTTP/2), their spans and limits, failures, the
//! drain; 405 on the inbound listener, which keeps parsing and guarding the
//! connection afterwards.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::Empty;
use hyper::{body::Incoming, client::conn::http2::SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use super::tracing_common::{metrics, only_span, stored_trace};
use crate::{client::raw, metric_sum, otlp::Otlp, proxy::Proxy, upstream::Upstream, PATIENCE};

/// Bytes read and written through a [`Counted`] stream.
#[derive(Clone, Default)]
struct Tally {
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

/// A stream that adds what passes to a [`Tally`].
struct Counted<T> {
    io: T,
    tally: Tally,
}

/// The response head to a raw `CONNECT`.
struct Head {
    status: u16,
    text: String,
}

impl Tally {
    fn read(&self) -> u64 {
        self.read.load(Ordering::SeqCst)
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = std::task::ready!(Pin::new(&mut self.io).poll_read(cx, buf));
        let n = (buf.filled().len() - before) as u64;
        self.tally.read.fetch_add(n, Ordering::SeqCst);
        Poll::Ready(result)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, buf));
        if let Ok(n) = &result {
            self.tally.written.fetch_add(*n as u64, Ordering::SeqCst);
        }
        Poll::Ready(result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.text.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Sends `CONNECT target` over HTTP/1.1 and reads the response head, byte by
/// byte so that nothing of the tunnel is consumed.
async fn connect_h1(proxy: SocketAddr, target: &str) -> (TcpStream, Head) {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    let req = format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let read = async {
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("CONNECT answered in time");
    let text = String::from_utf8(head).unwrap();
    let status = text[9..12].parse().unwrap();
    (tcp, Head { status, text })
}

/// Sends `CONNECT target` on a new HTTP/2 connection; the sender keeps the
/// connection open.
async fn connect_h2(
    proxy: SocketAddr,
    target: &str,
) -> (SendRequest<Empty<Bytes>>, Response<Incoming>) {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(target)
        .version(Version::HTTP_2)
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(PATIENCE, send.send_request(req))
        .await
        .expect("CONNECT answered in time")
        .unwrap();
    (send, resp)
}

/// A TCP server that echoes one connection until the client closes it,
/// then closes; yields what it read and wrote.
async fn tcp_echo() -> (SocketAddr, JoinHandle<Tally>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tally = Tally::default();
        let (mut r, mut w) = tokio::io::split(Counted {
            io: tcp,
            tally: tally.clone(),
        });
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
        tally
    });
    (addr, task)
}

/// A CA and a `localhost` certificate it signed: (CA PEM, cert PEM, key PEM).
fn certificates() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "sidetrace tunnel test CA");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// An HTTPS server for one connection: it answers every request with
/// `hello over TLS: <path>` and yields the bytes it read and wrote on the
/// wire once the client has closed.
async fn https_server(cert: &str, key: &str) -> (SocketAddr, JoinHandle<Tally>) {
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            CertificateDer::pem_slice_iter(cert.as_bytes())
                .map(Result::unwrap)
                .collect(),
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tally = Tally::default();
        let counted = Counted {
            io: tcp,
            tally: tally.clone(),
        };
        let tls = acceptor.accept(counted).await.unwrap();
        let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
            let body = format!("hello over TLS: {}", req.uri().path());
            Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                Bytes::from(body),
            )))
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tls), svc)
            .await
            .unwrap();
        tally
    });
    (addr, task)
}

/// Reads until `want` has arrived, within [`PATIENCE`].
async fn read_until(io: &mut (impl AsyncRead + Unpin), want: &str) -> String {
    let mut seen = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(want) {
            let n = io.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before {want:?}: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .unwrap_or_else(|_| panic!("{want:?} never came"));
    String::from_utf8(seen).unwrap()
}

/// Reads to the end of the stream, within [`PATIENCE`].
async fn read_to_eof(io: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, io.read_to_end(&mut rest))
        .await
        .expect("the tunnel closed in time")
        .unwrap();
    rest
}

fn attr<'a>(span: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    &span["attributes"][key]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_through_an_outbound_tunnel() {
    let (ca, cert, key) = certificates();
    let (target, server) = https_server(&cert, &key).await;
    let proxy = Proxy::builder()
        .upstream(format!("http://{}", Upstream::dead().await))
        .outbound()
        .run()
        .await;
    let opened = unix_nanos();
    let (tcp, head) = connect_h1(proxy.outbound.unwrap(), &target.to_string()).await;
    assert_eq!(head.status, 200, "{}", head.text);
    let trace_id = head.header("x-trace-id").expect("x-trace-id").to_string();

    // A real TLS session inside, from here on counted as the app sees it.
    let client = Tally::default();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let counted = Counted {
        io: tcp,
        tally: client.clone(),
    };
    let handshake = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), counted);
    let mut tls = tokio::time::timeout(PATIENCE, handshake)
        .await
        .expect("TLS handshake in time")
        .expect("the target's certificate verifies through the tunnel");
    tls.write_all(b"GET /inside HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until(&mut tls, "hello over TLS: /inside").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The tunnel stays open, idle, before the app closes it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let closing = unix_nanos();
    tls.shutdown().await.unwrap();
    read_to_eof(&mut tls).await;
    let server = tokio::time::timeout(PATIENCE, server)
        .await
        .expect("the target saw the tunnel close")
        .unwrap();

    let trace = stored_trace(&proxy, &trace_id).await;
    let span = only_span(&trace);
    assert_eq!(span["kind"], "CLIENT", "{span}");
    assert_eq!(span["status"], "UNSET", "{span}");
    assert_eq!(attr(span, "http.request.method"), "CONNECT");
    assert_eq!(attr(span, "http.response.status_code"), 200);
    assert_eq!(attr(span, "server.address"), "127.0.0.1");
    assert_eq!(attr(span, "server.port"), target.port());
    assert!(attr(span, "url.path").is_null(), "no L7 detail: {span}");
    assert_eq!(attr(span, "network.peer.address"), "127.0.0.1");
    assert_eq!(attr(span, "network.peer.port"), target.port());
    // Both ends agree with the span on every byte of the TLS session.
    assert!(client.written() > 0 && client.read() > 0);
    assert_eq!(attr(span, "sidetrace.tunnel.bytes_sent"), client.written());
    assert_eq!(client.written(), server.read());
    assert_eq!(attr(span, "sidetrace.tunnel.bytes_received"), client.read());
    assert_eq!(client.read(), server.written());
    // The span covers the whole tunnel, not just the 200.
    let start = span["start_unix_nanos"].as_u64().unwrap();
    let end = span["end_unix_nanos"].as_u64().unwrap();
    assert!(start >= opened && end >= closing, "{span}");
    assert!(span["duration_ms"].as_f64().unwrap() >= 300.0, "{span}");

    let text = metrics(&proxy).await;
    let connect = [
        ("http_request_method", "CONNECT"),
        ("http_response_status_code", "200"),
    ];
    let name = "http_client_request_duration_seconds";
    assert_eq!(
        metric_sum(&text, &format!("{name}_count"), &connect),
        1.0,
        "{text}"
    );
    assert!(metric_sum(&text, &format!("{name}_sum"), &connect) >= 0.3);
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_connect_tunnels_both_ways() {
    let (target, echo) = tcp_echo().await;
    let proxy = Proxy::builder()
        .upstream(format!("http://{}", Upstream::dead().await))
        .outbound()
        .run()
        .await;
    let (conn, mut resp) = connect_h2(proxy.outbound.unwrap(), &target.to_string()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let trace_id = resp.headers()["x-trace-id"].to_str().unwrap().to_string();
    let upgraded = tokio::time::timeout(PATIENCE, hyper::upgrade::on(&mut resp))
        .await
        .expect("upgraded in time")
        .expect("an HTTP/2 CONNECT stream becomes a tunnel");
    let mut tunnel = TokioIo::new(upgraded);
    let payload = vec![b'x'; 1000];
    tunnel.write_all(&payload).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(PATIENCE, tunnel.read_exact(&mut back))
        .await
        .expect("echoed in time")
        .unwrap();
    assert_eq!(back, payload);
    tunnel.shutdown().await.unwrap();
    assert!(read_to_eof(&mut tunnel).await.is_empty());
    let echo = tokio::time::timeout(PATIENCE, echo).await.unwrap().unwrap();
    assert_eq!((echo.read(), echo.written()), (1000, 1000));

    let trace = stored_trace(&proxy, &trace_id).await;
    let span = only_span(&trace);
    assert_eq!(span["kind"], "CLIENT", "{span}");
    assert_eq!(attr(span, "network.protocol.version"), "2");
    assert_eq!(attr(span, "http.request.method"), "CONNECT");
    assert_eq!(attr(span, "server.port"), target.port());
    assert_eq!(attr(span, "sidetrace.tunnel.bytes_sent"), 1000);
    assert_eq!(attr(span, "sidetrace.tunnel.bytes_received"), 1000);
    // The outbound listener drains once the app has closed its connections.
    drop((tunnel, conn));
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_looping_targets_are_refused() {
    let proxy = Proxy::builder()
        .upstream(format!("http://{}", Upstream::dead().await))
        .outbound()
        .run()
        .await;
    let outbound = proxy.outbound.unwrap();
    let closed = Upstream::dead().await;
    let (tcp, head) = connect_h1(outbound, &closed.to_string()).await;
    drop(tcp);
    assert_eq!(head.status, 502, "{}", head.text);
    assert_eq!(head.header("x-sidetrace-error"), Some("NETWORK"));
    let trace = stored_trace(&proxy, head.header("x-trace-id").unwrap()).await;
    let span = only_span(&trace);
    assert_eq!(span["status"], "ERROR", "{span}");
    assert_eq!(attr(span, "error.type"), "connect_error");

    for own in [
        outbound.to_string(),
        format!("localhost:{}", outbound.port()),
    ] {
        let (tcp, head) = connect_h1(outbound, &own).await;
        drop(tcp);
        assert_eq!(head.status, 400, "{own} is a loop: {}", head.text);
        assert_eq!(head.header("x-sidetrace-error"), Some("VALIDATION"));
    }
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_refuses_connect_and_keeps_guarding_the_connection() {
    let up = Upstream::http1_only().await;
    let proxy = Proxy::builder().upstream(up.url()).run().await;
    let connect = "CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n";

    // A request pipelined behind the refused CONNECT is still answered.
    let get = "GET /headers HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n";
    let out = raw(proxy.inbound, format!("{connect}{get}").as_bytes()).await;
    assert!(
        out.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{out}"
    );
    assert!(out.contains("x-sidetrace-error: VALIDATION\r\n"), "{out}");
    assert!(out.contains("CONNECT is served by the outbound listener only"));
    assert!(out.contains("only\nHTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.ends_with("legacy GET /headers 0"), "{out}");
    assert_eq!(up.count(), 1, "the app saw the GET, not the CONNECT");

    // ... and still guarded: conflicting framing behind it is refused.
    let smuggle = "POST / HTTP/1.1\r\nhost: app\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
    let out = raw(proxy.inbound, format!("{connect}{smuggle}").as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    assert!(out.contains("\nHTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert_eq!(up.count(), 1, "nothing reached the app");

    // HTTP/2: a plain CONNECT stream gets the same answer.
    let (_conn, resp) = connect_h2(proxy.inbound, "example.com:443").await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["x-sidetrace-error"], "VALIDATION");
    assert_eq!(up.count(), 1, "nothing reached the app");

    let text = metrics(&proxy).await;
    let refused = [
        ("http_request_method", "CONNECT"),
        ("http_response_status_code", "405"),
        ("failure_category", "VALIDATION"),
    ];
    assert_eq!(
        metric_sum(
            &text,
            "http_server_request_duration_seconds_count",
            &refused
        ),
        3.0,
        "{text}"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_tunnels_count_against_limits_and_close_with_the_drain() {
    let (target, echo) = tcp_echo().await;
    let app = Upstream::echo().await;
    let otlp = Otlp::grpc().run().await;
    let yaml = format!(
        "drain_timeout: 1s\nlimits: {{ max_requests_in_flight: 1 }}\ntracing:\n  export: {{ endpoint: {}, protocol: grpc }}\n",
        otlp.endpoint()
    );
    let proxy = Proxy::from_yaml(&yaml)
        .upstream(app.url())
        .outbound()
        .run()
        .await;
    let outbound = proxy.outbound.unwrap();
    let (mut tunnel, head) = connect_h1(outbound, &target.to_string()).await;
    assert_eq!(head.status, 200, "{}", head.text);
    tunnel.write_all(b"ping").await.unwrap();
    read_until(&mut tunnel, "ping").await;

    // The upgraded connection is still one of the listener's ...
    let text = metrics(&proxy).await;
    let open = [("listener", "outbound")];
    assert_eq!(
        metric_sum(&text, "sidetrace_connections_open", &open),
        1.0,
        "{text}"
    );
    // ... and the tunnel one of its requests in flight.
    let get = format!(
        "GET /headers HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
        app.addr
    );
    let out = raw(outbound, get.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");

    // The drain lets the app use its tunnel until shortly before the
    // deadline, then closes it and flushes its span.
    let drained = tokio::time::Instant::now();
    proxy.drain();
    assert!(read_to_eof(&mut tunnel).await.is_empty());
    let closed_after = drained.elapsed();
    assert!(
        closed_after >= Duration::from_millis(800),
        "closed {closed_after:?} into a 1 s drain"
    );
    let joined = tokio::task::spawn_blocking(move || proxy.join());
    tokio::time::timeout(PATIENCE, joined)
        .await
        .expect("the drain ends despite the open tunnel")
        .unwrap();
    let echo = tokio::time::timeout(PATIENCE, echo).await.unwrap().unwrap();
    assert_eq!((echo.read(), echo.written()), (4, 4));
    let spans = otlp
        .wait_until("the tunnel's span", |spans| {
            spans
                .iter()
                .any(|s| s.str("http.request.method") == Some("CONNECT"))
        })
        .await;
    let span = spans
        .iter()
        .find(|s| s.str("http.request.method") == Some("CONNECT"))
        .unwrap();
    assert_eq!(span.int("sidetrace.tunnel.bytes_sent"), Some(4));
    assert_eq!(span.int("sidetrace.tunnel.bytes_received"), Some(4));
    otlp.shutdown().await;
}
