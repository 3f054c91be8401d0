//! `GET /debug/red`: rate, errors and duration per inbound route, read from
//! the very Prometheus text `/metrics` serves.
//!
//! Parsing the exposition rather than keeping a second tally from the
//! stored spans is what makes the summary agree with `/metrics` and with a
//! Grafana panel over it: the same histogram series, every request counted
//! whether or not its trace was sampled or has been evicted, the same
//! buckets. Quantiles are interpolated inside buckets the way PromQL's
//! `histogram_quantile` does. The rate is left to the reader, which has
//! two samples in time; the body carries `process_start_time_seconds` for a
//! since-start average before it has them.

use std::{borrow::Cow, collections::BTreeMap};

use serde::Serialize;

use crate::exposition::{self, Line};

/// The histogram summarised.
const METRIC: &str = "http_server_request_duration_seconds";

/// The quantiles reported.
const QUANTILES: [(f64, &str); 3] = [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")];

/// The summary of one exposition.
#[derive(Debug, Serialize, PartialEq)]
pub struct Red {
    /// The histogram read: `http_server_request_duration_seconds`.
    pub metric: &'static str,
    /// `process_start_time_seconds`, when the exposition has it.
    pub process_start_time_seconds: Option<f64>,
    /// Upper bounds of the finite buckets, in seconds, ascending; every
    /// route's `buckets` has one more entry, for `+Inf`.
    pub bounds_seconds: Vec<f64>,
    /// Every route together (`route` is `""`).
    pub all: RouteRed,
    /// By route name; `""` is requests that matched no route.
    pub routes: Vec<RouteRed>,
}

/// Rate, errors and duration of one route.
#[derive(Debug, Serialize, PartialEq)]
pub struct RouteRed {
    /// The `http_route` label; `""` for no route.
    pub route: String,
    /// Label sets past `metrics.series_limit` land in one overflow series,
    /// shown as its own row so totals still add up.
    pub overflow: bool,
    /// Requests counted (`_count`).
    pub requests: u64,
    /// Their total duration (`_sum`), in seconds.
    pub duration_sum_seconds: f64,
    /// Requests by `failure_category`, every category present.
    pub failures: BTreeMap<&'static str, u64>,
    /// Failed requests over all requests.
    pub error_ratio: f64,
    /// Requests whose client went away (not failures).
    pub cancelled: u64,
    /// Requests per bucket (not cumulative), the last one `+Inf`.
    pub buckets: Vec<u64>,
    /// `p50`, `p90`, `p99` in seconds; absent with no requests.
    pub quantiles: BTreeMap<&'static str, f64>,
}

#[derive(Default)]
struct Acc {
    count: u64,
    sum: f64,
    failures: BTreeMap<&'static str, u64>,
    cancelled: u64,
    /// Cumulative counts by bucket bound, summed over the route's series.
    cumulative: BTreeMap<Bound, u64>,
}

/// A sample's labels, values unescaped, in exposition order.
type Labels<'a> = [(&'a str, Cow<'a, str>)];

/// A bucket bound, ordered numerically (`+Inf` last).
#[derive(Clone, Copy, Debug)]
struct Bound(f64);

// === impl Red ===

impl Red {
    /// Summarises the `http_server_request_duration_seconds` histogram of a
    /// Prometheus text exposition. Lines it cannot read are skipped: the
    /// text comes from our own recorder, and one odd line must not hide the
    /// rest.
    pub fn from_exposition(text: &str) -> Self {
        let mut routes: BTreeMap<(bool, String), Acc> = BTreeMap::new();
        let mut all = Acc::default();
        let mut start = None;
        for line in exposition::lines(text) {
            let Line::Sample(sample) = line else {
                continue;
            };
            if sample.name == "process_start_time_seconds" {
                start = sample.number();
                continue;
            }
            let Some(suffix) = sample.name.strip_prefix(METRIC) else {
                continue;
            };
            let Some(value) = sample.number() else {
                continue;
            };
            let labels: Vec<_> = sample.labels().collect();
            let overflow = label(&labels, "overflow") == Some("true");
            let route = label(&labels, "http_route").unwrap_or_default().to_string();
            routes
                .entry((overflow, route))
                .or_default()
                .add(suffix, &labels, value);
            all.add(suffix, &labels, value);
        }
        // Every series has every bucket of the configured list; the union
        // is the list (sorted, as the map's keys are).
        let bounds: Vec<f64> = all
            .cumulative
            .keys()
            .map(|b| b.0)
            .filter(|b| b.is_finite())
            .collect();
        let routes = routes
            .into_iter()
            .map(|((overflow, route), acc)| acc.finish(route, overflow, &bounds))
            .collect();
        Self {
            metric: METRIC,
            process_start_time_seconds: start,
            all: all.finish(String::new(), false, &bounds),
            bounds_seconds: bounds,
            routes,
        }
    }
}

// === impl Bound ===

impl PartialEq for Bound {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}

impl Eq for Bound {}

impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

// === impl Acc ===

impl Acc {
    /// Adds one sample line of the histogram: `suffix` is `_bucket`,
    /// `_sum` or `_count`.
    fn add(&mut self, suffix: &str, labels: &Labels<'_>, value: f64) {
        match suffix {
            "_bucket" => {
                if let Some(le) = label(labels, "le").and_then(exposition::number) {
                    *self.cumulative.entry(Bound(le)).or_default() += value as u64;
                }
            }
            "_sum" => self.sum += value,
            "_count" => {
                let n = value as u64;
                self.count += n;
                match label(labels, "failure_category") {
                    Some("VALIDATION") => *self.failures.entry("VALIDATION").or_default() += n,
                    Some("NETWORK") => *self.failures.entry("NETWORK").or_default() += n,
                    Some("INTERNAL") => *self.failures.entry("INTERNAL").or_default() += n,
                    _ if label(labels, "error_type") == Some("cancelled") => self.cancelled += n,
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn finish(self, route: String, overflow: bool, bounds: &[f64]) -> RouteRed {
        // Cumulative counts at every bound, carried forward where a series
        // set lacks one, then +Inf (which is the count).
        let mut cumulative = Vec::with_capacity(bounds.len() + 1);
        let mut last = 0;
        for b in bounds {
            if let Some(n) = self.cumulative.get(&Bound(*b)) {
                last = *n;
            }
            cumulative.push(last);
        }
        cumulative.push(self.count.max(last));
        let buckets = cumulative
            .iter()
            .scan(0, |prev, &c| {
                let n = c.saturating_sub(*prev);
                *prev = c;
                Some(n)
            })
            .collect();
        let mut failures: BTreeMap<&'static str, u64> = ["VALIDATION", "NETWORK", "INTERNAL"]
            .into_iter()
            .map(|c| (c, 0))
            .collect();
        failures.extend(self.failures);
        let failed: u64 = failures.values().sum();
        let quantiles = QUANTILES
            .iter()
            .filter_map(|(q, name)| Some((*name, quantile(*q, bounds, &cumulative)?)))
            .collect();
        RouteRed {
            route,
            overflow,
            requests: self.count,
            duration_sum_seconds: self.sum,
            error_ratio: if self.count == 0 {
                0.0
            } else {
                failed as f64 / self.count as f64
            },
            failures,
            cancelled: self.cancelled,
            buckets,
            quantiles,
        }
    }
}

/// PromQL's `histogram_quantile`: the bucket holding rank `q * count`,
/// linear inside it from its lower bound (0 for the first); a rank in the
/// `+Inf` bucket answers the highest finite bound.
fn quantile(q: f64, bounds: &[f64], cumulative: &[u64]) -> Option<f64> {
    let total = *cumulative.last()?;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let i = cumulative.iter().position(|&c| c as f64 >= rank)?;
    let Some(&upper) = bounds.get(i) else {
        return bounds.last().copied();
    };
    let (lower, below) = match i.checked_sub(1) {
        Some(j) => (bounds[j], cumulative[j]),
        None => (0.0, 0),
    };
    let inside = cumulative[i] - below;
    if inside == 0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below as f64) / inside as f64)
}

fn label<'a>(labels: &'a Labels<'_>, key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_ref())
}

#[cfg(test)]
mod tests;
