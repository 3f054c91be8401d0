//! The receiver's logs side: tonic's `LogsService` from opentelemetry-proto
//! and what it (or `POST /v1/logs`) took, flattened into records with their
//! resource and scope.

use std::sync::{atomic::Ordering, Arc};

use opentelemetry_proto::tonic::{
    collector::logs::v1::{
        logs_service_server::{LogsService, LogsServiceServer},
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    },
    common::v1::{any_value, KeyValue},
    logs::v1::LogRecord,
};

use super::{find, hex, Otlp, Shared};

/// One logs export request as received.
#[derive(Clone, Debug)]
pub struct ReceivedLogs {
    /// The decoded request.
    pub request: ExportLogsServiceRequest,
    /// The body came gzipped.
    pub gzip: bool,
    /// The request's headers (gRPC: its metadata as HTTP headers).
    pub headers: http::HeaderMap,
}

/// A received log record with its resource and scope.
#[derive(Clone, Debug)]
pub struct ReceivedLog {
    /// The resource attributes of its `ResourceLogs`.
    pub resource: Vec<KeyValue>,
    /// The instrumentation scope name.
    pub scope: String,
    /// The record.
    pub record: LogRecord,
}

pub(super) struct LogsReceiver(Arc<Shared>);

/// The gRPC service, beside the trace service.
pub(super) fn service(shared: &Arc<Shared>) -> LogsServiceServer<LogsReceiver> {
    LogsServiceServer::new(LogsReceiver(shared.clone()))
}

// === impl Otlp ===

impl Otlp {
    /// Logs export calls received so far, taken or not.
    pub fn log_attempts(&self) -> usize {
        self.shared.log_attempts.load(Ordering::SeqCst)
    }

    /// Logs export requests taken so far.
    pub fn log_requests(&self) -> Vec<ReceivedLogs> {
        self.shared.logs.borrow().clone()
    }

    /// Every log record taken so far.
    pub fn logs(&self) -> Vec<ReceivedLog> {
        flatten(&self.shared.logs.borrow())
    }

    /// Waits until `f` holds of the log records taken so far, within
    /// [`crate::PATIENCE`]; returns them.
    pub async fn wait_for_logs(
        &self,
        what: &str,
        f: impl Fn(&[ReceivedLog]) -> bool,
    ) -> Vec<ReceivedLog> {
        let mut rx = self.shared.logs.subscribe();
        let waited = tokio::time::timeout(crate::PATIENCE, rx.wait_for(|r| f(&flatten(r)))).await;
        match waited {
            Ok(Ok(_)) => self.logs(),
            _ => panic!(
                "waited for {what}; {} logs export calls, records: {:#?}, decode errors: {:?}",
                self.log_attempts(),
                self.logs(),
                self.shared.decode_errors.borrow()
            ),
        }
    }

    /// The access records (scope `sidetrace::access`) taken so far.
    pub fn access_logs(&self) -> Vec<ReceivedLog> {
        self.logs()
            .into_iter()
            .filter(|l| l.scope == "sidetrace::access")
            .collect()
    }
}

fn flatten(received: &[ReceivedLogs]) -> Vec<ReceivedLog> {
    let mut out = Vec::new();
    for r in received {
        for rl in &r.request.resource_logs {
            let resource = rl
                .resource
                .as_ref()
                .map(|r| r.attributes.clone())
                .unwrap_or_default();
            for sl in &rl.scope_logs {
                let scope = sl
                    .scope
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                for record in &sl.log_records {
                    out.push(ReceivedLog {
                        resource: resource.clone(),
                        scope: scope.clone(),
                        record: record.clone(),
                    });
                }
            }
        }
    }
    out
}

// === impl Shared ===

impl Shared {
    /// Applies the mode to one logs export: `true` when it was taken.
    pub(super) async fn answer_logs(&self, received: ReceivedLogs) -> bool {
        self.log_attempts.fetch_add(1, Ordering::SeqCst);
        if !self.admit().await {
            return false;
        }
        self.logs.send_modify(|r| r.push(received));
        true
    }
}

// === impl LogsReceiver ===

#[tonic::async_trait]
impl LogsService for LogsReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let headers = request.metadata().clone().into_headers();
        let gzip = headers
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes() == b"gzip");
        let received = ReceivedLogs {
            request: request.into_inner(),
            gzip,
            headers,
        };
        if self.0.answer_logs(received).await {
            Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
        } else {
            Err(tonic::Status::unavailable("the test collector is down"))
        }
    }
}

// === impl ReceivedLog ===

impl ReceivedLog {
    /// The value of attribute `key`.
    pub fn attr(&self, key: &str) -> Option<&any_value::Value> {
        find(&self.record.attributes, key)
    }

    /// A string attribute.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.attr(key)? {
            any_value::Value::StringValue(s) => Some(s),
            _ => None,
        }
    }

    /// An integer attribute.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attr(key)? {
            any_value::Value::IntValue(i) => Some(*i),
            _ => None,
        }
    }

    /// A float attribute.
    pub fn double(&self, key: &str) -> Option<f64> {
        match self.attr(key)? {
            any_value::Value::DoubleValue(d) => Some(*d),
            _ => None,
        }
    }

    /// The string body ("" when there is none).
    pub fn body(&self) -> &str {
        match self.record.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => s,
            _ => "",
        }
    }

    /// `severity_number`.
    pub fn severity(&self) -> i32 {
        self.record.severity_number
    }

    /// The trace id, 32 hex digits ("" when there is none).
    pub fn trace_id(&self) -> String {
        hex(&self.record.trace_id)
    }

    /// The span id, 16 hex digits ("" when there is none).
    pub fn span_id(&self) -> String {
        hex(&self.record.span_id)
    }

    /// A string resource attribute.
    pub fn resource_str(&self, key: &str) -> Option<&str> {
        match find(&self.resource, key)? {
            any_value::Value::StringValue(s) => Some(s),
            _ => None,
        }
    }
}
