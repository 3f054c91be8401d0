//! The filter registry: config names to layers.
//!
//! [`FilterConfig`] *is* the registry. Serde maps each YAML key (`timeout`,
//! `retry`, ...) to its typed config and rejects unknown names and fields with
//! their line and column; [`FilterConfig::layer`] is one exhaustive `match`,
//! so no filter can be half-registered.
//!
//! ```yaml
//! filters:
//!   - timeout: { request: 5s }
//! ```

use serde::{Deserialize, Serialize};

use crate::{
    circuit_breaker::CircuitBreakerConfig, concurrency_limit::ConcurrencyLimitConfig,
    filter_metrics::FilterMetrics, headers::HeadersConfig, max_body::MaxBodyConfig,
    rate_limit::RateLimitConfig, retry::RetryConfig, timeout::TimeoutConfig, HttpLayer,
};

/// A filter: a typed config that builds a layer.
pub trait Filter {
    /// The name used in config files, e.g. `timeout`.
    const NAME: &'static str;

    /// Checks what serde cannot (ranges, relations between fields).
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Builds the layer. Runs at config load, never per request.
    fn layer(&self, cx: &BuildContext) -> Result<HttpLayer, ConfigError>;
}

/// One entry of the `filters:` list.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FilterConfig {
    /// Deadline for the whole request.
    Timeout(TimeoutConfig),
    /// Sends failed requests again, within a budget.
    Retry(RetryConfig),
    /// Sheds requests above a number in flight.
    ConcurrencyLimit(ConcurrencyLimitConfig),
    /// Turns away requests above a rate.
    RateLimit(RateLimitConfig),
    /// Stops calling a failing upstream for a while.
    CircuitBreaker(CircuitBreakerConfig),
    /// Adds and removes request and response headers.
    Headers(HeadersConfig),
    /// Answers requests with a body over a size with 413.
    MaxBody(MaxBodyConfig),
}

/// What a filter may use while it builds its layer.
#[derive(Clone, Debug, Default)]
pub struct BuildContext {
    /// Where in the config this filter sits, for error messages (`filters[2]`).
    pub path: String,
    /// Where it records what it does, labelled with this filter and its chain.
    pub metrics: FilterMetrics,
}

/// A config value that serde accepted but the filter cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The field, relative to the filter (`budget_percent`).
    pub field: &'static str,
    /// What is wrong and what would be right.
    pub message: String,
}

// === impl FilterConfig ===

impl FilterConfig {
    /// The filter's registry name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Timeout(_) => TimeoutConfig::NAME,
            Self::Retry(_) => RetryConfig::NAME,
            Self::ConcurrencyLimit(_) => ConcurrencyLimitConfig::NAME,
            Self::RateLimit(_) => RateLimitConfig::NAME,
            Self::CircuitBreaker(_) => CircuitBreakerConfig::NAME,
            Self::Headers(_) => HeadersConfig::NAME,
            Self::MaxBody(_) => MaxBodyConfig::NAME,
        }
    }

    /// Checks the filter's config.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Self::Timeout(c) => c.validate(),
            Self::Retry(c) => c.validate(),
            Self::ConcurrencyLimit(c) => c.validate(),
            Self::RateLimit(c) => c.validate(),
            Self::CircuitBreaker(c) => c.validate(),
            Self::Headers(c) => c.validate(),
            Self::MaxBody(c) => c.validate(),
        }
    }

    /// Builds the filter's layer.
    pub fn layer(&self, cx: &BuildContext) -> Result<HttpLayer, ConfigError> {
        match self {
            Self::Timeout(c) => c.layer(cx),
            Self::Retry(c) => c.layer(cx),
            Self::ConcurrencyLimit(c) => c.layer(cx),
            Self::RateLimit(c) => c.layer(cx),
            Self::CircuitBreaker(c) => c.layer(cx),
            Self::Headers(c) => c.layer(cx),
            Self::MaxBody(c) => c.layer(cx),
        }
    }
}

