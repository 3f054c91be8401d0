use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{parse::MAX_HEADERS, *};

async fn through(input: &[u8]) -> (Vec<u8>, Option<Rejection>) {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    client.write_all(input).await.unwrap();
    client.shutdown().await.unwrap();
    let (mut guarded, handle) = GuardedIo::new(server, Duration::from_secs(5));
    let mut out = Vec::new();
    guarded.read_to_end(&mut out).await.unwrap();
    (out, handle.rejection())
}

/// Hands out its bytes `step` at a time, then end of input.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    step: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = this
            .step
            .min(dst.remaining())
            .min(this.data.len() - this.pos);
        dst.put_slice(&this.data[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// Reads what the guard hands on, in small reads: true at end of input,
/// false when it holds bytes back.
fn drain(guarded: &mut GuardedIo<Trickle>, out: &mut Vec<u8>) -> bool {
    let mut chunk = [0; 61];
    loop {
        match guarded.read(&mut chunk).now_or_never() {
            None => return false,
            Some(Ok(0)) => return true,
            Some(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            Some(Err(e)) => panic!("read failed: {e}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Everything reaches hyper unchanged.
    Passes,
    /// `pass` reaches hyper, then [`POISON`] and end of input.
    Rejected(Rejection),
}
use Expect::{Passes, Rejected};
use Rejection::{ConflictingFraming, InvalidContentLength, UnparseableFraming};

struct Probe {
    name: &'static str,
    /// Bytes that reach hyper as sent before anything else happens.
    pass: Vec<u8>,
    /// Bytes after them: replaced when rejected, held back when there is
    /// an outcome to report.
    rest: Vec<u8>,
    /// `Some`: the guard must hold everything after `pass` until this
    /// upgrade outcome is reported; `None`: it must never hold.
    outcome: Option<bool>,
    expect: Expect,
}

fn probe(
    name: &'static str,
    pass: impl AsRef<[u8]>,
    rest: impl AsRef<[u8]>,
    outcome: Option<bool>,
    expect: Expect,
) -> Probe {
    Probe {
        name,
        pass: pass.as_ref().to_vec(),
        rest: rest.as_ref().to_vec(),
        outcome,
        expect,
    }
}

const CL_TE: &[u8] = b"POST /evil HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n";
const CHUNKED: &[u8] = b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
const WS: &[u8] =
    b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";
const CONNECT: &[u8] = b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n";

fn probes() -> Vec<Probe> {
    let many_headers = [
        &b"GET / HTTP/1.1\r\n"[..],
        &b"x: y\r\n".repeat(MAX_HEADERS + 2),
        b"\r\n",
        CL_TE,
    ]
    .concat();
    let oversized = [&b"GET / HTTP/1.1\r\nx: "[..], &b"a".repeat(MAX_HEAD + 1)].concat();
    let cat = |parts: &[&[u8]]| parts.concat();
    #[rustfmt::skip]
    let probes = vec![
        probe("plain requests", b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nt: 1\r\n\r\nGET /c HTTP/1.1\r\n\r\n", b"", None, Passes),
        probe("bare-LF requests", b"GET / HTTP/1.1\nhost: x\n\nPOST / HTTP/1.1\ncontent-length: 2\n\nhiGET / HTTP/1.1\r\nhost: x\n\r\n", b"", None, Passes),
        probe("CRLF smuggle", b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n", CL_TE, None, Rejected(ConflictingFraming)),
        probe("CL+TE first", b"", CL_TE, None, Rejected(ConflictingFraming)),
        probe("bare-LF smuggle", b"GET / HTTP/1.1\nhost: x\n\n", b"POST / HTTP/1.1\nhost: x\ncontent-length: 6\ntransfer-encoding: chunked\n\n0\n\nGET /admin HTTP/1.1\nhost: x\n\n", None, Rejected(ConflictingFraming)),
        probe("LF CRLF head end smuggle", b"GET / HTTP/1.1\r\nhost: x\n\r\n", CL_TE, None, Rejected(ConflictingFraming)),
        probe("blank lines around heads", b"\r\n\nGET / HTTP/1.1\r\n\r\n\r\n", CL_TE, None, Rejected(ConflictingFraming)),
        probe("head-like body bytes", b"POST /a HTTP/1.1\r\ncontent-length: 59\r\n\r\nGET / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: x\r\n\r\n", b"", None, Passes),
        probe("Upgrade switched, then anything", WS, cat(&[b"\x81\x05hello", CL_TE]), Some(true), Passes),
        probe("Upgrade not switched, then a request", WS, b"GET /next HTTP/1.1\r\n\r\n", Some(false), Passes),
        probe("Upgrade not switched, then smuggle", WS, CL_TE, Some(false), Rejected(ConflictingFraming)),
        probe("UPGRADE not switched, then smuggle", b"GET / HTTP/1.0\r\nUPGRADE: x\r\n\r\n", CL_TE, Some(false), Rejected(ConflictingFraming)),
        probe("Upgrade with a body not switched, then smuggle", b"POST /u HTTP/1.1\r\nupgrade: h2c\r\ncontent-length: 5\r\n\r\nhello", CL_TE, Some(false), Rejected(ConflictingFraming)),
        probe("Upgrade with a chunked body not switched, then smuggle", b"POST /u HTTP/1.1\r\nupgrade: h2c\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", CL_TE, Some(false), Rejected(ConflictingFraming)),
        probe("CONNECT switched, then anything", CONNECT, cat(&[b"\x16\x03\x01\x00\x05", CL_TE]), Some(true), Passes),
        probe("CONNECT not switched, then smuggle", CONNECT, CL_TE, Some(false), Rejected(ConflictingFraming)),
        probe("unparseable chunk size", CHUNKED, b"zz\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n", None, Rejected(UnparseableFraming)),
        probe("junk after a chunk size", cat(&[CHUNKED, b"5"]), b"x\r\nhello\r\n0\r\n\r\n", None, Rejected(UnparseableFraming)),
        probe("chunk size over u64", cat(&[CHUNKED, b"FFFFFFFFFFFFFFFF"]), b"F\r\n", None, Rejected(UnparseableFraming)),
        probe("bare-LF chunk-size line", cat(&[CHUNKED, b"5"]), b"\nhello\r\n0\r\n\r\n", None, Rejected(UnparseableFraming)),
        probe("bare LF in a chunk extension", cat(&[CHUNKED, b"5;a=b"]), b"\nhello\r\n0\r\n\r\n", None, Rejected(UnparseableFraming)),
        probe("chunk data without CRLF", cat(&[CHUNKED, b"5\r\nhello"]), b"XX\r\n0\r\n\r\n", None, Rejected(UnparseableFraming)),
        probe("bare LF ends no trailers", cat(&[CHUNKED, b"0\r\nx: y\n\nGET /s HTTP/1.1\r\ncontent-length: 99\r\n\r\n"]), CL_TE, None, Rejected(ConflictingFraming)),
        probe("chunked with spaces and trailers", cat(&[CHUNKED, b"5 \t;x=\"a b\"\r\nhello\r\n00\r\na: 1\r\nb: 2\r\n\r\nGET / HTTP/1.1\r\n\r\n"]), b"", None, Passes),
        probe("TE gzip", b"GET / HTTP/1.1\r\n\r\n", b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n", None, Rejected(UnparseableFraming)),
        probe("TE chunked, gzip", b"", b"POST / HTTP/1.1\r\ntransfer-encoding: chunked, gzip\r\n\r\n0\r\n\r\n", None, Rejected(UnparseableFraming)),
        probe("TE chunked then TE gzip", b"", b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ntransfer-encoding: gzip\r\n\r\n0\r\n\r\n", None, Rejected(UnparseableFraming)),
        probe("TE then CL", b"", b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n0\r\n\r\n", None, Rejected(ConflictingFraming)),
        probe("CL 18446744073709551615", b"", b"POST / HTTP/1.1\r\ncontent-length: 18446744073709551615\r\n\r\n", None, Rejected(InvalidContentLength)),
        probe("CL 18446744073709551614", b"", b"POST / HTTP/1.1\r\ncontent-length: 18446744073709551614\r\n\r\n", None, Rejected(InvalidContentLength)),
        probe("CL 18446744073709551613", b"POST / HTTP/1.1\r\ncontent-length: 18446744073709551613\r\n\r\nstreaming", b"", None, Passes),
        probe("CL over u64", b"", b"POST / HTTP/1.1\r\ncontent-length: 99999999999999999999\r\n\r\n", None, Rejected(InvalidContentLength)),
        probe("CL +5", b"GET / HTTP/1.1\r\n\r\n", b"POST / HTTP/1.1\r\ncontent-length: +5\r\n\r\nhello", None, Rejected(InvalidContentLength)),
        probe("CL 5x", b"", b"POST / HTTP/1.1\r\ncontent-length:  5x\r\n\r\nhello", None, Rejected(InvalidContentLength)),
        probe("CL list", b"", b"POST / HTTP/1.1\r\ncontent-length: 5, 5\r\n\r\nhello", None, Rejected(InvalidContentLength)),
        probe("differing duplicate CLs", b"", b"POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!", None, Rejected(InvalidContentLength)),
        probe("equal duplicate CLs", b"POST / HTTP/1.1\r\ncontent-length: 5\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n", b"", None, Passes),
        probe("head httparse refuses", b"GET / HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nno colon\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n", None, Rejected(UnparseableFraming)),
        probe("lone CR in a head", b"", b"GET / HTTP/1.1\rhost: x\r\n\r\n", None, Rejected(UnparseableFraming)),
        probe("too many headers", many_headers, b"", None, Passes),
        probe("head over the limit", oversized, b"", None, Passes),
        probe("HTTP/2 preface", cat(&[H2_PREFACE, b"\x00\x00\x00\x04\x00\x00\x00\x00\x00", CL_TE]), b"", None, Passes),
    ];
    probes
}

fn run(p: &Probe, step: usize) -> Result<(), String> {
    let input = [&p.pass[..], &p.rest].concat();
    let io = Trickle {
        data: input.clone(),
        pos: 0,
        step,
    };
    let (mut guarded, handle) = GuardedIo::new(io, Duration::from_secs(5));
    let mut out = Vec::new();
    let ended = drain(&mut guarded, &mut out);
    if let Some(switched) = p.outcome {
        if ended || out != p.pass {
            return Err(format!(
                "not held after the upgrade request: {:?}",
                String::from_utf8_lossy(&out)
            ));
        }
        if drain(&mut guarded, &mut out) {
            return Err("not held on a second read".into());
        }
        handle.upgrade_outcome(switched);
        if !drain(&mut guarded, &mut out) {
            return Err("still held after the outcome".into());
        }
    } else if !ended {
        return Err(format!(
            "held without an upgrade: {:?}",
            String::from_utf8_lossy(&out)
        ));
    }
    let (want, why) = match p.expect {
        Passes => (input, None),
        Rejected(why) => ([&p.pass[..], POISON].concat(), Some(why)),
    };
    if out != want {
        return Err(format!(
            "hyper would read {:?}",
            String::from_utf8_lossy(&out)
        ));
    }
    if handle.rejection() != why {
        return Err(format!("rejection {:?}", handle.rejection()));
    }
    Ok(())
}

#[tokio::test]
async fn hostile_inputs() {
    let mut failures = Vec::new();
    for p in probes() {
        // All at once, and a byte at a time.
        for step in [usize::MAX, 1] {
            if let Err(e) = run(&p, step) {
                failures.push(format!("{} (step {step}): {e}", p.name));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn plain_requests_pass_unchanged() {
    let input = b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nt: 1\r\n\r\nGET /c HTTP/1.1\r\n\r\n";
    let (out, rejected) = through(input).await;
    assert_eq!(out, input);
    assert_eq!(rejected, None);
}

#[tokio::test]
async fn conflicting_framing_stops_before_the_head() {
    let first = b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n";
    let evil = b"POST /evil HTTP/1.1\r\nhost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n";
    let (out, rejected) = through(&[&first[..], &evil[..]].concat()).await;
    assert_eq!(out, [&first[..], POISON].concat());
    assert_eq!(rejected, Some(Rejection::ConflictingFraming));
}

#[tokio::test]
async fn bare_lf_heads_are_followed() {
    let first = b"GET / HTTP/1.1\nhost: x\n\n";
    let evil = b"POST / HTTP/1.1\nhost: x\ncontent-length: 6\ntransfer-encoding: chunked\n\n0\n\nGET /admin HTTP/1.1\nhost: x\n\n";
    let (out, rejected) = through(&[&first[..], &evil[..]].concat()).await;
    assert_eq!(out, [&first[..], POISON].concat());
    assert_eq!(rejected, Some(Rejection::ConflictingFraming));
}

#[tokio::test]
async fn body_bytes_that_look_like_heads_are_not_heads() {
    let input = b"POST /a HTTP/1.1\r\ncontent-length: 59\r\n\r\nGET / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: x\r\n\r\n";
    let (out, rejected) = through(input).await;
    assert_eq!(out, input);
    assert_eq!(rejected, None);
}

#[tokio::test]
async fn http2_passes_through() {
    let input = [H2_PREFACE, b"\x00\x00\x00\x04\x00\x00\x00\x00\x00content-length: 1\r\ntransfer-encoding: chunked\r\n\r\n"].concat();
    let (out, rejected) = through(&input).await;
    assert_eq!(out, input);
    assert_eq!(rejected, None);
}

#[tokio::test]
async fn an_upgrade_not_switched_is_followed_by_inspection() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let (mut guarded, handle) = GuardedIo::new(server, Duration::from_secs(5));
    client.write_all(&[WS, CL_TE].concat()).await.unwrap();
    client.shutdown().await.unwrap();
    let mut head = vec![0; WS.len()];
    guarded.read_exact(&mut head).await.unwrap();
    assert_eq!(head, WS);
    // The read waits for the outcome and is woken by it.
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        guarded.read_to_end(&mut out).await.unwrap();
        out
    });
    tokio::task::yield_now().await;
    assert!(!reader.is_finished());
    handle.upgrade_outcome(false);
    assert_eq!(reader.await.unwrap(), POISON);
    assert_eq!(handle.rejection(), Some(Rejection::ConflictingFraming));
}

#[tokio::test]
async fn an_outcome_reported_before_the_body_ends_is_kept() {
    for (switched, want) in [(true, None), (false, Some(Rejection::ConflictingFraming))] {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let (mut guarded, handle) = GuardedIo::new(server, Duration::from_secs(5));
        let head = b"POST /u HTTP/1.1\r\nupgrade: x\r\ncontent-length: 5\r\n\r\n";
        client.write_all(head).await.unwrap();
        let mut out = vec![0; head.len()];
        guarded.read_exact(&mut out).await.unwrap();
        // The upstream answers before the body arrives.
        handle.upgrade_outcome(switched);
        client.write_all(&[b"hello", CL_TE].concat()).await.unwrap();
        client.shutdown().await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), guarded.read_to_end(&mut out));
        read.await.expect("outcome lost").unwrap();
        let tail: &[u8] = if switched { CL_TE } else { POISON };
        assert_eq!(out, [&b"hello"[..], tail].concat());
        assert_eq!(handle.rejection(), want);
    }
}

#[tokio::test]
async fn a_stale_outcome_decides_nothing() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let (mut guarded, handle) = GuardedIo::new(server, Duration::from_secs(5));
    handle.upgrade_outcome(true);
    client.write_all(&[WS, CL_TE].concat()).await.unwrap();
    client.shutdown().await.unwrap();
    let mut out = vec![0; WS.len()];
    guarded.read_exact(&mut out).await.unwrap();
    let mut more = [0; 1];
    assert!(guarded.read(&mut more).now_or_never().is_none(), "held");
    handle.upgrade_outcome(false);
    let mut out = Vec::new();
    guarded.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, POISON);
}

#[test]
fn is_upgrade_request_matches_the_guard() {
    let heads: [&[u8]; 7] = [
        b"GET / HTTP/1.1\r\n\r\n",
        WS,
        CONNECT,
        b"GET / HTTP/1.0\r\nUpGrAdE: x\r\n\r\n",
        b"connect x:1 HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nupgrade-insecure-requests: 1\r\ncontent-length: 0\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nconnection: upgrade\r\n\r\n",
    ];
    for head in heads {
        let Inspected::Request { upgrade, .. } = inspect_head(head) else {
            panic!("not a request: {head:?}");
        };
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(head).unwrap();
        let method = http::Method::from_bytes(req.method.unwrap().as_bytes()).unwrap();
        let mut map = http::HeaderMap::new();
        for h in req.headers.iter() {
            map.append(
                http::HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(h.value).unwrap(),
            );
        }
        assert_eq!(is_upgrade_request(&map, &method), upgrade, "{head:?}");
    }
}

#[test]
fn rejections_have_reasons() {
    for why in [
        Rejection::ConflictingFraming,
        Rejection::InvalidContentLength,
        Rejection::UnparseableFraming,
    ] {
        assert_eq!(Rejection::from_code(why.code()), Some(why));
        assert!(!why.reason().is_empty());
    }
    assert_eq!(
        Rejection::ConflictingFraming.reason(),
        "both Content-Length and Transfer-Encoding"
    );
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

#[tokio::test(start_paused = true)]
async fn a_silent_connection_times_out() {
    let (client, server) = tokio::io::duplex(1024);
    let (mut guarded, _) = GuardedIo::new(server, Duration::from_secs(10));
    let start = tokio::time::Instant::now();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), guarded.read_to_end(&mut out));
    let err = read.await.expect("no deadline").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    drop(client);
}

#[tokio::test(start_paused = true)]
async fn blank_lines_do_not_hold_off_the_first_deadline() {
    let (mut client, server) = tokio::io::duplex(1024);
    let (mut guarded, _) = GuardedIo::new(server, Duration::from_secs(10));
    let start = tokio::time::Instant::now();
    let read = async {
        let mut out = Vec::new();
        let err = guarded.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        start.elapsed()
    };
    let feed = async {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            client.write_all(b"\r\n").await.unwrap();
        }
    };
    let both = tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(read, feed) });
    let (elapsed, ()) = both.await.expect("no deadline");
    assert_eq!(elapsed, Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn no_deadline_in_bodies_between_requests_or_for_upgrades() {
    let (mut client, server) = tokio::io::duplex(1024);
    let (mut guarded, handle) = GuardedIo::new(server, Duration::from_secs(10));
    let mut buf = [0; 1024];
    let long = Duration::from_secs(60);

    // A body that pauses.
    let head = b"POST / HTTP/1.1\r\ncontent-length: 10\r\n\r\nhel";
    client.write_all(head).await.unwrap();
    let n = guarded.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], head);
    let paused = tokio::time::timeout(long, guarded.read(&mut buf)).await;
    assert!(paused.is_err(), "a paused body timed out: {paused:?}");

    // Idle keep-alive after the request.
    client.write_all(b"lo body").await.unwrap();
    let n = guarded.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"lo body");
    let idle = tokio::time::timeout(long, guarded.read(&mut buf)).await;
    assert!(idle.is_err(), "keep-alive idling timed out: {idle:?}");

    // Waiting for an upgrade outcome.
    client.write_all(WS).await.unwrap();
    let n = guarded.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], WS);
    let held = tokio::time::timeout(long, guarded.read(&mut buf)).await;
    assert!(held.is_err(), "an upgrade wait timed out: {held:?}");

    // The next head has a deadline again.
    handle.upgrade_outcome(false);
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let err = guarded.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
}
