//! A real OTLP receiver for traces, logs and metrics, as a collector is: a
//! tonic gRPC server with `TraceService`, `LogsService` and
//! `MetricsService`, or OTLP/HTTP `POST /v1/traces`, `/v1/logs` and
//! `/v1/metrics` (hyper), decoding every export request it gets with the
//! official messages (logs: [`logs`], metrics: [`metrics`]).
//!
//! ```no_run
//! # async fn doc() {
//! use integration::otlp::Otlp;
//! let otlp = Otlp::grpc().run().await;
//! // ... point the proxy at otlp.endpoint() with protocol otlp.protocol() ...
//! let spans = otlp.wait_for_spans(1).await;
//! assert_eq!(spans[0].resource_str("service.name"), Some("checkout"));
//! otlp.shutdown().await;
//! # }
//! ```
//!
//! A receiver can be told to answer slowly ([`Mode::Slow`]) or to refuse
//! with 503 / `UNAVAILABLE` ([`Mode::Unavailable`]), to test a collector
//! that is slow or down, and can speak only TLS ([`OtlpBuilder::tls`],
//! optionally requiring client certificates), recording each connection's
//! ALPN and client certificate.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{any_value, KeyValue},
    trace::v1::{span, status, Span},
};
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch, Notify},
    task::JoinHandle,
};

mod http_server;
pub mod logs;
pub mod metrics;
mod signal;
mod tls;

pub use self::{
    logs::{ReceivedLog, ReceivedLogs},
    metrics::ReceivedMetrics,
    signal::Export,
    tls::TlsConnection,
};
use self::{signal::Taken, tls::TlsOptions};
use crate::pki::Leaf;

/// How the receiver answers exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Take every export at once.
    Ok,
    /// Hold every export this long (or until [`Otlp::release`]), then take it.
    Slow(Duration),
    /// Refuse every export: HTTP 503, gRPC `UNAVAILABLE`.
    Unavailable,
}

/// The OTLP transport a receiver speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (`TraceService/Export`).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`POST /v1/traces`).
    HttpProtobuf,
}

/// Builds a receiver.
#[derive(Debug)]
pub struct OtlpBuilder {
    protocol: Protocol,
    mode: Mode,
    tls: Option<TlsOptions>,
}

/// One trace export request as received.
pub type Received = Export<ExportTraceServiceRequest>;

/// A received span with its resource and scope, flattened.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// The resource attributes of its `ResourceSpans`.
    pub resource: Vec<KeyValue>,
    /// The instrumentation scope name.
    pub scope: String,
    /// The span.
    pub span: Span,
}

/// A running receiver; stops on drop.
pub struct Otlp {
    /// Its address.
    pub addr: SocketAddr,
    protocol: Protocol,
    tls: bool,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

struct Shared {
    traces: Taken<ExportTraceServiceRequest>,
    logs: Taken<ExportLogsServiceRequest>,
    metrics: Taken<ExportMetricsServiceRequest>,
    /// 0 = ok, 1 = unavailable, otherwise slow by this many ms + 1.
    mode: AtomicU64,
    in_flight: AtomicUsize,
    release: Notify,
    decode_errors: watch::Sender<Vec<String>>,
    tls_connections: watch::Sender<Vec<TlsConnection>>,
    handshake_failures: AtomicUsize,
}

// === impl Otlp ===

impl Otlp {
    /// A tonic `TraceService` gRPC receiver.
    pub fn grpc() -> OtlpBuilder {
        OtlpBuilder {
            protocol: Protocol::Grpc,
            mode: Mode::Ok,
            tls: None,
        }
    }

    /// An OTLP/HTTP (`POST /v1/traces`, protobuf, optionally gzip) receiver.
    pub fn http() -> OtlpBuilder {
        OtlpBuilder {
            protocol: Protocol::HttpProtobuf,
            mode: Mode::Ok,
            tls: None,
        }
    }

    /// The base URL for `tracing.export.endpoint` / `OTEL_EXPORTER_OTLP_ENDPOINT`:
    /// `https://localhost:port` over TLS (the name test certificates carry).
    pub fn endpoint(&self) -> String {
        match self.tls {
            true => format!("https://localhost:{}", self.addr.port()),
            false => format!("http://{}", self.addr),
        }
    }

