//! The span pipeline: the receiving end of the bounded span queue, batching
//! by size and by time, handing batches to the OTLP exporter or the
//! embedded store. The batching is generic ([`BatchSink`]): the logs
//! pipeline runs the same task over its own queue.
//!
//! The request path only ever `try_send`s into the queue
//! ([`SpanSink`](filters::trace::SpanSink)); while a batch is being exported
//! (and retried) the queue fills and further spans are dropped and counted,
//! so a dead collector costs neither latency nor memory past the queue.

use std::{
    future::Future,
    sync::{Arc, OnceLock},
    time::Duration,
};

use filters::trace::{Resource, SpanRecord, SpanSink};
use metrics::Counter;
use tokio::{
    runtime::{Handle, Runtime},
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};

use super::{exporter::Exporter, otlp, settings::ExportSettings, store::TraceStore, ExportMetrics};
use crate::tls::client::ClientTls;

/// Where batches go.
#[derive(Debug)]
pub enum Destination {
    /// An OTLP collector.
    Otlp {
        /// The exporter.
        exporter: Box<Exporter>,
        /// Encodes batches (the resource is encoded once, inside).
        encoder: otlp::Encoder,
    },
    /// The embedded store.
    Store(Arc<TraceStore>),
}

/// Where a pipeline's batches go: spans to a [`Destination`], log records
/// to the logs pipeline's exporter.
pub trait BatchSink<T>: Send + 'static {
    /// What the items are called in messages (`spans`, `log records`).
    const ITEMS: &'static str;

    /// Hands `batch` over (exported, failed for good, or stored).
    fn send(&mut self, batch: Vec<T>) -> impl Future<Output = ()> + Send;
}

/// How often the batcher drains the queue.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The runtime that batches, encodes and sends: one thread of its own,
/// shared by every pipeline of the process. Encoding a batch of 512 spans
/// takes a few hundred microseconds; on a thread that serves requests that
/// is the p99 of every request queued behind it.
pub fn export_runtime() -> Handle {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .thread_name("sidetrace-export")
            .enable_all()
            .build()
            .map_err(|e| {
                tracing::warn!(
                    target: "sidetrace::export",
                    error = %e,
                    "no thread for export; exporting from the request threads"
                )
            })
            .ok()
    });
    match runtime {
        Some(rt) => rt.handle().clone(),
        None => Handle::current(),
    }
}

/// How much the embedded store keeps (`tracing.store_traces` and
/// `tracing.store_bytes`).
#[derive(Clone, Copy, Debug)]
pub struct StoreBounds {
    /// Traces.
    pub traces: usize,
    /// Bytes of spans.
    pub bytes: usize,
}

impl StoreBounds {
    /// The bounds `tracing:` sets.
    pub fn of(config: &filters::trace::TracingConfig) -> Self {
        Self {
            traces: config.store_traces,
            bytes: config.store_bytes,
        }
    }
}

/// Controls the running pipeline task.
#[derive(Debug)]
pub struct PipelineHandle {
    control: mpsc::Sender<Control>,
    task: JoinHandle<()>,
    dropped_shutdown: Counter,
    items: &'static str,
}

/// What the proxy wires: the sink for the trace layers, the pipeline, and
/// the store the admin server reads (empty when spans are exported).
#[derive(Debug)]
pub struct Pipeline {
    /// Give a clone to every trace layer.
    pub sink: SpanSink,
    /// Flush and shut down through this.
    pub handle: PipelineHandle,
    /// The embedded store, for `/debug/traces`.
    pub store: Arc<TraceStore>,
}

#[derive(Debug)]
enum Control {
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

struct Batcher<T, D> {
    rx: mpsc::Receiver<T>,
    destination: D,
    batch: Vec<T>,
    batch_size: usize,
}

// === impl Pipeline ===

impl Pipeline {
    /// Starts the pipeline on the current runtime: OTLP export when
    /// `settings` has an endpoint (over `tls` when it is `https://`), else
    /// the embedded store within `store`.
    /// `dropped` is the trace layer's `spans_dropped_queue_full` counter.
    pub fn start(
        settings: &ExportSettings,
        tls: Option<Arc<ClientTls>>,
        resource: &Resource,
        store: StoreBounds,
        dropped: Counter,
        metrics: ExportMetrics,
    ) -> Self {
        let (sink, rx) = SpanSink::channel(settings.queue_size, dropped);
        let store = Arc::new(TraceStore::with_max_bytes(
            store.traces,
            store.bytes,
            resource.service_name(),
        ));
        let dropped_shutdown = metrics.dropped_shutdown.clone();
        let destination = match Exporter::new(settings, tls, metrics) {
            Some(exporter) => Destination::Otlp {
                exporter: Box::new(exporter),
                encoder: otlp::Encoder::new(&otlp::resource(resource)),
            },
            None => Destination::Store(store.clone()),
        };
        let handle = PipelineHandle::spawn(
            rx,
            destination,
            settings.batch_size,
            settings.batch_timeout,
            dropped_shutdown,
        );
        Self {
            sink,
            handle,
            store,
        }
    }
}

// === impl PipelineHandle ===

impl PipelineHandle {
    /// Spawns the batching task reading `rx` into `destination` on the
    /// [`export_runtime`].
    pub fn spawn<T: Send + 'static, D: BatchSink<T>>(
        rx: mpsc::Receiver<T>,
        destination: D,
        batch_size: usize,
        batch_timeout: Duration,
        dropped_shutdown: Counter,
    ) -> Self {
        Self::spawn_on(
            &export_runtime(),
            rx,
            destination,
            batch_size,
            batch_timeout,
            dropped_shutdown,
        )
    }

