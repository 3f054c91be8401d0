//! The route table: the `routes:` list prepared for matching.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use http::Method;

use super::{Route, RouteConfig};

/// The configured routes, matched by path prefix (the longest wins), then
/// by how much else a route asks (host, method), then by config order.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    /// In match order.
    entries: Arc<[Entry]>,
    /// In config order.
    by_index: Arc<[Arc<Route>]>,
    generation: u64,
}

#[derive(Debug)]
struct Entry {
    prefix: Box<str>,
    /// Empty: any method.
    methods: Box<[Method]>,
    host: Option<HostMatch>,
    route: Arc<Route>,
}

#[derive(Debug)]
enum HostMatch {
    /// Lowercase.
    Exact(Box<str>),
    /// `.example.com`, lowercase: any subdomain.
    Subdomain(Box<str>),
}

/// Every table gets its own generation, so a route says which table it
/// came from.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

// === impl RouteTable ===

impl RouteTable {
    /// A table of `(prefix, name)` pairs in config order, without methods,
    /// hosts or sampling overrides.
    pub fn new<I, P, N>(routes: I) -> Self
    where
        I: IntoIterator<Item = (P, N)>,
        P: Into<String>,
        N: Into<String>,
    {
        let routes: Vec<RouteConfig> = routes
            .into_iter()
            .map(|(prefix, name)| RouteConfig {
                prefix: prefix.into(),
                name: name.into(),
                ..RouteConfig::default()
            })
            .collect();
        Self::from_config(&routes)
    }

    /// The table of the `routes:` list (already checked: a method that does
    /// not parse is left out of the route's list).
    pub fn from_config(routes: &[RouteConfig]) -> Self {
        let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
        let mut entries: Vec<Entry> = routes
            .iter()
            .enumerate()
            .map(|(index, r)| Entry::new(index, r, generation))
            .collect();
        let by_index = entries.iter().map(|e| e.route.clone()).collect();
        // The sort is stable, so config order breaks the remaining ties.
        entries.sort_by_key(|e| {
            (
                std::cmp::Reverse(e.prefix.len()),
                std::cmp::Reverse(e.specificity()),
            )
        });
        Self {
            entries: entries.into(),
            by_index,
            generation,
        }
    }

