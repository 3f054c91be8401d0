//! Helpers shared by the tracing tests.

use crate::{assert_eventually, client::Client, proxy::Proxy};

/// A W3C trace id used as the caller's.
pub(crate) const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// A W3C span id used as the caller's.
pub(crate) const PARENT: &str = "00f067aa0ba902b7";

/// The proxy's Prometheus exposition.
pub(crate) async fn metrics(proxy: &Proxy) -> String {
    Client::http1()
        .get(&proxy.admin_url("/metrics"))
        .await
        .text()
}

/// The first value of header `name` the echo app saw, from its `/headers`
/// JSON.
pub(crate) fn seen(echo: &serde_json::Value, name: &str) -> Option<String> {
    echo["headers"][name][0].as_str().map(str::to_string)
}

/// Splits a version-00 `traceparent` into (trace id, span id, flags).
pub(crate) fn traceparent(v: &str) -> (String, String, String) {
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {v:?}");
    assert_eq!(parts[0], "00", "traceparent {v:?}");
    assert_eq!(parts[1].len(), 32, "traceparent {v:?}");
    assert_eq!(parts[2].len(), 16, "traceparent {v:?}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// One trace from the embedded store, waiting for the pipeline to hand it
/// over (a partial batch goes after 1 s).
pub(crate) async fn stored_trace(proxy: &Proxy, trace_id: &str) -> serde_json::Value {
    let client = Client::http1();
    let url = proxy.admin_url(&format!("/debug/traces/{trace_id}"));
    let mut last: String;
    assert_eventually!(
        {
            let resp = client.get(&url).await;
            last = resp.text();
            resp.status == http::StatusCode::OK
        },
        "trace {trace_id} never reached the embedded store: {last}"
    );
    serde_json::from_str(&last).unwrap()
}

/// The trace's single span, from a `/debug/traces/{id}` document.
pub(crate) fn only_span(trace: &serde_json::Value) -> &serde_json::Value {
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 1, "{trace}");
    &spans[0]
}

/// A UUID (8-4-4-4-12) of a 32-hex trace id.
pub(crate) fn uuid(trace_id: &str) -> String {
    let t = trace_id;
    format!(
        "{}-{}-{}-{}-{}",
        &t[0..8],
        &t[8..12],
        &t[12..16],
        &t[16..20],
        &t[20..32]
    )
}