    /// [`spawn`](Self::spawn) on `runtime` (a test's own, to control its clock).
    pub fn spawn_on<T: Send + 'static, D: BatchSink<T>>(
        runtime: &Handle,
        rx: mpsc::Receiver<T>,
        destination: D,
        batch_size: usize,
        batch_timeout: Duration,
        dropped_shutdown: Counter,
    ) -> Self {
        let (control, control_rx) = mpsc::channel(4);
        let batcher = Batcher {
            rx,
            destination,
            batch: Vec::with_capacity(batch_size.max(1)),
            batch_size: batch_size.max(1),
        };
        let task = runtime.spawn(batcher.run(control_rx, batch_timeout));
        Self {
            control,
            task,
            dropped_shutdown,
            items: D::ITEMS,
        }
    }

    /// Sends everything queued so far; returns when it has been handed over
    /// (exported, failed for good, or stored).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops taking spans, sends what is queued, and stops, giving up at
    /// `deadline` (spans still queued then are dropped and counted).
    /// Returns whether everything was sent in time.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        let Self {
            control,
            mut task,
            dropped_shutdown,
            items,
        } = self;
        let (tx, rx) = oneshot::channel();
        let _ = control.send(Control::Shutdown(tx)).await;
        let done = async {
            let _ = rx.await;
            let _ = (&mut task).await;
        };
        match tokio::time::timeout(deadline, done).await {
            Ok(()) => true,
            Err(_) => {
                task.abort();
                dropped_shutdown.increment(1);
                tracing::warn!(
                    target: "sidetrace::export",
                    deadline_ms = deadline.as_millis() as u64,
                    "{items} flush did not finish before the shutdown deadline; remaining {items} dropped"
                );
                false
            }
        }
    }
}

// === impl Batcher ===

impl<T: Send + 'static, D: BatchSink<T>> Batcher<T, D> {
    async fn run(mut self, mut control: mpsc::Receiver<Control>, batch_timeout: Duration) {
        // The queue is drained on a short tick instead of waking this task
        // for every item: a request's `try_send` then finds no waiting
        // receiver to wake, which keeps the request path cheap.
        let mut tick = tokio::time::interval(POLL_INTERVAL.min(batch_timeout));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut oldest: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                ctl = control.recv() => match ctl {
                    Some(Control::Flush(ack)) => {
                        while let Ok(item) = self.rx.try_recv() {
                            self.push(item).await;
                        }
                        self.send().await;
                        oldest = None;
                        let _ = ack.send(());
                    }
                    Some(Control::Shutdown(ack)) => {
                        self.drain().await;
                        let _ = ack.send(());
                        return;
                    }
                    None => {
                        self.drain().await;
                        return;
                    }
                },
                _ = tick.tick() => {
                    loop {
                        match self.rx.try_recv() {
                            Ok(item) => {
                                if self.batch.is_empty() {
                                    oldest = Some(Instant::now());
                                }
                                if self.push(item).await {
                                    oldest = None;
                                }
                            }
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => {
                                self.send().await;
                                return;
                            }
                        }
                    }
                    if oldest.is_some_and(|t| t.elapsed() >= batch_timeout) {
                        self.send().await;
                        oldest = None;
                    }
                }
            }
        }
    }

    /// Adds an item; sends the batch when full (returns `true` then).
    async fn push(&mut self, item: T) -> bool {
        self.batch.push(item);
        if self.batch.len() >= self.batch_size {
            self.send().await;
            return true;
        }
        false
    }

    /// Closes the queue and sends everything in it.
    async fn drain(&mut self) {
        self.rx.close();
        while let Some(item) = self.rx.recv().await {
            self.push(item).await;
        }
        self.send().await;
    }

    async fn send(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_size));
        self.destination.send(batch).await;
    }
}

impl BatchSink<SpanRecord> for Destination {
    const ITEMS: &'static str = "spans";

    async fn send(&mut self, batch: Vec<SpanRecord>) {
        match self {
            Destination::Otlp { exporter, encoder } => {
                let encoded = encoder.encode(&batch);
                let n = batch.len();
                drop(batch);
                // Failures are counted and logged by the exporter.
                let _ = exporter.export(encoded, n).await;
            }
            Destination::Store(store) => store.insert(batch),
        }
    }
}
