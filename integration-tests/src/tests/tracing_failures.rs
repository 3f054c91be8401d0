//! Tracing when things go wrong: a collector that is down or stuck must cost
//! requests nothing (drop and count, bounded memory), and a panic becomes a
//! 500 INTERNAL with an `exception` event while the proxy keeps serving.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as Otel;

use super::tracing_common::{metrics, only_span, stored_trace, PARENT};
use crate::{
    assert_eventually, client::Client, metric_sum, otlp::Otlp, proxy::Proxy, upstream::Upstream,
};

/// Resident memory of this test process, in kB.
fn vm_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_costs_requests_nothing() {
    let up = Upstream::echo().await;
    let dead = Upstream::dead().await;
    // A small queue so it fills quickly; a short drain so the final flush
    // to the dead collector gives up soon.
    let yaml = format!(
        "drain_timeout: 2s\ntracing:\n  export: {{ endpoint: http://{dead}, protocol: grpc, batch_size: 100, queue_size: 1000, timeout: 1s }}\n"
    );
    let proxy = Proxy::from_yaml(&yaml).upstream(up.url()).run().await;
    // Warm up (connections, allocator arenas) before the baseline.
    let client = Client::http1();
    assert_eq!(client.load(&proxy.url("/warm"), 200, 32).await, 200);
    let before = vm_rss_kb();
    let total = 10_000;
    assert_eq!(
        client.load(&proxy.url("/x"), total, 32).await,
        total,
        "every request succeeds with the collector down"
    );
    let after = vm_rss_kb();
    // The spans that cannot be exported are dropped, never buffered: the
    // queue holds at most 1000 spans (well under 1 kB each) plus one batch
    // of 100, so the proxy's tracing needs at most a few MB whatever the
    // load. The bound is generous because this is the whole test process
    // (other tests run on other threads meanwhile, and the allocator keeps
    // freed memory): buffering all 10 000 spans with their headers would
    // not exceed it on its own, but unbounded growth across the run would.
    let growth_mb = after.saturating_sub(before) / 1024;
    assert!(
        growth_mb < 100,
        "RSS grew by {growth_mb} MB ({before} kB -> {after} kB)"
    );
    let text = metrics(&proxy).await;
    let dropped = metric_sum(&text, "sidetrace_spans_dropped_total", &[]);
    assert!(dropped > 0.0, "{text}");
    assert!(
        metric_sum(
            &text,
            "sidetrace_spans_dropped_total",
            &[("reason", "queue_full")]
        ) > 0.0,
        "10 000 spans do not fit a queue of 1000 while exports fail: {text}"
    );
    assert_eq!(
        metric_sum(&text, "sidetrace_spans_exported_total", &[]),
        0.0
    );
    assert_eq!(
        metric_sum(
            &text,
            "http_server_request_duration_seconds_count",
            &[("http_response_status_code", "200")]
        ),
        (total + 200) as f64,
        "{text}"
    );
    // Failed batches are counted once their retries run out.
    assert_eventually!(
        metric_sum(
            &metrics(&proxy).await,
            "sidetrace_spans_dropped_total",
            &[("reason", "export_failed")]
        ) >= 100.0,
        "a batch to the dead collector is dropped after its retries"
    );
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_refusing_exports_is_retried_then_dropped() {
    let up = Upstream::echo().await;
    let otlp = Otlp::http().unavailable().run().await;
    let yaml = format!(
        "drain_timeout: 2s\ntracing:\n  export: {{ endpoint: {}, batch_size: 5 }}\n",
        otlp.endpoint()
    );
    let proxy = Proxy::from_yaml(&yaml).upstream(up.url()).run().await;
    let client = Client::http1();
    assert_eq!(client.load(&proxy.url("/x"), 5, 1).await, 5);
    // 5 attempts in all (100 ms doubling backoff), then the batch is dropped.
    assert_eventually!(
        metric_sum(
            &metrics(&proxy).await,
            "sidetrace_spans_dropped_total",
            &[("reason", "export_failed")]
        ) == 5.0,
        "the refused batch is dropped and counted"
    );
    assert_eq!(otlp.attempts(), 5, "503 is retried, 5 attempts in all");
    let text = metrics(&proxy).await;
    assert_eq!(metric_sum(&text, "sidetrace_export_errors_total", &[]), 1.0);
    // The collector comes back: later spans go through.
    otlp.set_mode(crate::otlp::Mode::Ok);
    assert_eq!(client.load(&proxy.url("/y"), 5, 1).await, 5);
    let spans = otlp.wait_for_spans(5).await;
    assert!(spans.iter().all(|s| s.str("url.path") == Some("/y")));
    proxy.shutdown();
    otlp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_collector_does_not_hold_requests() {
    let up = Upstream::echo().await;
    // Every export is held (for a minute, or until released): the pipeline
    // is stuck on its first batch for the whole burst below.
    let otlp = Otlp::http()
        .slow(std::time::Duration::from_secs(60))
        .run()
        .await;
    let yaml = format!(
        "drain_timeout: 5s\ntracing:\n  export: {{ endpoint: {}, batch_size: 5, queue_size: 50, timeout: 90s }}\n",
        otlp.endpoint()
    );
    let proxy = Proxy::from_yaml(&yaml).upstream(up.url()).run().await;
    let client = Client::http1();
    assert_eq!(client.load(&proxy.url("/first"), 5, 1).await, 5);
    assert_eventually!(
        otlp.in_flight() == 1,
        "the first batch reaches the collector and is held"
    );
    let attempts = otlp.attempts();
    assert_eq!(
        client.load(&proxy.url("/burst"), 200, 8).await,
        200,
        "requests complete while the export is stuck"
    );
    assert_eq!(otlp.in_flight(), 1, "the same export is still held");
    assert_eq!(otlp.attempts(), attempts, "no other export started");
    assert!(otlp.spans().is_empty(), "nothing was taken yet");
    let text = metrics(&proxy).await;
    // 200 spans, a queue of 50 and a batcher busy exporting: most are dropped.
    assert!(
        metric_sum(
            &text,
            "sidetrace_spans_dropped_total",
            &[("reason", "queue_full")]
        ) >= 100.0,
        "{text}"
    );
    // The collector catches up: the held batch and the queued spans arrive.
    otlp.set_mode(crate::otlp::Mode::Ok);
    otlp.release();
    let spans = otlp.wait_for_spans(5 + 50).await;
    assert!(spans.iter().any(|s| s.str("url.path") == Some("/first")));
    proxy.shutdown();
    otlp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_a_500_internal_with_an_exception_event() {
    let up = Upstream::echo().await;
    let proxy = Proxy::from_yaml("tracing: { debug_panic_header: x-debug-panic }\n")
        .upstream(up.url())
        .run()
        .await;
    let client = Client::http1();
    let trace = "77777777777777777777777777777777";
    let req = client
        .request("GET", &proxy.url("/boom"))
        .header("x-debug-panic", "1")
        .header("traceparent", format!("00-{trace}-{PARENT}-01"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.send(req).await;
    assert_eq!(resp.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(resp.headers["x-sidetrace-error"], "INTERNAL");
    assert_eq!(resp.headers["x-trace-id"], trace);
    assert_eq!(up.count(), 0, "the request never reached the app");

    let next = client.get(&proxy.url("/after")).await;
    assert_eq!(next.status, StatusCode::OK, "the proxy keeps serving");

    let stored = stored_trace(&proxy, trace).await;
    let s = only_span(&stored);
    assert_eq!(s["status"], "ERROR", "{s}");
    assert_eq!(s["attributes"]["sidetrace.failure.category"], "INTERNAL");
    assert_eq!(s["attributes"]["error.type"], "panic");
    assert_eq!(s["attributes"]["http.response.status_code"], 500);
    let events = s["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["name"] == "exception"),
        "an exception event: {s}"
    );

    // gRPC: the same panic is a trailers-only INTERNAL.
    let h2 = Client::h2c();
    let req = h2
        .request("POST", &proxy.url("/test.Echo/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-debug-panic", "1")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    let resp = h2.send(req).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.headers["grpc-status"], "13");
    assert_eq!(resp.headers["x-sidetrace-error"], "INTERNAL");
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_span_is_exported_with_its_exception() {
    let up = Upstream::echo().await;
    let otlp = Otlp::grpc().run().await;
    let yaml = format!(
        "tracing:\n  debug_panic_header: x-debug-panic\n  export: {{ endpoint: {}, protocol: grpc }}\n",
        otlp.endpoint()
    );
    let proxy = Proxy::from_yaml(&yaml).upstream(up.url()).run().await;
    let client = Client::http1();
    let req = client
        .request("GET", &proxy.url("/boom"))
        .header("x-debug-panic", "yes")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        client.send(req).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let spans = otlp.wait_for_spans(1).await;
    let s = &spans[0];
    assert_eq!(s.status(), Otel::Error);
    assert_eq!(s.str("sidetrace.failure.category"), Some("INTERNAL"));
    let e = s.event("exception").expect("exception event");
    assert!(
        e.attributes.iter().any(|kv| kv.key == "exception.message"),
        "{e:#?}"
    );
    proxy.shutdown();
    otlp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_going_away_mid_body_is_a_cancelled_span() {
    use http_body_util::BodyExt;
    let up = Upstream::echo().await;
    let proxy = Proxy::builder().upstream(up.url()).run().await;
    let trace = "88888888888888888888888888888888";
    let client = Client::h2c();
    let req = client
        .request("GET", &proxy.url("/stream?chunks=50&delay_ms=100"))
        .header("traceparent", format!("00-{trace}-{PARENT}-01"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.send_streaming(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(crate::PATIENCE, body.frame())
        .await
        .expect("a first chunk in time");
    assert!(first.is_some());
    drop(body);
    let stored = stored_trace(&proxy, trace).await;
    let s = only_span(&stored);
    assert_eq!(s["attributes"]["error.type"], "cancelled", "{s}");
    assert!(s["attributes"].get("sidetrace.failure.category").is_none());
    assert_eq!(s["status"], "UNSET", "going away is not a failure");
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_going_away_before_the_head_is_a_cancelled_span() {
    let up = Upstream::echo().await;
    let proxy = Proxy::builder().upstream(up.url()).run().await;
    let trace = "99999999999999999999999999999999";
    let client = Client::h2c();
    let req = client
        .request("GET", &proxy.url("/slow?delay_ms=3000"))
        .header("traceparent", format!("00-{trace}-{PARENT}-01"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    // Give up while the app is still thinking: the h2 stream is reset.
    let gone = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        client.send_streaming(req),
    )
    .await;
    assert!(gone.is_err(), "the app answers after 3 s");
    // The request entered the trace layer (its sampling decision counted) ...
    assert_eventually!(
        metric_sum(
            &metrics(&proxy).await,
            "sidetrace_sampling_decisions_total",
            &[("reason", "parent"), ("decision", "sampled")]
        ) == 1.0,
        "the trace layer saw the request"
    );
    // ... so its span must end, as cancelled, rather than vanish.
    let stored = stored_trace(&proxy, trace).await;
    let s = only_span(&stored);
    assert_eq!(s["attributes"]["error.type"], "cancelled", "{s}");
    assert_eq!(s["status"], "UNSET");
    proxy.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_the_proxy_makes_itself_have_spans() {
    let up = Upstream::echo().await;
    let proxy = Proxy::from_yaml("filters:\n  - timeout: { request: 200ms }\n")
        .upstream(up.url())
        .run()
        .await;
    let resp = Client::http1().get(&proxy.url("/slow?delay_ms=3000")).await;
    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT);
    let trace = resp.headers["x-trace-id"].to_str().unwrap().to_string();
    let stored = stored_trace(&proxy, &trace).await;
    let s = only_span(&stored);
    assert_eq!(s["attributes"]["error.type"], "timeout", "{s}");
    assert_eq!(s["attributes"]["sidetrace.failure.category"], "NETWORK");
    assert_eq!(s["attributes"]["http.response.status_code"], 504);
    assert_eq!(s["status"], "ERROR");
    proxy.shutdown();
}

/// Sends `total` GETs of `path` from 4 keep-alive clients; every one must be
/// a 200. Returns the latencies' p99.
async fn p99_of(proxy: &Proxy, path: &str, total: usize) -> std::time::Duration {
    let url = proxy.url(path);
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..4 {
        let (next, url) = (next.clone(), url.clone());
        handles.push(tokio::spawn(async move {
            let client = Client::http1();
            let mut took = Vec::new();
            while next.fetch_add(1, Ordering::SeqCst) < total {
                let start = std::time::Instant::now();
                assert_eq!(client.get(&url).await.status, StatusCode::OK);
                took.push(start.elapsed());
            }
            took
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort();
    all[(all.len() * 99 / 100).min(all.len() - 1)]
}

/// One proxy, one collector going through faults: up, refusing every export
/// (gRPC UNAVAILABLE), holding every export (stuck), then up again. Requests
/// are all answered whatever the collector does, spans beyond the queue are
/// dropped and counted, and export resumes by itself. The p99 of each phase
/// is recorded for docs/reliability.md (a figure, not an assertion: timings
/// of a shared test machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_faults_cost_requests_nothing_and_export_resumes() {
    use crate::otlp::Mode;
    let up = Upstream::echo().await;
    let otlp = Otlp::grpc().run().await;
    let yaml = format!(
        "drain_timeout: 2s\ntracing:\n  export: {{ endpoint: {}, protocol: grpc, batch_size: 50, queue_size: 200, timeout: 60s }}\n",
        otlp.endpoint()
    );
    let proxy = Proxy::from_yaml(&yaml).upstream(up.url()).run().await;
    let n = 400;
    p99_of(&proxy, "/warm", 100).await;
    let rss_before = vm_rss_kb();
    let healthy = p99_of(&proxy, "/up", n).await;
    otlp.set_mode(Mode::Unavailable);
    let refusing = p99_of(&proxy, "/refused", n).await;
    otlp.set_mode(Mode::Slow(std::time::Duration::from_secs(60)));
    let stuck = p99_of(&proxy, "/stuck", n).await;
    let rss_during = vm_rss_kb();
    let text = metrics(&proxy).await;
    let queue_full = metric_sum(
        &text,
        "sidetrace_spans_dropped_total",
        &[("reason", "queue_full")],
    );
    assert!(
        queue_full > 0.0,
        "a stuck collector fills the 200-span queue: {text}"
    );
    otlp.set_mode(Mode::Ok);
    otlp.release();
    // The backlog held while the collector was stuck fills the queue; it
    // goes out first (every span so far exported or counted as dropped),
    // then the 50 requests after recovery must all be exported.
    let sent_so_far = (100 + 3 * n) as f64;
    assert_eventually!(
        {
            let text = metrics(&proxy).await;
            metric_sum(&text, "sidetrace_spans_exported_total", &[])
                + metric_sum(&text, "sidetrace_spans_dropped_total", &[])
                >= sent_so_far
        },
        "the backlog is exported or counted once the collector is back"
    );
    let after = p99_of(&proxy, "/after", 50).await;
    assert_eventually!(
        otlp.spans()
            .iter()
            .filter(|s| s.str("url.path") == Some("/after"))
            .count()
            == 50,
        "export resumes by itself once the collector is back"
    );
    let text = metrics(&proxy).await;
    let dropped = metric_sum(&text, "sidetrace_spans_dropped_total", &[]);
    let exported = metric_sum(&text, "sidetrace_spans_exported_total", &[]);
    let ms = |d: std::time::Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    crate::report::record(&crate::report::Row {
        key: "40-collector-faults",
        situation: "collector up, then refusing every export (UNAVAILABLE), then holding every export, then up again; 400 requests per phase from 4 HTTP/1.1 clients, queue 200 spans",
        expected: "every request answered 200 in every phase, requests never wait for the collector (p99 per phase measured), memory bounded by the queue, drops counted, export resumes by itself",
        measured: format!(
            "{} sent, 0 failed; p99 up {}, refusing {}, stuck {}, back up {}; {dropped} spans dropped ({queue_full} queue_full), {exported} exported, the 50 after recovery all exported; test-process RSS {} MB before, {} MB while stuck",
            100 + 3 * n + 50,
            ms(healthy),
            ms(refusing),
            ms(stuck),
            ms(after),
            rss_before / 1024,
            rss_during / 1024
        ),
    });
    proxy.shutdown();
    otlp.shutdown().await;
}
