//! The real binary: exit codes, config errors, SIGTERM drain.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// These tests drive real processes from a plain thread; blocking is the point.
#![allow(clippy::disallowed_methods)]

use std::{
    io::Write,
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use kit::{
    held::HeldUpstream,
    http1::{self, get},
    process::{Process, Ready},
    PATIENCE,
};

const BIN: &str = env!("CARGO_BIN_EXE_sidetrace");

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    kit::write(&kit::temp_dir("cli"), name, text).into()
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
fn check_config_prints_each_route_chain_and_refuses_a_bad_one_as_run_does() {
    let path = temp_file(
        "routes.yaml",
        "filters:\n  - timeout: { request: 5s }\n\
         routes:\n  - { prefix: /a, name: a }\n\
         \x20 - { prefix: /b, name: b, filters: [ { retry: { attempts: 2 } } ] }\n\
         \x20 - { prefix: /c, name: c, inherit: true, filters: [ { retry: { attempts: 2 } } ] }\n\
         \x20 - { prefix: /d, name: d, filters: [] }\n",
    );
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "route a (/a): timeout > forward (the default chain)",
        "route b (/b): retry > forward",
        "route c (/c): timeout > retry > forward",
        "route d (/d): forward",
    ] {
        assert!(stdout.contains(line), "{line:?} in\n{stdout}");
    }

    let bad = temp_file(
        "bad-route.yaml",
        "routes:\n  - prefix: /b\n    name: b\n    filters:\n      - retry: { attempts: 0 }\n",
    );
    let mut errors = Vec::new();
    for args in [vec!["check-config"], vec!["run", "--config"]] {
        let out = Command::new(BIN).args(&args).arg(&bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
        // `run` says what failed first; the error itself is the same.
        let want = format!("{}:5:", bad.display());
        let at = stderr
            .find(&want)
            .unwrap_or_else(|| panic!("{args:?}: {stderr}"));
        assert!(
            stderr.contains("routes[0].filters[0].retry.attempts"),
            "{stderr}"
        );
        errors.push(stderr[at..].to_string());
    }
    assert_eq!(errors[0], errors[1], "check-config and run say the same");
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
    let out = Command::new(BIN)
        .args(["run", "--inbound", &addr, "--admin", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}

/// `sidetrace run` on port 0 in front of `upstream`, with the given drain delay.
fn proxy(upstream: &str, drain_delay: &str) -> (Process, Ready) {
    let mut proxy = Process::spawn(
        Command::new(BIN)
            .args(["run", "--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--upstream", upstream])
            .env("SIDETRACE_DRAIN_DELAY", drain_delay),
    );
    let ready = proxy.ready();
    (proxy, ready)
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_0() {
    let app = HeldUpstream::start();
    // The drain itself, at once: the delay before it has its own test.
    let (mut proxy, ready) = proxy(&app.url(), "0s");
    let mut conn = TcpStream::connect(ready.inbound).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.write_all(b"GET /in-flight HTTP/1.1\r\nhost: app\r\n\r\n")
        .unwrap();
    // In flight: the app has it, and answers only once the drain has begun.
    let held = app.next();
    proxy.sigterm();
    proxy.line_with("\"message\":\"draining\"");
    held.answer(200, "done");
    let response = http1::read_to_close(&mut conn).unwrap();
    assert_eq!(
        response.status, 200,
        "in-flight request completed: {response:?}"
    );
    assert_eq!(response.header("connection"), Some("close"), "{response:?}");
    assert_eq!(response.text(), "done");
    assert_eq!(proxy.wait_exit().code(), Some(0));
}

/// The proxy in front of the echo app, with the given drain delay.
fn proxy_with_delay(delay: &str) -> (Process, Process, Ready) {
    let (echo, app) = Process::echo(BIN);
    let (proxy, ready) = proxy(&format!("http://{app}"), delay);
    assert_eq!(get(ready.admin, "/ready").unwrap().status, 200);
    (proxy, echo, ready)
}

/// Waits for the line `run` writes when a signal has made it not ready.
fn signalled(proxy: &mut Process) {
    proxy.line_with("signal received, not ready");
}

#[test]
fn after_sigterm_new_clients_are_served_while_ready_reports_503() {
    let (mut proxy, _echo, Ready { inbound, admin, .. }) = proxy_with_delay("3s");
    let sent = Instant::now();
    proxy.sigterm();
    signalled(&mut proxy);
    let ready = get(admin, "/ready").unwrap();
    assert_eq!(ready.status, 503, "/ready after SIGTERM: {ready:?}");
    // Clients that still pick this pod in the first seconds: new connections, served.
    for _ in 0..4 {
        let status = get(inbound, "/").unwrap();
        assert_eq!(status.status, 200, "during the delay: {status:?}");
        assert!(proxy.is_running(), "still running");
        // Spread over the delay: clients keep coming for a while, not at once.
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "the checks ran inside the delay"
    );
    let status = proxy.wait_exit();
    assert_eq!(status.code(), Some(0));
    assert!(
        sent.elapsed() >= Duration::from_secs(3),
        "exited before the drain delay ended"
    );
    assert!(
        get(inbound, "/").is_err(),
        "listener closed after the drain"
    );
}

#[test]
fn a_second_sigterm_cuts_the_drain_delay_short() {
    let (mut proxy, _echo, ready) = proxy_with_delay("10m");
    proxy.sigterm();
    signalled(&mut proxy);
    let status = get(ready.inbound, "/").unwrap();
    assert_eq!(status.status, 200, "{status:?}");
    proxy.sigterm();
    assert_eq!(proxy.wait_exit().code(), Some(0));
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
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env_remove("SIDETRACE_WORKER_THREADS");
    if let Some(n) = env {
        cmd.env("SIDETRACE_WORKER_THREADS", n);
    }
    let line = Process::spawn(&mut cmd).line_with("\"worker_threads\"");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    v["fields"]["worker_threads"]
        .as_u64()
        .or(v["worker_threads"].as_u64())
        .unwrap_or_else(|| panic!("worker_threads in {line}"))
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

/// `demo --once`, every listener on a port of the kernel's choosing.
const ONCE_ON_PORT_0: [&str; 8] = [
    "demo",
    "--once",
    "--port",
    "0",
    "--app-port",
    "0",
    "--admin-port",
    "0",
];

#[test]
fn demo_sends_each_kind_of_traffic_and_exits_with_once() {
    let out = Command::new(BIN)
        .args(ONCE_ON_PORT_0)
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
    assert!(!stdout.contains("http://"), "{stdout}");
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
    for args in [
        vec!["check-config", path.to_str().unwrap()],
        vec!["--help"],
        ONCE_ON_PORT_0.to_vec(),
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
    let mut proxy = Process::spawn(
        Command::new(BIN)
            .args(["--log-format", "text", "run"])
            .args(["--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--upstream", &format!("http://{}", kit::refusing_addr())]),
    );
    let ready = proxy.ready();
    // A request to a dead app logs a warning or error line too.
    let response = get(ready.inbound, "/").unwrap();
    assert_eq!(response.status, 502, "{response:?}");
    proxy.sigterm();
    let (_, lines) = proxy.exit_and_lines();
    let log = lines.join("\n");
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a pipe: {log:?}");
}

#[test]
fn the_error_quoted_in_the_configuration_reference_is_the_real_one() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md")).unwrap();
    let dir = kit::temp_dir("docs");
    kit::write(
        &dir,
        "sidetrace.yaml",
        "filters:\n  - timeout: { request: 5s, jitter: 1s }\n",
    );
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
