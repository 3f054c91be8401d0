//! The per-request cost of tracing on the request path: context extract,
//! sampling, span start/finish, inject, and the whole trace layer around a
//! trivial service (span queued into the bounded channel, access log off).
//!
//! Run: `cargo bench -p sidetrace-filters --bench trace`. OTLP encoding
//! happens in the export task, off the request path; it is measured by the
//! proxy's `export::otlp` encode (see `docs/tracing.md`, "Cost").

// `criterion_group!` defines an undocumented public fn.
#![allow(missing_docs)]

use std::{convert::Infallible, hint::black_box, sync::Arc};

use criterion::{criterion_group, criterion_main, Criterion};
use filters::{
    classify::GrpcCode,
    trace::{
        propagation::{extract, inject, InjectContext, Propagators},
        Outcome, SamplerConfig, SpanKind, SpanRecord, SpanSink, TraceId, TraceLayer, TraceMetrics,
        TraceOptions, TraceSettings, TracingConfig,
    },
};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use tower::{service_fn, Layer, Service};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn incoming() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("checkout.local:8080"));
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    h.insert("traceparent", HeaderValue::from_static(TP));
    h.insert(
        "tracestate",
        HeaderValue::from_static("rojo=00f067aa0ba902b7"),
    );
    h
}

fn propagation(c: &mut Criterion) {
    let all = Propagators::default();
    let w3c_only = Propagators::new(&[filters::trace::propagation::Propagator::TraceContext]);
    let headers = incoming();
    c.bench_function("extract/all_formats", |b| {
        b.iter(|| black_box(extract(&all, black_box(&headers))))
    });
    let ex = extract(&all, &headers);
    c.bench_function("inject/all_formats", |b| {
        b.iter_batched_ref(
            || headers.clone(),
            |h| {
                inject(
                    &all,
                    h,
                    &InjectContext {
                        trace_id: ex.trace_id.unwrap_or_else(TraceId::random),
                        span_id: filters::trace::SpanId::random(),
                        sampled: true,
                        extracted: &ex,
                    },
                )
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("inject/tracecontext_only", |b| {
        b.iter_batched_ref(
            || headers.clone(),
            |h| {
                inject(
                    &w3c_only,
                    h,
                    &InjectContext {
                        trace_id: ex.trace_id.unwrap_or_else(TraceId::random),
                        span_id: filters::trace::SpanId::random(),
                        sampled: true,
                        extracted: &ex,
                    },
                )
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

fn sampling_and_span(c: &mut Criterion) {
    let sampler = filters::trace::Sampler::new(
        &SamplerConfig {
            max_per_second: Some(1_000_000),
            ..SamplerConfig::default()
        },
        Default::default(),
    );
    c.bench_function("sample/ratio_with_cap", |b| {
        b.iter(|| black_box(sampler.decide(TraceId::random(), None, None)))
    });
    c.bench_function("span/start_finish", |b| {
        b.iter(|| {
            let mut s = SpanRecord::start(SpanKind::Server, TraceId::random(), http::Method::GET);
            s.finish(&Outcome {
                status: Some(StatusCode::OK),
                grpc: None::<GrpcCode>,
                ..Outcome::default()
            });
            black_box(s)
        })
    });
}

fn layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let cfg = TracingConfig {
        access_log: false,
        ..TracingConfig::default()
    };
    let settings = Arc::new(TraceSettings::new(&cfg, &[], TraceMetrics::noop()).expect("settings"));
    let (sink, mut rx) = SpanSink::channel(1024, metrics::Counter::noop());
    let layer = TraceLayer::new(TraceOptions::server("http", None), settings, sink);
    let mut svc = layer.layer(service_fn(|_req: filters::Request| async {
        Ok::<_, Infallible>(http::Response::new(filters::full_body("ok")))
    }));
    let headers = incoming();
    c.bench_function("layer/request_to_queued_span", |b| {
        b.iter(|| {
            let mut req = http::Request::new(filters::empty_body());
            *req.uri_mut() = http::Uri::from_static("/api/orders/42");
            *req.headers_mut() = headers.clone();
            let resp = svc
                .call(req)
                .now_or_never()
                .expect("ready")
                .expect("infallible");
            let body = resp.into_body().collect().now_or_never().expect("ready");
            black_box(body.is_ok());
            black_box(rx.try_recv().is_ok())
        })
    });
    c.bench_function("layer/baseline_headers_clone_only", |b| {
        b.iter(|| {
            let mut req = http::Request::new(filters::empty_body());
            *req.uri_mut() = http::Uri::from_static("/api/orders/42");
            *req.headers_mut() = headers.clone();
            black_box(req)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = propagation, sampling_and_span, layer
}
criterion_main!(benches);
