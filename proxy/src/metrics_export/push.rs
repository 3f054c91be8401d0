//! The periodic push: every interval, on the [`export_runtime`], render
//! what `/metrics` would serve, convert it, and hand it to the OTLP
//! [`Exporter`] (retries with backoff, a timeout per attempt, failures
//! counted); one last push at the end of the drain.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use filters::{metrics::exemplar::ExemplarSeries, trace::Resource};
use metrics::{Counter, Key, Metadata, Recorder};
use prost::Message;
use tokio::{
    runtime::Handle,
    sync::oneshot,
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};

use super::{otlp::Converter, MetricsExportConfig, Schedule};
use crate::{
    export::{export_runtime, ExportConfigError, ExportMetrics, ExportSettings, Exporter, Signal},
    exposition,
    tls::client::ClientTls,
};

/// Renders the exposition the push reads: the same text `/metrics` serves.
pub type Source = Arc<dyn Fn() -> String + Send + Sync>;

/// Reads the exemplars of the request-duration histograms, pushed with
/// their buckets.
pub type ExemplarSource = Arc<dyn Fn() -> Vec<ExemplarSeries> + Send + Sync>;

/// The metrics push of a proxy; idle when no collector is configured.
#[derive(Debug)]
pub struct MetricsPush {
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    stop: oneshot::Sender<oneshot::Sender<bool>>,
    task: JoinHandle<()>,
    tls: Option<Arc<ClientTls>>,
    /// Points of the push in hand, lost if the shutdown deadline passes.
    in_hand: Arc<AtomicUsize>,
    dropped: Counter,
}

struct Task {
    source: Source,
    exemplars: Option<ExemplarSource>,
    converter: Converter,
    exporter: Exporter,
    interval: Duration,
    in_hand: Arc<AtomicUsize>,
}

// === impl MetricsPush ===

impl MetricsPush {
    /// Starts pushing on the [`export_runtime`] when `config` (or
    /// `OTEL_EXPORTER_OTLP_[METRICS_]*` in `env`) names a collector; the
    /// points carry `resource`, the spans' own. The self-metrics are
    /// registered with `recorder` either way.
    pub fn start(
        config: &MetricsExportConfig,
        env: &HashMap<String, String>,
        resource: &Resource,
        source: Source,
        exemplars: Option<ExemplarSource>,
        recorder: &dyn Recorder,
    ) -> Result<Self, ExportConfigError> {
        Self::start_on(
            &export_runtime(),
            config,
            env,
            resource,
            source,
            exemplars,
            recorder,
        )
    }

    /// [`start`](Self::start) on `runtime`.
    pub fn start_on(
        runtime: &Handle,
        config: &MetricsExportConfig,
        env: &HashMap<String, String>,
        resource: &Resource,
        source: Source,
        exemplars: Option<ExemplarSource>,
        recorder: &dyn Recorder,
    ) -> Result<Self, ExportConfigError> {
        let (settings, schedule) = resolve(config, env)?;
        let tls = settings.client_tls()?;
        let md = Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
        let names = &Signal::METRICS.metrics;
        let counter = |name: &'static str| recorder.register_counter(&Key::from_name(name), &md);
        // A failed push loses nothing while the proxy runs, so only the
        // last one, at shutdown, counts its points as dropped.
        let metrics = ExportMetrics {
            exported: counter(names.exported),
            errors: counter(names.errors),
            dropped_failed: Counter::noop(),
            dropped_shutdown: Counter::noop(),
        };
        let dropped = counter(names.dropped);
        let Some(exporter) = Exporter::new(&settings, tls.clone(), metrics) else {
            return Ok(Self { running: None });
        };
        let in_hand = Arc::new(AtomicUsize::new(0));
        let task = Task {
            source,
            exemplars,
            converter: Converter::new(resource, schedule.temporality, unix_nanos()),
            exporter,
            interval: schedule.interval,
            in_hand: in_hand.clone(),
        };
        let (stop, stopped) = oneshot::channel();
        let task = runtime.spawn(task.run(stopped, dropped.clone()));
        Ok(Self {
            running: Some(Running {
                stop,
                task,
                tls,
                in_hand,
                dropped,
            }),
        })
    }

    /// Whether metrics are pushed.
    pub fn is_pushing(&self) -> bool {
        self.running.is_some()
    }

    /// The TLS client of an `https://` collector, to watch its files.
    pub fn tls(&self) -> Option<&Arc<ClientTls>> {
        self.running.as_ref().and_then(|r| r.tls.as_ref())
    }

    /// Pushes once more (the values at the end of the drain) and stops,
    /// giving up at `deadline`; whether the last push was taken in time.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        let Some(Running {
            stop,
            mut task,
            in_hand,
            dropped,
            ..
        }) = self.running
        else {
            return true;
        };
        let (ack, acked) = oneshot::channel();
        let _ = stop.send(ack);
        match tokio::time::timeout(deadline, async {
            let ok = acked.await.unwrap_or(false);
            let _ = (&mut task).await;
            ok
        })
        .await
        {
            Ok(ok) => ok,
            Err(_) => {
                task.abort();
                dropped.increment(in_hand.load(Ordering::Relaxed) as u64);
                tracing::warn!(
                    target: "sidetrace::export",
                    deadline_ms = deadline.as_millis() as u64,
                    "the last metrics push did not finish before the shutdown deadline"
                );
                false
            }
        }
    }
}

