//! A listener's filter chains over its forwarder: the top-level `filters:`
//! for requests no route claims, and every route's own chain, all built
//! ahead of time and picked per request by the route the observe layer
//! matched. A reload builds the next set beside the running one, keeping
//! the filters that did not change (and their state), and swaps it whole.

use std::sync::Arc;

use arc_swap::ArcSwap;
use filters::{
    chain::BuiltChain,
    filter_metrics::FilterMetrics,
    registry::FilterConfig,
    route::{Route, RouteConfig, RouteTable},
    HttpBody, HttpService,
};
use futures_util::future::Either;
use http::{Request, Response};
use tower::{util::BoxCloneSyncService, Service, ServiceExt};

use crate::forward::Forward;

/// The chains of one listener, swapped whole on reload. Clones share them.
#[derive(Clone)]
pub struct Chain {
    current: Arc<ArcSwap<Chains>>,
}

/// One generation of a listener's chains, and what the next build needs.
pub struct Chains {
    /// The routes these chains were built for; a request matched against
    /// another table is looked up again here.
    table: RouteTable,
    default: Policy,
    /// By route index.
    routes: Box<[Policy]>,
    built_default: BuiltChain,
    /// By route index: the route and its own chain, if it has one.
    built_routes: Vec<(RouteConfig, Option<BuiltChain>)>,
    forward: Forward,
    metrics: FilterMetrics,
}

/// What a request runs: the forwarder itself when no filter applies, so
/// the common case pays for no boxed service clone and no boxed future per
/// request, else the built filters over it.
#[derive(Clone)]
enum Policy {
    Forward(Forward),
    Filters(HttpService),
}

/// A filter that cannot be built, with its config path
/// (`routes[1].filters[0].timeout.request`).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ChainError {
    /// Where the filter sits in the config file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

// === impl Chain ===

impl Chain {
    /// The chains of `filters` and `routes` (whose table is `table`) over
    /// `forward`, recording into `metrics` (the listener's, route `""`).
    pub fn build(
        filters: &[FilterConfig],
        routes: &[RouteConfig],
        table: &RouteTable,
        forward: Forward,
        metrics: FilterMetrics,
    ) -> Result<Self, ChainError> {
        let chains = Chains::build(filters, routes, table, forward, metrics, None)?;
        Ok(Self {
            current: Arc::new(ArcSwap::from_pointee(chains)),
        })
    }

    /// The next generation, ready to [`swap`](Self::swap) in: every filter
    /// whose config and position (in the same chain: the default one, or
    /// the route with the same name and match) did not change is kept, with
    /// its live state.
    pub fn rebuild(
        &self,
        filters: &[FilterConfig],
        routes: &[RouteConfig],
        table: &RouteTable,
    ) -> Result<Chains, ChainError> {
        let current = self.current.load();
        Chains::build(
            filters,
            routes,
            table,
            current.forward.clone(),
            current.metrics.clone(),
            Some(&current),
        )
    }

    /// Puts `chains` in force; requests in flight finish on the old ones.
    pub fn swap(&self, chains: Chains) {
        self.current.store(Arc::new(chains));
    }
}

impl Service<Request<HttpBody>> for Chain {
    type Response = Response<HttpBody>;
    type Error = filters::Error;
    type Future = Either<
        <Forward as Service<Request<HttpBody>>>::Future,
        tower::util::Oneshot<HttpService, Request<HttpBody>>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Readiness is the chosen chain's, checked in `call` through oneshot:
        // filters answer limits in `call`, so this never parks a connection.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<HttpBody>) -> Self::Future {
        match self.current.load().policy(&req) {
            // Always ready (see `Forward::poll_ready`).
            Policy::Forward(forward) => Either::Left(forward.clone().call(req)),
            Policy::Filters(service) => Either::Right(service.clone().oneshot(req)),
        }
    }
}

// === impl Chains ===

impl Chains {
    fn build(
        filters: &[FilterConfig],
        routes: &[RouteConfig],
        table: &RouteTable,
        forward: Forward,
        metrics: FilterMetrics,
        previous: Option<&Self>,
    ) -> Result<Self, ChainError> {
        let built_default =
            BuiltChain::build(filters, &metrics, previous.map(|p| &p.built_default))
                .map_err(|(i, e)| ChainError::at(format!("filters[{i}]"), filters[i].name(), e))?;
        let over_forward = |chain: &BuiltChain| match chain.is_empty() {
            true => Policy::Forward(forward.clone()),
            false => Policy::Filters(chain.wrap(BoxCloneSyncService::new(forward.clone()))),
        };
        let default = over_forward(&built_default);
        let mut policies = Vec::with_capacity(routes.len());
        let mut built_routes = Vec::with_capacity(routes.len());
        for (r, route) in routes.iter().enumerate() {
            let Some(own) = &route.filters else {
                policies.push(default.clone());
                built_routes.push((route.clone(), None));
                continue;
            };
            let before = previous.and_then(|p| {
                p.built_routes
                    .iter()
                    .find(|(old, _)| old.same_route(route))
                    .and_then(|(_, built)| built.as_ref())
            });
            let built = BuiltChain::build(own, &metrics.for_route(&route.name), before).map_err(
                |(i, e)| ChainError::at(format!("routes[{r}].filters[{i}]"), own[i].name(), e),
            )?;
            // The default chain's own layers, so their state is shared with
            // every other request that runs them.
            let policy = match (over_forward(&built), route.inherit) {
                (policy, false) => policy,
                (_, true) if built_default.is_empty() => over_forward(&built),
                (Policy::Forward(forward), true) => {
                    Policy::Filters(built_default.wrap(BoxCloneSyncService::new(forward)))
                }
                (Policy::Filters(own), true) => Policy::Filters(built_default.wrap(own)),
            };
            policies.push(policy);
            built_routes.push((route.clone(), Some(built)));
        }
        Ok(Self {
            table: table.clone(),
            default,
            routes: policies.into(),
            built_default,
            built_routes,
            forward,
            metrics,
        })
    }

