//! Protocol choice: HTTP/1.1 or HTTP/2 to the upstream, decided per
//! request from `upstream_protocol`, the scheme, the request's own version
//! and what the app has shown it speaks. The HTTP/1.1 resend of a bodiless
//! request to an app that turned out not to speak HTTP/2 is a
//! [`super::replay::Replay`].

use http::{
    header::{self, HeaderValue},
    uri::{Authority, Scheme},
    Request, Version,
};
use http_body::Body;

use super::{is_grpc, UpgradeRequest, UpstreamProtocol};
use filters::HttpBody;

static CHUNKED: HeaderValue = HeaderValue::from_static("chunked");

/// How one request goes to the upstream.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    /// The upstream is `https://`.
    pub(super) tls: bool,
    /// A gRPC request (never downgraded: gRPC needs HTTP/2).
    pub(super) grpc: bool,
    /// An HTTP/1.1 upgrade (WebSocket): needs HTTP/1.1 end to end.
    pub(super) upgrade: bool,
    /// HTTP/2 in clear text (prior knowledge), or always under `h2c`.
    pub(super) use_h2: bool,
    /// Over TLS in `auto`, ALPN chooses.
    pub(super) alpn_decides: bool,
}

impl Plan {
    /// The plan for `req` to a `scheme` upstream; `h2_unsupported` is what
    /// the app has shown (it failed an HTTP/2 exchange before answering one).
    pub(super) fn new(
        protocol: UpstreamProtocol,
        h2_unsupported: bool,
        scheme: &Scheme,
        req: &Request<HttpBody>,
    ) -> Self {
        let version = req.version();
        let grpc = is_grpc(req.headers());
        let upgrade =
            version == Version::HTTP_11 && req.extensions().get::<UpgradeRequest>().is_some();
        let tls = *scheme == Scheme::HTTPS;
        // Over TLS in `auto`, ALPN decides (an upgrade needs HTTP/1.1); in
        // clear text the request's own version does, with the remembered
        // downgrade for apps that only speak HTTP/1.1.
        let alpn_decides = tls && protocol == UpstreamProtocol::Auto && !upgrade;
        let use_h2 = match protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::H2c => true,
            UpstreamProtocol::Auto => {
                !tls && version == Version::HTTP_2 && (grpc || !h2_unsupported)
            }
        } && !upgrade;
        Self {
            tls,
            grpc,
            upgrade,
            use_h2,
            alpn_decides,
        }
    }

    /// Sets the version the plan chose and what it needs: HTTP/2 carries
    /// the authority in the URI, not `Host`; HTTP/1.1 needs `Host` and
    /// explicit framing for a body of unknown length.
    pub(super) fn set_version(&self, req: &mut Request<HttpBody>, authority: &Authority) {
        if self.use_h2 {
            req.headers_mut().remove(header::HOST);
            *req.version_mut() = Version::HTTP_2;
            return;
        }
        // hyper sends a GET, HEAD or CONNECT body of unknown length as no
        // body at all unless the framing is explicit; never drop it.
        if !req.body().is_end_stream()
            && req.body().size_hint().exact().is_none()
            && !req.headers().contains_key(header::CONTENT_LENGTH)
        {
            req.headers_mut()
                .insert(header::TRANSFER_ENCODING, CHUNKED.clone());
        }
        if !req.headers().contains_key(header::HOST) {
            let host = req.uri().authority().unwrap_or(authority).as_str();
            if let Ok(v) = HeaderValue::from_str(host) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        *req.version_mut() = Version::HTTP_11;
    }
}
