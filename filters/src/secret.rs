//! Config values that may hold credentials, typed so that rendering the
//! config (admin `/config`, `sidetrace check-config`, a `{:?}` in a log
//! line) can never print them.
//!
//! [`SecretHeaders`] reads like the `BTreeMap<String, String>` it wraps, but
//! serializes and debug-prints every value as `"[REDACTED]"`, keeping the
//! names. [`redact_url`] drops the userinfo and query of a URL. The redaction
//! lives in the types, not in whoever renders them, so a new way of printing
//! the config cannot forget it (the OpenTelemetry Collector's
//! `configopaque.String` takes the same approach).
//!
//! ```
//! use filters::secret::SecretHeaders;
//!
//! let headers: SecretHeaders = [("x-api-key".to_string(), "s3cr3t".to_string())].into_iter().collect();
//! assert_eq!(headers.get("x-api-key").map(String::as_str), Some("s3cr3t"));
//! let json = serde_json::to_string(&headers).unwrap();
//! assert_eq!(json, r#"{"x-api-key":"[REDACTED]"}"#);
//! assert!(!format!("{headers:?}").contains("s3cr3t"));
//! ```

use std::{
    borrow::Cow,
    collections::BTreeMap,
    fmt,
    ops::{Deref, DerefMut},
};

use serde::{Deserialize, Serialize, Serializer};

/// What a rendered config shows in place of a secret.
pub const REDACTED: &str = "[REDACTED]";

/// Header name to value, where values may be credentials (export API keys,
/// an `authorization` the proxy adds): usable as a map, rendered with every
/// value `"[REDACTED]"`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretHeaders(BTreeMap<String, String>);

// === impl SecretHeaders ===

impl Deref for SecretHeaders {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for SecretHeaders {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<'a> IntoIterator for &'a SecretHeaders {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl FromIterator<(String, String)> for SecretHeaders {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl From<BTreeMap<String, String>> for SecretHeaders {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }
}

impl Serialize for SecretHeaders {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.keys().map(|k| (k, REDACTED)))
    }
}

impl fmt::Debug for SecretHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, REDACTED)))
            .finish()
    }
}

/// `url` without its userinfo (`user:password@`) and query, which may carry
/// credentials: `http://[REDACTED]@host:4318/v1?[REDACTED]`. Borrowed when
/// there is nothing to hide.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let userinfo = rest[..authority_end].rfind('@');
    let query = url.find('?');
    if userinfo.is_none() && query.is_none() {
        return Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..authority_start]);
    let after_userinfo = match userinfo {
        Some(at) => {
            out.push_str(REDACTED);
            out.push('@');
            authority_start + at + 1
        }
        None => authority_start,
    };
    match query {
        Some(q) => {
            out.push_str(&url[after_userinfo..q]);
            out.push('?');
            out.push_str(REDACTED);
        }
        None => out.push_str(&url[after_userinfo..]),
    }
    Cow::Owned(out)
}

/// `serialize_with` for an optional URL that may carry credentials.
pub fn serialize_url<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_some(&*redact_url(u)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_names_and_hide_values() {
        let mut h: SecretHeaders =
            serde_saphyr::from_str("{ x-api-key: s3cr3t, x-team: core }").unwrap();
        h.insert("authorization".into(), "Bearer t0ken".into());
        assert_eq!(h.len(), 3);
        assert_eq!(h["x-team"], "core", "the proxy still reads the values");
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(
            json,
            r#"{"authorization":"[REDACTED]","x-api-key":"[REDACTED]","x-team":"[REDACTED]"}"#
        );
        let debug = format!("{h:?}");
        for secret in ["s3cr3t", "t0ken", "core"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        let pairs: Vec<_> = (&h).into_iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(pairs, ["authorization", "x-api-key", "x-team"]);
    }

    #[test]
    fn urls_lose_userinfo_and_query() {
        let table = [
            ("http://collector:4318", "http://collector:4318"),
            (
                "http://collector:4318/v1/traces",
                "http://collector:4318/v1/traces",
            ),
            (
                "http://user:pa55@collector:4318",
                "http://[REDACTED]@collector:4318",
            ),
            (
                "http://user:p@ss@collector:4318/x",
                "http://[REDACTED]@collector:4318/x",
            ),
            (
                "http://collector:4318/v1?api_key=k3y",
                "http://collector:4318/v1?[REDACTED]",
            ),
            ("http://u:p@h/?k=v", "http://[REDACTED]@h/?[REDACTED]"),
            ("http://h/path@not-userinfo", "http://h/path@not-userinfo"),
        ];
        for (url, want) in table {
            assert_eq!(redact_url(url), want, "{url}");
        }
        assert!(matches!(redact_url("http://h:1"), Cow::Borrowed(_)));
    }
}
