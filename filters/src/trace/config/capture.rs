//! `tracing.capture:`: which headers become span attributes, and which of
//! them are recorded as `[REDACTED]`.
//!
//! A built-in list of credential-carrying headers always applies; the user's
//! `redact` list adds to it and never replaces it, so writing
//! `redact: [x-tenant-secret]` cannot un-redact `authorization`. The only way
//! to record a built-in header in clear is `redact_builtin: false`.
//!
//! ```yaml
//! capture:
//!   request_headers: [x-tenant, authorization]   # authorization is still [REDACTED]
//!   redact: [x-tenant-secret]                    # in addition to the built-in list
//! ```

use http::HeaderName;
use serde::{Deserialize, Serialize};

/// `tracing.capture:`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Request headers recorded as `http.request.header.<name>`.
    pub request_headers: Vec<String>,
    /// Response headers recorded as `http.response.header.<name>`.
    pub response_headers: Vec<String>,
    /// More captured headers recorded as `[REDACTED]`, on top of the
    /// built-in list ([`BUILTIN_REDACT`], [`BUILTIN_REDACT_FRAGMENTS`]).
    pub redact: Vec<String>,
    /// Whether the built-in list applies (default `true`). `false` is the
    /// only way to record e.g. `authorization` in clear.
    pub redact_builtin: bool,
}

/// Header names whose values are credentials: always redacted when
/// captured unless `redact_builtin: false`: the HTTP authentication and
/// cookie headers, and the API-key and token headers of common gateways and
/// clouds.
pub const BUILTIN_REDACT: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-access-token",
    "x-csrf-token",
    "x-xsrf-token",
    "x-amz-security-token",
    "x-goog-api-key",
    "x-goog-iap-jwt-assertion",
    "ocp-apim-subscription-key",
    "x-vault-token",
    "x-consul-token",
    "private-token",
];

/// Name fragments that mark a header as a credential wherever they appear
/// (`x-session-token`, `x-shared-secret`, `x-forwarded-authorization`), so a
/// captured header the list above does not name is still caught.
pub const BUILTIN_REDACT_FRAGMENTS: &[&str] = &[
    "authorization",
    "cookie",
    "token",
    "secret",
    "password",
    "passwd",
    "api-key",
    "apikey",
    "credential",
    "session",
    "signature",
];

// === impl CaptureConfig ===

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            redact: Vec::new(),
            redact_builtin: true,
        }
    }
}

impl CaptureConfig {
    /// Whether a captured `name` is recorded as `[REDACTED]`: it is in the
    /// user's `redact` list, or the built-in list applies and names it.
    /// Decided once per configured name when the hooks are built, never per
    /// request.
    pub fn redacts(&self, name: &HeaderName) -> bool {
        let user = self
            .redact
            .iter()
            .any(|r| r.eq_ignore_ascii_case(name.as_str()));
        user || (self.redact_builtin && is_builtin_secret(name.as_str()))
    }
}

/// Whether the built-in list names `name`, a lowercase header name. Also
/// used on config keys (`api-key`, `client-secret`) by the admin `/config`.
pub fn is_builtin_secret(name: &str) -> bool {
    BUILTIN_REDACT.contains(&name) || BUILTIN_REDACT_FRAGMENTS.iter().any(|f| name.contains(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(yaml: &str) -> CaptureConfig {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn name(n: &str) -> HeaderName {
        HeaderName::from_bytes(n.as_bytes()).unwrap()
    }

    #[test]
    fn user_list_adds_to_the_builtin_one() {
        let c = capture("{ redact: [x-tenant-secret, x-plan] }");
        assert!(c.redact_builtin, "on unless turned off");
        assert!(
            c.redacts(&name("authorization")),
            "a user list never replaces the built-in one"
        );
        assert!(c.redacts(&name("x-tenant-secret")));
        assert!(c.redacts(&name("x-plan")), "the user's own entry");
        assert!(!c.redacts(&name("x-tenant")));
    }

    #[test]
    fn only_the_opt_out_key_shows_builtin_headers() {
        for yaml in [
            "{}",
            "{ redact: [] }",
            "{ redact: [x-other] }",
            "{ redact_builtin: true }",
        ] {
            assert!(capture(yaml).redacts(&name("authorization")), "{yaml}");
        }
        let off = capture("{ redact_builtin: false, redact: [x-tenant-secret] }");
        assert!(!off.redacts(&name("authorization")));
        assert!(!off.redacts(&name("cookie")));
        assert!(
            off.redacts(&name("x-tenant-secret")),
            "the user's list still applies"
        );
    }

    #[test]
    fn builtin_names_and_fragments() {
        for n in BUILTIN_REDACT {
            assert!(is_builtin_secret(n), "{n}");
        }
        for n in [
            "x-session-id",
            "x-shared-secret",
            "x-forwarded-authorization",
            "x-refresh-token",
            "x-db-password",
            "x-client-credentials",
            "x-hub-signature-256",
            "x-apikey",
        ] {
            assert!(is_builtin_secret(n), "{n}");
        }
        for n in [
            "x-tenant",
            "content-type",
            "user-agent",
            "x-request-id",
            "www-authenticate",
        ] {
            assert!(!is_builtin_secret(n), "{n}");
        }
    }

    #[test]
    fn the_docs_list_every_builtin_entry() {
        let docs = include_str!("../../../../docs/tracing.md");
        for entry in BUILTIN_REDACT.iter().chain(BUILTIN_REDACT_FRAGMENTS) {
            assert!(
                docs.contains(&format!("`{entry}`")),
                "docs/tracing.md lacks {entry}"
            );
        }
    }

    #[test]
    fn user_names_match_case_insensitively() {
        let c = capture("{ redact: [X-Tenant-Secret], redact_builtin: false }");
        assert!(c.redacts(&name("x-tenant-secret")));
    }
}
