//! Request-smuggling guard for HTTP/1 connections.
//!
//! hyper resolves a request carrying both `Content-Length` and
//! `Transfer-Encoding` by ignoring the length and closing the connection
//! afterwards, but it still hands the request on; DESIGN asks for such a
//! request to be rejected with 400 and for nothing of it to reach the upstream.
//! The conflict is invisible once hyper has parsed the head (it drops the
//! `Content-Length` header), so this wrapper follows HTTP/1 message framing on
//! the bytes read from the socket, checks every request head before hyper sees
//! it, and on a conflict replaces that head and everything after it with an
//! unparseable request line: hyper answers the requests before it, then
//! answers 400 Bad Request and closes the connection, so nothing of the
//! conflicting request (or what it smuggles) is ever parsed or forwarded.
//!
//! Partial heads are held back until complete, so the guard also enforces its
//! own head deadline (hyper's starts only once it sees bytes).
//!
//! HTTP/2 connections (detected by their preface) and upgraded connections
//! pass through untouched.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
};

use std::{future::Future, time::Duration};

use bytes::{Buf, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

/// The connection was stopped at a request with both framing headers.
pub const REJECTED: u8 = 1;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const MAX_HEAD: usize = 128 * 1024;
/// What hyper reads in place of a rejected head: a request line it cannot
/// parse, so it answers 400 and closes.
const POISON: &[u8] = b"\0REJECTED\r\n\r\n";

/// A socket whose inbound bytes are checked for conflicting framing.
pub struct GuardedIo<T> {
    io: T,
    buf: BytesMut,
    /// Bytes at the front of `buf` that were checked and may go to hyper.
    ready: usize,
    state: State,
    scan: usize,
    rejected: Arc<AtomicU8>,
    eof: bool,
    head_timeout: Duration,
    /// Armed only while a partial head waits for more bytes.
    head_deadline: Option<Pin<Box<Sleep>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the first bytes: HTTP/2 preface or an HTTP/1 head.
    Start,
    /// Inside a request head that began at `ready`.
    Head,
    /// Inside a body of known length.
    Fixed(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// No more checking: HTTP/2, an upgrade, or bytes we do not understand.
    Passthrough,
    /// A conflicting head was found at `ready`; nothing more is read.
    Rejected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line.
    Size,
    /// Inside chunk data.
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// Trailer lines after the last chunk, until an empty line.
    Trailers,
}

// === impl GuardedIo ===

impl<T> GuardedIo<T> {
    /// Wraps a socket; the flag reads [`REJECTED`] once a request was
    /// refused. A request head must arrive within `head_timeout`.
    pub fn new(io: T, head_timeout: Duration) -> (Self, Arc<AtomicU8>) {
        let rejected = Arc::new(AtomicU8::new(0));
        (
            Self {
                io,
                buf: BytesMut::new(),
                ready: 0,
                state: State::Start,
                scan: 0,
                rejected: rejected.clone(),
                eof: false,
                head_timeout,
                head_deadline: None,
            },
            rejected,
        )
    }

    /// Advances the framing state over unchecked bytes, moving `ready` forward.
    fn check(&mut self) {
        loop {
            let avail = self.buf.len() - self.ready;
            if avail == 0 {
                return;
            }
            match self.state {
                State::Passthrough => {
                    self.ready = self.buf.len();
                    return;
                }
                State::Rejected => return,
                State::Start => {
                    let n = avail.min(H2_PREFACE.len());
                    if self.buf[self.ready..self.ready + n] != H2_PREFACE[..n] {
                        self.state = State::Head;
                        self.scan = self.ready;
                    } else if n == H2_PREFACE.len() {
                        self.state = State::Passthrough;
                    } else {
                        return;
                    }
                }
                State::Head => {
                    // Skip blank lines between requests, as hyper does.
                    while self.ready < self.buf.len()
                        && matches!(self.buf[self.ready], b'\r' | b'\n')
                    {
                        self.ready += 1;
                        self.scan = self.ready;
                    }
                    let start = self.scan.max(self.ready).saturating_sub(3).max(self.ready);
                    let Some(end) = find(&self.buf[start..], b"\r\n\r\n").map(|i| start + i + 4)
                    else {
                        self.scan = self.buf.len();
                        if self.buf.len() - self.ready > MAX_HEAD {
                            // hyper answers 431 for heads over its own limit.
                            self.state = State::Passthrough;
                            continue;
                        }
                        return;
                    };
                    match inspect_head(&self.buf[self.ready..end]) {
                        Head::Conflict => {
                            self.state = State::Rejected;
                            self.rejected.store(REJECTED, Ordering::Relaxed);
                            self.buf.truncate(self.ready);
                            self.buf.extend_from_slice(POISON);
                            self.ready = self.buf.len();
                            return;
                        }
                        Head::Unknown | Head::Upgrade => self.state = State::Passthrough,
                        Head::Length(0) => self.state = State::Head,
                        Head::Length(n) => self.state = State::Fixed(n),
                        Head::Chunked => self.state = State::Chunked(Chunk::Size),
                    }
                    self.ready = end;
                    self.scan = end;
                }
                State::Fixed(left) => {
                    let take = left.min(avail as u64);
                    self.ready += take as usize;
                    self.state = if take == left {
                        State::Head
                    } else {
                        State::Fixed(left - take)
                    };
                    self.scan = self.ready;
                }
                State::Chunked(chunk) => {
                    if !self.step_chunked(chunk) {
                        return;
                    }
                }
            }
        }
    }

    /// One step through a chunked body; false when more bytes are needed.
    fn step_chunked(&mut self, chunk: Chunk) -> bool {
        let rest = &self.buf[self.ready..];
        match chunk {
            Chunk::Data(left) => {
                let take = left.min(rest.len() as u64);
                self.ready += take as usize;
                self.state = State::Chunked(if take == left {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left - take)
                });
                true
            }
            Chunk::Size | Chunk::DataEnd | Chunk::Trailers => {
                let Some(line_end) = find(rest, b"\n") else {
                    if rest.len() > 4096 {
                        self.state = State::Passthrough;
                        return true;
                    }
                    return false;
                };
                let line = &rest[..line_end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                self.ready += line_end + 1;
                self.state = match chunk {
                    Chunk::DataEnd => State::Chunked(Chunk::Size),
                    Chunk::Trailers if line.is_empty() => State::Head,
                    Chunk::Trailers => State::Chunked(Chunk::Trailers),
                    _ => match parse_chunk_size(line) {
                        Some(0) => State::Chunked(Chunk::Trailers),
                        Some(n) => State::Chunked(Chunk::Data(n)),
                        None => State::Passthrough,
                    },
                };
                self.scan = self.ready;
                true
            }
        }
    }
}

enum Head {
    Length(u64),
    Chunked,
    Upgrade,
    Conflict,
    Unknown,
}

fn inspect_head(head: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Head::Unknown,
    }
    if req.method == Some("CONNECT") {
        return Head::Upgrade;
    }
    let mut length = None;
    let mut chunked = false;
    let mut te = false;
    let mut upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                Some(n) => length = Some(n),
                None => return Head::Unknown,
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            chunked = h
                .value
                .split(|&b| b == b',')
                .next_back()
                .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    match (te, length) {
        (true, Some(_)) => Head::Conflict,
        (true, None) if chunked => Head::Chunked,
        (true, None) => Head::Unknown,
        // The body of an upgrade request is followed by the tunnel.
        (false, _) if upgrade => Head::Upgrade,
        (false, n) => Head::Length(n.unwrap_or(0)),
    }
}

fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let hex = line.split(|&b| b == b';').next()?.trim_ascii();
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    let text = std::str::from_utf8(hex).ok()?;
    u64::from_str_radix(text, 16).ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready > 0 {
                let n = this.ready.min(dst.remaining());
                dst.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.ready -= n;
                this.scan = this.scan.saturating_sub(n);
                return Poll::Ready(Ok(()));
            }
            if this.state == State::Rejected || this.eof {
                // End of input for hyper; whatever is held back is not a request.
                return Poll::Ready(Ok(()));
            }
            if this.state == State::Passthrough && this.buf.is_empty() {
                return Pin::new(&mut this.io).poll_read(cx, dst);
            }
            // Read into spare capacity: no zeroing of a scratch buffer per read.
            this.buf.reserve(8192);
            let n = match tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buf) {
                Poll::Ready(result) => result?,
                Poll::Pending => {
                    // The deadline is for request heads only: bodies may pause.
                    if this.buf.is_empty() || this.state != State::Head {
                        this.head_deadline = None;
                        return Poll::Pending;
                    }
                    let timeout = this.head_timeout;
                    let deadline = this
                        .head_deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    ready!(deadline.as_mut().poll(cx));
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request head not received in time",
                    )));
                }
            };
            if n == 0 {
                this.eof = true;
                this.ready = this.buf.len();
            } else {
                this.check();
                if this.ready > 0 {
                    this.head_deadline = None;
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn through(input: &[u8]) -> (Vec<u8>, bool) {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        let (mut guarded, flag) = GuardedIo::new(server, Duration::from_secs(5));
        let mut out = Vec::new();
        guarded.read_to_end(&mut out).await.unwrap();
        (out, flag.load(Ordering::Relaxed) == REJECTED)
    }

    #[tokio::test]
    async fn plain_requests_pass_unchanged() {
        let input = b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nt: 1\r\n\r\nGET /c HTTP/1.1\r\n\r\n";
        let (out, rejected) = through(input).await;
        assert_eq!(out, input);
        assert!(!rejected);
    }

    #[tokio::test]
    async fn conflicting_framing_stops_before_the_head() {
        let first = b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n";
        let evil = b"POST /evil HTTP/1.1\r\nhost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n";
        let (out, rejected) = through(&[&first[..], &evil[..]].concat()).await;
        assert_eq!(out, [&first[..], POISON].concat());
        assert!(rejected);
    }

    #[tokio::test]
    async fn body_bytes_that_look_like_heads_are_not_heads() {
        let input = b"POST /a HTTP/1.1\r\ncontent-length: 59\r\n\r\nGET / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: x\r\n\r\n";
        let (out, rejected) = through(input).await;
        assert_eq!(out, input);
        assert!(!rejected);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_never_completes_times_out() {
        let (mut client, server) = tokio::io::duplex(1024);
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let (mut guarded, _) = GuardedIo::new(server, Duration::from_secs(10));
        let mut out = Vec::new();
        let err = guarded.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(out.is_empty(), "nothing of the partial head reached hyper");
        drop(client);
    }

    #[tokio::test]
    async fn http2_passes_through() {
        let input = [H2_PREFACE, b"\x00\x00\x00\x04\x00\x00\x00\x00\x00content-length: 1\r\ntransfer-encoding: chunked\r\n\r\n"].concat();
        let (out, rejected) = through(&input).await;
        assert_eq!(out, input);
        assert!(!rejected);
    }
}
