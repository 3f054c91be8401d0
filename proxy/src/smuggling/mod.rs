//! Request-smuggling guard for HTTP/1 connections.
//!
//! hyper resolves a request carrying both `Content-Length` and
//! `Transfer-Encoding` by ignoring the length and closing the connection
//! afterwards, but it still hands the request on; DESIGN asks for such a
//! request to be rejected with 400 and for nothing of it to reach the upstream.
//! The conflict is invisible once hyper has parsed the head (it drops the
//! `Content-Length` header), so this wrapper follows HTTP/1 message framing on
//! the bytes read from the socket, checks every request head before hyper sees
//! it, and on a rejected head replaces that head and everything after it with
//! an unparseable request line: hyper answers the requests before it, then
//! answers 400 Bad Request and closes the connection, so nothing of the
//! rejected request (or what it smuggles) is ever parsed or forwarded.
//!
//! Framing is followed with the rules of the parsers behind the guard, so the
//! two never disagree on where a message ends. A head ends where httparse
//! (hyper's parser, default configuration) ends it: lines may end in CRLF or a
//! bare LF; a cheap scan finds a candidate blank line and httparse confirms it
//! and measures the head. A chunked body is followed byte by byte as hyper's
//! chunked decoder reads it (CRLF only; in trailers a bare LF is part of the
//! line).
//!
//! Whatever the guard cannot follow stops the connection the same way
//! (see [`Rejection`]): a head httparse refuses, a `Transfer-Encoding` whose
//! last coding is not `chunked`, a `Content-Length` that is not plain digits,
//! is too large for hyper or differs from another one in the head, and a
//! malformed chunked body (there the replacement starts at the offending
//! byte, so hyper fails the body and closes). Only heads hyper itself refuses
//! and closes on pass through uninspected: one over the size limit or with too
//! many headers (431).
//!
//! After a request that may switch protocols (an `Upgrade` header or a
//! `CONNECT`, see [`is_upgrade_request`]) and its body, nothing more is read or
//! handed to hyper until the listener reports, through
//! [`GuardHandle::upgrade_outcome`], whether the connection switched: if it
//! did, the rest of the connection passes through untouched; if not, what
//! follows is checked as the next request.
//!
//! Partial heads are held back until complete, so the guard also enforces its
//! own head deadline: from the first read after the socket is wrapped until
//! the first request head is complete, and from the first byte of each later
//! head until it is complete. It never runs inside a body, while an upgrade
//! outcome is awaited, or between keep-alive requests (the listener's idle
//! timeout covers those).
//!
//! HTTP/2 connections (detected by their preface) and switched connections
//! pass through untouched.

