//! Graceful drain: readiness flips, in-flight requests finish.

use http::StatusCode;

use crate::{client::Client, proxy::Proxy, upstream::Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_flips_ready_and_lets_in_flight_requests_finish() {
    let up = Upstream::echo().await;
    let proxy = Proxy::builder().upstream(up.url()).run().await;
    let admin = Client::http1();
    assert_eq!(
        admin.get(&proxy.admin_url("/ready")).await.status,
        StatusCode::OK
    );

    let h1 = Client::http1();
    let h2 = Client::h2c();
    let slow_h1 = tokio::spawn({
        let url = proxy.url("/slow?delay_ms=1500");
        async move { h1.get(&url).await }
    });
    let slow_h2 = tokio::spawn({
        let url = proxy.url("/slow?delay_ms=1500");
        async move { h2.get(&url).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    proxy.drain();
    crate::assert_eventually!(
        admin.get(&proxy.admin_url("/ready")).await.status == StatusCode::SERVICE_UNAVAILABLE,
        "/ready turns 503 while draining"
    );
    assert!(
        tokio::net::TcpStream::connect(proxy.inbound).await.is_err(),
        "the inbound listener stopped accepting"
    );
    let h1 = slow_h1.await.unwrap();
    assert_eq!(
        h1.status,
        StatusCode::OK,
        "in-flight HTTP/1 request completed"
    );
    assert_eq!(
        h1.headers["connection"], "close",
        "HTTP/1 responses carry Connection: close"
    );
    assert_eq!(
        slow_h2.await.unwrap().status,
        StatusCode::OK,
        "in-flight h2 request completed"
    );
    proxy.join();
}
