//! A legacy HTTP/1.0 app (Python's `http.server`, which answers `HTTP/1.0`
//! and closes after every response) behind the real binary: clients keep
//! their HTTP/1.1 connection, and a load run shows no stall.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
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

/// `python3 -m http.server` serving a small file, and the proxy in front of
/// it with `config`.
fn start(config: &str) -> (Killed, Killed, SocketAddr) {
    let dir = std::env::temp_dir().join(format!("sidetrace-http10-{}", free_addr().port()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "legacy app\n").unwrap();
    let app = free_addr();
    let python = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &app.port().to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is needed for this test");
    let python = Killed(python);
    wait_for_port(app);
    let config_path = dir.join("sidetrace.yaml");
    std::fs::write(&config_path, config).unwrap();
    let inbound = free_addr();
    let proxy = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(&config_path)
        .args(["--inbound", &inbound.to_string()])
        .args(["--upstream", &format!("http://{app}")])
        .args(["--admin", &free_addr().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proxy = Killed(proxy);
    wait_for_port(inbound);
    (python, proxy, inbound)
}

/// Reads one response head and its `content-length` body.
fn read_response(reader: &mut BufReader<TcpStream>) -> (String, Vec<String>, Vec<u8>) {
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        headers.push(line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status.trim_end().to_string(), headers, body)
}

#[test]
fn an_http10_app_keeps_the_clients_http11_connection_alive() {
    let (_python, _proxy, inbound) = start("{}\n");
    let stream = TcpStream::connect(inbound).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    for i in 0..3 {
        write!(
            writer,
            "GET /index.html HTTP/1.1\r\nhost: legacy\r\nx-attempt: {i}\r\n\r\n"
        )
        .unwrap();
        let (status, headers, body) = read_response(&mut reader);
        assert_eq!(status, "HTTP/1.1 200 OK", "request {i}: {headers:?}");
        assert!(
            !headers
                .iter()
                .any(|h| h.to_ascii_lowercase().starts_with("connection: close")),
            "request {i}: {headers:?}"
        );
        assert_eq!(body, b"legacy app\n", "request {i}");
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
