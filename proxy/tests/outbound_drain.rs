//! The real binary's outbound listener during the drain: the app still
//! calls out while it shuts down, so the listener serves until the app has
//! closed its connections, or until the drain timeout ends. Writes its
//! figures for docs/reliability.md (see integration-tests/src/report.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]
// These tests drive real processes from plain threads; blocking is the point.
#![allow(clippy::disallowed_methods)]

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_sidetrace");
const PATIENCE: Duration = Duration::from_secs(20);

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn wait_for_port(addr: SocketAddr) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < PATIENCE, "{addr} did not open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The destination app (`sidetrace echo`), and the proxy with an outbound
/// listener, no drain delay and a drain timeout of `drain_timeout`.
struct Setup {
    echo: Child,
    proxy: Child,
    dest: SocketAddr,
    outbound: SocketAddr,
}

impl Setup {
    fn start(drain_timeout: &str) -> Self {
        let (dest, inbound, outbound, admin) = (free_addr(), free_addr(), free_addr(), free_addr());
        let echo = Command::new(BIN)
            .args(["echo", "--listen", &dest.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let proxy = Command::new(BIN)
            .args(["run", "--inbound", &inbound.to_string()])
            .args(["--outbound", &outbound.to_string()])
            .args(["--admin", &admin.to_string()])
            .args(["--upstream", &format!("http://{dest}")])
            .env("SIDETRACE_DRAIN_DELAY", "0s")
            .env("SIDETRACE_DRAIN_TIMEOUT", drain_timeout)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(dest);
        wait_for_port(outbound);
        Self {
            echo,
            proxy,
            dest,
            outbound,
        }
    }

    /// Sends SIGTERM to the proxy.
    fn sigterm(&self) {
        let kill = Command::new("kill")
            .args(["-TERM", &self.proxy.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
    }

    /// Waits for the proxy to exit; its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.proxy.try_wait().unwrap() {
                return status.code();
            }
            assert!(start.elapsed() < PATIENCE, "proxy did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        for child in [&mut self.proxy, &mut self.echo] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An app's keep-alive connection to the outbound listener.
struct AppConn(TcpStream);

impl AppConn {
    fn open(outbound: SocketAddr) -> Self {
        let conn = TcpStream::connect(outbound).unwrap();
        conn.set_read_timeout(Some(PATIENCE)).unwrap();
        Self(conn)
    }

    /// One GET to `dest` through the listener: whether it was a 200.
    fn get(&mut self, dest: SocketAddr) -> bool {
        let sent = write!(
            self.0,
            "GET /slow?delay_ms=20 HTTP/1.1\r\nhost: {dest}\r\n\r\n"
        );
        if sent.is_err() {
            return false;
        }
        // The echo app's answers carry content-length: read the head, then the body.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match self.0.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return false,
            }
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        self.0.read_exact(&mut body).is_ok() && head.starts_with("http/1.1 200")
    }
}

/// Writes one row of the generated table in docs/reliability.md.
fn record(key: &str, situation: &str, expected: &str, measured: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/reliability");
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let line = format!(
        "| {} | {} | {} |\n",
        cell(situation),
        cell(expected),
        cell(measured)
    );
    if let Err(e) = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join(format!("{key}.row")), line))
    {
        eprintln!("reliability figures not written: {e}");
    }
    eprintln!("reliability: {situation}: {measured}");
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
    record(
        "11-outbound-drain",
        "SIGTERM (real binary, drain delay 0) while the app calls out through the outbound listener in a closed loop (20 ms destination) on a keep-alive connection, plus a new connection every 5th call; the app stops 1 s later and closes; then again with an app that never closes its connection (drain timeout 2 s)",
        "the outbound listener serves the app, on its open and on new connections, until the app has closed its connections, then the proxy exits 0; an app that never closes is cut off at the drain timeout",
        &format!(
            "app closes: {kept} calls on the kept connection and {fresh} on new ones after SIGTERM, all 200; exit 0 {} ms after the app closed ({} ms after SIGTERM); app never closes: {held_ok} calls answered 200 in the 1.5 s after SIGTERM, exit 0 {} ms after SIGTERM",
            exit_after_close.as_millis(),
            exit_after_term.as_millis(),
            exit_held.as_millis()
        ),
    );
}
