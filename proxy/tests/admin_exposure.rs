//! The real binary's admin server seen from another host: a network
//! namespace joined to this one by a veth pair, so requests arrive from a
//! non-loopback address as they do from the pod network. Needs root (or
//! CAP_SYS_ADMIN and CAP_NET_ADMIN), iproute2 and curl; without them the
//! tests fail and say why rather than skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// These tests drive real processes from a plain thread; blocking is the point.
#![allow(clippy::disallowed_methods)]

use std::{
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use kit::process::Process;

const BIN: &str = env!("CARGO_BIN_EXE_sidetrace");
const SECRET_ENV: &str = "authorization=Bearer s3cr3t-token";
const SECRETS: [&str; 3] = ["s3cr3t-token", "file-s3cr3t", "app-s3cr3t"];

/// A network namespace with a veth pair to this one: `host` (this side,
/// `.1`) and `peer` (inside, `.2`) on a /30 of 10.231.0.0/16. Removed on
/// drop, whatever happened in between.
struct Netns {
    name: String,
    host_if: String,
    host: String,
    peer: String,
}

/// A running `sidetrace run` and its log lines (JSON, one per line).
struct Proxy {
    process: Process,
    admin_port: u16,
}

// === impl Netns ===

impl Netns {
    fn create() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // /30 subnets: 64 per third octet, spread by pid so parallel runs differ.
        let block = (pid % 256, (n % 64) * 4);
        let name = format!("sidetrace-admin-{pid}-{n}");
        let host_if = format!("sth{:x}{n}", pid & 0xff_ffff);
        let peer_if = format!("stp{:x}{n}", pid & 0xff_ffff);
        let add = Command::new("ip").args(["netns", "add", &name]).output();
        match add {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "`ip netns add {name}` failed: {}\nThis test needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) \
                 to create a network namespace; it does not skip.",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!("cannot run `ip` (iproute2): {e}; this test needs it and does not skip"),
        }
        // From here on, drop cleans up whatever was created.
        let ns = Self {
            name,
            host_if,
            host: format!("10.231.{}.{}", block.0, block.1 + 1),
            peer: format!("10.231.{}.{}", block.0, block.1 + 2),
        };
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer_if,
            "netns",
            &ns.name,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host),
            "dev",
            &ns.host_if,
        ]);
        ip(&["link", "set", &ns.host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{}/30", ns.peer), "dev", &peer_if]);
        inside(&["link", "set", &peer_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

// === impl Proxy ===

impl Proxy {
    /// Starts `sidetrace run` with `config`, the admin server on all
    /// addresses, and a secret in `OTEL_EXPORTER_OTLP_HEADERS`; waits for
    /// the ready line to learn the admin port.
    fn start(config: &str) -> Self {
        let file = kit::write(&kit::temp_dir("admin-exposure"), "sidetrace.yaml", config);
        let mut process = Process::spawn(
            Command::new(BIN)
                .args(["run", "--config"])
                .arg(&file)
                .args([
                    "--inbound",
                    "127.0.0.1:0",
                    "--admin",
                    "0.0.0.0:0",
                    "--upstream",
                    "http://127.0.0.1:9",
                    "--log-level",
                    "info",
                    "--log-format",
                    "json",
                ])
                .env("OTEL_EXPORTER_OTLP_HEADERS", SECRET_ENV)
                .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
                .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        );
        let admin_port = process.ready().admin.port();
        Self {
            process,
            admin_port,
        }
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.admin_port)
    }

    fn assert_running(&mut self) {
        assert!(self.process.is_running(), "the proxy exited");
    }

    /// Log lines so far that record a refusal of `endpoint` to `client`.
    fn refusals(&mut self, client: &str, endpoint: &str) -> usize {
        // The refusal is logged before the 403 is written, so the line is
        // already on its way; give the reader thread a moment to pass it on.
        self.process
            .read_for(Duration::from_millis(500))
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("admin endpoint refused"))
                    && v["client"] == client
                    && v["endpoint"] == endpoint
            })
            .count()
    }

    /// Waits for the process to exit after a drain; its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        self.process.wait_exit().code()
    }
}

/// `curl` from inside `ns` (or from here): status and body.
fn curl(ns: Option<&Netns>, method: &str, url: &str) -> (u16, String) {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.name, "curl"]);
            c
        }
        None => Command::new("curl"),
    };
    cmd.args([
        "-sS",
        "--noproxy",
        "*",
        "--max-time",
        "10",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
        url,
    ]);
    let out: Output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl ({e}); scripts/test.sh installs it"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {method} {url}: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_string())
}

