//! The real binary's outbound listener during the drain: the app still
//! calls out while it shuts down, so the listener serves until the app has
//! closed its connections, or until the drain timeout ends. Writes its
//! figures for docs/reliability.md (see `kit::report`).

#![allow(clippy::unwrap_used, clippy::expect_used)]
// These tests drive real processes from plain threads; blocking is the point.
#![allow(clippy::disallowed_methods)]

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use kit::{
    http1::Conn,
    process::Process,
    report::{record, Row},
};

const BIN: &str = env!("CARGO_BIN_EXE_sidetrace");

/// The destination app (`sidetrace echo`), and the proxy with an outbound
/// listener, no drain delay and a drain timeout of `drain_timeout`.
struct Setup {
    proxy: Process,
    _echo: Process,
    dest: SocketAddr,
    outbound: SocketAddr,
}

impl Setup {
    fn start(drain_timeout: &str) -> Self {
        let (echo, dest) = Process::echo(BIN);
        let mut proxy = Process::spawn(
            Command::new(BIN)
                .args(["run", "--inbound", "127.0.0.1:0"])
                .args(["--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
                .args(["--upstream", &format!("http://{dest}")])
                .env("SIDETRACE_DRAIN_DELAY", "0s")
                .env("SIDETRACE_DRAIN_TIMEOUT", drain_timeout),
        );
        let outbound = proxy.ready().outbound.expect("an outbound listener");
        Self {
            proxy,
            _echo: echo,
            dest,
            outbound,
        }
    }

    /// Sends SIGTERM to the proxy.
    fn sigterm(&self) {
        self.proxy.sigterm();
    }

    /// Waits for the proxy to exit; its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        self.proxy.wait_exit().code()
    }
}

/// An app's keep-alive connection to the outbound listener.
struct AppConn(Conn);

impl AppConn {
    fn open(outbound: SocketAddr) -> Self {
        Self(Conn::open(outbound).unwrap())
    }

    /// One GET to `dest` through the listener: whether it was a 200.
    fn get(&mut self, dest: SocketAddr) -> bool {
        self.0
            .get(&dest.to_string(), "/slow?delay_ms=20")
            .is_ok_and(|r| r.status == 200)
    }
}

#[test]
fn outbound_serves_the_app_until_it_closes_its_connections_or_the_drain_timeout() {
    // 1. The app keeps calling out for 1 s after SIGTERM, on its keep-alive
    //    connection and on new ones, then closes: the proxy exits soon after.
    let mut setup = Setup::start("10s");
    let mut app = AppConn::open(setup.outbound);
    for _ in 0..5 {
        assert!(app.get(setup.dest), "served before SIGTERM");
    }
    setup.sigterm();
    let signalled = Instant::now();
    let (mut kept, mut kept_ok, mut fresh, mut fresh_ok) = (0, 0, 0, 0);
    while signalled.elapsed() < Duration::from_secs(1) {
        kept += 1;
        kept_ok += usize::from(app.get(setup.dest));
        if kept % 5 == 0 {
            fresh += 1;
            fresh_ok += usize::from(AppConn::open(setup.outbound).get(setup.dest));
        }
    }
    let closed = Instant::now();
    drop(app);
    let code = setup.wait_exit();
    let exit_after_close = closed.elapsed();
    let exit_after_term = signalled.elapsed();
    assert_eq!(code, Some(0));
    assert_eq!(
        kept_ok, kept,
        "every call on the kept connection answered 200"
    );
    assert_eq!(
        fresh_ok, fresh,
        "every call on a new connection answered 200"
    );
    drop(setup);

    // 2. The app never closes its connection: the drain timeout (2 s) ends it.
    let mut setup = Setup::start("2s");
    let mut app = AppConn::open(setup.outbound);
    assert!(app.get(setup.dest));
    setup.sigterm();
    let signalled = Instant::now();
    let mut held_ok = 0;
    while signalled.elapsed() < Duration::from_millis(1500) {
        held_ok += usize::from(app.get(setup.dest));
    }
    let code_held = setup.wait_exit();
    let exit_held = signalled.elapsed();
    assert_eq!(code_held, Some(0));
    record(&Row {
        key: "11-outbound-drain",
        situation: "SIGTERM (real binary, drain delay 0) while the app calls out through the outbound listener in a closed loop (20 ms destination) on a keep-alive connection, plus a new connection every 5th call; the app stops 1 s later and closes; then again with an app that never closes its connection (drain timeout 2 s)",
        expected: "the outbound listener serves the app, on its open and on new connections, until the app has closed its connections, then the proxy exits 0; an app that never closes is cut off at the drain timeout",
        measured: format!(
            "app closes: {kept} calls on the kept connection and {fresh} on new ones after SIGTERM, all 200; exit 0 {} ms after the app closed ({} ms after SIGTERM); app never closes: {held_ok} calls answered 200 in the 1.5 s after SIGTERM, exit 0 {} ms after SIGTERM",
            exit_after_close.as_millis(),
            exit_after_term.as_millis(),
            exit_held.as_millis()
        ),
    });
}
