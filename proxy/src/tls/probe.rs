//! The TLS version a server chose, read from the first record it writes.
//!
//! rustls reports the negotiated version only on a connection that
//! completed its handshake; tokio-rustls drops the connection when the
//! handshake fails. A handshake that fails after the version was agreed (a
//! refused client certificate, a client that stalls after the ServerHello)
//! is still counted under its version: the server's first record is the
//! ServerHello (or a HelloRetryRequest, which has the same layout), and its
//! cipher suite tells TLS 1.3 (`0x13xx`, suites only 1.3 defines) from
//! TLS 1.2. After that record, or anything else first, the wrapper only
//! passes bytes through.
//!
//! The verdict goes to a [`SeenVersion`] the caller keeps, because the
//! probe itself is dropped with the failed handshake. (Reading the probe
//! between polls is not enough: a fast client's answer can arrive, and fail
//! the handshake, within the poll that wrote the ServerHello.)

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use rustls::ProtocolVersion;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes of the first record needed to reach the cipher suite: record
/// header (5), handshake header (4), version (2), random (32), session id
/// (1 + up to 32), cipher suite (2).
const NEEDED: usize = 5 + 4 + 2 + 32 + 1 + 32 + 2;

/// A socket whose first written TLS record is read for the server's version.
#[derive(Debug)]
pub struct VersionProbe<IO> {
    io: IO,
    state: State,
    seen: SeenVersion,
}

/// The version a [`VersionProbe`] read, shared with whoever drives the
/// handshake.
#[derive(Clone, Debug, Default)]
pub struct SeenVersion(Arc<AtomicU8>);

#[derive(Debug)]
enum State {
    /// The first bytes written so far.
    Reading {
        buf: [u8; NEEDED],
        len: usize,
    },
    Done,
}

/// What the bytes written so far say.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    NeedMore,
    Known(Option<ProtocolVersion>),
}

// === impl VersionProbe ===

impl<IO> VersionProbe<IO> {
    /// Wraps a socket before the server's handshake starts; the handle
    /// tells the version once the server's first record went out.
    pub fn new(io: IO) -> (Self, SeenVersion) {
        let seen = SeenVersion::default();
        let probe = Self {
            io,
            state: State::Reading {
                buf: [0; NEEDED],
                len: 0,
            },
            seen: seen.clone(),
        };
        (probe, seen)
    }

    /// Takes note of bytes the socket accepted.
    fn observe<'a>(&mut self, written: impl IntoIterator<Item = &'a [u8]>, mut n: usize) {
        let State::Reading { buf, len } = &mut self.state else {
            return;
        };
        for chunk in written {
            if n == 0 || *len == NEEDED {
                break;
            }
            let take = chunk.len().min(n).min(NEEDED - *len);
            buf[*len..*len + take].copy_from_slice(&chunk[..take]);
            *len += take;
            n -= chunk.len().min(n);
        }
        if let Verdict::Known(version) = server_hello_version(&buf[..*len]) {
            self.state = State::Done;
            self.seen.set(version);
        }
    }
}

// === impl SeenVersion ===

impl SeenVersion {
    const TLS12: u8 = 1;
    const TLS13: u8 = 2;

    /// The version the server chose, if its first record said.
    pub fn get(&self) -> Option<ProtocolVersion> {
        match self.0.load(Ordering::Acquire) {
            Self::TLS12 => Some(ProtocolVersion::TLSv1_2),
            Self::TLS13 => Some(ProtocolVersion::TLSv1_3),
            _ => None,
        }
    }