/// The export settings and schedule `config` and `env` give, as `run`
/// resolves them (and `check-config` checks them).
pub fn resolve(
    config: &MetricsExportConfig,
    env: &HashMap<String, String>,
) -> Result<(ExportSettings, Schedule), ExportConfigError> {
    let settings = ExportSettings::resolve_signal(Signal::METRICS, &config.connection(), env)?;
    let schedule = config.schedule(env)?;
    Ok((settings, schedule))
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// === impl Task ===

impl Task {
    async fn run(mut self, mut stop: oneshot::Receiver<oneshot::Sender<bool>>, dropped: Counter) {
        // The first push after one interval: at start every value is 0.
        let mut tick = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // A handle dropped without `shutdown` (a start that failed after
        // this one) stops the task without a last push.
        let ack = loop {
            tokio::select! {
                biased;
                ack = &mut stop => match ack {
                    Ok(ack) => break ack,
                    Err(_) => return,
                },
                _ = tick.tick() => {
                    // A push still retrying when the drain starts gives way
                    // to the last one, which carries newer values.
                    tokio::select! {
                        biased;
                        ack = &mut stop => match ack {
                            Ok(ack) => break ack,
                            Err(_) => return,
                        },
                        _ = self.push() => {}
                    }
                }
            }
        };
        let ok = self.push().await;
        if !ok {
            dropped.increment(self.in_hand.load(Ordering::Relaxed) as u64);
        }
        let _ = ack.send(ok);
    }

    /// One push; whether the collector took it.
    async fn push(&mut self) -> bool {
        let text = (self.source)();
        let families = exposition::parse(&text);
        let exemplars = self.exemplars.as_ref().map(|f| f()).unwrap_or_default();
        let prepared = self
            .converter
            .prepare_with(&families, &exemplars, unix_nanos());
        let body = Bytes::from(prepared.request.encode_to_vec());
        self.in_hand.store(prepared.points, Ordering::Relaxed);
        // Failures are counted and logged by the exporter.
        match self.exporter.export(body, prepared.points).await {
            Ok(()) => {
                self.converter.commit(prepared);
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use filters::trace::ExportProtocol;

    use super::*;
    use crate::metrics_export::{Temporality, INTERVAL_VAR, TEMPORALITY_VAR};

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn target(config: &MetricsExportConfig, pairs: &[(&str, &str)]) -> Option<String> {
        resolve(config, &env(pairs))
            .unwrap()
            .0
            .target
            .map(|u| u.to_string())
    }

    #[test]
    fn endpoints_follow_the_specification() {
        let none = MetricsExportConfig::default();
        assert_eq!(target(&none, &[]), None, "no endpoint, no push");
        assert_eq!(
            target(
                &none,
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/base/")]
            ),
            Some("http://c:4318/base/v1/metrics".into()),
            "the generic base gets the signal path"
        );
        assert_eq!(
            target(
                &none,
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:9/custom"),
                ]
            ),
            Some("http://m:9/custom".into()),
            "the signal's own endpoint is used as-is and wins"
        );
        assert_eq!(
            target(
                &none,
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                    ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
                ]
            ),
            Some(
                "http://c:4317/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
                    .into()
            )
        );
        assert_eq!(
            target(&none, &[("OTEL_METRICS_EXPORTER", "otlp")]),
            Some("http://localhost:4318/v1/metrics".into()),
            "otlp asked for without an endpoint: the specification's default"
        );
        let file = MetricsExportConfig {
            endpoint: Some("http://file:4318".into()),
            ..Default::default()
        };
        assert_eq!(
            target(&file, &[]),
            Some("http://file:4318/v1/metrics".into())
        );
        assert_eq!(target(&file, &[("OTEL_METRICS_EXPORTER", "none")]), None);
        // Spans' own variables do not move metrics.
        assert_eq!(
            target(
                &file,
                &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1")]
            ),
            Some("http://file:4318/v1/metrics".into())
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let c = MetricsExportConfig::default();
        let err = |pairs: &[(&str, &str)]| resolve(&c, &env(pairs)).unwrap_err().source_name;
        assert_eq!(
            err(&[("OTEL_METRICS_EXPORTER", "prometheus")]),
            "OTEL_METRICS_EXPORTER"
        );
        assert_eq!(
            err(&[("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json")]),
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
        );
        assert_eq!(err(&[(INTERVAL_VAR, "30s")]), INTERVAL_VAR);
        assert_eq!(err(&[(TEMPORALITY_VAR, "sometimes")]), TEMPORALITY_VAR);
        let (settings, schedule) = resolve(
            &c,
            &env(&[
                ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-key=a%20b"),
                (INTERVAL_VAR, "5000"),
                (TEMPORALITY_VAR, "lowmemory"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.protocol, ExportProtocol::Grpc);
        assert_eq!(settings.headers["x-key"], "a b");
        assert_eq!(schedule.interval, Duration::from_secs(5));
        assert_eq!(schedule.temporality, Temporality::LowMemory);
    }
}
