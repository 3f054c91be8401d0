//! The sending end of the span queue: bounded, `try_send` only.
//!
//! A full queue (a slow or dead collector) drops the span and counts
//! `sidetrace_spans_dropped_total{reason="queue_full"}`; the request never
//! waits and memory never grows past the queue.

use metrics::Counter;
use tokio::sync::mpsc;

use super::span::SpanRecord;

/// Where finished, sampled spans go. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SpanSink {
    tx: Option<mpsc::Sender<SpanRecord>>,
    dropped: Counter,
}

/// The receiving end, read by the proxy's export pipeline.
pub type SpanReceiver = mpsc::Receiver<SpanRecord>;

// === impl SpanSink ===

impl SpanSink {
    /// A queue of `capacity` spans; `dropped` counts spans refused because
    /// it was full (or the pipeline is gone).
    pub fn channel(capacity: usize, dropped: Counter) -> (Self, SpanReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                tx: Some(tx),
                dropped,
            },
            rx,
        )
    }

    /// A sink that discards every span (tracing export off).
    pub fn discard() -> Self {
        Self {
            tx: None,
            dropped: Counter::noop(),
        }
    }

    /// Queues `span` without waiting; `false` (and counted) when dropped.
    pub fn send(&self, span: SpanRecord) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        match tx.try_send(span) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.increment(1);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{context::TraceId, span::SpanKind};

    #[test]
    fn full_queue_drops_and_counts() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let dropped = crate::trace::TraceMetrics::register(&recorder).spans_dropped_queue_full;
        let (sink, mut rx) = SpanSink::channel(2, dropped);
        let span = || SpanRecord::start(SpanKind::Server, TraceId::random(), http::Method::GET);
        assert!(sink.send(span()));
        assert!(sink.send(span()));
        assert!(!sink.send(span()));
        assert!(handle
            .render()
            .contains(r#"sidetrace_spans_dropped_total{reason="queue_full"} 1"#));
        assert!(rx.try_recv().is_ok());
        assert!(sink.send(span()), "room again after the pipeline read one");
        assert!(!SpanSink::discard().send(span()));
    }
}
