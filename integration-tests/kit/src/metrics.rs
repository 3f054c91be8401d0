//! The Prometheus text exposition, parsed.

/// Parses a Prometheus text exposition into `(series, value)` pairs.
pub fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Sum of the values of series named `name` whose labels contain every
/// `key="value"` pair in `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse_metrics(text)
        .into_iter()
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series.as_str(), ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_series_with_the_labels() {
        let text = "# TYPE x counter\nx{a=\"1\",b=\"2\"} 3\nx{a=\"1\",b=\"3\"} 4\ny 5\n";
        assert_eq!(metric_sum(text, "x", &[("a", "1")]), 7.0);
        assert_eq!(metric_sum(text, "x", &[("b", "3")]), 4.0);
        assert_eq!(metric_sum(text, "y", &[]), 5.0);
    }
}
