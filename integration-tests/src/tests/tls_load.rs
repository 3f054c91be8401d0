//! TLS handshakes under load: clients that never finish their handshake
//! are closed at `limits.tls_handshake_timeout` and counted, while other
//! clients keep completing handshakes and requests.

use std::time::{Duration, Instant};

use tokio::{io::AsyncWriteExt, net::TcpStream};

use super::tls::{connect, get_n, handshakes, write, Pki};
use crate::{proxy::Proxy, upstream::Upstream, PATIENCE};

fn p99(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get((v.len() * 99 / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// 4 clients each open a new TLS connection per request for 3 s; after the
/// first second, 100 clients connect and send nothing and 100 send the
/// header of a TLS record and stall. The 200 are closed at the 500 ms
/// deadline and counted as `result="timeout"`; the 4 keep being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_time_out_counted_while_others_are_served() {
    let dir = std::env::temp_dir().join(format!("sidetrace-tls-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pki = Pki::new();
    let (cert, key) = pki.leaf("server");
    let config = format!(
        "inbound: {{ tls: {{ cert: {}, key: {} }} }}\nlimits: {{ tls_handshake_timeout: 500ms }}\n",
        write(&dir, "tls.crt", &cert),
        write(&dir, "tls.key", &key)
    );
    let up = Upstream::echo().await;
    let proxy = Proxy::from_yaml(&config).upstream(up.url()).run().await;
    let start = Instant::now();
    let (baseline, end) = (Duration::from_secs(1), Duration::from_secs(3));
    let mut served = Vec::new();
    for _ in 0..4 {
        let (addr, ca) = (proxy.inbound, pki.ca_pem.clone());
        served.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while start.elapsed() < end {
                let at = start.elapsed();
                let t = Instant::now();
                let ok = match connect(addr, &ca, &[b"http/1.1"], None).await {
                    Ok(stream) => get_n(stream, false, "/", 1)
                        .await
                        .is_ok_and(|a| a[0].status == http::StatusCode::OK),
                    Err(_) => false,
                };
                seen.push((at, ok, t.elapsed()));
            }
            seen
        }));
    }
    tokio::time::sleep(baseline).await;
    let mut stalled = Vec::new();
    for i in 0..200 {
        let addr = proxy.inbound;
        stalled.push(tokio::spawn(async move {
            let t = Instant::now();
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            if i % 2 == 1 {
                // A handshake record of 512 bytes, of which only the header comes.
                tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
                    .await
                    .unwrap();
            }
            let mut sink = Vec::new();
            let closed = tokio::time::timeout(
                PATIENCE,
                tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut sink),
            )
            .await;
            assert!(closed.is_ok(), "a stalled handshake was never closed");
            t.elapsed()
        }));
    }
    let mut closed_after = Vec::new();
    for t in stalled {
        closed_after.push(t.await.unwrap());
    }
    let (mut before, mut during, mut failed) = (Vec::new(), Vec::new(), 0);
    for t in served {
        for (at, ok, took) in t.await.unwrap() {
            if !ok {
                failed += 1;
            } else if at < baseline {
                before.push(took);
            } else {
                during.push(took);
            }
        }
    }
    assert_eq!(
        failed, 0,
        "every served client's handshake and request succeeded"
    );
    crate::assert_eventually!(
        handshakes(&proxy, "unknown", "timeout").await == 200.0,
        "every stalled handshake counted as a timeout"
    );
    let ok = handshakes(&proxy, "1.3", "ok").await;
    closed_after.sort();
    crate::report::record(&crate::report::Row {
        key: "38-tls-handshake-timeout",
        situation: "tls_handshake_timeout 500ms: 4 clients open a new TLS connection per request for 3 s; after 1 s, 200 clients connect and stall (100 send nothing, 100 the header of a ClientHello record)",
        expected: "each stalled handshake closed at the deadline and counted in sidetrace_tls_handshakes_total{result=\"timeout\"}; the other clients' handshakes and requests keep succeeding",
        measured: format!(
            "served: {} handshakes + requests, 0 failed, p99 {:.1} ms before the stalled clients, {:.1} ms with them ({} requests); {} stalled handshakes closed after {:.0} ms (median) to {:.0} ms (max), {} counted as timeout; {} counted ok",
            before.len() + during.len(),
            p99(&mut before).as_secs_f64() * 1000.0,
            p99(&mut during).as_secs_f64() * 1000.0,
            during.len(),
            closed_after.len(),
            closed_after[closed_after.len() / 2].as_secs_f64() * 1000.0,
            closed_after[closed_after.len() - 1].as_secs_f64() * 1000.0,
            handshakes(&proxy, "unknown", "timeout").await,
            ok,
        ),
    });
    proxy.shutdown();
}

/// `max_connections` on a TLS listener: a connection over the cap is closed
/// at once, before any handshake (an answer would cost one), and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_over_max_connections_is_closed_and_counted() {
    let dir = std::env::temp_dir().join(format!("sidetrace-tls-cap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pki = Pki::new();
    let (cert, key) = pki.leaf("server");
    let config = format!(
        "inbound: {{ tls: {{ cert: {}, key: {} }} }}\nlimits: {{ max_connections: 2 }}\n",
        write(&dir, "tls.crt", &cert),
        write(&dir, "tls.key", &key)
    );
    let up = Upstream::echo().await;
    let proxy = Proxy::from_yaml(&config).upstream(up.url()).run().await;
    let held = [
        connect(proxy.inbound, &pki.ca_pem, &[b"http/1.1"], None)
            .await
            .unwrap(),
        connect(proxy.inbound, &pki.ca_pem, &[b"http/1.1"], None)
            .await
            .unwrap(),
    ];
    let refused = connect(proxy.inbound, &pki.ca_pem, &[b"http/1.1"], None).await;
    assert!(refused.is_err(), "the third connection was served");
    let admin = proxy.admin_url("/metrics");
    crate::assert_eventually!(
        crate::metric_sum(
            &crate::client::Client::http1().get(&admin).await.text(),
            "sidetrace_connections_rejected_total",
            &[("listener", "inbound"), ("reason", "max_connections")]
        ) == 1.0,
        "the refused TLS connection is counted"
    );
    // The two held connections are still served.
    for stream in held {
        let answers = get_n(stream, false, "/", 1).await.unwrap();
        assert_eq!(answers[0].status, http::StatusCode::OK);
    }
    proxy.shutdown();
}
