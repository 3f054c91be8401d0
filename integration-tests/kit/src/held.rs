//! An upstream that holds each request until the test lets it answer.
//!
//! A test that needs a request in flight (a drain, a SIGTERM) waits for
//! [`HeldUpstream::next`], which returns once the request's head has arrived
//! at the upstream: the request is in flight because the upstream has it,
//! not because some milliseconds have passed.
//!
//! ```no_run
//! let up = kit::held::HeldUpstream::start();
//! // ... start the proxy with `up.url()` as its upstream, send a request ...
//! let held = up.next();            // the request is at the upstream now
//! // ... SIGTERM the proxy, wait for its `draining` line ...
//! held.answer(200, "done");        // and let it finish
//! ```

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::mpsc,
};

use crate::PATIENCE;

/// A listening upstream on `127.0.0.1:0`, kept for the test's life.
pub struct HeldUpstream {
    addr: SocketAddr,
    arrivals: mpsc::Receiver<Held>,
}

/// A request the upstream holds: its head has arrived, no answer yet.
pub struct Held {
    stream: TcpStream,
    /// The request head as received.
    pub head: String,
}

// === impl HeldUpstream ===

impl HeldUpstream {
    /// Binds `127.0.0.1:0` and accepts on a thread of its own.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, arrivals) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(head) = read_head(&mut stream) else {
                    continue;
                };
                if tx.send(Held { stream, head }).is_err() {
                    return;
                }
            }
        });
        Self { addr, arrivals }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next request to arrive, within [`PATIENCE`].
    pub fn next(&self) -> Held {
        self.arrivals
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("no request at the upstream within {PATIENCE:?}: {e}"))
    }
}

fn read_head(stream: &mut TcpStream) -> Option<String> {
    stream.set_read_timeout(Some(PATIENCE)).ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

// === impl Held ===

impl Held {
    /// Answers with `status` and `body` and closes the connection.
    pub fn answer(mut self, status: u16, body: &str) {
        let _ = write!(
            self.stream,
            "HTTP/1.1 {status} Held\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = self.stream.flush();
    }
}
