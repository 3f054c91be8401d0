//! The identity in a client's end-entity certificate: its subject as an
//! RFC 4514 string and its first DNS or URI subject alternative name.
//!
//! A small DER walk rather than a general X.509 parser: it runs once per
//! mTLS connection, on a certificate rustls and webpki have already parsed
//! and verified against `inbound.tls.client_ca`, and it reads two fields.
//! (`x509-parser` would bring nom, asn1-rs, der-parser, oid-registry and
//! their proc macros into the binary for this.) Anything it does not
//! understand is an error, and the connection simply has no subject
//! attribute.

use std::fmt::Write;

/// Why a certificate's identity could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unreadable certificate: {0}")]
pub struct X509Error(&'static str);

/// The identity of a certificate's subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The subject distinguished name, RFC 4514 (`CN=client,O=Example`).
    pub subject: String,
    /// The first `dNSName` or `uniformResourceIdentifier` subject
    /// alternative name (a SPIFFE id, a host name), if any.
    pub san: Option<String>,
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const BOOLEAN: u8 = 0x01;
/// `[3] EXPLICIT Extensions` of `TBSCertificate`.
const EXTENSIONS: u8 = 0xa3;
/// `[0] EXPLICIT Version` of `TBSCertificate`.
const VERSION: u8 = 0xa0;
/// `GeneralName` choices, context-specific primitive.
const DNS_NAME: u8 = 0x82;
const URI: u8 = 0x86;
/// id-ce-subjectAltName, 2.5.29.17.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// Attribute types with an RFC 4514 short name (section 3), by OID bytes.
const SHORT_NAMES: &[(&[u8], &str)] = &[
    (&[0x55, 0x04, 0x03], "CN"),
    (&[0x55, 0x04, 0x07], "L"),
    (&[0x55, 0x04, 0x08], "ST"),
    (&[0x55, 0x04, 0x0a], "O"),
    (&[0x55, 0x04, 0x0b], "OU"),
    (&[0x55, 0x04, 0x06], "C"),
    (&[0x55, 0x04, 0x09], "STREET"),
    (
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
        "DC",
    ),
    (
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01],
        "UID",
    ),
];

/// One DER element: its tag, its content, and its whole encoding.
#[derive(Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
}

/// Reads DER elements one after the other.
struct Der<'a>(&'a [u8]);

/// Reads the subject and first DNS/URI SAN of a DER certificate.
pub fn identity(cert: &[u8]) -> Result<Identity, X509Error> {
    let certificate = Der(cert).expect(SEQUENCE)?;
    let mut tbs = Der(Der(certificate).expect(SEQUENCE)?);
    if tbs.peek() == Some(VERSION) {
        tbs.next()?;
    }
    tbs.expect(INTEGER)?; // serialNumber
    tbs.expect(SEQUENCE)?; // signature
    tbs.expect(SEQUENCE)?; // issuer
    tbs.expect(SEQUENCE)?; // validity
    let subject = rfc4514(tbs.expect(SEQUENCE)?)?;
    tbs.expect(SEQUENCE)?; // subjectPublicKeyInfo
    let mut san = None;
    while !tbs.is_empty() {
        let field = tbs.next()?;
        if field.tag == EXTENSIONS {
            san = first_san(Der(field.content).expect(SEQUENCE)?)?;
        }
    }
    Ok(Identity { subject, san })
}

/// The first DNS or URI name of the subjectAltName extension, if present.
fn first_san(extensions: &[u8]) -> Result<Option<String>, X509Error> {
    let mut extensions = Der(extensions);
    while !extensions.is_empty() {
        let mut extension = Der(extensions.expect(SEQUENCE)?);
        if extension.expect(OID)? != SUBJECT_ALT_NAME {
            continue;
        }
        if extension.peek() == Some(BOOLEAN) {
            extension.next()?; // critical
        }
        let names = Der(extension.expect(OCTET_STRING)?).expect(SEQUENCE)?;
        let mut names = Der(names);
        while !names.is_empty() {
            let name = names.next()?;
            if name.tag == DNS_NAME || name.tag == URI {
                let text = std::str::from_utf8(name.content)
                    .ok()
                    .filter(|t| t.bytes().all(|b| b.is_ascii_graphic()))
                    .ok_or(X509Error("a DNS or URI name that is not IA5 text"))?;
                return Ok(Some(text.to_string()));
            }
        }
        return Ok(None);
    }
    Ok(None)
}

