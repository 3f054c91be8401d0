//! HTTP/1 framing as hyper reads it: request heads (httparse) and chunked
//! bodies (hyper's chunked decoder), byte for byte.

use std::mem::MaybeUninit;

use super::{handle::may_switch, Rejection};

/// The largest `Content-Length` hyper accepts; above it hyper answers 431.
const MAX_CONTENT_LENGTH: u64 = u64::MAX - 2;

/// Header slots for httparse: at least hyper's default limit (100), so a head
/// the guard cannot hold is one hyper refuses too.
pub(super) const MAX_HEADERS: usize = 128;

/// hyper's chunked decoder states (`proto::h1::decode::ChunkedState`), with
/// the chunk size where it is still needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// The first hex digit of a chunk size.
    Start,
    /// More hex digits, whitespace, `;` or CR.
    Size(u64),
    /// Whitespace after the size: more of it, `;` or CR.
    SizeLws(u64),
    /// A chunk extension, up to CR; a bare LF in it is refused.
    Extension(u64),
    /// The LF ending a chunk-size line.
    SizeLf(u64),
    /// Inside chunk data.
    Data(u64),
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// A line after the last chunk: CR (the end) or a trailer.
    EndCr,
    /// The LF ending the body.
    EndLf,
    /// A trailer line, up to CR (a bare LF belongs to the line).
    Trailer,
    /// The LF ending a trailer line.
    TrailerLf,
    /// The body is complete.
    End,
}

/// One byte of a chunked body outside chunk data, as hyper's decoder takes
/// it; `None` where hyper fails the body.
pub(super) fn chunk_byte(chunk: Chunk, b: u8) -> Option<Chunk> {
    Some(match (chunk, b) {
        (Chunk::Start, _) => Chunk::Size(u64::from(hex_digit(b)?)),
        (Chunk::Size(n) | Chunk::SizeLws(n), b'\t' | b' ') => Chunk::SizeLws(n),
        (Chunk::Size(n) | Chunk::SizeLws(n), b';') => Chunk::Extension(n),
        (Chunk::Size(n) | Chunk::SizeLws(n) | Chunk::Extension(n), b'\r') => Chunk::SizeLf(n),
        (Chunk::Size(n), _) => {
            Chunk::Size(n.checked_mul(16)?.checked_add(u64::from(hex_digit(b)?))?)
        }
        (Chunk::Extension(_), b'\n') => return None,
        (Chunk::Extension(n), _) => Chunk::Extension(n),
        (Chunk::SizeLf(0), b'\n') => Chunk::EndCr,
        (Chunk::SizeLf(n), b'\n') => Chunk::Data(n),
        (Chunk::DataCr, b'\r') => Chunk::DataLf,
        (Chunk::DataLf, b'\n') => Chunk::Start,
        (Chunk::EndCr, b'\r') => Chunk::EndLf,
        (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
        (Chunk::EndCr | Chunk::Trailer, _) => Chunk::Trailer,
        (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
        (Chunk::EndLf, b'\n') => Chunk::End,
        // Chunk data is skipped in bulk and `End` is never stored.
        (Chunk::Data(_) | Chunk::End, _) => chunk,
        _ => return None,
    })
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

pub(super) enum Inspected {
    /// A request head of `len` bytes.
    Request {
        len: usize,
        body: Body,
        upgrade: bool,
    },
    /// Not a complete head yet.
    Partial,
    /// A head hyper refuses itself (431) and closes on.
    LeftToHyper,
    Rejected(Rejection),
}

pub(super) enum Body {
    Length(u64),
    Chunked,
}

pub(super) fn inspect_head(head: &[u8]) -> Inspected {
    // Uninitialised slots, as hyper does: no zeroing per request.
    let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Inspected::Partial,
        Err(httparse::Error::TooManyHeaders) => return Inspected::LeftToHyper,
        Err(_) => return Inspected::Rejected(Rejection::UnparseableFraming),
    };
    let mut has_length = false;
    let mut length = None;
    let mut bad_length = false;
    // Whether the last Transfer-Encoding header ends in `chunked`, as hyper
    // decides it.
    let mut chunked = None;
    let mut upgrade_header = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            has_length = true;
            match content_length(h.value) {
                Some(n) if length.is_none_or(|prev| prev == n) => length = Some(n),
                _ => bad_length = true,
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = Some(ends_in_chunked(h.value));
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade_header = true;
        }
    }
    let body = match chunked {
        Some(_) if has_length => return Inspected::Rejected(Rejection::ConflictingFraming),
        Some(true) => Body::Chunked,
        Some(false) => return Inspected::Rejected(Rejection::UnparseableFraming),
        None if bad_length => return Inspected::Rejected(Rejection::InvalidContentLength),
        None => Body::Length(length.unwrap_or(0)),
    };
    Inspected::Request {
        len,
        body,
        upgrade: may_switch(req.method == Some("CONNECT"), upgrade_header),
    }
}

/// A `Content-Length` value hyper accepts: plain ASCII digits, at most
/// [`MAX_CONTENT_LENGTH`].
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value
        .iter()
        .try_fold(0u64, |n, &b| {
            let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
            n.checked_mul(10)?.checked_add(u64::from(digit))
        })
        .filter(|&n| n <= MAX_CONTENT_LENGTH)
}

/// hyper's test: the value is visible ASCII and its last coding is `chunked`.
fn ends_in_chunked(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        && value
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}
