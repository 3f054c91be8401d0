//! The `routes:` list as written in the config file, and its checks.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::registry::{ConfigError, FilterConfig};

/// One entry of `routes:`.
///
/// ```yaml
/// routes:
///   - prefix: /checkout
///     name: checkout
///     method: [POST]
///     filters:
///       - timeout: { request: 2s }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix; the longest matching prefix wins.
    pub prefix: String,
    /// Route name: `http.route`, the span name suffix and the metric label.
    pub name: String,
    /// Methods the route is limited to (`GET` or `[GET, HEAD]`); any method
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Methods>,
    /// Host the route is limited to, without a port: `shop.example.com`, or
    /// `*.example.com` for any subdomain; any host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Sampling override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<RouteSample>,
    /// The route's own filter chain. Absent: the route runs the top-level
    /// `filters:`; present (even empty): it runs these instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<FilterConfig>>,
    /// Runs the top-level `filters:` around the route's own (sharing their
    /// state with every other request that runs them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inherit: bool,
}

/// The methods a route matches: one name or a list, case-sensitive as
/// HTTP methods are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Methods(pub Vec<String>);

/// A route's sampling override: `always`, `never` or a ratio.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RouteSample {
    /// Sample every request of the route (reason `route_always`).
    Always,
    /// Sample none.
    Never,
    /// Sample this ratio of the route's new traces.
    Ratio(f64),
}

/// What is wrong with one route, and where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("routes[{index}].{field}: {message}")]
pub struct RouteError {
    /// The route's index in the list.
    pub index: usize,
    /// The field under the route: `prefix`, `filters[1].timeout.request`.
    pub field: String,
    /// What is wrong and what would be right.
    pub message: String,
}

/// Validates the `routes:` list (see [`check_routes`]) for the trace
/// layer, naming the offending entry's index in the message.
pub fn validate_routes(routes: &[RouteConfig]) -> Result<(), ConfigError> {
    check_routes(routes).map_err(|e| ConfigError {
        field: match e.field.split(['.', '[']).next().unwrap_or_default() {
            "prefix" => "routes.prefix",
            "name" => "routes.name",
            "sample" => "routes.sample",
            "method" => "routes.method",
            "host" => "routes.host",
            _ => "routes.filters",
        },
        message: format!("routes[{}]: {}", e.index, e.message),
    })
}

/// Checks the `routes:` list: prefixes start with `/`, names are not empty,
/// ratios are ratios, methods and hosts are well formed, every route's
/// filters are valid, and no route is hidden behind an identical one.
pub fn check_routes(routes: &[RouteConfig]) -> Result<(), RouteError> {
    for (index, r) in routes.iter().enumerate() {
        let error = |field: &str, message: String| RouteError {
            index,
            field: field.to_owned(),
            message,
        };
        if !r.prefix.starts_with('/') {
            return Err(error(
                "prefix",
                format!("{:?} must start with '/'", r.prefix),
            ));
        }
        if r.name.is_empty() {
            return Err(error("name", "the name is empty".into()));
        }
        if let Some(RouteSample::Ratio(x)) = r.sample {
            if !(0.0..=1.0).contains(&x) {
                return Err(error(
                    "sample",
                    format!("{x} is not a ratio between 0 and 1"),
                ));
            }
        }
        if let Some(methods) = &r.method {
            methods.check().map_err(|m| error("method", m))?;
        }
        if let Some(host) = &r.host {
            check_host(host).map_err(|m| error("host", m))?;
        }
        for (i, f) in r.filters.iter().flatten().enumerate() {
            f.validate()
                .map_err(|e| error(&format!("filters[{i}].{}.{}", f.name(), e.field), e.message))?;
        }
        if let Some(first) = routes[..index].iter().position(|o| o.same_match(r)) {
            return Err(error(
                "prefix",
                format!(
                    "matches the same requests as routes[{first}] (same prefix, method and host), \
                     which comes first, so this route would never be used"
                ),
            ));
        }
    }
    Ok(())
}

fn check_host(host: &str) -> Result<(), String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() || name.contains('*') {
        return Err(format!(
            "{host:?} is not a host: write `shop.example.com`, or `*.example.com` for its subdomains"
        ));
    }
    let bracketed = name.starts_with('[') && name.ends_with(']');
    if !bracketed && name.contains(':') {
        return Err(format!(
            "{host:?} has a port: a route matches the host whatever the port, so write it without one"
        ));
    }
    if name.contains(['/', ' ']) || http::uri::Authority::try_from(name).is_err() {
        return Err(format!("{host:?} is not a valid host name"));
    }
    Ok(())
}

// === impl RouteConfig ===

impl RouteConfig {
    /// Whether `other` matches exactly the requests this route matches.
    pub fn same_match(&self, other: &Self) -> bool {
        let methods = |r: &Self| {
            let mut m = r.method.as_ref().map(|m| m.0.clone()).unwrap_or_default();
            m.sort();
            m.dedup();
            m
        };
        let host = |r: &Self| r.host.as_ref().map(|h| h.to_ascii_lowercase());
        self.prefix == other.prefix && methods(self) == methods(other) && host(self) == host(other)
    }

