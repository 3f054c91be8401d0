//! Routes: the `routes:` list, matched once per request by the observe
//! layer on path prefix, method and host. The matched [`Route`] is put in
//! the request's extensions as an `Arc`, and everything downstream reads it
//! from there: the metrics' `http_route` label, the span's name and
//! sampling override, and the chain, which runs the route's own filters.
//!
//! The table is [`Routes`], a handle that a reload swaps whole.
//!
//! ```
//! use filters::route::{Route, RouteTable};
//!
//! let routes = RouteTable::new([("/api", "api"), ("/api/orders", "orders")]);
//! let req = http::Request::get("/api/orders/7").body(()).unwrap();
//! let route = routes.lookup(&req).unwrap();
//! assert_eq!(&*route.name, "orders");
//! assert_eq!(route.index, 1, "its place in the configured list");
//!
//! let mut req = req;
//! req.extensions_mut().insert(route.clone());
//! assert_eq!(&*Route::of(req.extensions()).unwrap().name, "orders");
//! ```

mod config;
mod table;

use std::sync::Arc;

use arc_swap::ArcSwap;

pub use self::{
    config::{check_routes, validate_routes, Methods, RouteConfig, RouteError, RouteSample},
    table::{request_host, RouteTable},
};

/// A configured route.
#[derive(Debug, PartialEq)]
pub struct Route {
    /// Its index in the configured `routes:` list.
    pub index: usize,
    /// Its name: `http.route`, the span name suffix and the metric label.
    pub name: Arc<str>,
    /// Its sampling override.
    pub sample: Option<RouteSample>,
    /// The table it belongs to ([`RouteTable::generation`]): a chain built
    /// for another table looks the request up again rather than trust
    /// `index`.
    pub generation: u64,
}

/// The routes in force: one table that every listener matches against,
/// replaced whole on reload. Clones share the table.
#[derive(Clone, Debug, Default)]
pub struct Routes(Arc<ArcSwap<RouteTable>>);

// === impl Route ===

impl Route {
    /// The route the observe layer matched for a request, from its
    /// extensions.
    pub fn of(extensions: &http::Extensions) -> Option<&Arc<Self>> {
        extensions.get::<Arc<Self>>()
    }
}

// === impl Routes ===

impl Routes {
    /// The routes of `table`.
    pub fn new(table: RouteTable) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(table)))
    }

    /// The route matching `req` in the table in force.
    pub fn lookup<B>(&self, req: &http::Request<B>) -> Option<Arc<Route>> {
        self.0.load().lookup(req).cloned()
    }

    /// The table in force.
    pub fn table(&self) -> Arc<RouteTable> {
        self.0.load_full()
    }

    /// Puts `table` in force; requests already matched keep their route.
    pub fn replace(&self, table: RouteTable) {
        self.0.store(Arc::new(table));
    }
}

impl From<RouteTable> for Routes {
    fn from(table: RouteTable) -> Self {
        Self::new(table)
    }
}
