//! `limits:`: what one client, or all of them together, may take from the
//! proxy. Every limit has a default sized for a sidecar, so a hostile client
//! meets them without any configuration.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `limits:` in the config file; every key is optional.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Time a new connection has to deliver its first request head (and a
    /// started head has to complete), from accept or, with TLS, from the
    /// end of the handshake.
    #[serde(with = "filters::duration")]
    pub header_read_timeout: Duration,
    /// Time a TLS client has to complete its handshake, from accept; past
    /// it the connection is closed (counted as `result="timeout"`).
    #[serde(with = "filters::duration")]
    pub tls_handshake_timeout: Duration,
    /// A connection with no request in flight for this long is closed
    /// (HTTP/1 keep-alive, HTTP/2 with no open stream: GOAWAY).
    #[serde(with = "filters::duration")]
    pub idle_timeout: Duration,
    /// A request body that delivers nothing for this long fails with 408.
    #[serde(with = "filters::duration")]
    pub body_idle_timeout: Duration,
    /// Time the upstream has to start its response (status and headers);
    /// `off` waits forever. Past it: 504, NETWORK.
    #[serde(with = "optional_duration")]
    pub response_head_timeout: Option<Duration>,
    /// Open connections per listener; past it, new connections wait in the
    /// kernel's accept queue.
    pub max_connections: usize,
    /// Requests in flight per listener, across connections, until their
    /// response bodies end; past it: 503. With the per-stream buffers this
    /// bounds the memory all clients together can pin.
    pub max_requests_in_flight: usize,
    /// Concurrent HTTP/2 streams one client connection may open.
    pub http2_max_concurrent_streams: u32,
    /// Bytes of response data buffered per HTTP/2 stream for a client that
    /// is not reading; past it the upstream is not read (backpressure).
    pub http2_stream_buffer_bytes: usize,
    /// Open connections to the upstream (per listener: the app inbound, each
    /// destination outbound).
    pub upstream_max_connections: usize,
    /// How long a request waits for a free upstream connection before it
    /// is shed with 503.
    #[serde(with = "filters::duration")]
    pub upstream_queue_timeout: Duration,
}

/// Default `limits.header_read_timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Default `limits.tls_handshake_timeout`: a handshake is two round trips
/// and some signing, milliseconds even across regions; ten seconds leaves
/// room for a loaded client and still frees a stalled connection's slot.
const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            // Longer than common client pools keep idle connections (Go 90 s
            // is the outlier; nginx's server side uses 75 s), so a client
            // rarely reuses a connection the proxy is closing.
            idle_timeout: Duration::from_secs(75),
            body_idle_timeout: Duration::from_secs(30),
            response_head_timeout: Some(Duration::from_secs(15)),
            max_connections: 4096,
            max_requests_in_flight: 2048,
            // The HTTP/2 specification's recommended minimum, and what most
            // servers advertise; a sidecar serves one app's clients.
            http2_max_concurrent_streams: 100,
            http2_stream_buffer_bytes: 64 * 1024,
            upstream_max_connections: 512,
            upstream_queue_timeout: Duration::from_secs(1),
        }
    }
}

impl LimitsConfig {
    /// Checks the values that deserialize but cannot work; returns the
    /// field and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive = |field: &'static str, d: Duration| {
            if d.is_zero() {
                Err((
                    field,
                    "must be more than 0 (durations like 10s)".to_string(),
                ))
            } else {
                Ok(())
            }
        };
        positive("header_read_timeout", self.header_read_timeout)?;
        positive("tls_handshake_timeout", self.tls_handshake_timeout)?;
        positive("idle_timeout", self.idle_timeout)?;
        positive("body_idle_timeout", self.body_idle_timeout)?;
        if let Some(d) = self.response_head_timeout {
            positive("response_head_timeout", d)?;
        }
        let at_least = |field: &'static str, value: usize, min: usize| {
            if value < min {
                Err((field, format!("must be at least {min}, got {value}")))
            } else {
                Ok(())
            }
        };
        at_least("max_connections", self.max_connections, 1)?;
        at_least("max_requests_in_flight", self.max_requests_in_flight, 1)?;
        at_least(
            "http2_max_concurrent_streams",
            self.http2_max_concurrent_streams as usize,
            1,
        )?;
        at_least(
            "http2_stream_buffer_bytes",
            self.http2_stream_buffer_bytes,
            16 * 1024,
        )?;
        at_least("upstream_max_connections", self.upstream_max_connections, 1)?;
        Ok(())
    }
}