    /// The TLS connections accepted so far (TLS mode).
    pub fn tls_connections(&self) -> Vec<TlsConnection> {
        self.shared.tls_connections.borrow().clone()
    }

    /// Waits until at least one TLS connection was accepted, within
    /// [`crate::PATIENCE`]; returns them all.
    pub async fn wait_for_tls_connection(&self) -> Vec<TlsConnection> {
        let mut rx = self.shared.tls_connections.subscribe();
        let waited = tokio::time::timeout(crate::PATIENCE, rx.wait_for(|c| !c.is_empty())).await;
        match waited {
            Ok(Ok(_)) => self.tls_connections(),
            _ => panic!(
                "no TLS connection accepted ({} handshakes failed)",
                self.handshake_failures()
            ),
        }
    }

    /// TLS handshakes that failed or timed out (TLS mode).
    pub fn handshake_failures(&self) -> usize {
        self.shared.handshake_failures.load(Ordering::SeqCst)
    }

    /// The value for `tracing.export.protocol` / `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn protocol(&self) -> &'static str {
        match self.protocol {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }

    /// Changes how later exports are answered.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.set_mode(mode);
    }

    /// Ends the wait of every export held right now (slow mode); later
    /// ones are held again unless the mode changed.
    pub fn release(&self) {
        self.shared.release.notify_waiters();
    }

    /// Trace export calls received so far, taken or not (logs: [`Otlp::log_attempts`]).
    pub fn attempts(&self) -> usize {
        self.shared.traces.attempts()
    }

    /// Export calls being held right now (slow mode).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Export requests taken so far.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.traces.exports()
    }

    /// Every span taken so far, with its resource.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        flatten(&self.shared.traces.exports.borrow())
    }

    /// Waits until at least `n` spans were taken, within [`crate::PATIENCE`];
    /// returns all spans taken so far.
    pub async fn wait_for_spans(&self, n: usize) -> Vec<ReceivedSpan> {
        if !self.shared.traces.wait_for(|r| count_spans(r) >= n).await {
            panic!(
                "waited for {n} spans, the receiver has {} ({} export calls, decode errors: {:?})",
                self.spans().len(),
                self.attempts(),
                self.shared.decode_errors.borrow()
            );
        }
        self.spans()
    }

    /// Waits until `f` holds of the spans taken so far, within
    /// [`crate::PATIENCE`]; returns them.
    pub async fn wait_until(
        &self,
        what: &str,
        f: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        if !self.shared.traces.wait_for(|r| f(&flatten(r))).await {
            panic!("waited for {what}; spans: {:#?}", self.spans());
        }
        self.spans()
    }

    /// Stops the receiver; fails the test if a body could not be decoded or
    /// the server task panicked.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            if let Err(e) = task.await {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
        let errors = self.shared.decode_errors.borrow().clone();
        assert!(
            errors.is_empty(),
            "the receiver got undecodable exports: {errors:?}"
        );
    }
}

