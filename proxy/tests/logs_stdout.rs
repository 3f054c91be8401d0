//! The real binary's stdout under `logs:`: `access: errors` writes access
//! lines for failures only, and `stdout: false` leaves stdout empty while the
//! proxy serves.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// These tests drive real processes from a plain thread; blocking is the point.
#![allow(clippy::disallowed_methods)]

use std::{
    io::{BufRead, BufReader, Read, Write},
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

/// Kills the child when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request on its own connection; the status code.
fn status(addr: SocketAddr, path: &str) -> u16 {
    let mut conn = TcpStream::connect_timeout(&addr, PATIENCE).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    response[9..12].parse().unwrap()
}

/// Runs the proxy with `config` in front of the echo app, sends `paths`,
/// stops it with SIGTERM and returns its stdout lines.
fn stdout_of(config: &str, paths: &[(&str, u16)]) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("sidetrace-logs-stdout-{}", free_addr().port()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sidetrace.yaml");
    std::fs::write(&file, config).unwrap();
    let (app, inbound, admin) = (free_addr(), free_addr(), free_addr());
    let _echo = Killed(
        Command::new(BIN)
            .args(["echo", "--listen", &app.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut proxy = Killed(
        Command::new(BIN)
            .arg("run")
            .arg("-f")
            .arg(&file)
            .args(["--inbound", &inbound.to_string()])
            .args(["--admin", &admin.to_string()])
            .args(["--upstream", &format!("http://{app}")])
            .env("SIDETRACE_DRAIN_DELAY", "0s")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_port(app);
    wait_for_port(inbound);
    for (path, want) in paths {
        assert_eq!(status(inbound, path), *want, "{path}");
    }
    let kill = Command::new("kill")
        .args(["-TERM", &proxy.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let start = Instant::now();
    while proxy.0.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < PATIENCE, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    BufReader::new(proxy.0.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .collect()
}

fn access_lines(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "sidetrace::access")
        .collect()
}

#[test]
fn errors_mode_writes_access_lines_for_failures_only() {
    let lines = stdout_of(
        "logs: { access: errors }\n",
        &[("/ok", 200), ("/gone?status=404", 404), ("/ok", 200)],
    );
    let access = access_lines(&lines);
    assert_eq!(access.len(), 1, "{lines:#?}");
    assert_eq!(access[0]["status"], 404);
    assert_eq!(access[0]["failure_category"], "VALIDATION");
    assert!(
        lines.iter().any(|l| l.contains("sidetrace ready")),
        "the proxy's own lines stay: {lines:#?}"
    );
}

#[test]
fn all_mode_writes_every_request_and_stdout_false_nothing() {
    let paths = [("/ok", 200), ("/gone?status=404", 404)];
    let lines = stdout_of("{}\n", &paths);
    assert_eq!(access_lines(&lines).len(), 2, "{lines:#?}");
    let lines = stdout_of("logs: { stdout: false }\n", &paths);
    assert!(lines.is_empty(), "stdout is off: {lines:#?}");
}
