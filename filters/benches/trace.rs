//! The per-request cost of tracing on the request path: context extract,
//! sampling, span start/finish, inject (all default formats, and each format
//! alone, and one format through the OpenTelemetry API), and the whole trace
//! layer around a trivial service (span queued into the bounded channel,
//! access log off), also with an access record queued for the OTLP logs
//! pipeline (`logs.access: all`, and `errors` for a request that succeeds).
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
        AccessMode, LogSink, Outcome, SamplerConfig, SpanKind, SpanRecord, SpanSink, TraceId,
        TraceLayer, TraceMetrics, TraceOptions, TraceSettings, TracingConfig,
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

/// One format alone: extract from a request carrying it, and inject the
/// proxy span, so the per-request cost of each format reads off directly.
fn per_format(c: &mut Criterion) {
    use filters::trace::propagation::Propagator;
    let cases: [(Propagator, &[(&str, &str)]); 5] = [
        (Propagator::TraceContext, &[("traceparent", TP)]),
        (
            Propagator::B3,
            &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
        ),
        (
            Propagator::XRay,
            &[(
                "x-amzn-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            )],
        ),
        (
            Propagator::Jaeger,
            &[(
                "uber-trace-id",
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
            )],
        ),
        (
            Propagator::Datadog,
            &[
                ("x-datadog-trace-id", "12379814468735227512"),
                ("x-datadog-parent-id", "67667974448284343"),
                ("x-datadog-sampling-priority", "1"),
                ("x-datadog-tags", "_dd.p.dm=-4,_dd.p.tid=640cfd8d00000000"),
            ],
        ),
    ];
    for (format, pairs) in cases {
        let only = Propagators::new(&[format]);
        let mut headers = incoming();
        headers.remove("traceparent");
        headers.remove("tracestate");
        for (k, v) in pairs {
            headers.insert(*k, HeaderValue::from_static(v));
        }
        let ex = extract(&only, &headers);
        assert!(
            ex.trace_id.is_some(),
            "{format}: the bench request carries it"
        );
        c.bench_function(&format!("extract/{format}"), |b| {
            b.iter(|| black_box(extract(&only, black_box(&headers))))
        });
        c.bench_function(&format!("inject/{format}"), |b| {
            b.iter_batched_ref(
                || headers.clone(),
                |h| {
                    inject(
                        &only,
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
    // Every format at once, as a proxy configured with all seven runs.
    let all = Propagators::all();
    let headers = incoming();
    let ex = extract(&all, &headers);
    c.bench_function("inject/all_seven_formats", |b| {
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
}

/// A format through the OpenTelemetry API (the contrib X-Ray propagator
/// added as a custom propagator), for comparison with the built-in one.
fn through_otel_api(c: &mut Criterion) {
    use filters::trace::propagation::{custom::CustomPropagators, Extracted};
    let custom = CustomPropagators::default()
        .with(Arc::new(opentelemetry_aws::trace::XrayPropagator::default()));
    let mut headers = incoming();
    headers.remove("traceparent");
    headers.remove("tracestate");
    headers.insert(
        "x-amzn-trace-id",
        HeaderValue::from_static(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        ),
    );
    c.bench_function("extract/xray_via_opentelemetry_api", |b| {
        b.iter(|| {
            let mut ex = Extracted::default();
            custom.extract(black_box(&headers), &mut ex);
            black_box(ex)
        })
    });
    let mut ex = Extracted::default();
    custom.extract(&headers, &mut ex);
    c.bench_function("inject/xray_via_opentelemetry_api", |b| {
        b.iter_batched_ref(
            || headers.clone(),
            |h| {
                custom.inject(
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

/// The access record alone: built from a finished span, queued and taken
/// off the queue, as the request path and the logs pipeline do.
fn access_record(c: &mut Criterion) {
    use filters::trace::{span::Host, AccessRecord, LogRecord};
    let mut span = SpanRecord::start(SpanKind::Server, TraceId::random(), http::Method::GET);
    span.path = Some(http::uri::PathAndQuery::from_static("/api/orders/42"));
    span.host = Some(Host::Header(HeaderValue::from_static(
        "checkout.local:8080",
    )));
    span.upstream = Some("127.0.0.1:8080".parse().expect("authority"));
    span.client_address = Some(([10, 0, 0, 7], 51544).into());
    span.finish(&Outcome {
        status: Some(StatusCode::OK),
        ..Outcome::default()
    });
    let (logs, mut rx) = LogSink::channel(1024, metrics::Counter::noop());
    c.bench_function("access/record_queue_and_take", |b| {
        b.iter(|| {
            black_box(logs.send(LogRecord::Access(AccessRecord::new(black_box(&span)))));
            black_box(rx.try_recv().is_ok())
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
    // The same request with and without an access record for the logs
    // pipeline, the layers otherwise alike: what `logs.access` costs a
    // request that succeeds (`errors` skips it after one check).
    for mode in [None, Some(AccessMode::All), Some(AccessMode::Errors)] {
        let settings = TraceSettings::new(&cfg, &[], TraceMetrics::noop())
            .expect("settings")
            .with_access(mode.unwrap_or_default(), false);
        let (spans, mut span_rx) = SpanSink::channel(1024, metrics::Counter::noop());
        let (logs, mut log_rx) = match mode {
            Some(_) => {
                let (tx, rx) = LogSink::channel(1024, metrics::Counter::noop());
                (tx, Some(rx))
            }
            None => (LogSink::discard(), None),
        };
        let layer = TraceLayer::new(
            TraceOptions::server("http", Some("127.0.0.1:8080".parse().expect("authority"))),
            Arc::new(settings),
            spans,
        )
        .logging_to(logs);
        let mut svc = layer.layer(service_fn(|_req: filters::Request| async {
            Ok::<_, Infallible>(http::Response::new(filters::full_body("ok")))
        }));
        let name = format!(
            "layer/access_record/{}",
            mode.map_or("no_logs_export", AccessMode::as_str)
        );
        let connection = Arc::new(filters::connection::ConnectionInfo::new(
            ([10, 0, 0, 7], 51544).into(),
            false,
        ));
        c.bench_function(&name, |b| {
            b.iter(|| {
                let mut req = http::Request::new(filters::empty_body());
                *req.uri_mut() = http::Uri::from_static("/api/orders/42");
                *req.headers_mut() = headers.clone();
                req.extensions_mut().insert(connection.clone());
                let resp = svc
                    .call(req)
                    .now_or_never()
                    .expect("ready")
                    .expect("infallible");
                let body = resp.into_body().collect().now_or_never().expect("ready");
                black_box(body.is_ok());
                black_box(span_rx.try_recv().is_ok());
                black_box(log_rx.as_mut().map(|rx| rx.try_recv().is_ok()))
            })
        });
    }
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
    targets = propagation, per_format, through_otel_api, sampling_and_span, access_record, layer
}
criterion_main!(benches);
