//! The Prometheus text `/metrics` serves, read back into metric families
//! with their series, so the push sends exactly what a scrape at the same
//! moment would show.
//!
//! Only what our recorder writes is read: `# HELP` and `# TYPE` lines ahead
//! of each family, counters and gauges as one sample per series,
//! histograms as cumulative `_bucket{le}` samples then `_sum` and `_count`,
//! summaries as `{quantile}` samples then `_sum` and `_count`. A line that
//! cannot be read is skipped, as `/debug/red` does: one odd line must not
//! stop the push of the rest.

/// A series' labels, `(name, value)` in exposition order, unescaped.
pub type Labels = Vec<(String, String)>;

/// What a family is, from its `# TYPE` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A monotonic total.
    Counter,
    /// A value that goes up and down (also a family without `# TYPE`).
    Gauge,
    /// Buckets, sum and count.
    Histogram,
    /// Quantiles, sum and count.
    Summary,
}

/// One family: its name as exposed, type, help and series.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// The exposed name, e.g. `http_server_request_duration_seconds`.
    pub name: String,
    /// The type.
    pub kind: Kind,
    /// The `# HELP` text, unescaped.
    pub help: String,
    /// Its series, in exposition order.
    pub series: Vec<Series>,
}

/// One labelled series of a family.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Labels without `le` / `quantile`.
    pub labels: Labels,
    /// The value(s).
    pub value: Value,
}

/// A series' value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A counter or gauge sample; `int` when the text was an integer.
    Number {
        /// The value.
        value: f64,
        /// Written without a fraction or exponent (counters of events).
        int: bool,
    },
    /// A histogram series.
    Histogram {
        /// Finite upper bounds, ascending.
        bounds: Vec<f64>,
        /// Cumulative counts per bound, then `+Inf` (one more than `bounds`).
        cumulative: Vec<u64>,
        /// `_sum`.
        sum: f64,
        /// `_count`.
        count: u64,
    },
    /// A summary series.
    Summary {
        /// `(quantile, value)`.
        quantiles: Vec<(f64, f64)>,
        /// `_sum`.
        sum: f64,
        /// `_count`.
        count: u64,
    },
}

/// Reads an exposition into families, in order.
pub fn parse(text: &str) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    let mut help: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, text)) = rest.split_once(' ') {
                help = Some((name.to_string(), unescape_help(text)));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let kind = match kind {
                "counter" => Kind::Counter,
                "histogram" => Kind::Histogram,
                "summary" => Kind::Summary,
                _ => Kind::Gauge,
            };
            let help = match help.take() {
                Some((n, h)) if n == name => h,
                _ => String::new(),
            };
            families.push(Family {
                name: name.to_string(),
                kind,
                help,
                series: Vec::new(),
            });
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((name, labels, value)) = split_sample(line) else {
            continue;
        };
        add_sample(&mut families, name, labels, value);
    }
    for f in &mut families {
        f.series.retain(|s| match &s.value {
            Value::Histogram {
                bounds, cumulative, ..
            } => cumulative.len() == bounds.len() + 1,
            _ => true,
        });
    }
    families.retain(|f| !f.series.is_empty());
    families
}

fn add_sample(families: &mut Vec<Family>, name: &str, mut labels: Labels, raw: &str) {
    let Some(value) = parse_float(raw) else {
        return;
    };
    // The sample belongs to the family just opened; an untyped sample
    // without one becomes a gauge family of its own.
    let family = match families.last_mut() {
        Some(f) if belongs(f, name) => f,
        _ => {
            families.push(Family {
                name: name.to_string(),
                kind: Kind::Gauge,
                help: String::new(),
                series: Vec::new(),
            });
            families.last_mut().expect("just pushed")
        }
    };
    let suffix = &name[family.name.len()..];
    match family.kind {
        Kind::Counter | Kind::Gauge => family.series.push(Series {
            labels,
            value: Value::Number {
                value,
                int: !raw.contains(['.', 'e', 'E', 'I', 'N']),
            },
        }),
        Kind::Histogram => {
            let le = take_label(&mut labels, "le");
            let series = series_for(&mut family.series, labels, || Value::Histogram {
                bounds: Vec::new(),
                cumulative: Vec::new(),
                sum: 0.0,
                count: 0,
            });
            let Value::Histogram {
                bounds,
                cumulative,
                sum,
                count,
            } = &mut series.value
            else {
                return;
            };
            match (suffix, le.as_deref().and_then(parse_float)) {
                ("_bucket", Some(bound)) => {
                    if bound.is_finite() {
                        bounds.push(bound);
                    }
                    cumulative.push(value as u64);
                }
                ("_sum", _) => *sum = value,
                ("_count", _) => *count = value as u64,
                _ => {}
            }
        }
        Kind::Summary => {
            let q = take_label(&mut labels, "quantile");
            let series = series_for(&mut family.series, labels, || Value::Summary {
                quantiles: Vec::new(),
                sum: 0.0,
                count: 0,
            });
            let Value::Summary {
                quantiles,
                sum,
                count,
            } = &mut series.value
            else {
                return;
            };
            match (suffix, q.as_deref().and_then(parse_float)) {
                ("", Some(q)) => quantiles.push((q, value)),
                ("_sum", _) => *sum = value,
                ("_count", _) => *count = value as u64,
                _ => {}
            }
        }
    }
}

