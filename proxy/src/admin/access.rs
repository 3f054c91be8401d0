//! Who may use which admin endpoint.
//!
//! The admin server often listens on the pod IP so that the kubelet and
//! Prometheus reach `/metrics`, `/live` and `/ready`; those answer anyone.
//! `/config`, `/debug/*` and `/shutdown` show the configuration and recent
//! requests or stop the proxy, so they answer loopback peers only unless the
//! config lists their group in `admin.expose`:
//!
//! ```yaml
//! admin: { listen: 0.0.0.0:15090, expose: [debug] }   # /debug/traces for the pod network
//! ```
//!
//! A refusal is a 403 with a line saying how to expose the endpoint, logged
//! once per peer address and group.

use std::{collections::HashSet, fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

/// An `admin.expose` entry: endpoints served to loopback peers only unless
/// listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointGroup {
    /// `GET /config`.
    Config,
    /// `/debug` and everything below it (`/debug/traces`).
    Debug,
    /// `POST /shutdown`.
    Shutdown,
}

/// The access decision of one admin server: which groups are exposed, and
/// which refusals were logged already.
#[derive(Debug)]
pub struct Access {
    exposed: [bool; 3],
    logged: parking_lot::Mutex<HashSet<(IpAddr, EndpointGroup)>>,
}

/// A refused request: the status is 403 and the body says how to expose it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused(pub EndpointGroup);

/// Distinct (peer, group) refusals logged before the log goes quiet, so a
/// scan from many addresses cannot grow the set or flood the log.
const LOGGED_MAX: usize = 1024;

// === impl EndpointGroup ===

impl EndpointGroup {
    /// Every group.
    pub const ALL: [Self; 3] = [Self::Config, Self::Debug, Self::Shutdown];

    /// The group `path` belongs to; `None` for the endpoints anyone may use.
    pub fn of(path: &str) -> Option<Self> {
        let under = |root: &str| {
            path.strip_prefix(root)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if under("/config") {
            Some(Self::Config)
        } else if under("/debug") {
            Some(Self::Debug)
        } else if under("/shutdown") {
            Some(Self::Shutdown)
        } else {
            None
        }
    }

    /// The `admin.expose` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Debug => "debug",
            Self::Shutdown => "shutdown",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Config => 0,
            Self::Debug => 1,
            Self::Shutdown => 2,
        }
    }
}

impl fmt::Display for EndpointGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === impl Access ===

impl Access {
    /// Loopback-only for every group not in `expose`.
    pub fn new(expose: &[EndpointGroup]) -> Self {
        let mut exposed = [false; 3];
        for group in expose {
            exposed[group.index()] = true;
        }
        Self {
            exposed,
            logged: parking_lot::Mutex::new(HashSet::new()),
        }
    }

    /// Whether `peer` may use `path`. The first refusal per peer address and
    /// group is logged at info.
    pub fn check(&self, path: &str, peer: IpAddr) -> Result<(), Refused> {
        let Some(group) = EndpointGroup::of(path) else {
            return Ok(());
        };
        if self.exposed[group.index()] || is_loopback(peer) {
            return Ok(());
        }
        self.log_once(peer, group);
        Err(Refused(group))
    }

    fn log_once(&self, peer: IpAddr, group: EndpointGroup) {
        let mut logged = self.logged.lock();
        if logged.len() >= LOGGED_MAX || !logged.insert((peer, group)) {
            return;
        }
        let last = logged.len() == LOGGED_MAX;
        drop(logged);
        tracing::info!(
            client = %peer,
            endpoint = group.name(),
            "admin endpoint refused to a non-loopback peer; list it in admin.expose to serve it \
             (further refusals for this peer and endpoint are not logged)"
        );
        if last {
            tracing::info!("{LOGGED_MAX} admin refusals logged; no more will be");
        }
    }
}

// === impl Refused ===

impl Refused {
    /// The one-line 403 body.
    pub fn message(self) -> &'static str {
        match self.0 {
            EndpointGroup::Config => {
                "/config is served to loopback clients only; add `config` to admin.expose in the config file to serve it to other peers\n"
            }
            EndpointGroup::Debug => {
                "/debug is served to loopback clients only; add `debug` to admin.expose in the config file to serve it to other peers\n"
            }
            EndpointGroup::Shutdown => {
                "/shutdown is accepted from loopback clients only; add `shutdown` to admin.expose in the config file to accept it from other peers\n"
            }
        }
    }
}

