//! A legacy HTTP/1.0 app (Python's `http.server`, which answers `HTTP/1.0`
//! and closes after every response) behind the real binary: clients keep
//! their HTTP/1.1 connection, and a load run shows no stall.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
// These tests drive real processes from a plain thread; blocking is the point.
#![allow(clippy::disallowed_methods)]

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
};

use kit::{http1::Conn, process::Process};

const BIN: &str = env!("CARGO_BIN_EXE_sidetrace");

/// `python3 -m http.server` serving a small file, and the proxy in front of
/// it with `config`.
fn start(config: &str) -> (Process, Process, SocketAddr) {
    let dir = kit::temp_dir("http10");
    kit::write(&dir, "index.html", "legacy app\n");
    // Port 0, unbuffered, so that its "Serving HTTP on ... port N" line says
    // which port it took.
    let mut python = Process::spawn(
        Command::new("python3")
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
            .current_dir(&dir)
            .stderr(Stdio::null()),
    );
    let serving = python.line_with("Serving HTTP on");
    let port = serving
        .split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in {serving:?}"));
    let config_path = kit::write(&dir, "sidetrace.yaml", config);
    let mut proxy = Process::spawn(
        Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .args(["--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--upstream", &format!("http://127.0.0.1:{port}")])
            .stderr(Stdio::null()),
    );
    let inbound = proxy.ready().inbound;
    (python, proxy, inbound)
}

#[test]
fn an_http10_app_keeps_the_clients_http11_connection_alive() {
    let (_python, _proxy, inbound) = start("{}\n");
    let mut conn = Conn::open(inbound).unwrap();
    for i in 0..3 {
        conn.send(
            format!("GET /index.html HTTP/1.1\r\nhost: legacy\r\nx-attempt: {i}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let response = conn.read_response().unwrap();
        assert_eq!(
            response.status_line(),
            "HTTP/1.1 200 OK",
            "request {i}: {response:?}"
        );
        assert!(
            !response
                .headers()
                .iter()
                .any(|h| h.to_ascii_lowercase().starts_with("connection: close")),
            "request {i}: {response:?}"
        );
        assert_eq!(response.body, b"legacy app\n", "request {i}");
    }
}

#[test]
fn a_load_run_against_an_http10_app_completes_without_a_stall() {
    // Python's server accepts at most 5 pending connections; an upstream cap
    // below that keeps new connections from overflowing its accept queue
    // (dropped SYNs are retried by the kernel after 1 s, 3 s, 7 s).
    let (_python, _proxy, inbound) =
        start("limits: { upstream_max_connections: 4, upstream_queue_timeout: 10s }\n");
    let overflows = listen_overflows();
    let out = Command::new(BIN)
        .args([
            "bench",
            "-n",
            "400",
            "--connections",
            "8",
            "--timeout",
            "10s",
        ])
        .arg(format!("http://{inbound}/index.html"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{report}");
    assert!(report.contains("400 ok, 0 failed"), "{report}");
    assert!(report.contains("200: 400"), "{report}");
    // A stall is a connection the app's accept queue dropped: the kernel
    // counts each one, and retries it only a second later.
    assert_eq!(
        listen_overflows() - overflows,
        0,
        "connections to the app overflowed its accept queue"
    );
}

/// The kernel's count of connections dropped because an accept queue was
/// full (`TcpExtListenOverflows`).
fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap()
}
