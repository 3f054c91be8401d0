//! Requests addressed to the outbound listener itself: a loop that would
//! feed the proxy its own traffic until descriptors run out.

use std::net::SocketAddr;

use http::uri::Authority;

/// Whether `authority` names the listener at `own` (a request loop).
pub(crate) fn is_self(authority: &Authority, own: SocketAddr) -> bool {
    if authority.port_u16().unwrap_or(80) != own.port() {
        return false;
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            ip == own.ip()
                || ((own.ip().is_unspecified() || own.ip().is_loopback()) && ip.is_loopback())
        }
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_to_the_outbound_listener_are_detected() {
        let own: SocketAddr = "127.0.0.1:15081".parse().unwrap();
        let is = |a: &str| is_self(&a.parse().unwrap(), own);
        assert!(is("127.0.0.1:15081"));
        assert!(is("localhost:15081"));
        assert!(is("[::1]:15081"));
        assert!(!is("127.0.0.1:8080"));
        assert!(!is("orders.internal:15081"));
        let any: SocketAddr = "0.0.0.0:15081".parse().unwrap();
        assert!(is_self(&"127.0.0.2:15081".parse().unwrap(), any));
    }
}
