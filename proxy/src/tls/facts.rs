//! What TLS did on one inbound connection, as span attributes.
//!
//! [`TlsFacts`] is built once, when the handshake completes, with every
//! attribute value prepared; the listener puts the same `Arc` in the
//! extensions of each request of the connection, and the [`TlsSpanAttributes`]
//! hook copies the attributes onto the request's SERVER span. Copying clones
//! `&'static str`s and reference-counted bytes: nothing is formatted or
//! parsed per request.
//!
//! | attribute | value |
//! |---|---|
//! | `tls.protocol.name` | `tls` |
//! | `tls.protocol.version` | `1.2`, `1.3` |
//! | `tls.curve` | the negotiated key-exchange group, e.g. `X25519MLKEM768` |
//! | `tls.client.subject` | with mTLS: the client certificate's subject, RFC 4514 |
//! | `sidetrace.tls.client.san` | with mTLS: its first DNS or URI subject alternative name |

use std::{borrow::Cow, sync::Arc};

use bytes::Bytes;
use filters::trace::{
    hooks::SpanHooks,
    span::{AttrValue, SpanKind, SpanRecord},
};
use http::HeaderValue;
use opentelemetry_semantic_conventions::attribute as semconv;
use rustls::{CommonState, ProtocolVersion};

use super::{metrics::version_label, x509};

/// `tls.protocol.name`.
pub const PROTOCOL_NAME: &str = semconv::TLS_PROTOCOL_NAME;
/// `tls.protocol.version`: `1.2` or `1.3`.
pub const PROTOCOL_VERSION: &str = semconv::TLS_PROTOCOL_VERSION;
/// `tls.curve`: the semantic conventions' name for the negotiated group
/// (TLS 1.3 renamed "curves" to "groups"; the post-quantum hybrid
/// `X25519MLKEM768` is one).
pub const KEY_EXCHANGE_GROUP: &str = semconv::TLS_CURVE;
/// `tls.client.subject`: the client certificate's subject, RFC 4514.
pub const CLIENT_SUBJECT: &str = semconv::TLS_CLIENT_SUBJECT;
/// `sidetrace.tls.client.san`: the client certificate's first DNS or URI
/// subject alternative name (the semantic conventions have none).
pub const CLIENT_SAN: &str = "sidetrace.tls.client.san";

/// One connection's TLS facts, shared by its requests.
#[derive(Debug)]
pub struct TlsFacts {
    version: Option<ProtocolVersion>,
    client_verified: bool,
    attributes: Box<[(Cow<'static, str>, AttrValue)]>,
}

/// Adds a connection's [`TlsFacts`] to each SERVER span of its requests.
#[derive(Clone, Copy, Debug, Default)]
pub struct TlsSpanAttributes;

// === impl TlsFacts ===

impl TlsFacts {
    /// Reads the facts of a connection whose handshake completed.
    pub fn new(conn: &CommonState) -> Self {
        let version = conn.protocol_version();
        let mut attributes = Vec::with_capacity(5);
        let mut put = |key: &'static str, value: AttrValue| {
            attributes.push((Cow::Borrowed(key), value));
        };
        put(PROTOCOL_NAME, AttrValue::Str(Cow::Borrowed("tls")));
        if version.is_some() {
            put(
                PROTOCOL_VERSION,
                AttrValue::Str(Cow::Borrowed(version_label(version))),
            );
        }
        if let Some(group) = conn.negotiated_key_exchange_group() {
            let name = group.name();
            let value = match name.as_str() {
                Some(known) => AttrValue::Str(Cow::Borrowed(known)),
                None => shared(format!("0x{:04x}", u16::from(name))),
            };
            put(KEY_EXCHANGE_GROUP, value);
        }
        let leaf = conn.peer_certificates().and_then(|chain| chain.first());
        if let Some(cert) = leaf {
            match x509::identity(cert) {
                Ok(identity) => {
                    put(CLIENT_SUBJECT, shared(identity.subject));
                    if let Some(san) = identity.san {
                        put(CLIENT_SAN, shared(san));
                    }
                }
                Err(e) => tracing::debug!(error = %e, "client certificate identity not recorded"),
            }
        }
        Self {
            version,
            client_verified: leaf.is_some(),
            attributes: attributes.into_boxed_slice(),
        }
    }

    /// The negotiated version.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Whether the client presented a certificate (which the acceptor
    /// verified against `inbound.tls.client_ca`).
    pub fn client_verified(&self) -> bool {
        self.client_verified
    }

    /// The span attributes, prepared.
    pub fn attributes(&self) -> &[(Cow<'static, str>, AttrValue)] {
        &self.attributes
    }
}

/// A text value whose clones share its bytes. `AttrValue` has no shared
/// string variant; a header value holds `Bytes`, and export renders it as
/// text. Rendered subjects escape control characters, so they always fit.
fn shared(text: String) -> AttrValue {
    match HeaderValue::from_maybe_shared(Bytes::from(text)) {
        Ok(value) => AttrValue::Header(value),
        Err(_) => AttrValue::Str(Cow::Borrowed("")),
    }
}

// === impl TlsSpanAttributes ===

impl SpanHooks for TlsSpanAttributes {
    fn on_start(&self, span: &mut SpanRecord, req: &filters::Request) {
        if span.kind != SpanKind::Server {
            return;
        }
        if let Some(facts) = req.extensions().get::<Arc<TlsFacts>>() {
            span.attributes.extend(facts.attributes.iter().cloned());
        }
    }
}

#[cfg(test)]
mod tests {
    use filters::trace::context::TraceId;

    use super::*;

    fn span(kind: SpanKind) -> SpanRecord {
        SpanRecord::start(kind, TraceId::random(), http::Method::GET)
    }

    fn request(facts: Option<Arc<TlsFacts>>) -> filters::Request {
        let mut req = http::Request::new(filters::empty_body());
        if let Some(f) = facts {
            req.extensions_mut().insert(f);
        }
        req
    }

    #[test]
    fn the_hook_copies_prepared_attributes_onto_server_spans_only() {
        let facts = Arc::new(TlsFacts {
            version: Some(ProtocolVersion::TLSv1_3),
            client_verified: true,
            attributes: vec![
                (
                    Cow::Borrowed(PROTOCOL_VERSION),
                    AttrValue::Str(Cow::Borrowed("1.3")),
                ),
                (
                    Cow::Borrowed(CLIENT_SUBJECT),
                    shared("CN=client,O=Example".into()),
                ),
            ]
            .into(),
        });
        let mut server = span(SpanKind::Server);
        TlsSpanAttributes.on_start(&mut server, &request(Some(facts.clone())));
        let got: Vec<(&str, &AttrValue)> =
            server.attributes.iter().map(|(k, v)| (&**k, v)).collect();
        assert_eq!(
            got,
            vec![
                (PROTOCOL_VERSION, &AttrValue::Str("1.3".into())),
                (
                    CLIENT_SUBJECT,
                    &AttrValue::Header(HeaderValue::from_static("CN=client,O=Example"))
                ),
            ]
        );
        let mut client = span(SpanKind::Client);
        TlsSpanAttributes.on_start(&mut client, &request(Some(facts)));
        assert!(client.attributes.is_empty());
        let mut plain = span(SpanKind::Server);
        TlsSpanAttributes.on_start(&mut plain, &request(None));
        assert!(plain.attributes.is_empty());
    }
}
