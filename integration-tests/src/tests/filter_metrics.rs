//! Filter metrics move when their filter acts: a timeout fires, a rate
//! limit answers 429, a concurrency limit sheds, a retry is sent or its
//! budget refuses it, a circuit breaker opens and answers for the upstream.

use http::StatusCode;

use super::tracing_common::metrics;
use crate::{client::Client, metric_sum, proxy::Proxy, upstream::Upstream};

/// `sidetrace_filter_<name>` of the inbound chain's filter at `filter`.
fn filter_metric(text: &str, name: &str, filter: &str, extra: &[(&str, &str)]) -> f64 {
    let mut labels = vec![("filter", filter), ("listener", "inbound"), ("route", "")];
    labels.extend_from_slice(extra);
    metric_sum(text, name, &labels)
}

async fn proxy_with(filters: &str, up: &Upstream) -> Proxy {
    Proxy::from_yaml(&format!("filters:\n{filters}"))
        .upstream(up.url())
        .run()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_fired_is_counted() {
    let up = Upstream::echo().await;
    let proxy = proxy_with("  - timeout: { request: 200ms }\n", &up).await;
    let client = Client::http1();
    assert_eq!(client.get(&proxy.url("/fast")).await.status, StatusCode::OK);
    let resp = client.get(&proxy.url("/slow?delay_ms=3000")).await;
    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT);
    let text = metrics(&proxy).await;
    assert_eq!(
        filter_metric(
            &text,
            "sidetrace_filter_timeouts_total",
            "filters[0].timeout",
            &[]
        ),
        1.0,
        "{text}"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_429_and_every_shed_request_is_counted() {
    let up = Upstream::echo().await;
    let proxy = proxy_with("  - rate_limit: { per_second: 1, burst: 2 }\n", &up).await;
    let client = Client::http1();
    let mut limited = 0.0;
    for _ in 0..6 {
        if client.get(&proxy.url("/x")).await.status == StatusCode::TOO_MANY_REQUESTS {
            limited += 1.0;
        }
    }
    assert!(limited >= 3.0, "a burst of 2 at 1/s turns most of 6 away");
    let text = metrics(&proxy).await;
    assert_eq!(
        filter_metric(
            &text,
            "sidetrace_filter_rate_limited_total",
            "filters[0].rate_limit",
            &[]
        ),
        limited,
        "{text}"
    );
    proxy.shutdown();

    let proxy = proxy_with("  - concurrency_limit: { max: 1 }\n", &up).await;
    let slow = {
        let url = proxy.url("/slow?delay_ms=1500");
        tokio::spawn(async move { Client::http1().get(&url).await.status })
    };
    // The slow request holds the only place; wait until the app has it.
    crate::assert_eventually!(
        metric_sum(
            &metrics(&proxy).await,
            "http_server_active_requests",
            &[("http_request_method", "GET")]
        ) >= 1.0,
        "the slow request is in flight"
    );
    let shed = client.get(&proxy.url("/x")).await;
    assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    let text = metrics(&proxy).await;
    assert_eq!(
        filter_metric(
            &text,
            "sidetrace_filter_concurrency_rejected_total",
            "filters[0].concurrency_limit",
            &[]
        ),
        1.0,
        "{text}"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_sent_and_refused_by_the_budget_are_counted() {
    let up = Upstream::echo().await;
    // min_per_second 0 and a 0 % budget: no retry is ever affordable.
    let starved = proxy_with(
        "  - retry: { attempts: 3, on: [503], budget_percent: 0, min_per_second: 0 }\n",
        &up,
    )
    .await;
    let client = Client::http1();
    let resp = client.get(&starved.url("/x?status=503")).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    let text = metrics(&starved).await;
    assert_eq!(
        filter_metric(
            &text,
            "sidetrace_filter_retry_attempts_total",
            "filters[0].retry",
            &[]
        ),
        0.0
    );
    assert_eq!(
        filter_metric(
            &text,
            "sidetrace_filter_retry_budget_exhausted_total",
            "filters[0].retry",
            &[]
        ),
        1.0,
        "{text}"
    );
    starved.shutdown();

    let proxy = proxy_with(
        "  - retry: { attempts: 3, on: [503], min_per_second: 100 }\n",
        &up,
    )
    .await;
    let resp = client.get(&proxy.url("/x?status=503")).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    let text = metrics(&proxy).await;
    assert_eq!(
        filter_metric(
            &text,
            "sidetrace_filter_retry_attempts_total",
            "filters[0].retry",
            &[]
        ),
        2.0,
        "three attempts are two retries: {text}"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opening_and_answering_for_the_upstream_is_counted() {
    let up = Upstream::echo().await;
    let proxy = proxy_with(
        "  - circuit_breaker: { failure_ratio: 0.5, min_requests: 4, open_for: 60s, window: 10s }\n",
        &up,
    )
    .await;
    let client = Client::http1();
    let text = metrics(&proxy).await;
    let state = |text: &str| {
        filter_metric(
            text,
            "sidetrace_filter_circuit_breaker_state",
            "filters[0].circuit_breaker",
            &[],
        )
    };
    assert_eq!(state(&text), 0.0, "closed at start: {text}");
    for _ in 0..4 {
        assert_eq!(
            client.get(&proxy.url("/x?status=503")).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let refused = client.get(&proxy.url("/x")).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers["x-sidetrace-error"], "NETWORK");
    let text = metrics(&proxy).await;
    assert_eq!(state(&text), 2.0, "open: {text}");
    assert_eq!(
        filter_metric(
            &text,
            "sidetrace_filter_circuit_breaker_transitions_total",
            "filters[0].circuit_breaker",
            &[("to", "open")]
        ),
        1.0
    );
    assert_eq!(
        filter_metric(
            &text,
            "sidetrace_filter_circuit_breaker_rejected_total",
            "filters[0].circuit_breaker",
            &[]
        ),
        1.0
    );
    proxy.shutdown();
}