    /// The chain `req` runs: its route's, or the default one.
    fn policy<B>(&self, req: &Request<B>) -> &Policy {
        if self.routes.is_empty() {
            return &self.default;
        }
        let index = match Route::of(req.extensions()) {
            Some(route) if route.generation == self.table.generation() => Some(route.index),
            // Matched against a table that a reload has replaced since.
            Some(_) => self.table.lookup(req).map(|route| route.index),
            None => None,
        };
        index
            .and_then(|i| self.routes.get(i))
            .unwrap_or(&self.default)
    }

    /// How many filters this generation took over from the previous one,
    /// and how many it has in all.
    pub fn kept(&self) -> (usize, usize) {
        let chains = std::iter::once(&self.built_default)
            .chain(self.built_routes.iter().filter_map(|(_, b)| b.as_ref()));
        chains.fold((0, 0), |(kept, all), c| (kept + c.kept(), all + c.len()))
    }
}

// === impl ChainError ===

impl ChainError {
    fn at(filter: String, name: &str, e: filters::registry::ConfigError) -> Self {
        Self {
            path: format!("{filter}.{name}.{}", e.field),
            message: e.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        config::UpstreamProtocol,
        forward::{Destination, ForwardOptions},
    };

    fn forward() -> Forward {
        let upstream = crate::config::Upstream {
            scheme: http::uri::Scheme::HTTP,
            authority: http::uri::Authority::from_static("127.0.0.1:9"),
        };
        let options = ForwardOptions {
            protocol: UpstreamProtocol::Auto,
            response_head_timeout: None,
            max_connections: 1,
            queue_timeout: Duration::from_secs(1),
            connections_open: metrics::Gauge::noop(),
            shed: metrics::Counter::noop(),
            tls: None,
            originate_tls: Arc::from([]),
        };
        Forward::new(Destination::Fixed(upstream), options, None, "test")
    }

    fn routes(yaml: &str) -> Vec<RouteConfig> {
        serde_saphyr::from_str(yaml).unwrap()
    }

    /// The chains of `filters` and `routes`, taking state from `previous`.
    fn chains(
        filters: &[FilterConfig],
        routes: &[RouteConfig],
        previous: Option<&Chains>,
    ) -> Chains {
        let table = RouteTable::from_config(routes);
        Chains::build(
            filters,
            routes,
            &table,
            forward(),
            FilterMetrics::default(),
            previous,
        )
        .unwrap()
    }

    fn request(path: &str, route: Option<&Arc<Route>>) -> Request<()> {
        let mut req = Request::get(path).body(()).unwrap();
        if let Some(route) = route {
            req.extensions_mut().insert(route.clone());
        }
        req
    }

    #[test]
    fn a_request_runs_its_routes_chain_even_when_matched_against_a_replaced_table() {
        let config = routes(
            "- { prefix: /a, name: a, filters: [ { timeout: { request: 1s } } ] }\n\
             - { prefix: /b, name: b }\n",
        );
        let chains = chains(&[], &config, None);
        let table = chains.table.clone();
        let a = table.lookup(&request("/a", None)).unwrap();
        assert!(std::ptr::eq(
            chains.policy(&request("/a", Some(a))),
            &chains.routes[0]
        ));
        assert!(matches!(
            chains.policy(&request("/a", Some(a))),
            Policy::Filters(_)
        ));
        assert!(std::ptr::eq(
            chains.policy(&request("/x", None)),
            &chains.default
        ));
        assert!(
            matches!(chains.default, Policy::Forward(_)),
            "no filters: the forwarder"
        );
        let b = table.lookup(&request("/b", None)).unwrap();
        assert!(matches!(
            chains.policy(&request("/b", Some(b))),
            Policy::Forward(_)
        ));

        // Matched against an older table where /a had another index.
        let older = RouteTable::from_config(&routes(
            "- { prefix: /z, name: z }\n- { prefix: /a, name: a }\n",
        ));
        let stale = older.lookup(&request("/a", None)).unwrap();
        assert_eq!(stale.index, 1);
        assert!(std::ptr::eq(
            chains.policy(&request("/a", Some(stale))),
            &chains.routes[0]
        ));
    }

    #[test]
    fn inherit_wraps_the_default_chain_and_kept_counts_every_chain() {
        let filters: Vec<FilterConfig> =
            serde_saphyr::from_str("- rate_limit: { per_second: 5 }").unwrap();
        let config = routes(
            "- { prefix: /a, name: a, inherit: true, filters: [] }\n\
             - { prefix: /b, name: b, filters: [] }\n\
             - { prefix: /c, name: c, inherit: true, filters: [ { timeout: { request: 1s } } ] }\n",
        );
        let first = chains(&filters, &config, None);
        assert!(
            matches!(first.routes[0], Policy::Filters(_)),
            "the default chain"
        );
        assert!(matches!(first.routes[1], Policy::Forward(_)), "nothing");
        assert_eq!(first.kept(), (0, 2));
        let changed = routes(
            "- { prefix: /a, name: a, inherit: true, filters: [] }\n\
             - { prefix: /b, name: b, filters: [] }\n\
             - { prefix: /c, name: renamed, inherit: true, filters: [ { timeout: { request: 1s } } ] }\n",
        );
        let next = chains(&filters, &changed, Some(&first));
        assert_eq!(
            next.kept(),
            (1, 2),
            "a renamed route's filters start afresh"
        );
    }
}
