//! The Prometheus text `/metrics` serves, read back by everything that
//! reads it: `/debug/red` and the OpenMetrics rendering ([`crate::admin`])
//! go line by line ([`Line`]), keeping the text's order and spelling; the
//! OTLP metrics push ([`crate::metrics_export`]) reads it into metric
//! families with their series ([`parse`]), so it sends exactly what a
//! scrape at the same moment would show. One reader means a sample, a
//! label value or an escape cannot be understood two ways.
//!
//! Only what our recorder writes is read: `# HELP` and `# TYPE` lines ahead
//! of each family, counters and gauges as one sample per series,
//! histograms as cumulative `_bucket{le}` samples then `_sum` and `_count`,
//! summaries as `{quantile}` samples then `_sum` and `_count`. A line that
//! cannot be read is skipped: one odd line must not hide the rest.

use std::borrow::Cow;

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

/// One line of an exposition, borrowed from the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// `# HELP name text`, the text still escaped.
    Help {
        /// The family named.
        name: &'a str,
        /// The help text as written.
        text: &'a str,
    },
    /// `# TYPE name type`.
    Type {
        /// The family named.
        name: &'a str,
        /// The type as written (`counter`, `untyped`, ...).
        kind: &'a str,
    },
    /// `name{labels} value [timestamp]`.
    Sample(Sample<'a>),
    /// A blank line, another comment or a line that cannot be read.
    Other,
}

/// One sample line; its labels were checked to be well formed when the
/// line was read, so iterating them cannot fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample<'a> {
    /// The sample's name, with its `_bucket`, `_sum`... suffix.
    pub name: &'a str,
    /// The text between the braces.
    labels: &'a str,
    /// The value as written.
    pub value: &'a str,
}

/// A sample's labels with their values as written (still escaped), in
/// exposition order.
#[derive(Clone, Debug)]
pub struct RawLabels<'a>(&'a str);

/// Reads an exposition line by line.
pub fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    text.lines().map(Line::read)
}

/// Reads an exposition into families, in order.
pub fn parse(text: &str) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    let mut help: Option<(&str, &str)> = None;
    for line in lines(text) {
        match line {
            Line::Help { name, text } => help = Some((name, text)),
            Line::Type { name, kind } => {
                let help = match help.take() {
                    Some((n, h)) if n == name => unescape(h).into_owned(),
                    _ => String::new(),
                };
                families.push(Family {
                    name: name.to_string(),
                    kind: Kind::of(kind),
                    help,
                    series: Vec::new(),
                });
            }
            Line::Sample(sample) => add_sample(&mut families, &sample),
            Line::Other => {}
        }
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

/// A number as the exposition writes it (`+Inf` and `-Inf` included).
pub fn number(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        text => text.parse().ok(),
    }
}

/// Undoes the exposition's escapes (`\\`, `\"`, `\n`) of a label value or
/// help text; borrows when there are none.
pub fn unescape(text: &str) -> Cow<'_, str> {
    if !text.contains('\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
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
    Cow::Owned(out)
}

// === impl Kind ===

impl Kind {
    /// The kind a `# TYPE` line names; what we do not read as another
    /// kind (`untyped`, `gauge`) is a gauge.
    fn of(kind: &str) -> Self {
        match kind {
            "counter" => Kind::Counter,
            "histogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            _ => Kind::Gauge,
        }
    }
}

// === impl Line ===

impl<'a> Line<'a> {
    /// Reads one line (without its line break).
    pub fn read(line: &'a str) -> Self {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            return match rest.split_once(' ') {
                Some((name, text)) => Line::Help { name, text },
                None => Line::Other,
            };
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            return match (parts.next(), parts.next()) {
                (Some(name), Some(kind)) => Line::Type { name, kind },
                _ => Line::Other,
            };
        }
        if line.starts_with('#') || line.trim().is_empty() {
            return Line::Other;
        }
        Sample::read(line).map_or(Line::Other, Line::Sample)
    }
}