/// Descriptors kept free of the listeners and upstream pools, so the admin
/// server (probes, metrics), the exporter and config reloads always have some.
pub const DESCRIPTOR_RESERVE: usize = 128;

impl LimitsConfig {
    /// Shrinks `max_connections` and `upstream_max_connections` so that
    /// `listeners` listeners at their caps, with their upstream pools, leave
    /// [`DESCRIPTOR_RESERVE`] of `open_files` free. Returns what changed, for
    /// the log, or `None` when the limits already fit.
    pub fn fit_descriptors(&mut self, open_files: usize, listeners: usize) -> Option<String> {
        let listeners = listeners.max(1);
        let needed =
            listeners * (self.max_connections + self.upstream_max_connections) + DESCRIPTOR_RESERVE;
        if needed <= open_files {
            return None;
        }
        let share = open_files.saturating_sub(DESCRIPTOR_RESERVE) / listeners;
        let before = (self.max_connections, self.upstream_max_connections);
        self.upstream_max_connections = self.upstream_max_connections.min(share / 2).max(1);
        self.max_connections = share.saturating_sub(self.upstream_max_connections).max(1);
        Some(format!(
            "the open-files limit is {open_files}: max_connections {} -> {} and \
             upstream_max_connections {} -> {} per listener, keeping {DESCRIPTOR_RESERVE} \
             descriptors for the admin server; raise the limit (ulimit -n) to keep the configured values",
            before.0, self.max_connections, before.1, self.upstream_max_connections
        ))
    }
}

/// The process's soft limit on open files, from `/proc/self/limits`
/// (`None` when unlimited or unknown).
pub fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A duration that may be `off`.
mod optional_duration {
    use super::*;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim() == "off" {
            return Ok(None);
        }
        humantime::parse_duration(&text).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: {e} (write e.g. 15s, or off)"
            ))
        })
    }

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => filters::duration::serialize(d, s),
            None => s.serialize_str("off"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fit_a_sidecar_and_validate() {
        let limits = LimitsConfig::default();
        assert!(limits.validate().is_ok());
        assert_eq!(limits.http2_max_concurrent_streams, 100);
        assert_eq!(limits.response_head_timeout, Some(Duration::from_secs(15)));
        assert_eq!(limits.tls_handshake_timeout, Duration::from_secs(10));
        let set: LimitsConfig =
            serde_json::from_str(r#"{"tls_handshake_timeout": "300ms"}"#).unwrap();
        assert_eq!(set.tls_handshake_timeout, Duration::from_millis(300));
    }

    #[test]
    fn response_head_timeout_can_be_turned_off_only_explicitly() {
        let off: LimitsConfig =
            serde_json::from_str(r#"{"response_head_timeout": "off"}"#).unwrap();
        assert_eq!(off.response_head_timeout, None);
        let set: LimitsConfig = serde_json::from_str(r#"{"response_head_timeout": "2s"}"#).unwrap();
        assert_eq!(set.response_head_timeout, Some(Duration::from_secs(2)));
        assert!(
            serde_json::from_str::<LimitsConfig>(r#"{"response_head_timeout": "soon"}"#).is_err()
        );
        assert_eq!(
            serde_json::to_value(&off).unwrap()["response_head_timeout"],
            "off"
        );
    }

    #[test]
    fn limits_shrink_to_leave_a_descriptor_reserve() {
        let mut limits = LimitsConfig::default();
        assert_eq!(limits.fit_descriptors(1 << 20, 2), None);
        let message = limits.fit_descriptors(1024, 2).unwrap();
        assert!(message.contains("1024"), "{message}");
        let used = 2 * (limits.max_connections + limits.upstream_max_connections);
        assert!(used + DESCRIPTOR_RESERVE <= 1024, "{limits:?}");
        assert!(limits.max_connections >= 200, "{limits:?}");
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn impossible_values_name_their_field() {
        let zero = LimitsConfig {
            idle_timeout: Duration::ZERO,
            ..LimitsConfig::default()
        };
        assert_eq!(zero.validate().unwrap_err().0, "idle_timeout");
        let handshake: LimitsConfig =
            serde_json::from_str(r#"{"tls_handshake_timeout": "0s"}"#).unwrap();
        assert_eq!(handshake.validate().unwrap_err().0, "tls_handshake_timeout");
        let tiny = LimitsConfig {
            http2_stream_buffer_bytes: 10,
            ..LimitsConfig::default()
        };
        assert_eq!(tiny.validate().unwrap_err().0, "http2_stream_buffer_bytes");
    }
}
