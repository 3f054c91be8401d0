//! Per-route policy: each route runs its own chain (or the default one, or
//! both), chosen by the route matched once per request; a reload keeps the
//! state of every filter whose config and position did not change; `/config`
//! shows the generation in force.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::tracing_common::metrics;
use crate::{assert_eventually, client::Client, metric_sum, proxy::Proxy, upstream::Upstream};

/// The default chain marks its responses, so a test sees which chain ran.
const POLICY: &str = "\
filters:
  - headers: { response_add: { x-chain: default } }
routes:
  - prefix: /checkout
    name: checkout
    filters:
      - timeout: { request: 200ms }
  - prefix: /catalog
    name: catalog
    method: GET
    inherit: true
    filters:
      - rate_limit: { per_second: 1, burst: 2 }
      - retry: { attempts: 2, on: [503], backoff: 1ms }
  - prefix: /healthz
    name: healthz
    sample: never
    filters: []
";

/// Hits per path of an app where `/checkout` takes 3 s and every other
/// `/catalog` attempt fails with 503 (the first of each pair).
#[derive(Default)]
struct Hits {
    checkout: AtomicUsize,
    catalog: AtomicUsize,
}

async fn app() -> (Upstream, Arc<Hits>) {
    let hits = Arc::new(Hits::default());
    let seen = hits.clone();
    let up = Upstream::http1_app(move |req: http::Request<hyper::body::Incoming>| {
        let hits = seen.clone();
        async move {
            let path = req.uri().path();
            let mut status = StatusCode::OK;
            if path.starts_with("/checkout") {
                hits.checkout.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            } else if path.starts_with("/catalog")
                && hits.catalog.fetch_add(1, Ordering::SeqCst) % 2 == 0
            {
                status = StatusCode::SERVICE_UNAVAILABLE;
            }
            let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
            *res.status_mut() = status;
            res
        }
    })
    .await;
    (up, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_runs_its_own_chain() {
    let (up, hits) = app().await;
    let proxy = Proxy::from_yaml(POLICY).upstream(up.url()).run().await;
    let client = Client::http1();
    let chain = |r: &crate::client::Collected| {
        r.headers
            .get("x-chain")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    };

    // /checkout: its own timeout, no retry, not the default chain.
    let res = client.get(&proxy.url("/checkout/pay")).await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        hits.checkout.load(Ordering::SeqCst),
        1,
        "one upstream attempt"
    );
    assert_eq!(chain(&res), None, "a route with filters runs only its own");

    // /catalog: retried past the flaky upstream, inside the default chain.
    let res = client.get(&proxy.url("/catalog/items")).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        hits.catalog.load(Ordering::SeqCst),
        2,
        "a 503, then a retry"
    );
    assert_eq!(chain(&res).as_deref(), Some("default"), "inherit: true");
    // ... and rate limited: a burst of 2 at 1/s cannot admit 10 at once.
    let mut limited = None;
    for _ in 0..10 {
        let res = client.get(&proxy.url("/catalog/items")).await;
        if res.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(res);
            break;
        }
        assert_eq!(res.status, StatusCode::OK);
    }
    let limited = limited.expect("a burst on /catalog gets a 429");
    assert!(
        limited.headers.contains_key("retry-after"),
        "{:?}",
        limited.headers
    );
    // Another method is not the route: the default chain, no limit.
    let res = client
        .send(
            client
                .request("POST", &proxy.url("/catalog/items"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(chain(&res).as_deref(), Some("default"));

    // /healthz: no filters at all, never limited, never sampled.
    for _ in 0..20 {
        let res = client.get(&proxy.url("/healthz")).await;
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(chain(&res), None);
    }
    // An unmatched path runs the default chain, unlimited.
    for _ in 0..20 {
        let res = client.get(&proxy.url("/other")).await;
        assert_eq!(
            (res.status, chain(&res).as_deref()),
            (StatusCode::OK, Some("default"))
        );
    }
    let text = metrics(&proxy).await;
    assert_eq!(
        metric_sum(
            &text,
            "sidetrace_sampling_decisions_total",
            &[("reason", "route_never")]
        ),
        20.0,
        "{text}"
    );
    let route_label = |route: &str| {
        metric_sum(
            &text,
            "sidetrace_filter_rate_limited_total",
            &[("route", route), ("filter", "filters[0].rate_limit")],
        )
    };
    assert_eq!(
        route_label("catalog"),
        1.0,
        "the route's filters are labelled with it"
    );
    proxy.shutdown();
}

/// The breaker of `/catalog` (opens after 2 failures, for a minute) and a
/// `/checkout` timeout of `checkout`.
fn breaker_policy(checkout: &str, open_for: &str) -> String {
    format!(
        "routes:\n  - prefix: /checkout\n    name: checkout\n    filters:\n      - timeout: {{ request: {checkout} }}\n  \
         - prefix: /catalog\n    name: catalog\n    filters:\n      - timeout: {{ request: 5s }}\n      \
         - circuit_breaker: {{ failure_ratio: 0.5, min_requests: 2, open_for: {open_for}, window: 60s }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_state_of_unchanged_filters() {
    let dir = std::env::temp_dir().join(format!("sidetrace-routes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sidetrace.yaml");
    let up = Upstream::echo().await;
    let proxy = Proxy::from_yaml(&breaker_policy("1s", "60s"))
        .config_file(&path)
        .upstream(up.url())
        .run()
        .await;
    let client = Client::http1();
    let config = || async { client.get(&proxy.admin_url("/config")).await.json() };
    let admin_metrics = proxy.admin_url("/metrics");
    let reloads = |result: &'static str| {
        let url = admin_metrics.clone();
        async move {
            let text = Client::http1().get(&url).await.text();
            metric_sum(
                &text,
                "sidetrace_config_reloads_total",
                &[("result", result)],
            )
        }
    };
    assert_eq!(config().await["generation"], 1);

    // Open the breaker: two failures from the app.
    for _ in 0..2 {
        let res = client.get(&proxy.url("/catalog?status=503")).await;
        assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let open = client.get(&proxy.url("/catalog?status=200")).await;
    assert_eq!(
        open.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the breaker answers"
    );

    // A change to /checkout only: /catalog's breaker stays open.
    std::fs::write(&path, breaker_policy("2s", "60s")).unwrap();
    assert_eventually!(reloads("success").await >= 1.0, "the reload was accepted");
    let live = config().await;
    assert_eq!(live["generation"], 2, "{live:#}");
    assert_eq!(
        live["routes"][0]["filters"][0]["timeout"]["request"], "2s",
        "/config shows the new value: {live:#}"
    );
    let res = client.get(&proxy.url("/catalog?status=200")).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE, "still open");

    // A bad file: nothing changes, /config included.
    std::fs::write(&path, breaker_policy("2s", "soon")).unwrap();
    assert_eventually!(reloads("failure").await >= 1.0, "the bad file was counted");
    assert_eq!(config().await, live, "a rejected reload keeps the view");
    let res = client.get(&proxy.url("/catalog?status=200")).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE, "still open");

    // A change to the breaker itself: a new breaker, closed.
    std::fs::write(&path, breaker_policy("2s", "61s")).unwrap();
    assert_eventually!(
        reloads("success").await >= 2.0,
        "the second reload was accepted"
    );
    assert_eq!(config().await["generation"], 3);
    let res = client.get(&proxy.url("/catalog?status=200")).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "the rebuilt breaker starts closed"
    );
    proxy.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
