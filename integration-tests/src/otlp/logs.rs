//! The receiver's logs side: what its `LogsService` (or `POST /v1/logs`)
//! took, flattened into records with their resource and scope.

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{any_value, KeyValue},
    logs::v1::LogRecord,
};

use super::{find, find_int, find_str, hex, signal, Export, Otlp};

/// One logs export request as received.
pub type ReceivedLogs = Export<ExportLogsServiceRequest>;

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

// === impl Otlp ===

impl Otlp {
    /// Logs export calls received so far, taken or not.
    pub fn log_attempts(&self) -> usize {
        self.shared.logs.attempts()
    }

    /// Logs export requests taken so far.
    pub fn log_requests(&self) -> Vec<ReceivedLogs> {
        self.shared.logs.exports()
    }

    /// Every log record taken so far.
    pub fn logs(&self) -> Vec<ReceivedLog> {
        flatten(&self.shared.logs.exports.borrow())
    }

    /// Waits until `f` holds of the log records taken so far, within
    /// [`crate::PATIENCE`]; returns them.
    pub async fn wait_for_logs(
        &self,
        what: &str,
        f: impl Fn(&[ReceivedLog]) -> bool,
    ) -> Vec<ReceivedLog> {
        if !self.shared.logs.wait_for(|r| f(&flatten(r))).await {
            panic!(
                "waited for {what}; {} logs export calls, records: {:#?}, decode errors: {:?}",
                self.log_attempts(),
                self.logs(),
                self.shared.decode_errors.borrow()
            );
        }
        self.logs()
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
    signal::flatten(received, |resource, scope, record| ReceivedLog {
        resource,
        scope,
        record,
    })
}

// === impl ReceivedLog ===

impl ReceivedLog {
    /// The value of attribute `key`.
    pub fn attr(&self, key: &str) -> Option<&any_value::Value> {
        find(&self.record.attributes, key)
    }

    /// A string attribute.
    pub fn str(&self, key: &str) -> Option<&str> {
        find_str(&self.record.attributes, key)
    }

    /// An integer attribute.
    pub fn int(&self, key: &str) -> Option<i64> {
        find_int(&self.record.attributes, key)
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
        find_str(&self.resource, key)
    }
}
