//! The real binary: exit codes, config errors, SIGTERM drain.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// These tests drive real processes from a plain thread; blocking is the point.
#![allow(clippy::disallowed_methods)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_sidetrace");
const PATIENCE: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sidetrace-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_config_accepts_the_design_example_and_prints_the_chain() {
    let path = temp_file(
        "good.yaml",
        "service: { name: checkout, version: 1.4.2, environment: prod }\n\
         inbound:  { listen: 0.0.0.0:15080, upstream: http://127.0.0.1:8080, upstream_protocol: auto }\n\
         outbound: { listen: 127.0.0.1:15081 }\n\
         admin:    { listen: 127.0.0.1:15090 }\n\
         routes:\n  - { prefix: /api/orders, name: orders, sample: always }\n  - { prefix: /healthz, name: health, sample: never }\n\
         filters:\n  - timeout: { request: 5s }\n",
    );
    let out = Command::new(BIN)
        .args(["check-config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("valid"), "{stdout}");
    assert!(stdout.contains("timeout > forward"), "{stdout}");
    assert!(
        stdout.contains("\"service_name\": \"checkout\""),
        "{stdout}"
    );
}

#[test]
fn bad_config_exits_2_naming_file_line_and_field() {
    let path = temp_file(
        "bad.yaml",
        "inbound:\n  listen: 127.0.0.1:1\nfilters:\n  - timeout: { request: 5s, jitter: 1s }\n",
    );
    for args in [
        vec!["check-config".to_string()],
        vec!["run".to_string(), "--config".to_string()],
    ] {
        let out = Command::new(BIN).args(&args).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{}:4:", path.display())),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("filters[0]"), "{stderr}");
        assert!(stderr.contains("jitter"), "{stderr}");
    }
}

#[test]
fn upstream_tls_settings_that_cannot_work_exit_2_naming_the_field() {
    let cases = [
        (
            "inbound:\n  upstream: http://billing.internal:8080\n  upstream_tls: { ca: /etc/ca.pem }\n",
            "inbound.upstream_tls",
            "not https://",
        ),
        (
            "inbound:\n  upstream: https://billing.internal:8443\n  upstream_tls: { cert: /etc/client.pem }\n",
            "inbound.upstream_tls.key",
            "needs its key",
        ),
        (
            "outbound:\n  originate_tls: [\"billing internal\"]\n",
            "outbound.originate_tls",
            "not a host name",
        ),
        (
            "outbound:\n  tls: { server_name: x.internal }\n",
            "outbound.tls.server_name",
            "inbound.upstream_tls only",
        ),
    ];
    for (i, (yaml, field, message)) in cases.into_iter().enumerate() {
        let path = temp_file(&format!("upstream-tls-{i}.yaml"), yaml);
        let out = Command::new(BIN)
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{yaml}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(field), "{yaml}: {stderr}");
        assert!(stderr.contains(message), "{yaml}: {stderr}");
    }
    let ok = temp_file(
        "https-upstream.yaml",
        "inbound:\n  upstream: https://billing.internal:8443\n  upstream_tls: { server_name: billing }\n",
    );
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&ok)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn usage_errors_exit_2_and_bind_failures_exit_1() {
    let out = Command::new(BIN)
        .args(["run", "--inbound", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let admin = format!("127.0.0.1:{}", free_port());
    let out = Command::new(BIN)
        .args(["run", "--inbound", &addr, "--admin", &admin])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}

fn wait_for_port(addr: SocketAddr) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < PATIENCE, "{addr} did not open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_0() {
    let app: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let inbound: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut echo = Command::new(BIN)
        .args(["echo", "--listen", &app.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut proxy = Command::new(BIN)
        .args([
            "run",
            "--inbound",
            &inbound.to_string(),
            "--admin",
            &admin.to_string(),
        ])
        .arg("--upstream")
        .arg(format!("http://{app}"))
        // The drain itself, at once: the delay before it has its own test.
        .env("SIDETRACE_DRAIN_DELAY", "0s")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(app);
    wait_for_port(inbound);
    let mut conn = TcpStream::connect(inbound).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.write_all(b"GET /slow?delay_ms=1500 HTTP/1.1\r\nhost: app\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let kill = Command::new("kill")
        .args(["-TERM", &proxy.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut response = String::new();
    let _ = conn.read_to_string(&mut response);
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "in-flight request completed: {response:?}"
    );
    assert!(
        response.to_lowercase().contains("connection: close"),
        "{response:?}"
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = proxy.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "proxy did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let logs: Vec<serde_json::Value> = BufReader::new(proxy.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    assert!(
        logs.iter()
            .any(|l| l["fields"]["message"] == "draining" || l["message"] == "draining"),
        "JSON logs mention the drain: {logs:?}"
    );
    let _ = echo.kill();
    let _ = echo.wait();
}

/// One request on a new connection: the status line, or the error.
fn get(addr: SocketAddr, path: &str) -> Result<String, std::io::Error> {
    let mut conn = TcpStream::connect_timeout(&addr, PATIENCE)?;
    conn.set_read_timeout(Some(PATIENCE))?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    Ok(response.lines().next().unwrap_or_default().to_string())
}

fn sigterm(pid: u32) {
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
}

fn wait_exit(proxy: &mut std::process::Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = proxy.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < PATIENCE, "proxy did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Proxy and echo app on free ports; the proxy with the given drain delay.
fn proxy_with_delay(
    delay: &str,
) -> (
    std::process::Child,
    std::process::Child,
    SocketAddr,
    SocketAddr,
) {
    let app: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let inbound: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let echo = Command::new(BIN)
        .args(["echo", "--listen", &app.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let proxy = Command::new(BIN)
        .args(["run", "--inbound", &inbound.to_string()])
        .args(["--admin", &admin.to_string()])
        .arg("--upstream")
        .arg(format!("http://{app}"))
        .env("SIDETRACE_DRAIN_DELAY", delay)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(app);
    wait_for_port(inbound);
    let start = Instant::now();
    while !get(admin, "/ready").is_ok_and(|s| s.contains(" 200")) {
        assert!(start.elapsed() < PATIENCE, "proxy did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    (proxy, echo, inbound, admin)
}

#[test]
fn after_sigterm_new_clients_are_served_while_ready_reports_503() {
    let (mut proxy, mut echo, inbound, admin) = proxy_with_delay("3s");
    let signalled = Instant::now();
    sigterm(proxy.id());
    std::thread::sleep(Duration::from_millis(200));
    let ready = get(admin, "/ready").unwrap();
    assert!(ready.contains(" 503"), "/ready after SIGTERM: {ready}");
    // Clients that still pick this pod in the first seconds: new connections, served.
    for _ in 0..4 {
        let status = get(inbound, "/").unwrap();
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "during the delay: {status}"
        );
        assert!(proxy.try_wait().unwrap().is_none(), "still running");
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "the checks ran inside the delay"
    );
    let status = wait_exit(&mut proxy);
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() >= Duration::from_secs(3),
        "exited before the drain delay ended"
    );
    assert!(
        get(inbound, "/").is_err(),
        "listener closed after the drain"
    );
    let _ = echo.kill();
    let _ = echo.wait();
}

#[test]
fn a_second_sigterm_cuts_the_drain_delay_short() {
    let (mut proxy, mut echo, inbound, _admin) = proxy_with_delay("10m");
    sigterm(proxy.id());
    std::thread::sleep(Duration::from_millis(300));
    let status = get(inbound, "/").unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    sigterm(proxy.id());
    assert_eq!(wait_exit(&mut proxy).code(), Some(0));
    let _ = echo.kill();
    let _ = echo.wait();
}

#[test]
fn a_bad_drain_delay_is_a_config_error() {
    let out = Command::new(BIN)
        .args(["run"])
        .env("SIDETRACE_DRAIN_DELAY", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SIDETRACE_DRAIN_DELAY") && stderr.contains("soon"),
        "{stderr}"
    );
}

/// The `worker_threads` the runtime reports in its start-up log line.
fn workers_reported(env: Option<&str>) -> u64 {
    let inbound = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--inbound", &inbound, "--admin", &admin])
        .env_remove("SIDETRACE_WORKER_THREADS")
        .stdout(Stdio::piped());
    if let Some(n) = env {
        cmd.env("SIDETRACE_WORKER_THREADS", n);
    }
    let mut proxy = cmd.spawn().unwrap();
    let lines = BufReader::new(proxy.stdout.take().unwrap()).lines();
    let mut found = None;
    for line in lines.map_while(Result::ok) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(n) = v["fields"]["worker_threads"]
            .as_u64()
            .or(v["worker_threads"].as_u64())
        {
            found = Some(n);
            break;
        }
    }
    let _ = proxy.kill();
    let _ = proxy.wait();
    found.expect("a log line with worker_threads")
}

#[test]
fn run_has_two_worker_threads_unless_told_otherwise() {
    assert_eq!(workers_reported(None), 2);
    assert_eq!(workers_reported(Some("3")), 3);
    let out = Command::new(BIN)
        .args(["run"])
        .env("SIDETRACE_WORKER_THREADS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SIDETRACE_WORKER_THREADS"), "{stderr}");
}

#[test]
fn demo_sends_each_kind_of_traffic_and_exits_with_once() {
    let ports: Vec<String> = (0..3).map(|_| free_port().to_string()).collect();
    let out = Command::new(BIN)
        .args([
            "demo",
            "--once",
            "--port",
            &ports[0],
            "--app-port",
            &ports[1],
            "--admin-port",
            &ports[2],
        ])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = |what: &str| {
        stdout
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("{what} missing in:\n{stdout}"))
            .to_string()
    };
    assert!(
        line("HTTP/1.1 GET /api/orders/42").contains(" 200"),
        "{stdout}"
    );
    assert!(line("h2c GET /api/orders/7").contains(" 200"), "{stdout}");
    assert!(line("HTTP/1.1 error").contains(" 500"), "{stdout}");
    assert!(line("h2c slow request").contains(" 200"), "{stdout}");
    assert!(
        line("gRPC Echo/Unary (OK)").contains("grpc-status 0"),
        "{stdout}"
    );
    assert!(
        line("gRPC Echo/Unary (NOT_FOUND)").contains("grpc-status 5"),
        "{stdout}"
    );
    // A person's summary first, no log lines, and no URLs of a demo that
    // has already stopped.
    assert!(
        stdout
            .trim_start()
            .starts_with("sidetrace demo: sample traffic"),
        "{stdout}"
    );
    assert!(!stdout.contains("{\""), "JSON log lines: {stdout}");
    assert!(!stdout.contains(&format!(":{}/", ports[2])), "{stdout}");
    assert!(stdout.contains("--once: stopped"), "{stdout}");
}

#[test]
fn missing_tls_files_exit_2_naming_the_field() {
    let path = temp_file(
        "tls.yaml",
        "inbound: { listen: 127.0.0.1:0, tls: { cert: /nonexistent/tls.crt, key: /nonexistent/tls.key } }\nadmin: { listen: 127.0.0.1:0 }\n",
    );
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("inbound.tls.cert"), "{stderr}");
    assert!(stderr.contains("/nonexistent/tls.crt"), "{stderr}");
}

#[test]
fn a_closed_stdout_is_not_a_crash() {
    // A pipe whose reader is gone, as when `| head -1` has read its line.
    let path = temp_file("closed-stdout.yaml", "{}\n");
    let ports: Vec<String> = (0..3).map(|_| free_port().to_string()).collect();
    for args in [
        vec!["check-config", path.to_str().unwrap()],
        vec!["--help"],
        vec![
            "demo",
            "--once",
            "--port",
            &ports[0],
            "--app-port",
            &ports[1],
            "--admin-port",
            &ports[2],
        ],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(BIN)
            .args(&args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

#[test]
fn every_kind_of_config_error_names_file_line_and_column() {
    // (file text, expected position, words the message must have)
    let cases = [
        // a value of the wrong type, said with the value found
        (
            "inbound:\n  max_header_bytes: abc\n",
            ":2:21: inbound.max_header_bytes: ",
            "expected a whole number (0 or more), found \"abc\"",
        ),
        // a key given twice, without the parser's internals
        (
            "drain_timeout: 5s\ndrain_timeout: 6s\n",
            ":2:1: ",
            "drain_timeout is given twice",
        ),
        // value checks made after parsing
        (
            "tracing:\n  sampler: { type: ratio, ratio: 1.5 }\n",
            ":2:34: tracing.sampler.ratio: ",
            "1.5 is not a ratio between 0 and 1",
        ),
        (
            "routes:\n  - { prefix: api, name: x }\n",
            ":2:15: routes[0].prefix: ",
            "must start with '/'",
        ),
        (
            "filters:\n  - timeout: { request: 0s }\n",
            ":2:25: filters[0].timeout.request: ",
            "greater than 0",
        ),
        // a key indented too far reads as more of the value above it
        (
            "inbound:\n  listen: 0.0.0.0:15080\n   upstream: http://x\n",
            ":2:11: inbound.listen: ",
            "line 3 is indented more than line 2",
        ),
        // files the config names are read, as `run` reads them
        (
            "inbound:\n  tls: { cert: /nonexistent/tls.crt, key: /nonexistent/tls.key }\n",
            ":2:16: inbound.tls.cert: ",
            "/nonexistent/tls.crt",
        ),
    ];
    for (i, (yaml, position, words)) in cases.into_iter().enumerate() {
        let path = temp_file(&format!("error-kinds-{i}.yaml"), yaml);
        let out = Command::new(BIN)
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {stderr}");
        let expected = format!("{}{position}", path.display());
        assert!(
            stderr.starts_with(&expected),
            "{yaml}: want {expected:?}, got {stderr}"
        );
        assert!(stderr.contains(words), "{yaml}: {stderr}");
        for internal in ["?:", "DuplicateKeyPolicy", "invalid u64"] {
            assert!(!stderr.contains(internal), "{yaml}: {stderr}");
        }
    }
}

#[test]
fn without_files_checks_a_config_rendered_for_another_machine() {
    let path = temp_file(
        "pod-config.yaml",
        "inbound:\n  tls: { cert: /etc/sidetrace-tls/tls.crt, key: /etc/sidetrace-tls/tls.key }\n",
    );
    let read = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        read.status.code(),
        Some(2),
        "the certificate is read by default"
    );
    let alone = Command::new(BIN)
        .args(["check-config", "--without-files"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        alone.status.success(),
        "{}",
        String::from_utf8_lossy(&alone.stderr)
    );
}

#[test]
fn text_logs_into_a_pipe_have_no_colour_codes() {
    let inbound: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let proxy = Command::new(BIN)
        .args([
            "--log-format",
            "text",
            "run",
            "--inbound",
            &inbound.to_string(),
        ])
        .args([
            "--admin",
            &admin.to_string(),
            "--upstream",
            "http://127.0.0.1:9",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(inbound);
    // A request to a dead app logs a warning or error line too.
    let mut conn = TcpStream::connect(inbound).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    let _ = conn.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 502"), "{response}");
    let kill = Command::new("kill")
        .args(["-TERM", &proxy.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = proxy.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a pipe: {log:?}");
}

#[test]
fn the_error_quoted_in_the_configuration_reference_is_the_real_one() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md")).unwrap();
    let dir = std::env::temp_dir().join(format!("sidetrace-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("sidetrace.yaml"),
        "filters:\n  - timeout: { request: 5s, jitter: 1s }\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "sidetrace.yaml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let error = String::from_utf8_lossy(&out.stderr);
    let error = error.trim_end();
    assert!(error.starts_with("sidetrace.yaml:2:29: "), "{error}");
    assert!(
        docs.contains(error),
        "docs/config.md quotes another error than\n{error}"
    );
}