/// Renders a `Name`'s content as RFC 4514: the last RDN first, RDNs joined
/// by `,`, the attributes of one RDN by `+`.
fn rfc4514(name: &[u8]) -> Result<String, X509Error> {
    let mut rdns = Vec::new();
    let mut der = Der(name);
    while !der.is_empty() {
        rdns.push(der.expect(SET)?);
    }
    let mut out = String::with_capacity(name.len());
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut attributes = Der(rdn);
        let mut first = true;
        while !attributes.is_empty() {
            if !first {
                out.push('+');
            }
            first = false;
            let mut attribute = Der(attributes.expect(SEQUENCE)?);
            let oid = attributes_type(attribute.expect(OID)?)?;
            let value = attribute.next()?;
            match oid {
                AttributeType::Short(name) => {
                    out.push_str(name);
                    out.push('=');
                    match decode_string(value) {
                        Some(text) => escape_into(&text, &mut out),
                        None => hex_into(value.whole, &mut out),
                    }
                }
                // RFC 4514 2.4: a type without a short name has its value
                // as `#` and the hex of its BER encoding.
                AttributeType::Dotted(dotted) => {
                    out.push_str(&dotted);
                    out.push('=');
                    hex_into(value.whole, &mut out);
                }
            }
        }
    }
    Ok(out)
}

