//! `/metrics` in the OpenMetrics text format, for scrapers that ask for it
//! (`Accept: application/openmetrics-text`, as Prometheus does with exemplar
//! storage on): the same families as the Prometheus text, rewritten where
//! the two formats differ, with the request-duration buckets carrying their
//! exemplars (`# {trace_id="…",span_id="…"} value timestamp`).
//!
//! It rewrites the very text the Prometheus format serves, so the two
//! cannot disagree: counter families are named without `_total` in their
//! `# TYPE` and `# HELP` lines, blank lines go, and `# EOF` ends the text.

use std::{collections::HashMap, fmt::Write};

use filters::metrics::exemplar::{ExemplarSeries, Exemplars};

use crate::exposition::{self, Line, Sample};

/// A series by its metric name and its labels, sorted.
type SeriesId<'a> = (&'a str, Vec<(&'a str, &'a str)>);

/// The content type of the OpenMetrics rendering.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wanted(accept: Option<&http::HeaderValue>) -> bool {
    accept
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"))
}

/// Rewrites the Prometheus `text` as OpenMetrics with `exemplars` on the
/// buckets of their series.
pub fn render(text: &str, exemplars: &[ExemplarSeries]) -> String {
    let types = family_types(text);
    let by_series: HashMap<SeriesId<'_>, &Exemplars> = exemplars
        .iter()
        .map(|s| {
            let mut labels: Vec<(&str, &str)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            labels.sort_unstable();
            ((s.name, labels), &*s.exemplars)
        })
        .collect();
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.lines() {
        match Line::read(line) {
            Line::Help { name, text } => {
                let family = family_name(name, types.get(name).copied());
                let _ = writeln!(out, "# HELP {family} {text}");
            }
            Line::Type { name, kind } => {
                let family = family_name(name, Some(kind));
                // A counter's samples must end in `_total`; one that does
                // not is exposed as `unknown`.
                let kind = match kind {
                    "counter" if family == name => "unknown",
                    kind => kind,
                };
                let _ = writeln!(out, "# TYPE {family} {kind}");
            }
            Line::Sample(sample) => {
                out.push_str(line);
                if let Some(exemplar) = exemplar_for(&sample, &by_series) {
                    out.push_str(&exemplar);
                }
                out.push('\n');
            }
            Line::Other if line.is_empty() => {}
            Line::Other => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// `# TYPE` of every family in the text, as written.
fn family_types(text: &str) -> HashMap<&str, &str> {
    exposition::lines(text)
        .filter_map(|line| match line {
            Line::Type { name, kind } => Some((name, kind)),
            _ => None,
        })
        .collect()
}

fn family_name<'a>(name: &'a str, kind: Option<&str>) -> &'a str {
    match kind {
        Some("counter") => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    }
}

/// The exemplar text for a `_bucket` sample of a series that has one.
/// Label values are compared as written, escapes and all: a registered
/// value matches only when it needs none.
fn exemplar_for(
    sample: &Sample<'_>,
    by_series: &HashMap<SeriesId<'_>, &Exemplars>,
) -> Option<String> {
    let name = sample.name.strip_suffix("_bucket")?;
    let mut le = None;
    let mut pairs = Vec::new();
    for (k, v) in sample.raw_labels() {
        if k == "le" {
            le = Some(v);
        } else {
            pairs.push((k, v));
        }
    }
    pairs.sort_unstable();
    let exemplars = by_series.get(&(name, pairs))?;
    let bounds = exemplars.bounds();
    let index = match le? {
        "+Inf" => bounds.len(),
        bound => {
            let bound = exposition::number(bound)?;
            bounds.iter().position(|b| *b == bound)?
        }
    };
    let e = exemplars.get(index)?;
    let trace = e.trace_id.to_hex();
    let span = e.span_id.to_hex();
    Some(format!(
        " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {}.{:03}",
        std::str::from_utf8(&trace).ok()?,
        std::str::from_utf8(&span).ok()?,
        e.value,
        e.unix_millis / 1000,
        e.unix_millis % 1000
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use filters::{
        metrics::exemplar::Exemplar,
        trace::{SpanId, TraceId},
    };

    use super::*;

    const TEXT: &str = "# HELP requests_total Requests.\n# TYPE requests_total counter\nrequests_total{a=\"x\"} 3\n\n# TYPE odd counter\nodd 1\n\n# TYPE d histogram\nd_bucket{m=\"GET\",r=\"\",le=\"0.005\"} 0\nd_bucket{m=\"GET\",r=\"\",le=\"0.01\"} 1\nd_bucket{m=\"GET\",r=\"\",le=\"+Inf\"} 1\nd_sum{m=\"GET\",r=\"\"} 0.007\nd_count{m=\"GET\",r=\"\"} 1\n";

    #[test]
    fn counters_lose_total_in_metadata_and_buckets_carry_exemplars() {
        let exemplars = Arc::new(Exemplars::default());
        exemplars.offer(Exemplar {
            trace_id: TraceId([0xab; 16]),
            span_id: SpanId([0xcd; 8]),
            value: 0.007,
            unix_millis: 1_700_000_000_123,
        });
        let series = ExemplarSeries {
            name: "d",
            labels: vec![
                ("r".to_owned(), String::new()),
                ("m".to_owned(), "GET".to_owned()),
            ]
            .into(),
            exemplars,
        };
        let out = render(TEXT, &[series]);
        assert_eq!(
            out,
            "# HELP requests Requests.\n# TYPE requests counter\nrequests_total{a=\"x\"} 3\n\
             # TYPE odd unknown\nodd 1\n\
             # TYPE d histogram\nd_bucket{m=\"GET\",r=\"\",le=\"0.005\"} 0\n\
             d_bucket{m=\"GET\",r=\"\",le=\"0.01\"} 1 # {trace_id=\"abababababababababababababababab\",span_id=\"cdcdcdcdcdcdcdcd\"} 0.007 1700000000.123\n\
             d_bucket{m=\"GET\",r=\"\",le=\"+Inf\"} 1\nd_sum{m=\"GET\",r=\"\"} 0.007\nd_count{m=\"GET\",r=\"\"} 1\n# EOF\n"
        );
    }

    #[test]
    fn accept_headers() {
        let v = |s: &'static str| http::HeaderValue::from_static(s);
        assert!(wanted(Some(&v(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        ))));
        assert!(!wanted(Some(&v("text/plain"))));
        assert!(!wanted(None));
    }
}
