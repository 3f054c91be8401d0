//! The test kit shared by `integration-tests` (the proxy in process) and
//! `proxy/tests` (the real binary as a process): one [`PATIENCE`] for every
//! wait, the Prometheus text parser, the figures for `docs/reliability.md`,
//! and the blocking pieces the process tests drive the binary with.
//!
//! - [`process`]: the binary started with its listeners on port 0, the bound
//!   addresses read from its ready line (or from `/proc` when it writes none),
//!   SIGTERM, a bounded wait for the exit, its stdout lines.
//! - [`http1`]: raw HTTP/1.1 over a `std` socket, for tests that care about
//!   the bytes (`Connection: close`, keep-alive, an HTTP/1.0 app).
//! - [`held`]: an upstream that holds each request until the test lets it
//!   answer, so a test knows a request is in flight because the upstream says
//!   so, never because some time has passed.
//!
//! Every socket binds `127.0.0.1:0` and is kept (or read back from the
//! process that bound it); no port is bound, dropped and handed on, not even
//! for an address where nothing listens ([`refusing_addr`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod held;
pub mod http1;
pub mod metrics;
pub mod process;
pub mod report;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

pub use metrics::{metric_sum, parse_metrics};

/// How long any wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

#[doc(hidden)]
pub use tokio as __tokio;

/// A fresh temporary directory for one test's files, named after `name`,
/// the process and a counter, so that tests running at once never share one.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sidetrace-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` to `dir/name` and returns the path as a string for YAML.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// An address on `127.0.0.1` where connections are refused, for the whole
/// run of the test binary: a socket bound to it that never listens, kept
/// open (leaked on purpose) so that no other test's listener can take the
/// port in the meantime.
pub fn refusing_addr() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind 127.0.0.1:0");
    let addr = socket.local_addr().expect("its address");
    std::mem::forget(socket);
    addr
}

/// Retries an async condition until it holds or [`PATIENCE`] runs out.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $($msg:tt)+) => {{
        let deadline = $crate::__tokio::time::Instant::now() + $crate::PATIENCE;
        loop {
            if $cond {
                break;
            }
            if $crate::__tokio::time::Instant::now() > deadline {
                panic!($($msg)+);
            }
            $crate::__tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }};
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_refusing_addr_refuses() {
        let addr = super::refusing_addr();
        let refused = std::net::TcpStream::connect(addr).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
