//! Label values from fixed sets: methods, protocol versions, routes.

use std::sync::Arc;

use http::{Method, Version};

/// The `http_request_method` label values, indexed by [`method_index`].
pub const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
];

/// The standard methods keep their name; anything else is `_OTHER`
/// (semconv), so a client cannot invent label values.
pub fn method_label(method: &Method) -> &'static str {
    METHODS[method_index(method)]
}

/// The index of a method's label in [`METHODS`].
pub fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::CONNECT => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::PATCH => 8,
        _ => 9,
    }
}

/// `network.protocol.version` of a request.
pub fn protocol_label(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// Configured route prefixes, longest first, to name requests without
/// letting raw paths become label values.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    routes: Arc<[(Box<str>, Arc<str>)]>,
}

/// The route a request matched, put in its extensions by the outermost layer
/// so inner layers (tracing) reuse the match.
#[derive(Clone, Debug)]
pub struct MatchedRoute {
    /// Index in the configured `routes:` list.
    pub index: usize,
    /// The route's name.
    pub name: Arc<str>,
}

// === impl RouteTable ===

impl RouteTable {
    /// Builds a table from `(prefix, name)` pairs in config order.
    pub fn new<I, P, N>(routes: I) -> Self
    where
        I: IntoIterator<Item = (P, N)>,
        P: Into<Box<str>>,
        N: Into<Arc<str>>,
    {
        let mut routes: Vec<(Box<str>, Arc<str>)> = routes
            .into_iter()
            .map(|(p, n)| (p.into(), n.into()))
            .collect();
        // Longest prefix wins; the sort is stable so config order breaks ties.
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Self {
            routes: routes.into(),
        }
    }

    /// The configured routes, longest prefix first.
    pub fn routes(&self) -> &[(Box<str>, Arc<str>)] {
        &self.routes
    }

    /// The route whose prefix matches `path`, if any.
    pub fn lookup(&self, path: &str) -> Option<MatchedRoute> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, (prefix, _))| path.starts_with(&**prefix))
            .map(|(index, (_, name))| MatchedRoute {
                index,
                name: name.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(
            method_label(&Method::from_bytes(b"PURGE").unwrap()),
            "_OTHER"
        );
    }

    #[test]
    fn longest_prefix_wins() {
        let t = RouteTable::new([("/api", "api"), ("/api/orders", "orders"), ("/", "root")]);
        assert_eq!(&*t.lookup("/api/orders/7").unwrap().name, "orders");
        assert_eq!(&*t.lookup("/api/users").unwrap().name, "api");
        assert_eq!(&*t.lookup("/x").unwrap().name, "root");
        assert!(RouteTable::default().lookup("/x").is_none());
    }
}
