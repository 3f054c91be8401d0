//! The HTTP/1.1 client: the request is serialized once per run and written
//! as one buffer; the response is parsed in place with `httparse` and its
//! body counted, not kept. wrk works the same way; a general-purpose client
//! (hyper's, with a dispatch channel, header maps and body frames per
//! request) costs several times the CPU per request, enough to make the
//! generator, not the server, the bottleneck on a small machine.
//!
//! Handles `Content-Length`, `chunked` (with trailers) and close-delimited
//! bodies, interim 1xx responses, bodiless statuses and HEAD, and
//! `Connection: close`. No pipelining: one request in flight per connection.

use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, Method};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::stats::{Failure, Outcome};

const READ_CHUNK: usize = 16 * 1024;
const MAX_HEADERS: usize = 100;
/// A response head larger than this is a protocol error.
const MAX_HEAD: usize = 64 * 1024;

/// Serializes the request sent on every exchange.
pub(super) fn serialize(method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(128 + body.len());
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let needs_length =
        !body.is_empty() || matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if needs_length && !headers.contains_key(header::CONTENT_LENGTH) {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// One HTTP/1.1 connection.
#[derive(Debug)]
pub(super) struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    closed: bool,
}

/// How the response body ends.
enum Framing {
    None,
    Length(u64),
    Chunked,
    Close,
}

impl Conn {
    pub(super) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            closed: false,
        }
    }

    /// Whether the peer asked to close (or closed) the connection.
    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Reads more bytes; `Err` on EOF or I/O error.
    async fn fill(&mut self) -> Result<(), Failure> {
        self.buf.reserve(READ_CHUNK);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) => {
                self.closed = true;
                Err(Failure::Reset)
            }
            Ok(_) => Ok(()),
        }
    }

    /// Sends `request` and reads the whole response. On `Err` the connection
    /// is unusable.
    pub(super) async fn exchange(
        &mut self,
        request: &[u8],
        head: bool,
    ) -> Result<Outcome, Failure> {
        self.buf.clear();
        if self.stream.write_all(request).await.is_err() {
            self.closed = true;
            return Err(Failure::Reset);
        }
        loop {
            let (status, framing, used) = loop {
                if let Some(parsed) = self.parse_head(head)? {
                    break parsed;
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(Failure::Other);
                }
                self.fill().await?;
            };
            self.buf.advance(used);
            // Interim responses (100 Continue, 103 Early Hints) precede the real one.
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let received = match framing {
                Framing::None => 0,
                Framing::Length(n) => self.skip(n).await?,
                Framing::Chunked => self.chunked().await?,
                Framing::Close => self.until_eof().await,
            };
            return Ok(Outcome::Response {
                status,
                grpc: None,
                received,
            });
        }
    }

    /// Parses the response head in the buffer: `(status, framing, head length)`.
    fn parse_head(&mut self, head: bool) -> Result<Option<(u16, Framing, usize)>, Failure> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let used = match resp.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(Failure::Other),
        };
        let status = resp.code.ok_or(Failure::Other)?;
        let mut length = None;
        let mut chunked = false;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let v = std::str::from_utf8(h.value).map_err(|_| Failure::Other)?;
                length = Some(v.trim().parse::<u64>().map_err(|_| Failure::Other)?);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = h.value.to_ascii_lowercase().ends_with(b"chunked");
            } else if h.name.eq_ignore_ascii_case("connection")
                && h.value.eq_ignore_ascii_case(b"close")
            {
                self.closed = true;
            }
        }
        if resp.version == Some(0) {
            // HTTP/1.0 closes unless it says keep-alive; simplest: reconnect.
            self.closed = true;
        }
        let framing = if head || status == 204 || status == 304 || (100..200).contains(&status) {
            Framing::None
        } else if chunked {
            Framing::Chunked
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            self.closed = true;
            Framing::Close
        };
        Ok(Some((status, framing, used)))
    }

    /// Consumes `n` body bytes.
    async fn skip(&mut self, n: u64) -> Result<u64, Failure> {
        let mut left = n;
        loop {
            let take = left.min(self.buf.len() as u64);
            // `take` is at most `buf.len()`, a usize.
            self.buf
                .advance(usize::try_from(take).unwrap_or(self.buf.len()));
            left -= take;
            if left == 0 {
                return Ok(n);
            }
            self.fill().await?;
        }
    }

    /// Consumes a chunked body and its trailers; returns the data length.
    async fn chunked(&mut self) -> Result<u64, Failure> {
        let mut total = 0;
        loop {
            let line = self.line().await?;
            let size = line[..].split(|&b| b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size).map_err(|_| Failure::Other)?;
            let size = u64::from_str_radix(size.trim(), 16).map_err(|_| Failure::Other)?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line().await?.is_empty() {}
                return Ok(total);
            }
            total += self.skip(size).await?;
            if !self.line().await?.is_empty() {
                return Err(Failure::Other);
            }
        }
    }

    /// Takes one CRLF-terminated line out of the buffer (without the CRLF).
    async fn line(&mut self) -> Result<BytesMut, Failure> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.split_to(i);
                self.buf.advance(2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Failure::Other);
            }
            self.fill().await?;
        }
    }

    /// Consumes a close-delimited body.
    async fn until_eof(&mut self) -> u64 {
        let mut total = self.buf.len() as u64;
        self.buf.clear();
        while self.fill().await.is_ok() {
            total += self.buf.len() as u64;
            self.buf.clear();
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_once() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "x:1".parse().unwrap());
        let req = serialize(&Method::POST, "/a?b=1", &h, b"hi");
        assert_eq!(
            &req[..],
            b"POST /a?b=1 HTTP/1.1\r\nhost: x:1\r\ncontent-length: 2\r\n\r\nhi"
        );
    }

    #[tokio::test]
    async fn reads_chunked_and_interim_responses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 256];
            let _ = s.read(&mut b).await.unwrap();
            s.write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n")
                .await
                .unwrap();
            let _ = s.read(&mut b).await.unwrap();
            s.write_all(b"HTTP/1.1 503 Nope\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope")
                .await
                .unwrap();
        });
        let mut c = Conn::new(TcpStream::connect(addr).await.unwrap());
        let ok = c.exchange(b"GET / HTTP/1.1\r\n\r\n", false).await.unwrap();
        assert_eq!(
            ok,
            Outcome::Response {
                status: 200,
                grpc: None,
                received: 5
            }
        );
        assert!(!c.is_closed());
        let err = c.exchange(b"GET / HTTP/1.1\r\n\r\n", false).await.unwrap();
        assert_eq!(
            err,
            Outcome::Response {
                status: 503,
                grpc: None,
                received: 4
            }
        );
        assert!(c.is_closed());
    }
}
