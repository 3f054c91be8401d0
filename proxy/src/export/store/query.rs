//! The `/debug/traces` query string: parsed strictly, so a mistyped filter
//! is a 400 naming it rather than a list that silently ignores it.

use filters::{
    classify::FailureCategory,
    trace::{SpanKind, SpanRecord},
};

use super::view::Summary;

/// Parsed `/debug/traces` query.
#[derive(Debug, PartialEq)]
pub(super) struct Query {
    pub(super) service: Option<String>,
    /// `Some("")` selects requests that matched no route.
    pub(super) route: Option<String>,
    /// The root span's kind.
    pub(super) kind: Option<SpanKind>,
    pub(super) min_duration_ms: Option<f64>,
    pub(super) duration_gt_ms: Option<f64>,
    pub(super) duration_le_ms: Option<f64>,
    pub(super) error: Option<bool>,
    pub(super) failed: Option<bool>,
    pub(super) category: Option<FailureCategory>,
    /// Lowercase hex digits the trace id must contain.
    pub(super) trace_id: Option<String>,
    pub(super) limit: usize,
    pub(super) spans: bool,
}

/// A bad query: the message names the parameter.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub(super) struct QueryError(String);

/// Traces listed when `limit=` is not given.
pub(super) const DEFAULT_LIMIT: usize = 100;

// === impl Query ===

impl Default for Query {
    fn default() -> Self {
        Self {
            service: None,
            route: None,
            kind: None,
            min_duration_ms: None,
            duration_gt_ms: None,
            duration_le_ms: None,
            error: None,
            failed: None,
            category: None,
            trace_id: None,
            limit: DEFAULT_LIMIT,
            spans: true,
        }
    }
}

impl Query {
    pub(super) fn parse(query: &str) -> Result<Self, QueryError> {
        let mut q = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v).ok_or_else(|| {
                QueryError(format!("{k}: the value is not valid percent-encoded UTF-8"))
            })?;
            match k {
                "service" => q.service = Some(v),
                "route" => q.route = Some(v),
                "kind" => {
                    q.kind = Some(match v.to_ascii_uppercase().as_str() {
                        "SERVER" => SpanKind::Server,
                        "CLIENT" => SpanKind::Client,
                        _ => return Err(QueryError(format!("kind={v} is not SERVER or CLIENT"))),
                    });
                }
                "min_duration_ms" => q.min_duration_ms = Some(millis(k, &v)?),
                "duration_gt_ms" => q.duration_gt_ms = Some(millis(k, &v)?),
                "duration_le_ms" => q.duration_le_ms = Some(millis(k, &v)?),
                "error" => q.error = Some(boolean(k, &v)?),
                "failed" => q.failed = Some(boolean(k, &v)?),
                "spans" => q.spans = boolean(k, &v)?,
                "category" => {
                    q.category = Some(match v.to_ascii_uppercase().as_str() {
                        "VALIDATION" => FailureCategory::Validation,
                        "NETWORK" => FailureCategory::Network,
                        "INTERNAL" => FailureCategory::Internal,
                        _ => {
                            return Err(QueryError(format!(
                                "category={v} is not VALIDATION, NETWORK or INTERNAL"
                            )))
                        }
                    });
                }
                "trace_id" => {
                    let hex = v.to_ascii_lowercase();
                    if hex.is_empty()
                        || hex.len() > 32
                        || !hex.bytes().all(|b| b.is_ascii_hexdigit())
                    {
                        return Err(QueryError(format!(
                            "trace_id={v} is not 1 to 32 hex digits"
                        )));
                    }
                    q.trace_id = Some(hex);
                }
                "limit" => {
                    q.limit =
                        v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                            QueryError(format!("limit={v} is not a positive number"))
                        })?;
                }
                other => {
                    return Err(QueryError(format!(
                        "unknown parameter {other:?}; filters are service, route, kind, \
                         min_duration_ms, duration_gt_ms, duration_le_ms, error, failed, \
                         category, trace_id, limit, spans"
                    )))
                }
            }
        }
        if let (Some(gt), Some(le)) = (q.duration_gt_ms, q.duration_le_ms) {
            if gt >= le {
                return Err(QueryError(format!(
                    "duration_gt_ms={gt} is not below duration_le_ms={le}"
                )));
            }
        }
        Ok(q)
    }

    /// Whether a trace passes every filter. `service` is the store's own
    /// service name.
    pub(super) fn matches(&self, trace: &Summary<'_>, service: &str) -> bool {
        if let Some(want) = &self.service {
            let peer = |s: &SpanRecord| {
                s.upstream.as_ref().is_some_and(|u| u.host() == want)
                    || s.host.as_ref().is_some_and(|h| h.split().0 == want)
            };
            if service != want && !trace.spans.iter().any(peer) {
                return false;
            }
        }
        if self
            .kind
            .is_some_and(|k| trace.root.is_none_or(|r| r.kind != k))
        {
            return false;
        }
        // The span the bucket bounds apply to: the route's SERVER span, as
        // the per-route histogram measured it, or else the root.
        let measured = match &self.route {
            Some(route) => match trace.server_span(route) {
                Some(span) => Some(span),
                None => return false,
            },
            None => trace.root,
        };
        if self.duration_gt_ms.is_some() || self.duration_le_ms.is_some() {
            let Some(span) = measured else {
                return false;
            };
            let ms = span.duration().as_secs_f64() * 1e3;
            if self.duration_gt_ms.is_some_and(|gt| ms <= gt)
                || self.duration_le_ms.is_some_and(|le| ms > le)
            {
                return false;
            }
        }
        if self
            .min_duration_ms
            .is_some_and(|min| trace.duration_ms() < min)
        {
            return false;
        }
        if self.error.is_some_and(|e| e != trace.is_error()) {
            return false;
        }
        if self.failed.is_some_and(|f| f != trace.failed()) {
            return false;
        }
        if self.category.is_some_and(|c| !trace.has_category(c)) {
            return false;
        }
        if let Some(hex) = &self.trace_id {
            let id = trace.trace_id();
            if !id.contains(hex.as_str()) {
                return false;
            }
        }
        true
    }
}

