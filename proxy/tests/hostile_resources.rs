//! The real binary under clients that try to take its memory or its file
//! descriptors. Each test prints the figures it measured (run with
//! `--nocapture` to see them; docs/reliability.md quotes them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
// These tests drive real processes from a plain thread; blocking is the point.
#![allow(clippy::disallowed_methods)]

use std::{
    io::Write,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use kit::{http1::get, process::Process, PATIENCE};

const BIN: &str = env!("CARGO_BIN_EXE_sidetrace");

struct Setup {
    proxy: Process,
    _app: Process,
    inbound: SocketAddr,
    admin: SocketAddr,
}

/// `sidetrace echo` behind `sidetrace run` with `config`, the proxy started
/// through `sh` so that `shell_prefix` (e.g. `ulimit -n 100;`) applies to it.
fn start(config: &str, shell_prefix: &str) -> Setup {
    let (echo, app) = Process::echo(BIN);
    let file = kit::write(&kit::temp_dir("hostile"), "sidetrace.yaml", config);
    // At warn there is no ready line: the listeners are read from /proc, the
    // admin server told from the inbound one by its loopback address.
    let script = format!(
        "{shell_prefix} exec \"$0\" run --config {file} --inbound 127.0.0.1:0 --admin 127.0.0.2:0 --upstream http://{app} --log-level warn"
    );
    let mut proxy = Process::spawn(Command::new("sh").args(["-c", &script, BIN]));
    let listening = proxy.listening(2);
    let on = |ip: Ipv4Addr| *listening.iter().find(|a| a.ip() == ip).unwrap();
    Setup {
        inbound: on(Ipv4Addr::LOCALHOST),
        admin: on(Ipv4Addr::new(127, 0, 0, 2)),
        proxy,
        _app: echo,
    }
}

fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn http_get(addr: SocketAddr, path: &str) -> kit::http1::Response {
    get(addr, path).unwrap()
}

/// An HTTP/2 frame header.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A literal header field without indexing, name from the static table.
fn literal(index: u8, value: &str) -> Vec<u8> {
    assert!(value.len() < 127);
    let mut out = vec![index, value.len() as u8];
    out.extend_from_slice(value.as_bytes());
    out
}

/// Opens an HTTP/2 connection with the largest windows a client can give,
/// asks for `streams` large responses and never reads a byte.
fn never_reading_client(addr: SocketAddr, streams: u32, path: &str) -> TcpStream {
    let mut conn = TcpStream::connect(addr).unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE = 2^31-1.
    out.extend(frame(0x4, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff]));
    // Connection window to 2^31-1 as well.
    out.extend(frame(0x8, 0, 0, &(0x7fff_ffffu32 - 65_535).to_be_bytes()));
    for i in 0..streams {
        let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
        block.extend(literal(0x04, path));
        block.extend(literal(0x01, "sidetrace"));
        out.extend(frame(0x1, 0x5, 1 + 2 * i, &block)); // END_STREAM | END_HEADERS
    }
    conn.write_all(&out).unwrap();
    conn
}

#[test]
fn http2_clients_that_never_read_cost_bounded_memory() {
    // HTTP/1.1 to the app: each stream has its own upstream connection, the
    // worse case for memory.
    let setup = start("inbound: { upstream_protocol: http1 }\n", "");
    let pid = setup.proxy.id();
    // Warm up so that the baseline includes the runtime's own allocations.
    assert_eq!(http_get(setup.inbound, "/warm?size=1048576").status, 200);
    let baseline = status_kb(pid, "VmRSS:");
    let fds_before = open_fds(pid);
    let clients: Vec<TcpStream> = (0..4)
        .map(|_| never_reading_client(setup.inbound, 250, "/big?size=1048576"))
        .collect();
    // Let the proxy fill whatever it is going to fill.
    let mut peak = baseline;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(status_kb(pid, "VmRSS:"));
    }
    let fds_during = open_fds(pid);
    let live = http_get(setup.admin, "/live");
    assert_eq!(live.status, 200, "admin answers: {live:?}");
    let metrics = http_get(setup.admin, "/metrics").text();
    drop(clients);
    let start = Instant::now();
    while open_fds(pid) > fds_before + 2 && start.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = status_kb(pid, "VmRSS:");
    let growth_mb = (peak.saturating_sub(baseline)) as f64 / 1024.0;
    println!(
        "never-reading h2 clients: 4 connections x 250 streams of 1 MiB: RSS {:.1} MB -> peak {:.1} MB (+{growth_mb:.1} MB), {:.1} MB after they closed; descriptors {fds_before} -> {fds_during} -> {}",
        baseline as f64 / 1024.0,
        peak as f64 / 1024.0,
        after as f64 / 1024.0,
        open_fds(pid),
    );
    // 4 connections x 100 streams (the limit) x (64 KiB send buffer + 64 KiB
    // upstream read buffer), with room for allocator overhead: the attack
    // that once took 850 MB must stay far below it.
    assert!(growth_mb < 160.0, "RSS grew {growth_mb:.1} MB");
    assert!(
        fds_during <= fds_before + 4 + 400 + 8,
        "one upstream connection per admitted stream at most: {fds_before} -> {fds_during}"
    );
    assert!(
        metrics.contains("sidetrace_upstream_connections_open"),
        "{metrics}"
    );
}

#[test]
fn admin_answers_when_clients_take_every_connection() {
    // With 100 descriptors the proxy lowers its connection caps so that the
    // admin server keeps some; more idle clients than that must not take them all.
    let setup = start("limits: { header_read_timeout: 30s }\n", "ulimit -n 100;");
    let pid = setup.proxy.id();
    let mut held = Vec::new();
    for _ in 0..400 {
        // Past the cap and the accept queue the kernel stops answering SYNs.
        match TcpStream::connect_timeout(&setup.inbound, Duration::from_millis(300)) {
            Ok(c) => held.push(c),
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let fds = open_fds(pid);
    let live = http_get(setup.admin, "/live");
    let metrics = http_get(setup.admin, "/metrics").text();
    println!(
        "{} idle clients connected against ulimit -n 100: proxy holds {fds} descriptors, /live: {}",
        held.len(),
        live.status_line()
    );
    assert_eq!(live.status, 200, "{live:?}");
    assert!(metrics.contains("sidetrace_connections_open"), "{metrics}");
    assert!(fds < 100, "{fds}");
    assert!(
        held.len() > 100,
        "more clients than descriptors: {}",
        held.len()
    );
    drop(held);
}