// === impl Sample ===

impl<'a> Sample<'a> {
    /// Splits `name{a="b"} 3` (or `name 3`) into name, labels and value.
    fn read(line: &'a str) -> Option<Self> {
        let end = line.find(['{', ' '])?;
        let name = &line[..end];
        let (labels, tail) = match line[end..].strip_prefix('{') {
            Some(rest) => split_labels(rest)?,
            None => ("", &line[end..]),
        };
        let value = tail.split_whitespace().next()?;
        Some(Self {
            name,
            labels,
            value,
        })
    }

    /// The value as a number.
    pub fn number(&self) -> Option<f64> {
        number(self.value)
    }

    /// The labels, values as written: what is compared with the text
    /// itself, without an allocation.
    pub fn raw_labels(&self) -> RawLabels<'a> {
        RawLabels(self.labels)
    }

    /// The labels, values unescaped.
    pub fn labels(&self) -> impl Iterator<Item = (&'a str, Cow<'a, str>)> {
        self.raw_labels().map(|(key, value)| (key, unescape(value)))
    }
}

// === impl RawLabels ===

impl<'a> Iterator for RawLabels<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.0.trim_start_matches(',');
        let (key, rest) = rest.split_once("=\"")?;
        let end = closing_quote(rest)?;
        self.0 = &rest[end + 1..];
        Some((key.trim(), &rest[..end]))
    }
}

/// Splits `k="v",...}` (the text after `{`) into the labels' text and the
/// rest of the line after `}`; `None` when the labels are not well formed.
fn split_labels(text: &str) -> Option<(&str, &str)> {
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Some((&text[..text.len() - rest.len()], after));
        }
        let (_, value) = rest.split_once("=\"")?;
        rest = &value[closing_quote(value)? + 1..];
    }
}

/// Where the quoted value that `text` starts (after its opening quote)
/// ends, past escaped quotes.
fn closing_quote(text: &str) -> Option<usize> {
    let mut chars = text.char_indices();
    loop {
        match chars.next()? {
            (i, '"') => return Some(i),
            (_, '\\') => {
                chars.next()?;
            }
            _ => {}
        }
    }
}

fn add_sample(families: &mut Vec<Family>, sample: &Sample<'_>) {
    let Some(value) = sample.number() else {
        return;
    };
    let (name, raw) = (sample.name, sample.value);
    let mut labels: Labels = sample
        .labels()
        .map(|(key, value)| (key.to_string(), value.into_owned()))
        .collect();
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
            match (suffix, le.as_deref().and_then(number)) {
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
            match (suffix, q.as_deref().and_then(number)) {
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

    #[test]
    fn lines_keep_the_text_as_written() {
        let read: Vec<_> = lines(
            "# HELP a_total Help with \\n.\n# TYPE a_total untyped\na_total{r=\"x \\\"y\\\"\",le=\"+Inf\"} 3 1700000000\n\n# other\nbroken{r=\"x} 1\n",
        )
        .collect();
        assert_eq!(
            read[..2],
            [
                Line::Help {
                    name: "a_total",
                    text: "Help with \\n."
                },
                Line::Type {
                    name: "a_total",
                    kind: "untyped"
                },
            ]
        );
        let Line::Sample(sample) = read[2] else {
            panic!("a sample: {:?}", read[2]);
        };
        assert_eq!((sample.name, sample.value), ("a_total", "3"));
        assert_eq!(sample.number(), Some(3.0));
        assert_eq!(
            sample.raw_labels().collect::<Vec<_>>(),
            [("r", "x \\\"y\\\""), ("le", "+Inf")]
        );
        assert_eq!(
            sample
                .labels()
                .map(|(k, v)| (k, v.into_owned()))
                .collect::<Vec<_>>(),
            [("r", "x \"y\"".to_string()), ("le", "+Inf".to_string())]
        );
        assert_eq!(read[3..], [Line::Other, Line::Other, Line::Other]);
    }
}