mod handle;
mod parse;
#[cfg(test)]
mod tests;

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::{Buf, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

pub use self::handle::{is_upgrade_request, GuardHandle, Rejection};
use self::{
    handle::Shared,
    parse::{chunk_byte, inspect_head, Body, Chunk, Inspected},
};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A partial head longer than this passes through for hyper to refuse (431).
/// Must not be below hyper's own limit (`max_buf_size`), or a head between
/// the two would pass uninspected.
pub const MAX_HEAD: usize = 128 * 1024;
/// What hyper reads in place of a rejected head: a request line it cannot
/// parse, so it answers 400 and closes.
const POISON: &[u8] = b"\0REJECTED\r\n\r\n";

/// A socket whose inbound bytes are checked for request smuggling.
pub struct GuardedIo<T> {
    io: T,
    buf: BytesMut,
    /// Bytes at the front of `buf` that were checked and may go to hyper.
    ready: usize,
    state: State,
    /// In a head: where the search for its end resumes.
    scan: usize,
    /// The message being followed may switch protocols when it ends.
    upgrade_pending: bool,
    /// A request head was accepted: from now on an empty buffer between
    /// requests is keep-alive idling, not a client that never sent a head.
    served: bool,
    shared: Arc<Shared>,
    eof: bool,
    head_timeout: Duration,
    /// Armed while a head is awaited: see [`GuardedIo::awaiting_head`].
    head_deadline: Option<Pin<Box<Sleep>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the first bytes: HTTP/2 preface or an HTTP/1 head.
    Start,
    /// Inside a request head that begins at `ready`.
    Head,
    /// Inside a body of known length.
    Fixed(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// After a request that may switch protocols: nothing more is read or
    /// handed on until the listener reports the outcome.
    Upgrading,
    /// No more checking: HTTP/2, a switched connection, or a head hyper
    /// refuses itself.
    Passthrough,
    /// A rejected message began at what is now [`POISON`]; nothing more is
    /// read.
    Rejected,
}

// === impl GuardedIo ===

impl<T> GuardedIo<T> {
    /// Wraps a socket, with the handle the listener uses to report upgrade
    /// outcomes and to learn why a connection was stopped. The first request
    /// head must arrive within `head_timeout` of the first read, and every
    /// later head within `head_timeout` of its first byte.
    pub fn new(io: T, head_timeout: Duration) -> (Self, GuardHandle) {
        let shared = Arc::new(Shared {
            waker: futures_util::task::AtomicWaker::new(),
            outcome: AtomicU8::new(handle::NO_OUTCOME),
            rejection: AtomicU8::new(0),
        });
        (
            Self {
                io,
                buf: BytesMut::new(),
                ready: 0,
                state: State::Start,
                scan: 0,
                upgrade_pending: false,
                served: false,
                shared: shared.clone(),
                eof: false,
                head_timeout,
                head_deadline: None,
            },
            GuardHandle(shared),
        )
    }

    /// Whether the head deadline runs: before the first request head is
    /// complete, and while a later head is partly buffered.
    fn awaiting_head(&self) -> bool {
        match self.state {
            State::Start => true,
            State::Head => !self.served || self.buf.len() > self.ready,
            _ => false,
        }
    }

    /// Advances the framing state over unchecked bytes, moving `ready` forward.
    fn check(&mut self) {
        loop {
            match self.state {
                State::Passthrough => {
                    self.ready = self.buf.len();
                    return;
                }
                State::Rejected => return,
                State::Upgrading => match self.shared.take_outcome() {
                    None => return,
                    Some(true) => self.state = State::Passthrough,
                    Some(false) => {
                        self.state = State::Head;
                        self.scan = self.ready;
                    }
                },
                _ if self.ready == self.buf.len() => return,
                State::Start => {
                    let avail = self.buf.len() - self.ready;
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
                    if !self.step_head() {
                        return;
                    }
                }
                State::Fixed(left) => {
                    let take = left.min((self.buf.len() - self.ready) as u64);
                    // `take` is at most the bytes available, so it fits.
                    self.ready += take as usize;
                    if take == left {
                        self.end_message();
                    } else {
                        self.state = State::Fixed(left - take);
                        self.scan = self.ready;
                    }
                }
                State::Chunked(chunk) => {
                    if !self.step_chunked(chunk) {
                        return;
                    }
                }
            }
        }
    }

    /// Looks for the end of the head at `ready` and checks it; false when more
    /// bytes are needed or the connection was stopped.
    fn step_head(&mut self) -> bool {
        // Blank lines before a request are skipped by httparse; hand them on.
        while let Some(&b) = self.buf.get(self.ready) {
            self.ready += match (b, self.buf.get(self.ready + 1)) {
                (b'\n', _) => 1,
                (b'\r', Some(b'\n')) => 2,
                (b'\r', None) => return false,
                _ => break,
            };
        }
        self.scan = self.scan.max(self.ready);
        loop {
            let Some(end) = self.next_head_end() else {
                if self.buf.len() - self.ready > MAX_HEAD {
                    // hyper answers 431 for heads over its own limit.
                    self.state = State::Passthrough;
                    return true;
                }
                return false;
            };
            match inspect_head(&self.buf[self.ready..end]) {
                Inspected::Partial => continue,
                Inspected::LeftToHyper => {
                    self.state = State::Passthrough;
                    return true;
                }
                Inspected::Rejected(why) => {
                    self.reject(why);
                    return false;
                }
                Inspected::Request { len, body, upgrade } => {
                    self.ready += len;
                    self.served = true;
                    self.upgrade_pending = upgrade;
                    if upgrade {
                        // hyper has not seen this request yet, so any outcome
                        // on record is stale.
                        self.shared
                            .outcome
                            .store(handle::NO_OUTCOME, Ordering::Release);
                    }
                    match body {
                        Body::Length(0) => self.end_message(),
                        Body::Length(n) => self.state = State::Fixed(n),
                        Body::Chunked => self.state = State::Chunked(Chunk::Start),
                    }
                    self.scan = self.ready;
                    return true;
                }
            }
        }
    }

    /// The end of the next candidate blank line (`\n\n` or `\n\r\n`) from
    /// `scan`, leaving `scan` past its first LF; each byte is looked at a
    /// bounded number of times however the head arrives.
    fn next_head_end(&mut self) -> Option<usize> {
        let buf = &self.buf[..];
        let mut from = self.scan;
        while let Some(i) = buf[from..].iter().position(|&b| b == b'\n') {
            let lf = from + i;
            match (buf.get(lf + 1), buf.get(lf + 2)) {
                (Some(b'\n'), _) => {
                    self.scan = lf + 1;
                    return Some(lf + 2);
                }
                (Some(b'\r'), Some(b'\n')) => {
                    self.scan = lf + 1;
                    return Some(lf + 3);
                }
                (None, _) | (Some(b'\r'), None) => {
                    self.scan = lf;
                    return None;
                }
                _ => from = lf + 1,
            }
        }
        self.scan = buf.len();
        None
    }

    /// Follows a chunked body over unchecked bytes; false when more bytes are
    /// needed or the connection was stopped.
    fn step_chunked(&mut self, mut chunk: Chunk) -> bool {
        let len = self.buf.len();
        while self.ready < len {
            match chunk {
                Chunk::Data(left) => {
                    let take = left.min((len - self.ready) as u64);
                    self.ready += take as usize;
                    chunk = if take == left {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left - take)
                    };
                    continue;
                }
                Chunk::Extension(_) => {
                    let rest = &self.buf[self.ready..];
                    self.ready += rest
                        .iter()
                        .position(|&b| b == b'\r' || b == b'\n')
                        .unwrap_or(rest.len());
                }
                Chunk::Trailer => {
                    let rest = &self.buf[self.ready..];
                    self.ready += rest.iter().position(|&b| b == b'\r').unwrap_or(rest.len());
                }
                _ => {}
            }
            let Some(&b) = self.buf.get(self.ready) else {
                break;
            };
            let Some(next) = chunk_byte(chunk, b) else {
                // hyper fails the body at this byte; make sure it does.
                self.reject(Rejection::UnparseableFraming);
                return false;
            };
            self.ready += 1;
            if next == Chunk::End {
                self.end_message();
                return true;
            }
            chunk = next;
        }
        self.state = State::Chunked(chunk);
        self.scan = self.ready;
        false
    }

    /// A message ended at `ready`: the next head follows, or an upgrade
    /// outcome is awaited.
    fn end_message(&mut self) {
        self.scan = self.ready;
        self.state = if std::mem::take(&mut self.upgrade_pending) {
            State::Upgrading
        } else {
            State::Head
        };
    }

    /// Replaces everything from `ready` with [`POISON`], then end of input.
    fn reject(&mut self, why: Rejection) {
        self.state = State::Rejected;
        self.shared.rejection.store(why.code(), Ordering::Release);
        self.buf.truncate(self.ready);
        self.buf.extend_from_slice(POISON);
        self.ready = self.buf.len();
    }
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
            if this.state == State::Upgrading {
                // Register before looking, so an outcome reported in between
                // still wakes this read.
                this.shared.waker.register(cx.waker());
                this.check();
                if this.state == State::Upgrading {
                    return Poll::Pending;
                }
                continue;
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
                    if !this.awaiting_head() {
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
                if this.ready > 0 && this.served {
                    // A head went through: the next one gets its own deadline.
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