fn millis(key: &str, v: &str) -> Result<f64, QueryError> {
    v.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x >= 0.0)
        .ok_or_else(|| QueryError(format!("{key}={v} is not a number of milliseconds")))
}

fn boolean(key: &str, v: &str) -> Result<bool, QueryError> {
    match v {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(QueryError(format!("{key}={v} is not true or false"))),
    }
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space);
/// `None` for a bad escape or bytes that are not UTF-8.
fn decode(v: &str) -> Option<String> {
    if !v.contains(['%', '+']) {
        return Some(v.to_string());
    }
    let mut out = Vec::with_capacity(v.len());
    let mut bytes = v.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_parameter() {
        let q = Query::parse(
            "service=a%20b&route=&kind=server&min_duration_ms=1.5&duration_gt_ms=100&duration_le_ms=250\
             &error=false&failed=1&category=network&trace_id=ABC&limit=7&spans=false",
        )
        .unwrap();
        assert_eq!(
            q,
            Query {
                service: Some("a b".into()),
                route: Some(String::new()),
                kind: Some(SpanKind::Server),
                min_duration_ms: Some(1.5),
                duration_gt_ms: Some(100.0),
                duration_le_ms: Some(250.0),
                error: Some(false),
                failed: Some(true),
                category: Some(FailureCategory::Network),
                trace_id: Some("abc".into()),
                limit: 7,
                spans: false,
            }
        );
        assert_eq!(Query::parse("").unwrap(), Query::default());
        assert_eq!(
            Query::parse("route=GET+orders").unwrap().route.as_deref(),
            Some("GET orders")
        );
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (query, needle) in [
            ("min_duration_ms=x", "min_duration_ms=x"),
            ("duration_le_ms=-1", "duration_le_ms=-1"),
            ("duration_gt_ms=5&duration_le_ms=5", "not below"),
            ("error=maybe", "error=maybe"),
            ("failed=2", "failed=2"),
            ("category=FATAL", "category=FATAL"),
            ("kind=PRODUCER", "kind=PRODUCER"),
            ("trace_id=xyz", "trace_id=xyz"),
            ("trace_id=", "trace_id="),
            ("limit=0", "limit=0"),
            ("colour=red", "\"colour\""),
            ("route=%zz", "route"),
            ("route=%ff", "route"),
        ] {
            let err = Query::parse(query).unwrap_err().to_string();
            assert!(err.contains(needle), "{query}: {err}");
        }
    }

    #[test]
    fn decodes_form_encoding() {
        assert_eq!(decode("a+b%2Fc%C3%A9").as_deref(), Some("a b/cé"));
        assert_eq!(decode("100%"), None);
        assert_eq!(decode("%4"), None);
        assert_eq!(decode("plain").as_deref(), Some("plain"));
    }
}
