//! Real foreign peers: curl and Python grpcio, run as processes.

use std::{path::PathBuf, process::Stdio};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// The Python peer script.
pub fn grpc_peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/grpc_peer.py")
}

/// A Python grpcio server; killed on drop.
pub struct GrpcServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    _child: Child,
}

impl GrpcServer {
    /// Starts the server and waits for its port.
    pub async fn start() -> Self {
        let mut child = Command::new("python3")
            .arg(grpc_peer_script())
            .arg("server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs (scripts/test.sh installs grpcio)");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::time::timeout(crate::PATIENCE, BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("grpc server printed its port in time")
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("grpc server said {line:?}"));
        Self {
            port,
            _child: child,
        }
    }
}

/// Runs the Python grpcio client against `target` and returns its JSON report.
pub async fn grpc_client(target: &str) -> serde_json::Value {
    let out = tokio::time::timeout(
        crate::PATIENCE,
        Command::new("python3")
            .arg(grpc_peer_script())
            .arg("client")
            .arg(target)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("grpc client finished in time")
    .unwrap();
    assert!(
        out.status.success(),
        "grpc client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs curl with `args`; returns (exit code, stdout).
pub async fn curl(args: &[&str]) -> (i32, String) {
    let out = tokio::time::timeout(
        crate::PATIENCE,
        Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--max-time",
                "15",
                "--noproxy",
                "*",
            ])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("curl finished in time")
    .expect("curl is installed (scripts/test.sh installs it)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