impl Drop for Otlp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn count_spans(received: &[Received]) -> usize {
    received
        .iter()
        .flat_map(|r| &r.request.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

fn flatten(received: &[Received]) -> Vec<ReceivedSpan> {
    signal::flatten(received, |resource, scope, span| ReceivedSpan {
        resource,
        scope,
        span,
    })
}

// === impl OtlpBuilder ===

impl OtlpBuilder {
    /// Answers every export after holding it for `delay`.
    pub fn slow(mut self, delay: Duration) -> Self {
        self.mode = Mode::Slow(delay);
        self
    }

    /// Refuses every export (503 / `UNAVAILABLE`).
    pub fn unavailable(mut self) -> Self {
        self.mode = Mode::Unavailable;
        self
    }

    /// Speaks only TLS, with `leaf` as its certificate (ALPN `h2` and
    /// `http/1.1`).
    pub fn tls(mut self, leaf: &Leaf) -> Self {
        self.tls = Some(TlsOptions::new(leaf));
        self
    }

    /// Over TLS, requires a client certificate signed by `ca_pem`.
    pub fn client_ca(mut self, ca_pem: &str) -> Self {
        let tls = self.tls.as_mut().expect("client_ca needs tls(leaf) first");
        tls.client_ca = Some(ca_pem.to_string());
        self
    }

    /// Binds `127.0.0.1:0` and serves.
    pub async fn run(self) -> Otlp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            traces: Taken::default(),
            logs: Taken::default(),
            metrics: Taken::default(),
            mode: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            release: Notify::new(),
            decode_errors: watch::channel(Vec::new()).0,
            tls_connections: watch::channel(Vec::new()).0,
            handshake_failures: AtomicUsize::new(0),
        });
        shared.set_mode(self.mode);
        let (stop, stopped) = oneshot::channel::<()>();
        let tls = self.tls.is_some();
        let task = match (self.tls, self.protocol) {
            (Some(options), protocol) => tokio::spawn(tls::serve(
                listener,
                options,
                protocol,
                shared.clone(),
                stopped,
            )),
            (None, Protocol::Grpc) => {
                let routes = signal::grpc_routes(&shared);
                tokio::spawn(async move {
                    tonic::transport::Server::builder()
                        .add_routes(routes)
                        .serve_with_incoming_shutdown(
                            tonic::transport::server::TcpIncoming::from(listener),
                            async move {
                                let _ = stopped.await;
                            },
                        )
                        .await
                        .expect("the gRPC receiver serves");
                })
            }
            (None, Protocol::HttpProtobuf) => {
                tokio::spawn(http_server::serve_http(listener, shared.clone(), stopped))
            }
        };
        Otlp {
            addr,
            protocol: self.protocol,
            tls,
            shared,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

// === impl Shared ===

impl Shared {
    fn set_mode(&self, mode: Mode) {
        let v = match mode {
            Mode::Ok => 0,
            Mode::Unavailable => 1,
            Mode::Slow(d) => 2 + d.as_millis() as u64,
        };
        self.mode.store(v, Ordering::SeqCst);
    }

    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            0 => Mode::Ok,
            1 => Mode::Unavailable,
            v => Mode::Slow(Duration::from_millis(v - 2)),
        }
    }

    /// The mode's verdict on one export (held first in slow mode).
    async fn admit(&self) -> bool {
        match self.mode() {
            Mode::Unavailable => false,
            Mode::Slow(d) => {
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    () = self.release.notified() => {}
                }
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                true
            }
            Mode::Ok => true,
        }
    }

    fn decode_error(&self, e: String) {
        self.decode_errors.send_modify(|v| v.push(e));
    }
}

// === impl ReceivedSpan ===

impl ReceivedSpan {
    /// The value of span attribute `key`.
    pub fn attr(&self, key: &str) -> Option<&any_value::Value> {
        find(&self.span.attributes, key)
    }

    /// A string span attribute.
    pub fn str(&self, key: &str) -> Option<&str> {
        find_str(&self.span.attributes, key)
    }

    /// An integer span attribute.
    pub fn int(&self, key: &str) -> Option<i64> {
        find_int(&self.span.attributes, key)
    }

    /// A string resource attribute.
    pub fn resource_str(&self, key: &str) -> Option<&str> {
        find_str(&self.resource, key)
    }

    /// The trace id, 32 hex digits.
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    /// The span id, 16 hex digits.
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    /// The parent span id, 16 hex digits, when there is one.
    pub fn parent_span_id(&self) -> Option<String> {
        (!self.span.parent_span_id.is_empty()).then(|| hex(&self.span.parent_span_id))
    }

    /// SERVER, CLIENT, ...
    pub fn kind(&self) -> span::SpanKind {
        span::SpanKind::try_from(self.span.kind).unwrap_or(span::SpanKind::Unspecified)
    }

    /// The span status code (Unset when there is no status).
    pub fn status(&self) -> status::StatusCode {
        self.span
            .status
            .as_ref()
            .and_then(|s| status::StatusCode::try_from(s.code).ok())
            .unwrap_or(status::StatusCode::Unset)
    }

    /// The event named `name`, when there is one.
    pub fn event(&self, name: &str) -> Option<&span::Event> {
        self.span.events.iter().find(|e| e.name == name)
    }
}

fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn find_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match find(attrs, key)? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn find_int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match find(attrs, key)? {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