    /// Whether `other` is the same route: same name and same match, so a
    /// reload keeps the live state of the filters they have in common.
    pub fn same_route(&self, other: &Self) -> bool {
        self.name == other.name && self.same_match(other)
    }
}

// === impl Methods ===

impl Methods {
    fn check(&self) -> Result<(), String> {
        if self.0.is_empty() {
            return Err("the list is empty: leave `method` out to match every method".into());
        }
        for m in &self.0 {
            if http::Method::from_bytes(m.as_bytes()).is_err() {
                return Err(format!("{m:?} is not an HTTP method"));
            }
            let upper = m.to_ascii_uppercase();
            let standard = [
                "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
            ];
            if upper != *m && standard.contains(&upper.as_str()) {
                return Err(format!(
                    "{m:?}: methods are case-sensitive and clients send {upper}; write {upper}"
                ));
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Methods {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(
            untagged,
            expecting = "a method (`GET`) or a list of methods (`[GET, HEAD]`)"
        )]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(m) => Self(vec![m]),
            OneOrMany::Many(ms) => Self(ms),
        })
    }
}

impl Serialize for Methods {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

// === impl RouteSample ===

impl<'de> Deserialize<'de> for RouteSample {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = RouteSample;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`always`, `never` or a ratio between 0 and 1")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RouteSample, E> {
                match v {
                    "always" => Ok(RouteSample::Always),
                    "never" => Ok(RouteSample::Never),
                    // YAML parsers may hand numbers over as strings.
                    other => other
                        .parse::<f64>()
                        .map_err(|_| E::invalid_value(de::Unexpected::Str(other), &self))
                        .and_then(|x| self.visit_f64(x)),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RouteSample, E> {
                if (0.0..=1.0).contains(&v) {
                    Ok(RouteSample::Ratio(v))
                } else {
                    Err(E::invalid_value(de::Unexpected::Float(v), &self))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RouteSample, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RouteSample, E> {
                self.visit_f64(v as f64)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for RouteSample {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Always => s.serialize_str("always"),
            Self::Never => s.serialize_str("never"),
            Self::Ratio(x) => s.serialize_f64(*x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Vec<RouteConfig>, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn method_is_one_or_many_and_host_and_filters_parse() {
        let routes = parse(
            "- { prefix: /a, name: a, method: GET }\n\
             - { prefix: /b, name: b, method: [GET, HEAD], host: '*.example.com' }\n\
             - prefix: /c\n  name: c\n  inherit: true\n  filters:\n    - timeout: { request: 2s }\n\
             - { prefix: /d, name: d, filters: [] }\n",
        )
        .unwrap();
        assert_eq!(routes[0].method, Some(Methods(vec!["GET".into()])));
        assert_eq!(
            routes[1].method,
            Some(Methods(vec!["GET".into(), "HEAD".into()]))
        );
        assert_eq!(routes[1].host.as_deref(), Some("*.example.com"));
        assert!(routes[2].inherit);
        assert_eq!(routes[2].filters.as_ref().map(Vec::len), Some(1));
        assert_eq!(routes[3].filters, Some(Vec::new()), "empty is not absent");
        assert_eq!(routes[0].filters, None);
        check_routes(&routes).unwrap();
        // And back: what /config renders parses to the same routes.
        let yaml = serde_saphyr::to_string(&routes).unwrap();
        assert_eq!(parse(&yaml).unwrap(), routes, "{yaml}");
    }

    #[test]
    fn each_bad_value_names_its_route_and_field() {
        let cases = [
            ("- { prefix: a, name: a }", 0, "prefix", "must start with '/'"),
            ("- { prefix: /a, name: '' }", 0, "name", "empty"),
            ("- { prefix: /a, name: a, method: get }", 0, "method", "write GET"),
            ("- { prefix: /a, name: a, method: [] }", 0, "method", "leave `method` out"),
            ("- { prefix: /a, name: a, method: 'G T' }", 0, "method", "not an HTTP method"),
            ("- { prefix: /a, name: a, host: 'x.com:80' }", 0, "host", "port"),
            ("- { prefix: /a, name: a, host: 'a.*.com' }", 0, "host", "not a host"),
            (
                "- { prefix: /a, name: a, filters: [ { timeout: { request: 0s } } ] }",
                0,
                "filters[0].timeout.request",
                "",
            ),
            (
                "- { prefix: /a, name: a, method: [GET, HEAD] }\n- { prefix: /a, name: b, method: [HEAD, GET] }",
                1,
                "prefix",
                "routes[0]",
            ),
        ];
        for (yaml, index, field, words) in cases {
            let routes = parse(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
            let err = check_routes(&routes).expect_err(yaml);
            assert_eq!(
                (err.index, err.field.as_str()),
                (index, field),
                "{yaml}: {err}"
            );
            assert!(err.message.contains(words), "{yaml}: {err}");
        }
        // Same prefix but another host or method is another route.
        let routes = parse(
            "- { prefix: /a, name: a }\n- { prefix: /a, name: a, method: GET }\n- { prefix: /a, name: a, host: x.com }",
        )
        .unwrap();
        check_routes(&routes).unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse("- { prefix: /a, name: a, methods: GET }").unwrap_err();
        assert!(err.contains("methods"), "{err}");
    }
}
