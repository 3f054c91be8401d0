//! `/metrics` read by a person: every family explained, no zero series for
//! methods and schemes that were never seen.

use crate::{client::Client, proxy::Proxy, upstream::Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_has_help_and_only_seen_methods_have_series() {
    let up = Upstream::echo().await;
    let proxy = Proxy::builder().upstream(up.url()).outbound().run().await;
    let client = Client::http1();
    client.get(&proxy.url("/a")).await;
    client
        .send(
            client
                .request("POST", &proxy.url("/b"))
                .body("hello".into())
                .unwrap(),
        )
        .await;
    let outbound = proxy.outbound.expect("outbound listener");
    // Its own client, closed before the drain: the outbound listener waits
    // for the app's connections to close.
    let app = Client::http1();
    app.send(
        app.request("GET", &format!("http://{outbound}/headers"))
            .header("host", up.addr.to_string())
            .body(Default::default())
            .unwrap(),
    )
    .await;
    drop(app);
    let text = client.get(&proxy.admin_url("/metrics")).await.text();

    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(families.len() > 10, "{text}");
    for family in &families {
        let help = format!("# HELP {family} ");
        let line = text.lines().find(|l| l.starts_with(&help));
        assert!(
            line.is_some_and(|l| l.len() > help.len() + 10),
            "{family} has no help text:\n{text}"
        );
    }

    let active: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_server_active_requests{"))
        .collect();
    assert_eq!(active.len(), 2, "GET and POST over http only: {active:?}");
    assert!(
        active.iter().all(|l| l.contains("url_scheme=\"http\"")),
        "{active:?}"
    );
    assert!(!text.contains("http_request_method=\"PATCH\""), "{text}");
    proxy.shutdown();
}