fn assert_redacted(config: &str) {
    for secret in SECRETS {
        assert!(
            !config.contains(secret),
            "{secret} is in /config:\n{config}"
        );
    }
    let v: serde_json::Value = serde_json::from_str(config).unwrap();
    assert_eq!(
        v["tracing"]["export"]["headers"]["x-api-key"], "[REDACTED]",
        "{config}"
    );
    assert_eq!(
        v["filters"][0]["headers"]["request_add"]["authorization"],
        "[REDACTED]"
    );
}

const CONFIG: &str = "\
tracing:
  export: { headers: { x-api-key: file-s3cr3t } }
filters:
  - headers: { request_add: { authorization: Bearer app-s3cr3t } }
";

#[test]
fn a_non_loopback_peer_gets_metrics_and_probes_only() {
    let ns = Netns::create();
    let mut proxy = Proxy::start(CONFIG);
    let port = proxy.admin_port;
    let remote = |path: &str| format!("http://{}:{port}{path}", ns.host);

    for path in ["/metrics", "/live", "/ready"] {
        let (status, body) = curl(Some(&ns), "GET", &remote(path));
        assert_eq!(status, 200, "{path} from {}: {body}", ns.peer);
        if path == "/metrics" {
            assert!(body.contains("sidetrace_build_info"), "{body}");
        }
    }
    for path in [
        "/config",
        "/config",
        "/debug/traces",
        "/debug/traces/ui",
        "/debug/traces/ui/app.js",
        "/debug/red",
    ] {
        let (status, body) = curl(Some(&ns), "GET", &remote(path));
        assert_eq!(status, 403, "{path} from {}: {body}", ns.peer);
        assert!(
            body.contains("admin.expose") && body.ends_with('\n'),
            "{body}"
        );
        assert_eq!(body.lines().count(), 1, "one line: {body}");
    }
    let (status, body) = curl(Some(&ns), "POST", &remote("/shutdown"));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("`shutdown`"), "{body}");

    // Still serving, and not draining.
    proxy.assert_running();
    assert_eq!(curl(Some(&ns), "GET", &remote("/ready")).0, 200);

    // Each refusal is logged once per peer and endpoint group.
    assert_eq!(
        proxy.refusals(&ns.peer, "config"),
        1,
        "{:#?}",
        proxy.process.seen()
    );
    assert_eq!(
        proxy.refusals(&ns.peer, "debug"),
        1,
        "{:#?}",
        proxy.process.seen()
    );
    assert_eq!(
        proxy.refusals(&ns.peer, "shutdown"),
        1,
        "{:#?}",
        proxy.process.seen()
    );

    // Loopback is served, with the secrets of the file and the environment
    // redacted.
    let (status, config) = curl(None, "GET", &proxy.url("127.0.0.1", "/config"));
    assert_eq!(status, 200, "{config}");
    assert_redacted(&config);
    let (status, traces) = curl(None, "GET", &proxy.url("127.0.0.1", "/debug/traces"));
    assert_eq!(status, 200, "{traces}");
    assert!(traces.contains("\"traces\""), "{traces}");
    assert_eq!(proxy.refusals("127.0.0.1", "config"), 0);

    let (status, _) = curl(None, "POST", &proxy.url("127.0.0.1", "/shutdown"));
    assert_eq!(status, 202);
    assert_eq!(proxy.wait_exit(), Some(0));
}

#[test]
fn exposing_config_serves_it_redacted_and_nothing_else() {
    let ns = Netns::create();
    let config = format!("admin: {{ expose: [config] }}\n{CONFIG}");
    let mut proxy = Proxy::start(&config);
    let (status, body) = curl(Some(&ns), "GET", &proxy.url(&ns.host, "/config"));
    assert_eq!(status, 200, "{body}");
    assert_redacted(&body);
    assert!(body.contains("\"admin_expose\""), "{body}");
    assert_eq!(
        curl(Some(&ns), "GET", &proxy.url(&ns.host, "/debug/traces")).0,
        403
    );
    assert_eq!(
        curl(Some(&ns), "POST", &proxy.url(&ns.host, "/shutdown")).0,
        403
    );
    proxy.assert_running();
    assert_eq!(proxy.refusals(&ns.peer, "config"), 0);
}
