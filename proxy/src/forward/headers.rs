//! Request and response headers across the hop: hop-by-hop removal
//! (RFC 9110 section 7.6.1), `Via`, `X-Forwarded-For`/`-Proto`, and the
//! checks that decide how a request travels (gRPC, upgrade).

use http::{
    header::{self, HeaderName, HeaderValue},
    HeaderMap, Request, Version,
};

use filters::connection::ConnectionInfo;

use super::UpgradeRequest;
use filters::HttpBody;

static VIA_11: HeaderValue = HeaderValue::from_static("1.1 sidetrace");
static VIA_2: HeaderValue = HeaderValue::from_static("2.0 sidetrace");
static PROTO_HTTP: HeaderValue = HeaderValue::from_static("http");
static PROTO_HTTPS: HeaderValue = HeaderValue::from_static("https");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static TRAILERS: &[u8] = b"trailers";

/// gRPC requests must stay on HTTP/2 end to end (trailers, streaming).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

pub(super) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v.as_bytes(), b"upgrade"))
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Removes the request's hop-by-hop headers where the request enters the
/// stack, before anything (trace context above all) is added that a
/// `Connection` header could name; an upgrade's `Upgrade` value is kept in
/// the extensions for the forwarder.
pub fn strip_hop_by_hop<B>(req: &mut Request<B>) {
    if req.version() == Version::HTTP_11 && is_upgrade(req.headers()) {
        if let Some(value) = req.headers().get(header::UPGRADE).cloned() {
            req.extensions_mut().insert(UpgradeRequest(value));
        }
    }
    remove_hop_by_hop(req.headers_mut());
}

pub(super) fn prepare_headers(req: &mut Request<HttpBody>, version: Version, upgrade: bool) {
    let upgrade_value = upgrade
        .then(|| {
            req.extensions()
                .get::<UpgradeRequest>()
                .map(|u| u.0.clone())
        })
        .flatten();
    if let Some(value) = upgrade_value {
        req.headers_mut().insert(header::UPGRADE, value);
        req.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let connection = ConnectionInfo::of(req.extensions());
    let client = connection.and_then(|c| c.forwarded_for.clone());
    let tls = connection.is_some_and(|c| c.tls);
    let headers = req.headers_mut();
    headers.append(
        header::VIA,
        if version == Version::HTTP_2 {
            VIA_2.clone()
        } else {
            VIA_11.clone()
        },
    );
    if let Some(ip) = client {
        let value = match headers.get(&X_FORWARDED_FOR) {
            // Appended in one buffer of the right size: one allocation.
            Some(prior) => {
                let mut joined =
                    bytes::BytesMut::with_capacity(prior.len() + 2 + ip.as_bytes().len());
                joined.extend_from_slice(prior.as_bytes());
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(ip.as_bytes());
                HeaderValue::from_maybe_shared(joined.freeze()).ok()
            }
            None => Some(ip),
        };
        if let Some(v) = value {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        if tls {
            PROTO_HTTPS.clone()
        } else {
            PROTO_HTTP.clone()
        },
    );
}

/// Removes the headers that describe one connection, not the message
/// (RFC 9110 section 7.6.1), including those named in `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass of cheap comparisons finds the few present (usually none, or
    // `Connection: keep-alive`), so only those pay for a hashed removal.
    let mut present: [Option<HeaderName>; 8] = Default::default();
    let mut count = 0;
    for name in headers.keys() {
        if count < present.len()
            && is_hop_by_hop(name)
            && !present[..count].iter().any(|p| p.as_ref() == Some(name))
        {
            present[count] = Some(name.clone());
            count += 1;
        }
    }
    if count == 0 {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.eq_ignore_ascii_case(b"keep-alive") && !t.eq_ignore_ascii_case(b"close"))
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .collect();
        for name in named {
            if name != header::TE {
                headers.remove(name);
            }
        }
    }
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| has_token(v.as_bytes(), TRAILERS));
    for name in present.into_iter().flatten() {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// `Trailer` is not among them: it announces the message's trailer fields
/// end to end (RFC 9110 section 6.6.2), and an HTTP/1.1 server sends
/// trailers only for fields its response announced.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        h.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("x"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::HOST, HeaderValue::from_static("app"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h[header::HOST], "app");
    }

    #[test]
    fn grpc_and_upgrade_detection() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!is_upgrade(&h));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(is_upgrade(&h));
    }
}
