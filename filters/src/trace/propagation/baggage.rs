//! W3C Baggage, forwarded verbatim when within the spec's limits.
//!
//! The proxy does not read baggage entries; it checks the header's shape and
//! size (at most 8192 bytes and 64 list members, each `key=value[;props]`
//! with a token key) so that a malformed or oversized header is dropped and
//! counted rather than passed on.

use http::HeaderMap;

use super::{headers, Extracted, InjectContext, Propagator};

/// Largest `baggage` header forwarded, in bytes (W3C limit).
pub const MAX_BAGGAGE_BYTES: usize = 8192;
/// Most list members forwarded (W3C limit).
pub const MAX_BAGGAGE_MEMBERS: usize = 64;

/// Whether a `baggage` value is well formed and within limits.
pub fn valid_baggage(v: &[u8]) -> bool {
    if v.len() > MAX_BAGGAGE_BYTES {
        return false;
    }
    let mut members = 0;
    for member in v.split(|&b| b == b',') {
        members += 1;
        if members > MAX_BAGGAGE_MEMBERS {
            return false;
        }
        let kv = member.split(|&b| b == b';').next().unwrap_or_default();
        let Some(eq) = kv.iter().position(|&b| b == b'=') else {
            return false;
        };
        let key = trim(&kv[..eq]);
        let value = trim(&kv[eq + 1..]);
        if key.is_empty() || !key.iter().all(|&b| is_token(b)) {
            return false;
        }
        if !value.iter().all(|&b| is_value_char(b)) {
            return false;
        }
    }
    true
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// RFC 7230 `tchar`.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The `(key, value)` pairs of a baggage list, trimmed, properties left
/// out; members without `=` are skipped.
pub(super) fn members(v: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    v.split(|&b| b == b',').filter_map(|member| {
        let kv = member.split(|&b| b == b';').next().unwrap_or_default();
        let eq = kv.iter().position(|&b| b == b'=')?;
        let key = trim(&kv[..eq]);
        (!key.is_empty()).then(|| (key, trim(&kv[eq + 1..])))
    })
}

/// W3C `baggage-octet` (printable ASCII less `"`, `,`, `;`, `\`, space),
/// plus `%` escapes which are octets themselves.
pub(super) fn is_value_char(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// Reads `baggage` (all its headers must be valid; several are joined).
pub(super) fn extract(headers: &HeaderMap, out: &mut Extracted) {
    let mut values = headers.get_all(headers::BAGGAGE).iter();
    let Some(first) = values.next() else {
        return;
    };
    let value = match values.next() {
        None => first.clone(),
        Some(second) => {
            let mut joined = first.as_bytes().to_vec();
            for v in std::iter::once(second).chain(values) {
                joined.push(b',');
                joined.extend_from_slice(v.as_bytes());
            }
            match http::HeaderValue::from_bytes(&joined) {
                Ok(v) => v,
                Err(_) => {
                    out.errors.add(Propagator::Baggage);
                    return;
                }
            }
        }
    };
    if valid_baggage(value.as_bytes()) {
        out.baggage = Some(value);
    } else {
        out.errors.add(Propagator::Baggage);
    }
}

/// Keeps valid baggage, drops a malformed or oversized one.
pub(super) fn inject(headers: &mut HeaderMap, cx: &InjectContext<'_>) {
    match &cx.extracted.baggage {
        Some(v) => {
            headers.insert(headers::BAGGAGE, v.clone());
        }
        None => {
            headers.remove(headers::BAGGAGE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baggage_table() {
        let big = format!("k={}", "v".repeat(MAX_BAGGAGE_BYTES));
        let many = (0..65)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        let table: &[(&str, bool)] = &[
            ("userId=alice,serverNode=DF%2028,isProduction=false", true),
            ("key1=value1;property1;property2, key2 = value2", true),
            ("k=", true),
            ("k", false),
            ("=v", false),
            ("k=v v", false),
            ("k=\"quoted\"", false),
            ("k(=v", false),
            (&big, false),
            (&many, false),
        ];
        for (input, ok) in table {
            assert_eq!(valid_baggage(input.as_bytes()), *ok, "{input}");
        }
    }
}
