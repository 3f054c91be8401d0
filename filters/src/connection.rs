//! What a request's connection says about its client: made once per
//! connection by the listener and shared by every request on it, as one
//! `Arc` in the request extensions.
//!
//! ```
//! use std::sync::Arc;
//! use filters::connection::ConnectionInfo;
//!
//! let info = Arc::new(ConnectionInfo::new("10.1.2.3:4567".parse().unwrap(), false));
//! let mut req = http::Request::new(());
//! req.extensions_mut().insert(info.clone());
//! let seen = ConnectionInfo::of(req.extensions()).unwrap();
//! assert_eq!(seen.client.to_string(), "10.1.2.3:4567");
//! assert_eq!(seen.forwarded_for.as_ref().unwrap(), "10.1.2.3");
//! ```

use std::{net::SocketAddr, sync::Arc};

use http::HeaderValue;

/// A connection's client, as the listener accepted it.
#[derive(Debug)]
pub struct ConnectionInfo {
    /// The client's address (`client.address` on spans).
    pub client: SocketAddr,
    /// Whether the connection is TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
    /// The client's IP as an `X-Forwarded-For` value, rendered once.
    pub forwarded_for: Option<HeaderValue>,
}

impl ConnectionInfo {
    /// The facts of a connection from `client`.
    pub fn new(client: SocketAddr, tls: bool) -> Self {
        let forwarded_for = HeaderValue::from_str(&client.ip().to_string()).ok();
        Self {
            client,
            tls,
            forwarded_for,
        }
    }

    /// The facts the listener put in `extensions`, if any.
    pub fn of(extensions: &http::Extensions) -> Option<&Self> {
        extensions.get::<Arc<Self>>().map(|info| &**info)
    }
}