fn belongs(f: &Family, name: &str) -> bool {
    let Some(suffix) = name.strip_prefix(f.name.as_str()) else {
        return false;
    };
    match f.kind {
        Kind::Counter | Kind::Gauge => suffix.is_empty(),
        Kind::Histogram => matches!(suffix, "_bucket" | "_sum" | "_count"),
        Kind::Summary => matches!(suffix, "" | "_sum" | "_count"),
    }
}

/// The series with `labels`; the last one is checked first, as a series'
/// samples are written together.
fn series_for(
    series: &mut Vec<Series>,
    labels: Labels,
    empty: impl FnOnce() -> Value,
) -> &mut Series {
    let i = match series.iter().rposition(|s| s.labels == labels) {
        Some(i) => i,
        None => {
            series.push(Series {
                labels,
                value: empty(),
            });
            series.len() - 1
        }
    };
    &mut series[i]
}

fn take_label(labels: &mut Labels, key: &str) -> Option<String> {
    let i = labels.iter().position(|(k, _)| k == key)?;
    Some(labels.remove(i).1)
}

/// Splits `name{a="b"} 3` (or `name 3`) into name, labels and value text.
fn split_sample(line: &str) -> Option<(&str, Labels, &str)> {
    let end = line.find(['{', ' '])?;
    let name = &line[..end];
    let (labels, tail) = match line[end..].strip_prefix('{') {
        Some(rest) => parse_labels(rest)?,
        None => (Vec::new(), &line[end..]),
    };
    let value = tail.split_whitespace().next()?;
    Some((name, labels, value))
}

/// Reads `k="v",...}` (the text after `{`), unescaping `\\`, `\"` and `\n`.
fn parse_labels(mut s: &str) -> Option<(Labels, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches(',');
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        s = &rest[end + 1..];
    }
}

fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some(c) => out.push(c),
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        s => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP http_server_request_duration_seconds Duration of requests.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{http_route="a",le="0.1"} 2
http_server_request_duration_seconds_bucket{http_route="a",le="1"} 3
http_server_request_duration_seconds_bucket{http_route="a",le="+Inf"} 4
http_server_request_duration_seconds_sum{http_route="a"} 2.5
http_server_request_duration_seconds_count{http_route="a"} 4
http_server_request_duration_seconds_bucket{http_route="b \"q\"",le="0.1"} 0
http_server_request_duration_seconds_bucket{http_route="b \"q\"",le="1"} 1
http_server_request_duration_seconds_bucket{http_route="b \"q\"",le="+Inf"} 1
http_server_request_duration_seconds_sum{http_route="b \"q\""} 0.5
http_server_request_duration_seconds_count{http_route="b \"q\""} 1

# HELP sidetrace_spans_exported_total Spans accepted.
# TYPE sidetrace_spans_exported_total counter
sidetrace_spans_exported_total 7

# TYPE sidetrace_connections_open gauge
sidetrace_connections_open{listener="inbound"} 1
garbage line
# TYPE webhook_seconds summary
webhook_seconds{quantile="0.5"} 0.01
webhook_seconds{quantile="0.99"} 0.02
webhook_seconds_sum 0.5
webhook_seconds_count 30
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 0.25
"#;

    #[test]
    fn reads_every_kind() {
        let f = parse(TEXT);
        let names: Vec<_> = f.iter().map(|f| (f.name.as_str(), f.kind)).collect();
        assert_eq!(
            names,
            [
                ("http_server_request_duration_seconds", Kind::Histogram),
                ("sidetrace_spans_exported_total", Kind::Counter),
                ("sidetrace_connections_open", Kind::Gauge),
                ("webhook_seconds", Kind::Summary),
                ("process_cpu_seconds_total", Kind::Counter),
            ]
        );
        assert_eq!(f[0].help, "Duration of requests.");
        assert_eq!(f[0].series.len(), 2);
        assert_eq!(
            f[0].series[0].labels,
            vec![("http_route".to_string(), "a".to_string())]
        );
        assert_eq!(
            f[0].series[0].value,
            Value::Histogram {
                bounds: vec![0.1, 1.0],
                cumulative: vec![2, 3, 4],
                sum: 2.5,
                count: 4
            }
        );
        assert_eq!(f[0].series[1].labels[0].1, "b \"q\"");
        assert_eq!(
            f[1].series[0].value,
            Value::Number {
                value: 7.0,
                int: true
            }
        );
        assert_eq!(f[2].help, "");
        assert_eq!(
            f[3].series[0].value,
            Value::Summary {
                quantiles: vec![(0.5, 0.01), (0.99, 0.02)],
                sum: 0.5,
                count: 30
            }
        );
        assert_eq!(
            f[4].series[0].value,
            Value::Number {
                value: 0.25,
                int: false
            }
        );
    }

    #[test]
    fn an_incomplete_histogram_series_is_left_out() {
        let f = parse(
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n# TYPE c counter\nc 1\n",
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].name, "c");
    }
}
