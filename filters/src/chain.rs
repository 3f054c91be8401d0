//! A built filter chain that remembers what each of its layers was built
//! from, so that rebuilding it (on reload) keeps every layer whose config
//! and position did not change, and with it the layer's live state: a
//! breaker's state and window, a rate limit's bucket, a retry budget, the
//! permits a concurrency limit has handed out. Layers share their state
//! between the services they wrap, so a kept layer carries it over.
//!
//! ```
//! use filters::{chain::BuiltChain, filter_metrics::FilterMetrics, registry::FilterConfig};
//!
//! let parse = |yaml: &str| serde_saphyr::from_str::<Vec<FilterConfig>>(yaml).unwrap();
//! let metrics = FilterMetrics::default();
//! let first = BuiltChain::build(&parse("- rate_limit: { per_second: 5 }\n- timeout: { request: 1s }"), &metrics, None).unwrap();
//! let again = BuiltChain::build(&parse("- rate_limit: { per_second: 5 }\n- timeout: { request: 2s }"), &metrics, Some(&first)).unwrap();
//! assert_eq!(again.kept(), 1, "the rate limit keeps its bucket; the timeout is new");
//! ```

use crate::{
    filter_metrics::FilterMetrics,
    registry::{ConfigError, FilterConfig},
    HttpLayer, HttpService,
};

/// The layers of one chain, first filter outermost, each with its config.
#[derive(Clone, Default)]
pub struct BuiltChain {
    layers: Vec<(FilterConfig, HttpLayer)>,
    kept: usize,
}

impl std::fmt::Debug for BuiltChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltChain")
            .field(
                "filters",
                &self
                    .layers
                    .iter()
                    .map(|(c, _)| c.name())
                    .collect::<Vec<_>>(),
            )
            .field("kept", &self.kept)
            .finish()
    }
}

// === impl BuiltChain ===

impl BuiltChain {
    /// Builds `filters`, each recording into `metrics` under its config path
    /// (`filters[2].retry`), taking from `previous` the layer at the same
    /// position when its config is equal. The error carries the failing
    /// filter's index.
    pub fn build(
        filters: &[FilterConfig],
        metrics: &FilterMetrics,
        previous: Option<&Self>,
    ) -> Result<Self, (usize, ConfigError)> {
        let mut layers = Vec::with_capacity(filters.len());
        let mut kept = 0;
        for (i, config) in filters.iter().enumerate() {
            let same = previous
                .and_then(|p| p.layers.get(i))
                .filter(|(old, _)| old == config);
            let layer = match same {
                Some((_, layer)) => {
                    kept += 1;
                    layer.clone()
                }
                None => {
                    config.validate().map_err(|e| (i, e))?;
                    let path = format!("filters[{i}].{}", config.name());
                    let cx = crate::registry::BuildContext {
                        metrics: metrics.for_filter(&path),
                        path,
                    };
                    config.layer(&cx).map_err(|e| (i, e))?
                }
            };
            layers.push((config.clone(), layer));
        }
        Ok(Self { layers, kept })
    }

    /// `inner` wrapped in this chain's filters, the first outermost.
    pub fn wrap(&self, inner: HttpService) -> HttpService {
        self.layers
            .iter()
            .rev()
            .fold(inner, |svc, (_, layer)| tower::Layer::layer(layer, svc))
    }

    /// Whether the chain has no filter.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// How many filters, and so how many filters' states, the build took
    /// over from the previous chain.
    pub fn kept(&self) -> usize {
        self.kept
    }

    /// How many filters the chain has.
    pub fn len(&self) -> usize {
        self.layers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use tower::ServiceExt;

    fn parse(yaml: &str) -> Vec<FilterConfig> {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn ok() -> HttpService {
        HttpService::new(tower::service_fn(|_req: crate::Request| async {
            Ok::<_, crate::Error>(http::Response::new(crate::empty_body()))
        }))
    }

    /// The status, or 429 for the rate limit's error (which the proxy's
    /// rescue layer answers with a 429).
    async fn status(chain: &BuiltChain) -> StatusCode {
        match chain
            .wrap(ok())
            .oneshot(http::Request::new(crate::empty_body()))
            .await
        {
            Ok(res) => res.status(),
            Err(e) if e.is::<crate::classify::RateLimited>() => StatusCode::TOO_MANY_REQUESTS,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[tokio::test]
    async fn a_kept_rate_limit_keeps_its_empty_bucket_and_a_changed_one_starts_full() {
        let metrics = FilterMetrics::default();
        let limit = parse("- rate_limit: { per_second: 1, burst: 1 }\n- timeout: { request: 5s }");
        let first = BuiltChain::build(&limit, &metrics, None).unwrap();
        assert_eq!(status(&first).await, StatusCode::OK);
        assert_eq!(status(&first).await, StatusCode::TOO_MANY_REQUESTS);

        let same = BuiltChain::build(&limit, &metrics, Some(&first)).unwrap();
        assert_eq!(same.kept(), 2);
        assert_eq!(
            status(&same).await,
            StatusCode::TOO_MANY_REQUESTS,
            "the bucket is still empty"
        );

        let moved = parse("- timeout: { request: 5s }\n- rate_limit: { per_second: 1, burst: 1 }");
        let moved = BuiltChain::build(&moved, &metrics, Some(&same)).unwrap();
        assert_eq!(
            moved.kept(),
            0,
            "same configs at other positions are new filters"
        );
        assert_eq!(status(&moved).await, StatusCode::OK);

        let changed =
            parse("- rate_limit: { per_second: 2, burst: 1 }\n- timeout: { request: 5s }");
        let changed = BuiltChain::build(&changed, &metrics, Some(&first)).unwrap();
        assert_eq!(changed.kept(), 1);
        assert_eq!(status(&changed).await, StatusCode::OK, "a new bucket");
    }

    #[test]
    fn a_bad_filter_is_named_by_index_even_after_kept_ones() {
        let metrics = FilterMetrics::default();
        let first =
            BuiltChain::build(&parse("- timeout: { request: 1s }"), &metrics, None).unwrap();
        let bad = parse("- timeout: { request: 1s }\n- rate_limit: { per_second: 0 }");
        let (i, e) = BuiltChain::build(&bad, &metrics, Some(&first)).unwrap_err();
        assert_eq!((i, e.field), (1, "per_second"));
    }
}
