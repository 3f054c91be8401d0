//! The real binary (or another server) as a child process.
//!
//! Listeners are given as `127.0.0.1:0`; the addresses the process bound are
//! read from what it says ([`Process::ready`], [`Process::echo`]) or, for a
//! process that writes nothing, from `/proc` ([`Process::listening`]). Every
//! wait is bounded by [`PATIENCE`]; the process is killed when dropped.
//!
//! ```no_run
//! use std::process::Command;
//! use kit::process::Process;
//! const BIN: &str = "target/debug/sidetrace";
//! let (_app, app) = Process::echo(BIN);
//! let mut proxy = Process::spawn(Command::new(BIN).args(["run", "--inbound", "127.0.0.1:0",
//!     "--admin", "127.0.0.1:0", "--upstream", &format!("http://{app}")]));
//! let ready = proxy.ready();
//! assert_eq!(kit::http1::get(ready.inbound, "/").unwrap().status, 200);
//! proxy.sigterm();
//! assert!(proxy.wait_exit().success());
//! ```

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::PATIENCE;

/// A child process whose stdout is read line by line on a thread of its own.
pub struct Process {
    child: Child,
    what: String,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

/// The addresses `sidetrace run` bound, from its `sidetrace ready` line.
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    /// The inbound listener.
    pub inbound: SocketAddr,
    /// The admin server.
    pub admin: SocketAddr,
    /// The outbound listener, when there is one.
    pub outbound: Option<SocketAddr>,
}

// === impl Process ===

impl Process {
    /// Starts `cmd` with its stdout piped (whatever `cmd` said about it).
    pub fn spawn(cmd: &mut Command) -> Self {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            what,
            lines,
            seen: Vec::new(),
        }
    }

    /// `bin echo --listen 127.0.0.1:0` (the echo app), and the address it
    /// says it listens on.
    pub fn echo(bin: &str) -> (Self, SocketAddr) {
        let mut echo = Self::spawn(Command::new(bin).args(["echo", "--listen", "127.0.0.1:0"]));
        let line = echo.line_with("echo app listening");
        let addr = field(&line, "addr")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        (echo, addr)
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for `sidetrace run`'s ready line (JSON or text logs, at level
    /// info or finer) and returns the addresses it bound.
    pub fn ready(&mut self) -> Ready {
        let line = self.line_with("sidetrace ready");
        let addr = |key: &str| field(&line, key).and_then(|a| a.parse().ok());
        Ready {
            inbound: addr("inbound").unwrap_or_else(|| panic!("no inbound in {line:?}")),
            admin: addr("admin").unwrap_or_else(|| panic!("no admin in {line:?}")),
            outbound: addr("outbound"),
        }
    }

    /// Waits for the next line that contains `text` and returns it; the
    /// lines before it are kept in [`Process::seen`].
    pub fn line_with(&mut self, text: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "{}: no line with {text:?} within {PATIENCE:?} ({e}); its lines: {:#?}",
                    self.what, self.seen
                ),
            }
        }
    }

    /// Every stdout line read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Reads the lines that arrive within `period` into [`Process::seen`]:
    /// for a test that checks a line did *not* come.
    pub fn read_for(&mut self, period: Duration) -> &[String] {
        let deadline = Instant::now() + period;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        &self.seen
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let kill = Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(kill.success(), "kill -TERM {}", self.id());
    }

    /// Whether it has not exited yet.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for it to exit, within [`PATIENCE`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {PATIENCE:?}",
                self.what
            );
            // A plain thread, not a runtime worker: std's Child has no
            // wait with a timeout.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for it to exit and returns every line it wrote to stdout.
    pub fn exit_and_lines(mut self) -> (ExitStatus, Vec<String>) {
        let status = self.wait_exit();
        // Its stdout is closed now: the reader thread ends at its last line.
        let deadline = Instant::now() + PATIENCE;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        (status, std::mem::take(&mut self.seen))
    }

    /// The IPv4 TCP addresses it listens on, read from `/proc` once it has
    /// `count` of them: for a process told to write nothing on stdout.
    pub fn listening(&mut self, count: usize) -> Vec<SocketAddr> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = listening_sockets(self.id());
            if found.len() >= count {
                return found;
            }
            assert!(
                self.is_running() && Instant::now() < deadline,
                "{} listens on {found:?}, not {count} sockets, within {PATIENCE:?}",
                self.what
            );
            #[allow(clippy::disallowed_methods)] // a plain thread; see wait_exit
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of a log line: a JSON line's top-level (or `fields`) value, or a
/// text line's `key=value`.
fn field(line: &str, key: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        let value = v.get(key).or_else(|| v.get("fields")?.get(key))?;
        return value.as_str().map(str::to_string);
    }
    let at = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&at))
        .map(|v| v.trim_matches('"').to_string())
}

/// The listening IPv4 TCP sockets of `pid`: `/proc/net/tcp` rows in state
/// LISTEN whose inode is one of the process's descriptors.
fn listening_sockets(pid: u32) -> Vec<SocketAddr> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let inodes: Vec<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let cols: Vec<&str> = row.split_whitespace().collect();
            // sl local_address rem_address st ... inode (the 10th column)
            let (local, state, inode) = (cols.get(1)?, cols.get(3)?, cols.get(9)?);
            (*state == "0A" && inodes.iter().any(|i| i == inode)).then_some(())?;
            let (ip, port) = local.split_once(':')?;
            let ip = u32::from_str_radix(ip, 16).ok()?;
            let port = u16::from_str_radix(port, 16).ok()?;
            // The kernel prints the address in host order of a network-order u32.
            let ip = std::net::Ipv4Addr::from(ip.swap_bytes());
            Some(SocketAddr::from((ip, port)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_json_and_text_lines() {
        let json = r#"{"level":"INFO","inbound":"127.0.0.1:5","message":"sidetrace ready"}"#;
        assert_eq!(field(json, "inbound").as_deref(), Some("127.0.0.1:5"));
        let nested = r#"{"fields":{"addr":"127.0.0.1:6"}}"#;
        assert_eq!(field(nested, "addr").as_deref(), Some("127.0.0.1:6"));
        let text =
            "2026-12-03 INFO sidetrace::app: sidetrace ready inbound=127.0.0.1:7 outbound=off";
        assert_eq!(field(text, "inbound").as_deref(), Some("127.0.0.1:7"));
        assert_eq!(field(text, "outbound").as_deref(), Some("off"));
        assert_eq!(field(text, "admin"), None);
    }

    #[test]
    fn finds_its_own_listener_in_proc() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(listening_sockets(std::process::id()).contains(&addr));
    }
}
