//! Routes: the `routes:` list, matched once per request by the observe
//! layer. The matched [`Route`] is put in the request's extensions as an
//! `Arc`, and everything downstream reads it from there: the metrics'
//! `http_route` label, the span's name and sampling override.
//!
//! ```
//! use filters::route::{Route, RouteTable};
//!
//! let routes = RouteTable::new([("/api", "api"), ("/api/orders", "orders")]);
//! let route = routes.lookup("/api/orders/7").unwrap();
//! assert_eq!(&*route.name, "orders");
//! assert_eq!(route.index, 1, "its place in the configured list");
//!
//! let mut req = http::Request::new(());
//! req.extensions_mut().insert(route.clone());
//! assert_eq!(&*Route::of(req.extensions()).unwrap().name, "orders");
//! ```

use std::sync::Arc;

use crate::trace::{RouteConfig, RouteSample};

/// A configured route.
#[derive(Debug, PartialEq)]
pub struct Route {
    /// Its index in the configured `routes:` list.
    pub index: usize,
    /// Its name: `http.route`, the span name suffix and the metric label.
    pub name: Arc<str>,
    /// Its sampling override.
    pub sample: Option<RouteSample>,
}

/// The configured routes, matched by path prefix: the longest wins and
/// config order breaks ties.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    /// Longest prefix first.
    by_prefix: Arc<[(Box<str>, Arc<Route>)]>,
    /// In config order.
    by_index: Arc<[Arc<Route>]>,
}

// === impl Route ===

impl Route {
    /// The route the observe layer matched for a request, from its
    /// extensions.
    pub fn of(extensions: &http::Extensions) -> Option<&Arc<Self>> {
        extensions.get::<Arc<Self>>()
    }
}

// === impl RouteTable ===

impl RouteTable {
    /// A table of `(prefix, name)` pairs in config order, without sampling
    /// overrides.
    pub fn new<I, P, N>(routes: I) -> Self
    where
        I: IntoIterator<Item = (P, N)>,
        P: Into<Box<str>>,
        N: Into<Arc<str>>,
    {
        Self::build(
            routes
                .into_iter()
                .map(|(prefix, name)| (prefix.into(), name.into(), None)),
        )
    }

    /// The table of the `routes:` list.
    pub fn from_config(routes: &[RouteConfig]) -> Self {
        Self::build(
            routes
                .iter()
                .map(|r| (r.prefix.as_str().into(), r.name.as_str().into(), r.sample)),
        )
    }

    fn build(routes: impl Iterator<Item = (Box<str>, Arc<str>, Option<RouteSample>)>) -> Self {
        let mut by_prefix: Vec<(Box<str>, Arc<Route>)> = routes
            .enumerate()
            .map(|(index, (prefix, name, sample))| {
                (
                    prefix,
                    Arc::new(Route {
                        index,
                        name,
                        sample,
                    }),
                )
            })
            .collect();
        let by_index = by_prefix.iter().map(|(_, r)| r.clone()).collect();
        // Longest prefix wins; the sort is stable so config order breaks ties.
        by_prefix.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Self {
            by_prefix: by_prefix.into(),
            by_index,
        }
    }

    /// The route whose prefix matches `path`, if any.
    pub fn lookup(&self, path: &str) -> Option<&Arc<Route>> {
        self.by_prefix
            .iter()
            .find(|(prefix, _)| path.starts_with(&**prefix))
            .map(|(_, route)| route)
    }

    /// The route at `index` in the configured list.
    pub fn get(&self, index: usize) -> Option<&Arc<Route>> {
        self.by_index.get(index)
    }

    /// The routes in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.by_index.iter()
    }

    /// Whether no route is configured.
    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_config_order_breaks_ties() {
        let t = RouteTable::new([
            ("/api", "api"),
            ("/api/orders", "orders"),
            ("/", "root"),
            ("/api", "shadowed"),
        ]);
        assert_eq!(&*t.lookup("/api/orders/7").unwrap().name, "orders");
        assert_eq!(&*t.lookup("/api/users").unwrap().name, "api");
        assert_eq!(&*t.lookup("/x").unwrap().name, "root");
        assert_eq!(t.lookup("/api/orders").unwrap().index, 1);
        assert_eq!(&*t.get(3).unwrap().name, "shadowed");
        assert!(RouteTable::default().lookup("/x").is_none());
    }
}