enum AttributeType {
    Short(&'static str),
    Dotted(String),
}

fn attributes_type(oid: &[u8]) -> Result<AttributeType, X509Error> {
    if let Some((_, name)) = SHORT_NAMES.iter().find(|(bytes, _)| *bytes == oid) {
        return Ok(AttributeType::Short(name));
    }
    let mut arcs = Vec::new();
    let mut arc: u64 = 0;
    for (i, &b) in oid.iter().enumerate() {
        if arc > u64::MAX >> 7 {
            return Err(X509Error("an object identifier arc too large"));
        }
        arc = (arc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(arc);
            arc = 0;
        } else if i == oid.len() - 1 {
            return Err(X509Error("a truncated object identifier"));
        }
    }
    let Some(&first) = arcs.first() else {
        return Err(X509Error("an empty object identifier"));
    };
    let (a, b) = match first {
        0..40 => (0, first),
        40..80 => (1, first - 40),
        _ => (2, first - 80),
    };
    let mut dotted = format!("{a}.{b}");
    for arc in &arcs[1..] {
        let _ = write!(dotted, ".{arc}");
    }
    Ok(AttributeType::Dotted(dotted))
}

/// The text of a directory string, or `None` for types that are not text
/// (rendered as hex instead).
fn decode_string(value: Tlv<'_>) -> Option<String> {
    const UTF8: u8 = 0x0c;
    const NUMERIC: u8 = 0x12;
    const PRINTABLE: u8 = 0x13;
    const TELETEX: u8 = 0x14;
    const IA5: u8 = 0x16;
    const UNIVERSAL: u8 = 0x1c;
    const BMP: u8 = 0x1e;
    let bytes = value.content;
    match value.tag {
        UTF8 => std::str::from_utf8(bytes).ok().map(str::to_string),
        NUMERIC | PRINTABLE | IA5 => bytes
            .is_ascii()
            .then(|| String::from_utf8_lossy(bytes).into_owned()),
        // T.61 in theory; Latin-1 in practice, as OpenSSL and Go read it.
        TELETEX => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        BMP if bytes.len().is_multiple_of(2) => {
            let units = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        UNIVERSAL if bytes.len().is_multiple_of(4) => bytes
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => None,
    }
}

/// Appends `value` escaped as RFC 4514 2.4 asks, and control characters as
/// `\XX` too (allowed there), so the result is printable and fits a span
/// attribute or a header.
fn escape_into(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '#' if i == 0 => out.push_str("\\#"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
}

fn hex_into(bytes: &[u8], out: &mut String) {
    out.push('#');
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

// === impl Der ===

impl<'a> Der<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    fn next(&mut self) -> Result<Tlv<'a>, X509Error> {
        let input = self.0;
        let (&tag, rest) = input.split_first().ok_or(X509Error("truncated"))?;
        if tag & 0x1f == 0x1f {
            return Err(X509Error("a multi-byte tag"));
        }
        let (&first, mut rest) = rest.split_first().ok_or(X509Error("truncated"))?;
        let len = match first {
            0..=0x7f => usize::from(first),
            0x81..=0x84 => {
                let n = usize::from(first & 0x7f);
                if rest.len() < n {
                    return Err(X509Error("truncated"));
                }
                let (bytes, after) = rest.split_at(n);
                rest = after;
                bytes
                    .iter()
                    .fold(0usize, |len, &b| (len << 8) | usize::from(b))
            }
            _ => return Err(X509Error("an indefinite or oversized length")),
        };
        if rest.len() < len {
            return Err(X509Error("truncated"));
        }
        let header = input.len() - rest.len();
        let (whole, after) = input.split_at(header + len);
        self.0 = after;
        Ok(Tlv {
            tag,
            content: &whole[header..],
            whole,
        })
    }

    /// The content of the next element, which must have `tag`.
    fn expect(&mut self, tag: u8) -> Result<&'a [u8], X509Error> {
        let tlv = self.next()?;
        if tlv.tag != tag {
            return Err(X509Error("an unexpected element"));
        }
        Ok(tlv.content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match content.len() {
            n @ 0..0x80 => out.push(n as u8),
            n @ 0x80..0x100 => out.extend_from_slice(&[0x81, n as u8]),
            n => out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    fn attribute(oid: &[u8], value: Vec<u8>) -> Vec<u8> {
        tlv(SEQUENCE, &[tlv(OID, oid), value].concat())
    }

    /// One single-valued RDN.
    fn rdn(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        tlv(SET, &attribute(oid, tlv(tag, value)))
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const O: &[u8] = &[0x55, 0x04, 0x0a];
    const C: &[u8] = &[0x55, 0x04, 0x06];
    const UTF8: u8 = 0x0c;
    const PRINTABLE: u8 = 0x13;

    /// A certificate as RFC 5280 lays it out (the signature is not
    /// checked here: rustls has verified it before this code runs).
    fn certificate(subject: &[u8], extensions: &[Vec<u8>]) -> Vec<u8> {
        let alg = tlv(
            SEQUENCE,
            &tlv(OID, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]),
        );
        let issuer = tlv(SEQUENCE, &rdn(CN, UTF8, b"test CA"));
        let validity = tlv(
            SEQUENCE,
            &[tlv(0x17, b"250101000000Z"), tlv(0x17, b"350101000000Z")].concat(),
        );
        let spki = tlv(SEQUENCE, &[alg.clone(), tlv(0x03, &[0, 4, 1, 2])].concat());
        let mut tbs = [
            tlv(VERSION, &tlv(INTEGER, &[2])),
            tlv(INTEGER, &[0x4e, 0x21]),
            alg.clone(),
            issuer,
            validity,
            tlv(SEQUENCE, subject),
            spki,
        ]
        .concat();
        if !extensions.is_empty() {
            tbs.extend(tlv(EXTENSIONS, &tlv(SEQUENCE, &extensions.concat())));
        }
        tlv(
            SEQUENCE,
            &[tlv(SEQUENCE, &tbs), alg, tlv(0x03, &[0, 1])].concat(),
        )
    }

    fn extension(oid: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
        let mut content = tlv(OID, oid);
        if critical {
            content.extend(tlv(BOOLEAN, &[0xff]));
        }
        content.extend(tlv(OCTET_STRING, value));
        tlv(SEQUENCE, &content)
    }

    #[test]
    fn subject_last_rdn_first_and_the_first_dns_or_uri_san() {
        let subject = [
            rdn(C, PRINTABLE, b"DE"),
            rdn(O, UTF8, b"Acme, Inc."),
            rdn(CN, UTF8, b" orders+api "),
        ]
        .concat();
        let basic_constraints = extension(&[0x55, 0x1d, 0x13], true, &tlv(SEQUENCE, &[]));
        let names = [
            tlv(0x87, &[10, 0, 0, 1]),
            tlv(URI, b"spiffe://cluster.local/ns/shop/sa/orders"),
            tlv(DNS_NAME, b"orders.shop.svc"),
        ]
        .concat();
        let san = extension(SUBJECT_ALT_NAME, false, &tlv(SEQUENCE, &names));
        let der = certificate(&subject, &[basic_constraints, san]);
        assert_eq!(
            identity(&der).unwrap(),
            Identity {
                subject: r"CN=\ orders\+api\ ,O=Acme\, Inc.,C=DE".into(),
                san: Some("spiffe://cluster.local/ns/shop/sa/orders".into()),
            }
        );
        let v1_without_extensions = {
            let full = certificate(&rdn(CN, UTF8, b"old"), &[]);
            // Drop the version field: a v1 certificate.
            let tbs = Der(Der(&full).expect(SEQUENCE).unwrap())
                .expect(SEQUENCE)
                .unwrap();
            let mut fields = Der(tbs);
            fields.next().unwrap();
            tlv(SEQUENCE, &tlv(SEQUENCE, fields.0))
        };
        assert_eq!(
            identity(&v1_without_extensions).unwrap(),
            Identity {
                subject: "CN=old".into(),
                san: None
            }
        );
    }

    #[test]
    fn string_types_and_attributes_without_a_short_name() {
        let bmp: Vec<u8> = "Zoë".encode_utf16().flat_map(u16::to_be_bytes).collect();
        let universal: Vec<u8> = "☃".chars().flat_map(|c| (c as u32).to_be_bytes()).collect();
        let name = [
            rdn(&[0x55, 0x04, 0x05], UTF8, b"A1234"),
            rdn(O, 0x1e, &bmp),
            rdn(CN, 0x1c, &universal),
            rdn(&[0x55, 0x04, 0x07], 0x14, &[b'K', 0xf6, b'l', b'n']),
        ]
        .concat();
        // serialNumber (2.5.4.5) has no RFC 4514 short name: dotted, hex.
        assert_eq!(
            rfc4514(&name).unwrap(),
            "L=Köln,CN=☃,O=Zoë,2.5.4.5=#0c054131323334"
        );
    }

    #[test]
    fn multi_valued_rdns_and_escapes() {
        let cn = attribute(CN, tlv(UTF8, b"#1 \x01x"));
        let uid = attribute(
            &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01],
            tlv(PRINTABLE, b"42"),
        );
        let dc = attribute(
            &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
            tlv(0x16, b"example"),
        );
        let name = [tlv(SET, &dc), tlv(SET, &[cn, uid].concat())].concat();
        assert_eq!(rfc4514(&name).unwrap(), r"CN=\#1 \01x+UID=42,DC=example");
        // A value that is not a string is rendered as its encoding.
        let octets = attribute(O, tlv(OCTET_STRING, &[0xff]));
        assert_eq!(rfc4514(&tlv(SET, &octets)).unwrap(), "O=#0401ff");
        assert_eq!(rfc4514(&rdn(CN, UTF8, &[0xff])).unwrap(), "CN=#0c01ff");
        assert_eq!(rfc4514(&[]).unwrap(), "");
    }

    #[test]
    fn object_identifiers_in_dotted_form() {
        let dotted = |oid: &[u8]| match attributes_type(oid).unwrap() {
            AttributeType::Dotted(d) => d,
            AttributeType::Short(s) => s.to_string(),
        };
        assert_eq!(
            dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]),
            "1.2.840.113549.1.9.1"
        );
        assert_eq!(dotted(&[0x88, 0x37, 0x03]), "2.999.3");
        assert_eq!(dotted(CN), "CN");
        assert!(attributes_type(&[0x55, 0x84]).is_err(), "truncated");
        assert!(attributes_type(&[]).is_err());
        assert!(attributes_type(&[0xff; 12]).is_err(), "too large");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let der = certificate(&rdn(CN, UTF8, b"client"), &[]);
        for cut in [0, 1, 2, 10, der.len() / 2, der.len() - 1] {
            assert!(identity(&der[..cut]).is_err(), "cut at {cut}");
        }
        assert!(identity(&[0x30, 0x80, 0, 0]).is_err(), "indefinite length");
        assert!(
            identity(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err(),
            "oversized length"
        );
        assert!(identity(&[0x1f, 0x01, 0x00]).is_err(), "multi-byte tag");
        let mut flipped = der.clone();
        for i in 0..flipped.len() {
            for mask in [0x01, 0x80, 0xff] {
                flipped[i] ^= mask;
                let _ = identity(&flipped);
                flipped[i] ^= mask;
            }
        }
    }
}
