//! The Tower layers of the sidetrace request path and the registry that builds
//! a filter chain from configuration by name.
//!
//! Every filter is one concern: a config struct (serde, unknown fields
//! rejected), a `Layer`, a `Service` and, where it waits, a `ResponseFuture`.
//! [`registry::FilterConfig`] is the list of filters a config file may name;
//! `proxy/src/stack.rs` assembles the fixed layers around the configured chain.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt};

pub mod body;
pub mod catch_panic;
pub mod chain;
pub mod circuit_breaker;
pub mod classify;
pub mod concurrency_limit;
pub mod connection;
pub mod duration;
pub mod filter_metrics;
pub mod headers;
pub mod max_body;
pub mod metrics;
pub mod rate_limit;
pub mod registry;
pub mod retry;
pub mod route;
pub mod secret;
pub mod timeout;
pub mod trace;

/// A type-erased error travelling the stack; [`classify`] turns it into a
/// [`classify::Failure`].
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The body type of every request and response inside the filter chain.
///
/// Boxed once at the edge of the chain so that filters can wrap bodies
/// (metrics, tracing, retries) without each layer changing the type.
pub type HttpBody = UnsyncBoxBody<Bytes, Error>;

/// A request inside the chain.
pub type Request = http::Request<HttpBody>;
/// A response inside the chain.
pub type Response = http::Response<HttpBody>;

/// The configured chain as one cloneable, `Sync` service.
///
/// Errors are typed values (timeouts, limits, upstream failures) that the
/// rescue layer in the proxy turns into responses.
pub type HttpService = tower::util::BoxCloneSyncService<Request, Response, Error>;

/// A filter's layer, boxed so the registry can hold a chain of different filters.
pub type HttpLayer = tower::util::BoxCloneSyncServiceLayer<HttpService, Request, Response, Error>;

/// An empty body, for synthetic responses.
pub fn empty_body() -> HttpBody {
    http_body_util::Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// A body holding `bytes`, for synthetic responses.
pub fn full_body(bytes: impl Into<Bytes>) -> HttpBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}
