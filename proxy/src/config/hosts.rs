//! Host name patterns: `billing.internal` or `*.payments.internal`.

use std::fmt;

use serde::{Serialize, Serializer};

/// A host name, or every name under a domain (`*.example.com` matches
/// `a.example.com` and `a.b.example.com`, not `example.com`). Matching
/// ignores ASCII case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// One name.
    Exact(String),
    /// Names ending in this suffix, which starts with `.`.
    Suffix(String),
}

// === impl HostPattern ===

impl HostPattern {
    /// Parses a pattern; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        let (suffix, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(format!(
                "{text:?} is not a host name or a `*.domain` pattern"
            ));
        }
        Ok(if suffix {
            Self::Suffix(format!(".{name}"))
        } else {
            Self::Exact(name.to_string())
        })
    }

    /// Whether `host` (no port) matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        match self {
            Self::Exact(name) => host.eq_ignore_ascii_case(name),
            Self::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Suffix(suffix) => write!(f, "*{suffix}"),
        }
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_suffix_patterns() {
        let exact = HostPattern::parse("Billing.Internal").unwrap();
        assert!(exact.matches("billing.internal"));
        assert!(exact.matches("BILLING.internal."));
        assert!(!exact.matches("x.billing.internal"));
        let suffix = HostPattern::parse("*.payments.internal").unwrap();
        assert!(suffix.matches("a.payments.internal"));
        assert!(suffix.matches("a.b.Payments.internal"));
        assert!(!suffix.matches("payments.internal"));
        assert!(!suffix.matches("evilpayments.internal"));
        assert_eq!(suffix.to_string(), "*.payments.internal");
        for bad in ["", "*.", "a..b", "*", "a b", "x:443", "*.*.x"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