/// Builds the configured chain over `inner`, first filter outermost,
/// recording nothing (a chain that records, and keeps its filters across
/// reloads, is a [`BuiltChain`](crate::chain::BuiltChain)).
pub fn build_chain(
    filters: &[FilterConfig],
    inner: crate::HttpService,
) -> Result<crate::HttpService, (usize, ConfigError)> {
    crate::chain::BuiltChain::build(filters, &FilterMetrics::default(), None)
        .map(|chain| chain.wrap(inner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// A config file's `filters:` list, the shape every example uses.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Filters {
        filters: Vec<FilterConfig>,
    }

    const DESIGN_EXAMPLE: &str = "\
filters:
  - timeout: { request: 5s }
  - retry: { attempts: 2, budget_percent: 20, on: [connect_error, 503] }
  - concurrency_limit: { max: 1000 }
  - rate_limit: { per_second: 500, burst: 100 }
  - circuit_breaker: { failure_ratio: 0.5, min_requests: 20, open_for: 10s }
  - headers: { request_add: {x-env: prod}, response_remove: [server] }
  - max_body: { bytes: 1MiB }
";

    fn parse(yaml: &str) -> Result<Vec<FilterConfig>, String> {
        serde_saphyr::from_str::<Filters>(yaml)
            .map(|f| f.filters)
            .map_err(|e| e.to_string())
    }

    fn echo() -> crate::HttpService {
        crate::HttpService::new(tower::service_fn(|req: crate::Request| async move {
            let env = req.headers().get("x-env").cloned();
            let mut res = http::Response::builder()
                .header("server", "app")
                .body(crate::full_body("ok"))
                .expect("static response");
            if let Some(env) = env {
                res.headers_mut().insert("x-saw-env", env);
            }
            Ok::<_, crate::Error>(res)
        }))
    }

    #[tokio::test]
    async fn design_example_parses_verbatim_and_serves() {
        let filters = parse(DESIGN_EXAMPLE).unwrap();
        let names: Vec<_> = filters.iter().map(FilterConfig::name).collect();
        assert_eq!(
            names,
            [
                "timeout",
                "retry",
                "concurrency_limit",
                "rate_limit",
                "circuit_breaker",
                "headers",
                "max_body"
            ]
        );
        match &filters[1] {
            FilterConfig::Retry(r) => {
                assert_eq!(r.attempts, 2);
                assert_eq!(r.budget_percent, 20);
                assert_eq!(
                    r.on,
                    [
                        crate::retry::RetryOn::ConnectError,
                        crate::retry::RetryOn::Status(http::StatusCode::SERVICE_UNAVAILABLE)
                    ]
                );
            }
            other => panic!("expected retry, got {other:?}"),
        }
        let chain = build_chain(&filters, echo()).unwrap();
        let res = chain
            .oneshot(http::Request::new(crate::empty_body()))
            .await
            .unwrap();
        assert_eq!(res.status(), http::StatusCode::OK);
        assert_eq!(res.headers()["x-saw-env"], "prod");
        assert!(!res.headers().contains_key("server"));
    }

    #[test]
    fn every_yaml_block_in_the_filter_docs_parses_and_builds() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/filters");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        files.sort();
        let mut documented = Vec::new();
        for path in &files {
            let text = std::fs::read_to_string(path).unwrap();
            let mut blocks = 0;
            for block in text.split("```yaml\n").skip(1) {
                let yaml = block.split("```").next().unwrap();
                let filters =
                    parse(yaml).unwrap_or_else(|e| panic!("{}: {e}\n{yaml}", path.display()));
                for f in &filters {
                    f.validate()
                        .unwrap_or_else(|e| panic!("{}: {}: {e}", path.display(), f.name()));
                    documented.push(f.name());
                }
                build_chain(&filters, echo())
                    .unwrap_or_else(|(i, e)| panic!("{}: filters[{i}]: {e}", path.display()));
                blocks += 1;
            }
            assert!(blocks > 0, "{} has no yaml example", path.display());
        }
        // Every registered filter has a page whose examples use it.
        for name in parse(DESIGN_EXAMPLE)
            .unwrap()
            .iter()
            .map(FilterConfig::name)
        {
            assert!(
                documented.contains(&name),
                "no docs/filters example uses {name}"
            );
            assert!(
                files
                    .iter()
                    .any(|p| p.file_stem().is_some_and(|s| s == name)),
                "docs/filters/{name}.md is missing"
            );
        }
    }

    #[test]
    fn unknown_names_and_fields_are_named_in_the_error() {
        let err = parse("filters:\n  - retyr: { attempts: 2 }\n").unwrap_err();
        assert!(err.contains("retyr"), "{err}");
        assert!(err.contains("rate_limit"), "lists the known names: {err}");

        let err = parse("filters:\n  - retry: { attempts: 2, budget: 20 }\n").unwrap_err();
        assert!(err.contains("budget"), "{err}");

        let err = parse("filters:\n  - circuit_breaker: { open_for: soon }\n").unwrap_err();
        assert!(err.contains("soon"), "{err}");
    }

    #[test]
    fn invalid_values_fail_the_build_with_their_index_and_field() {
        let filters =
            parse("filters:\n  - timeout: { request: 1s }\n  - rate_limit: { per_second: 0 }\n")
                .unwrap();
        let Err((i, e)) = build_chain(&filters, echo()) else {
            panic!("per_second: 0 must not build");
        };
        assert_eq!((i, e.field), (1, "per_second"));
    }

    #[test]
    fn configs_round_trip_through_serialize() {
        let filters = parse(DESIGN_EXAMPLE).unwrap();
        let yaml = serde_saphyr::to_string(&Filters2 { filters: &filters }).unwrap();
        let again = parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        // Debug redacts added header values too, so this compares everything
        // but them; the rendering never carries them (they may be credentials).
        assert_eq!(format!("{filters:?}"), format!("{again:?}"));
        assert!(!yaml.contains("prod") && yaml.contains("x-env"), "{yaml}");
    }

    #[derive(Serialize)]
    struct Filters2<'a> {
        filters: &'a [FilterConfig],
    }
}
