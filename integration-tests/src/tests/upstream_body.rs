//! Upstreams that do not take the request body, and keep-alive connections
//! the upstream closed while they were idle in the proxy's pool.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{client::Client, proxy::Proxy};

/// An app that reads a request head and then never reads again: `/early`
/// answers 413 at once, anything else gets no answer. Sockets are held
/// until the test ends.
async fn app_that_never_reads_bodies() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match tokio::time::timeout(crate::PATIENCE, s.read(&mut byte)).await {
                    Ok(Ok(1)) => head.push(byte[0]),
                    _ => break,
                }
            }
            if head.starts_with(b"POST /early ") {
                let _ = s
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
            held.push(s);
        }
    });
    addr
}

/// Sends a 32 MiB POST to `path`; returns the status (or the error) and how
/// long it took, bounded by [`crate::PATIENCE`].
async fn big_post(client: &Client, url: String) -> (String, Duration) {
    let started = Instant::now();
    let req = client
        .request("POST", &url)
        .body(Full::new(Bytes::from(vec![b'x'; 32 << 20])))
        .unwrap();
    let inner = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(req.version() == http::Version::HTTP_2)
        .build_http::<Full<Bytes>>();
    let outcome = match tokio::time::timeout(crate::PATIENCE, inner.request(req)).await {
        Err(_) => "no answer in 20 s".to_string(),
        Ok(Err(e)) => format!("error: {e}"),
        Ok(Ok(resp)) => {
            let status = resp.status();
            let error = resp
                .headers()
                .get("x-sidetrace-error")
                .map(|v| format!(" {}", v.to_str().unwrap_or("?")))
                .unwrap_or_default();
            let _ = tokio::time::timeout(crate::PATIENCE, resp.into_body().collect()).await;
            format!("{}{error}", status.as_u16())
        }
    };
    (outcome, started.elapsed())
}

/// A 32 MiB POST to an app that never reads the body: the proxy must not
/// wait forever for the body to be taken. With `response_head_timeout: 1s`
/// the request ends with 504 `NETWORK`; an app that answers 413 without
/// reading has its answer forwarded. HTTP/1.1 and h2c clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_reads_the_body_cannot_hang_the_request() {
    let app = app_that_never_reads_bodies().await;
    let proxy = Proxy::from_yaml(
        "limits: { response_head_timeout: 1s }\ninbound: { upstream_protocol: http1 }\n",
    )
    .upstream(format!("http://{app}"))
    .run()
    .await;
    let mut seen = Vec::new();
    for (name, client) in [("HTTP/1.1", Client::http1()), ("h2c", Client::h2c())] {
        for path in ["/never", "/early"] {
            let (outcome, took) = big_post(&client, proxy.url(path)).await;
            seen.push(format!(
                "{name} {path}: {outcome} after {:.2} s",
                took.as_secs_f64()
            ));
        }
    }
    // Nothing is left holding a connection: the app's sockets stay open,
    // so the proxy must close its side of them.
    let admin = proxy.admin_url("/metrics");
    let open = |text: &str, name: &str| crate::metric_sum(text, name, &[("listener", "inbound")]);
    crate::assert_eventually!(
        open(
            &Client::http1().get(&admin).await.text(),
            "sidetrace_upstream_connections_open"
        ) == 0.0,
        "the connections to the app that stopped reading are closed"
    );
    let text = Client::http1().get(&admin).await.text();
    seen.push(format!(
        "then {} connections to the app and {} client connections open",
        open(&text, "sidetrace_upstream_connections_open"),
        open(&text, "sidetrace_connections_open")
    ));
    let report = seen.join("; ");
    crate::report::record(&crate::report::Row {
        key: "24-upstream-never-reads-body",
        situation: "32 MiB POST to an app that reads the head and never the body: it never answers (/never), or answers 413 at once (/early); response_head_timeout 1s; HTTP/1.1 and h2c clients",
        expected: "never a hang: /never ends with 504 NETWORK once the app has taken no body bytes for response_head_timeout; /early's 413 reaches the client; the proxy closes its connections to the app (they would wait for the socket forever)",
        measured: report.clone(),
    });
    for line in seen.iter().filter(|l| l.contains(": ")) {
        assert!(!line.contains("no answer"), "{report}");
        if line.contains("/never") {
            assert!(line.contains(": 504 NETWORK"), "{report}");
        } else {
            assert!(line.contains(": 413"), "{report}");
        }
    }
    proxy.shutdown();
}
