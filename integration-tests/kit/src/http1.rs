//! Raw HTTP/1.1 over a `std` socket, for the tests of the real binary: what
//! they check is on the wire (`Connection: close`, a kept-alive connection,
//! the status line), and they run on plain threads.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
};

use crate::PATIENCE;

/// A response as it came off the wire.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The status line and the header lines, without the blank line.
    pub head: String,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// Parses a whole response read to the end of the connection.
    fn parse(raw: &[u8]) -> io::Result<Self> {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| invalid(raw))?;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        Ok(Self {
            status: status_of(&head).ok_or_else(|| invalid(raw))?,
            head,
            body: raw[end + 4..].to_vec(),
        })
    }

    /// The status line, e.g. `HTTP/1.1 200 OK`.
    pub fn status_line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }

    /// The value of the first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The header lines, the status line left out.
    pub fn headers(&self) -> Vec<&str> {
        self.head.lines().skip(1).collect()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn invalid(raw: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not an HTTP response: {:?}", String::from_utf8_lossy(raw)),
    )
}

fn status_of(head: &str) -> Option<u16> {
    head.split(' ').nth(1)?.parse().ok()
}

/// One `GET path` on a new connection that asks to be closed (`host: app`),
/// the response read to the end, each read bounded by [`PATIENCE`].
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    let mut conn = TcpStream::connect_timeout(&addr, PATIENCE)?;
    conn.set_read_timeout(Some(PATIENCE))?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n"
    )?;
    read_to_close(&mut conn)
}

/// Reads a response until the peer closes the connection.
pub fn read_to_close(conn: &mut TcpStream) -> io::Result<Response> {
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    Response::parse(&raw)
}

/// A kept-alive client connection: requests one after another, each response
/// read by its `content-length`.
pub struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    /// Connects, reads bounded by [`PATIENCE`].
    pub fn open(addr: SocketAddr) -> io::Result<Self> {
        let writer = TcpStream::connect_timeout(&addr, PATIENCE)?;
        writer.set_read_timeout(Some(PATIENCE))?;
        let reader = BufReader::new(writer.try_clone()?);
        Ok(Self { writer, reader })
    }

    /// Sends the request bytes as they are.
    pub fn send(&mut self, request: &[u8]) -> io::Result<()> {
        self.writer.write_all(request)
    }

    /// `GET path` with `host`, the connection kept alive.
    pub fn get(&mut self, host: &str, path: &str) -> io::Result<Response> {
        self.send(format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes())?;
        self.read_response()
    }

    /// Reads one response head and its `content-length` body.
    pub fn read_response(&mut self) -> io::Result<Response> {
        let mut head = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.trim().eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().map_err(|_| invalid(line.as_bytes()))?;
                }
            }
            if !head.is_empty() {
                head.push_str("\r\n");
            }
            head.push_str(line);
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(Response {
            status: status_of(&head).ok_or_else(|| invalid(head.as_bytes()))?,
            head,
            body,
        })
    }
}