/// 127.0.0.0/8, `::1`, and IPv4 loopback mapped into IPv6 (a dual-stack
/// `[::]` listener sees IPv4 peers as `::ffff:a.b.c.d`).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn groups_by_path() {
        let table: &[(&str, Option<EndpointGroup>)] = &[
            ("/metrics", None),
            ("/live", None),
            ("/ready", None),
            ("/", None),
            ("/configuration", None),
            ("/debugger", None),
            ("/config", Some(EndpointGroup::Config)),
            ("/config/", Some(EndpointGroup::Config)),
            ("/debug", Some(EndpointGroup::Debug)),
            ("/debug/traces", Some(EndpointGroup::Debug)),
            ("/debug/traces/ui", Some(EndpointGroup::Debug)),
            ("/debug/pprof", Some(EndpointGroup::Debug)),
            ("/shutdown", Some(EndpointGroup::Shutdown)),
        ];
        for (path, want) in table {
            assert_eq!(EndpointGroup::of(path), *want, "{path}");
        }
    }

    #[test]
    fn loopback_peers() {
        for peer in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:127.9.9.9",
        ] {
            assert!(is_loopback(ip(peer)), "{peer}");
        }
        for peer in [
            "10.231.0.2",
            "0.0.0.0",
            "::",
            "::ffff:10.0.0.1",
            "fe80::1",
            "192.168.1.1",
        ] {
            assert!(!is_loopback(ip(peer)), "{peer}");
        }
    }

    #[test]
    fn guarded_groups_answer_loopback_only_by_default() {
        let access = Access::new(&[]);
        let remote = ip("10.231.0.2");
        for path in ["/metrics", "/live", "/ready", "/nope"] {
            assert_eq!(access.check(path, remote), Ok(()), "{path}");
        }
        for (path, group) in [
            ("/config", EndpointGroup::Config),
            ("/debug/traces", EndpointGroup::Debug),
            (
                "/debug/traces/0af7651916cd43dd8448eb211c80319c",
                EndpointGroup::Debug,
            ),
            ("/shutdown", EndpointGroup::Shutdown),
        ] {
            assert_eq!(access.check(path, remote), Err(Refused(group)), "{path}");
            assert_eq!(access.check(path, ip("127.0.0.1")), Ok(()), "{path}");
            assert_eq!(access.check(path, ip("::ffff:127.0.0.1")), Ok(()), "{path}");
            assert_eq!(access.check(path, ip("::1")), Ok(()), "{path}");
        }
    }

    #[test]
    fn expose_opens_only_the_listed_groups() {
        let access = Access::new(&[EndpointGroup::Config]);
        let remote = ip("10.231.0.2");
        assert_eq!(access.check("/config", remote), Ok(()));
        assert!(access.check("/debug/traces", remote).is_err());
        assert!(access.check("/shutdown", remote).is_err());
        let all = Access::new(&EndpointGroup::ALL);
        for path in ["/config", "/debug/traces", "/shutdown"] {
            assert_eq!(all.check(path, remote), Ok(()), "{path}");
        }
    }

    #[test]
    fn refusals_are_remembered_once_and_bounded() {
        let access = Access::new(&[]);
        for _ in 0..3 {
            let _ = access.check("/config", ip("10.0.0.1"));
            let _ = access.check("/debug/traces/x", ip("10.0.0.1"));
        }
        assert_eq!(
            access.logged.lock().len(),
            2,
            "one entry per peer and group"
        );
        for i in 0..(LOGGED_MAX as u32 + 50) {
            let peer = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(access.check("/shutdown", peer).is_err());
        }
        assert_eq!(
            access.logged.lock().len(),
            LOGGED_MAX,
            "the set stops growing"
        );
    }

    #[test]
    fn messages_say_how_to_expose() {
        for group in EndpointGroup::ALL {
            let m = Refused(group).message();
            assert!(
                m.contains("admin.expose") && m.contains(&format!("`{group}`")),
                "{m}"
            );
            assert_eq!(m.matches('\n').count(), 1, "one line: {m}");
        }
    }

    #[test]
    fn expose_values_parse_and_unknown_ones_are_errors() {
        let groups: Vec<EndpointGroup> =
            serde_json::from_str(r#"["config","debug","shutdown"]"#).unwrap();
        assert_eq!(groups, EndpointGroup::ALL);
        assert!(serde_json::from_str::<Vec<EndpointGroup>>(r#"["metrics"]"#).is_err());
        let e = crate::config::parse_yaml("admin:\n  expose: [config, metrics]\n").unwrap_err();
        let text = e.to_string();
        assert_eq!(e.line, Some(2), "{text}");
        assert!(text.contains("admin.expose"), "{text}");
        assert!(
            text.contains("metrics") && text.contains("shutdown"),
            "{text}"
        );
        let ok = crate::config::parse_yaml("admin: { expose: [debug] }").unwrap();
        assert_eq!(ok.admin.expose, [EndpointGroup::Debug]);
        assert!(crate::config::parse_yaml("{}")
            .unwrap()
            .admin
            .expose
            .is_empty());
    }
}