    /// The route `req` belongs to, if any.
    pub fn lookup<B>(&self, req: &http::Request<B>) -> Option<&Arc<Route>> {
        let path = req.uri().path();
        // Found only when a route asks for a host.
        let mut host = None;
        self.entries
            .iter()
            .find(|e| {
                path.starts_with(&*e.prefix)
                    && (e.methods.is_empty() || e.methods.contains(req.method()))
                    && e.host.as_ref().is_none_or(|m| {
                        m.matches(host.get_or_insert_with(|| request_host(req)).unwrap_or(""))
                    })
            })
            .map(|e| &e.route)
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

    /// This table's generation, which its routes carry.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// The host a request is for, without its port: the URI's (HTTP/2, absolute
/// form) or the `Host` header's.
pub fn request_host<B>(req: &http::Request<B>) -> Option<&str> {
    if let Some(host) = req.uri().host() {
        return Some(host);
    }
    let authority = req.headers().get(http::header::HOST)?.to_str().ok()?;
    if authority.starts_with('[') {
        return authority.find(']').map(|end| &authority[..=end]);
    }
    Some(
        authority
            .split_once(':')
            .map_or(authority, |(host, _)| host),
    )
}

// === impl Entry ===

impl Entry {
    fn new(index: usize, r: &RouteConfig, generation: u64) -> Self {
        let host = r.host.as_deref().map(|h| match h.strip_prefix('*') {
            Some(domain) => HostMatch::Subdomain(domain.to_ascii_lowercase().into()),
            None => HostMatch::Exact(h.to_ascii_lowercase().into()),
        });
        let methods = r
            .method
            .iter()
            .flat_map(|m| &m.0)
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect();
        Self {
            prefix: r.prefix.as_str().into(),
            methods,
            host,
            route: Arc::new(Route {
                index,
                name: r.name.as_str().into(),
                sample: r.sample,
                generation,
            }),
        }
    }

    /// Among routes with the same prefix, the one that asks more wins.
    fn specificity(&self) -> u8 {
        let host = match self.host {
            Some(HostMatch::Exact(_)) => 4,
            Some(HostMatch::Subdomain(_)) => 2,
            None => 0,
        };
        host + u8::from(!self.methods.is_empty())
    }
}

// === impl HostMatch ===

impl HostMatch {
    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => host.eq_ignore_ascii_case(name),
            Self::Subdomain(domain) => {
                host.len() > domain.len()
                    && host.as_bytes()[host.len() - domain.len()..]
                        .eq_ignore_ascii_case(domain.as_bytes())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> http::Request<()> {
        http::Request::get(path).body(()).unwrap()
    }

    fn req(method: Method, host: &str, path: &str) -> http::Request<()> {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .body(())
            .unwrap()
    }

    #[test]
    fn longest_prefix_wins_and_config_order_breaks_ties() {
        let t = RouteTable::new([
            ("/api", "api"),
            ("/api/orders", "orders"),
            ("/", "root"),
            ("/api", "shadowed"),
        ]);
        assert_eq!(&*t.lookup(&get("/api/orders/7")).unwrap().name, "orders");
        assert_eq!(&*t.lookup(&get("/api/users")).unwrap().name, "api");
        assert_eq!(&*t.lookup(&get("/x")).unwrap().name, "root");
        assert_eq!(t.lookup(&get("/api/orders")).unwrap().index, 1);
        assert_eq!(&*t.get(3).unwrap().name, "shadowed");
        assert!(RouteTable::default().lookup(&get("/x")).is_none());
    }

    #[test]
    fn method_and_host_narrow_a_prefix_whatever_the_order() {
        let routes: Vec<RouteConfig> = serde_saphyr::from_str(
            "- { prefix: /api, name: any }\n\
             - { prefix: /api, name: read, method: [GET, HEAD] }\n\
             - { prefix: /api, name: shop, host: Shop.Example.com }\n\
             - { prefix: /api, name: sub, host: '*.example.com' }\n\
             - { prefix: /api/long, name: long }\n",
        )
        .unwrap();
        let t = RouteTable::from_config(&routes);
        let name = |r: http::Request<()>| t.lookup(&r).map(|r| r.name.to_string());
        assert_eq!(
            name(req(Method::POST, "other", "/api/x")).as_deref(),
            Some("any")
        );
        assert_eq!(
            name(req(Method::GET, "other", "/api/x")).as_deref(),
            Some("read")
        );
        assert_eq!(
            name(req(Method::GET, "shop.example.COM:8080", "/api")).as_deref(),
            Some("shop")
        );
        assert_eq!(
            name(req(Method::GET, "a.b.example.com", "/api")).as_deref(),
            Some("sub")
        );
        assert_eq!(
            name(req(Method::POST, "example.com", "/api")).as_deref(),
            Some("any"),
            "a subdomain match needs a subdomain"
        );
        assert_eq!(
            name(req(Method::GET, "shop.example.com", "/api/long")).as_deref(),
            Some("long"),
            "the longer prefix still wins"
        );
        // HTTP/2 and absolute-form requests carry the host in the URI.
        let h2 = http::Request::get("https://shop.example.com/api")
            .body(())
            .unwrap();
        assert_eq!(name(h2).as_deref(), Some("shop"));
    }

    #[test]
    fn host_without_port_from_header_or_uri() {
        assert_eq!(
            request_host(&req(Method::GET, "a.com:81", "/")),
            Some("a.com")
        );
        assert_eq!(
            request_host(&req(Method::GET, "[::1]:81", "/")),
            Some("[::1]")
        );
        assert_eq!(request_host(&get("/")), None);
    }

    #[test]
    fn every_table_has_its_own_generation() {
        let a = RouteTable::new([("/a", "a")]);
        let b = RouteTable::new([("/a", "a")]);
        assert_ne!(a.generation(), b.generation());
        assert_eq!(a.get(0).unwrap().generation, a.generation());
    }
}