    fn set(&self, version: Option<ProtocolVersion>) {
        let code = match version {
            Some(ProtocolVersion::TLSv1_2) => Self::TLS12,
            Some(ProtocolVersion::TLSv1_3) => Self::TLS13,
            _ => return,
        };
        self.0.store(code, Ordering::Release);
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for VersionProbe<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for VersionProbe<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            self.observe([buf], n);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            self.observe(bufs.iter().map(|b| &**b), n);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Reads the version from the start of a server's first record.
fn server_hello_version(b: &[u8]) -> Verdict {
    const HANDSHAKE_RECORD: u8 = 0x16;
    const SERVER_HELLO: u8 = 0x02;
    match (b.first(), b.get(5)) {
        (None, _) | (Some(&HANDSHAKE_RECORD), None) => return Verdict::NeedMore,
        (Some(&HANDSHAKE_RECORD), Some(&SERVER_HELLO)) => {}
        // An alert first (the ClientHello was refused), or not TLS at all.
        _ => return Verdict::Known(None),
    }
    let Some(&session_id_len) = b.get(43) else {
        return Verdict::NeedMore;
    };
    let suite_at = 44 + usize::from(session_id_len);
    if session_id_len > 32 {
        return Verdict::Known(None);
    }
    let (Some(&legacy), Some(&suite)) = (b.get(10), b.get(suite_at)) else {
        return Verdict::NeedMore;
    };
    Verdict::Known(match (suite, b[9], legacy) {
        (0x13, _, _) => Some(ProtocolVersion::TLSv1_3),
        (_, 3, 3) => Some(ProtocolVersion::TLSv1_2),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// A ServerHello record's first bytes.
    fn server_hello(version: [u8; 2], session_id: &[u8], suite: [u8; 2]) -> Vec<u8> {
        let mut b = vec![0x16, 3, 3, 0, 90, 0x02, 0, 0, 86];
        b.extend_from_slice(&version);
        b.extend_from_slice(&[7; 32]);
        b.push(session_id.len() as u8);
        b.extend_from_slice(session_id);
        b.extend_from_slice(&suite);
        b.extend_from_slice(&[0, 0, 0]);
        b
    }

    #[test]
    fn the_cipher_suite_tells_the_version() {
        let tls13 = server_hello([3, 3], &[1; 32], [0x13, 0x02]);
        assert_eq!(
            server_hello_version(&tls13),
            Verdict::Known(Some(ProtocolVersion::TLSv1_3))
        );
        let tls12 = server_hello([3, 3], &[], [0xc0, 0x2f]);
        assert_eq!(
            server_hello_version(&tls12),
            Verdict::Known(Some(ProtocolVersion::TLSv1_2))
        );
        let tls10 = server_hello([3, 1], &[], [0xc0, 0x13]);
        assert_eq!(server_hello_version(&tls10), Verdict::Known(None));
        for cut in [0, 1, 5, 43, 44 + 32] {
            assert_eq!(
                server_hello_version(&tls13[..cut]),
                Verdict::NeedMore,
                "{cut}"
            );
        }
        let alert = [0x15, 3, 3, 0, 2, 2, 40];
        assert_eq!(server_hello_version(&alert), Verdict::Known(None));
        assert_eq!(server_hello_version(b"HTTP/1.1 400"), Verdict::Known(None));
    }

    #[tokio::test]
    async fn reads_the_version_across_partial_and_vectored_writes() {
        let hello = server_hello([3, 3], &[9; 32], [0x13, 0x01]);
        let (client, mut server) = tokio::io::duplex(4096);
        let (mut probe, seen) = VersionProbe::new(client);
        probe.write_all(&hello[..20]).await.unwrap();
        assert_eq!(seen.get(), None, "not enough yet");
        let rest = [
            io::IoSlice::new(&hello[20..50]),
            io::IoSlice::new(&hello[50..]),
        ];
        // A vectored write may take only part of the slices; the rest follows.
        let n = probe.write_vectored(&rest).await.unwrap();
        probe.write_all(&hello[20 + n..]).await.unwrap();
        drop(probe);
        assert_eq!(
            seen.get(),
            Some(ProtocolVersion::TLSv1_3),
            "kept after the probe"
        );
        let mut passed = vec![0; hello.len()];
        tokio::io::AsyncReadExt::read_exact(&mut server, &mut passed)
            .await
            .unwrap();
        assert_eq!(passed, hello, "bytes pass through unchanged");
    }
}
