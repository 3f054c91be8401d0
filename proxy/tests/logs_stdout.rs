//! The real binary's stdout under `logs:`: `access: errors` writes access
//! lines for failures only, and `stdout: false` leaves stdout empty while the
//! proxy serves.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// These tests drive real processes from a plain thread; blocking is the point.
#![allow(clippy::disallowed_methods)]

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::Command,
};

use kit::{http1::get, process::Process};

const BIN: &str = env!("CARGO_BIN_EXE_sidetrace");

/// Runs the proxy with `config` in front of the echo app, sends `paths`,
/// stops it with SIGTERM and returns its stdout lines.
fn stdout_of(config: &str, paths: &[(&str, u16)]) -> Vec<String> {
    let file = kit::write(&kit::temp_dir("logs-stdout"), "sidetrace.yaml", config);
    let (_echo, app) = Process::echo(BIN);
    // The admin server on another loopback address: with `stdout: false`
    // there is no ready line, and the inbound listener is told from the
    // admin one by its address in /proc.
    let mut proxy = Process::spawn(
        Command::new(BIN)
            .arg("run")
            .arg("-f")
            .arg(&file)
            .args(["--inbound", "127.0.0.1:0", "--admin", "127.0.0.2:0"])
            .args(["--upstream", &format!("http://{app}")])
            .env("SIDETRACE_DRAIN_DELAY", "0s")
            .env_remove("RUST_LOG"),
    );
    let inbound = proxy
        .listening(2)
        .into_iter()
        .find(|a: &SocketAddr| a.ip() == Ipv4Addr::LOCALHOST)
        .expect("the inbound listener on 127.0.0.1");
    for (path, want) in paths {
        assert_eq!(get(inbound, path).unwrap().status, *want, "{path}");
    }
    proxy.sigterm();
    let (status, lines) = proxy.exit_and_lines();
    assert_eq!(status.code(), Some(0), "{lines:#?}");
    lines
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
