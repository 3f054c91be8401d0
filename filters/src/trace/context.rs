//! Trace and span ids: fixed-size byte arrays parsed from header bytes and
//! hex-encoded into stack buffers, never `String`s on the request path.

use std::{cell::RefCell, fmt};

use rand::{rngs::SmallRng, Rng, SeedableRng};

/// A 16-byte trace id; never all zero once made by [`TraceId::random`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id; never all zero once made by [`SpanId::random`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

thread_local! {
    // A fast per-thread generator seeded once from the OS-seeded thread rng:
    // ids must be unique, not secret.
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of `bytes` into `out` (which must be twice as long).
fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
}

/// The value of one hex digit; `lower_only` rejects `A`-`F`.
const fn hex_digit(c: u8, lower_only: bool) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' if !lower_only => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes exactly `2 * N` hex digits.
pub(crate) fn decode_hex<const N: usize>(src: &[u8], lower_only: bool) -> Option<[u8; N]> {
    if src.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in src.chunks_exact(2).enumerate() {
        let hi = hex_digit(pair[0], lower_only)?;
        let lo = hex_digit(pair[1], lower_only)?;
        out[i] = (hi << 4) | lo;
    }
    Some(out)
}

/// Two hex digits of a byte (trace flags).
pub(crate) fn decode_hex_byte(src: &[u8], lower_only: bool) -> Option<u8> {
    decode_hex::<1>(src, lower_only).map(|[b]| b)
}

// === impl TraceId ===

impl TraceId {
    /// The invalid all-zero id.
    pub const INVALID: Self = Self([0; 16]);

    /// A fresh random id from a thread-local generator; never all zero.
    pub fn random() -> Self {
        RNG.with(|rng| {
            let mut rng = rng.borrow_mut();
            loop {
                let v: u128 = rng.random();
                if v != 0 {
                    return Self(v.to_be_bytes());
                }
            }
        })
    }

    /// Whether the id is not all zero.
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 16]
    }

    /// Parses 32 hex digits (either case), or 16 hex digits left-padded with
    /// zeros (B3's 64-bit ids). All-zero ids are rejected.
    pub fn from_hex(src: &[u8]) -> Option<Self> {
        let id = match src.len() {
            32 => Self(decode_hex::<16>(src, false)?),
            16 => {
                let low = decode_hex::<8>(src, false)?;
                let mut id = [0u8; 16];
                id[8..].copy_from_slice(&low);
                Self(id)
            }
            _ => return None,
        };
        id.is_valid().then_some(id)
    }

    /// 32 lower-case hex digits, on the stack.
    pub fn to_hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        encode_hex(&self.0, &mut out);
        out
    }

    /// The id in UUID form (`8-4-4-4-12`), for `x-request-id`.
    pub fn to_uuid(&self) -> [u8; 36] {
        let hex = self.to_hex();
        let mut out = [b'-'; 36];
        out[0..8].copy_from_slice(&hex[0..8]);
        out[9..13].copy_from_slice(&hex[8..12]);
        out[14..18].copy_from_slice(&hex[12..16]);
        out[19..23].copy_from_slice(&hex[16..20]);
        out[24..36].copy_from_slice(&hex[20..32]);
        out
    }

    /// The id's bytes.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hex digits are ASCII, so this never takes the fallback.
        f.write_str(std::str::from_utf8(&self.to_hex()).unwrap_or_default())
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

// === impl SpanId ===

impl SpanId {
    /// The invalid all-zero id.
    pub const INVALID: Self = Self([0; 8]);

    /// A fresh random id from a thread-local generator; never all zero.
    pub fn random() -> Self {
        RNG.with(|rng| {
            let mut rng = rng.borrow_mut();
            loop {
                let v: u64 = rng.random();
                if v != 0 {
                    return Self(v.to_be_bytes());
                }
            }
        })
    }

    /// Whether the id is not all zero.
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 8]
    }

    /// Parses 16 hex digits (either case); all-zero ids are rejected.
    pub fn from_hex(src: &[u8]) -> Option<Self> {
        let id = Self(decode_hex::<8>(src, false)?);
        id.is_valid().then_some(id)
    }

    /// 16 lower-case hex digits, on the stack.
    pub fn to_hex(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        encode_hex(&self.0, &mut out);
        out
    }

    /// The id's bytes.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.to_hex()).unwrap_or_default())
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// A hex buffer as `&str` (hex digits are always ASCII).
pub fn hex_str(buf: &[u8]) -> &str {
    std::str::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_valid_and_distinct() {
        let a = TraceId::random();
        let b = TraceId::random();
        assert!(a.is_valid() && b.is_valid());
        assert_ne!(a, b);
        assert!(SpanId::random().is_valid());
    }

    #[test]
    fn hex_round_trip() {
        let id = TraceId::from_hex(b"4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(&id.to_hex(), b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(&id.to_uuid(), b"4bf92f35-77b3-4da6-a3ce-929d0e0e4736");
        let span = SpanId::from_hex(b"00f067aa0ba902b7").unwrap();
        assert_eq!(span.to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn parse_table() {
        let table: &[(&[u8], bool)] = &[
            (b"4bf92f3577b34da6a3ce929d0e0e4736", true),
            (b"4BF92F3577B34DA6A3CE929D0E0E4736", true),
            (b"a3ce929d0e0e4736", true),
            (b"00000000000000000000000000000000", false),
            (b"0000000000000000", false),
            (b"4bf92f3577b34da6a3ce929d0e0e473", false),
            (b"4bf92f3577b34da6a3ce929d0e0e4736a", false),
            (b"zbf92f3577b34da6a3ce929d0e0e4736", false),
            (b"", false),
        ];
        for (src, ok) in table {
            assert_eq!(
                TraceId::from_hex(src).is_some(),
                *ok,
                "{}",
                String::from_utf8_lossy(src)
            );
        }
        let padded = TraceId::from_hex(b"a3ce929d0e0e4736").unwrap();
        assert_eq!(padded.to_string(), "0000000000000000a3ce929d0e0e4736");
    }

    #[test]
    fn lower_only_rejects_upper_case() {
        assert!(decode_hex::<1>(b"ab", true).is_some());
        assert!(decode_hex::<1>(b"AB", true).is_none());
        assert_eq!(decode_hex_byte(b"01", true), Some(1));
    }
}
