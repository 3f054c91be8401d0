//! The HTTP/1 framing guard in front of hyper: whatever the client sends, in
//! whatever pieces, the guard never panics and never invents bytes. hyper
//! reads either exactly what was sent, or a prefix of it followed by the
//! poison request line (with the rejection recorded), and the guard only
//! holds bytes back while an upgrade outcome is awaited.
#![no_main]

use std::{
    io,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::FutureExt;
use libfuzzer_sys::fuzz_target;
use sidetrace::smuggling::GuardedIo;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

const POISON: &[u8] = b"\0REJECTED\r\n\r\n";

/// Hands out its bytes in pieces of varying size, then end of input.
struct Pieces<'a> {
    data: &'a [u8],
    pos: usize,
    sizes: &'a [u8],
    turn: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let size = this.sizes.get(this.turn % this.sizes.len().max(1)).copied();
        this.turn += 1;
        let step = usize::from(size.unwrap_or(255)).max(1);
        let n = step.min(dst.remaining()).min(this.data.len() - this.pos);
        dst.put_slice(&this.data[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    // First byte: how many piece sizes follow; next byte: the upgrade
    // outcomes to report (one bit each); the rest is what the client sends.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8).min(rest.len());
    let (sizes, rest) = rest.split_at(n);
    let Some((&outcomes, input)) = rest.split_first() else {
        return;
    };
    let _rt = runtime().enter();
    let io = Pieces {
        data: input,
        pos: 0,
        sizes,
        turn: 0,
    };
    let (mut guarded, handle) = GuardedIo::new(io, Duration::from_secs(5));
    let mut out = Vec::new();
    let mut chunk = [0; 97];
    let mut reported = 0;
    loop {
        match guarded.read(&mut chunk).now_or_never() {
            Some(Ok(0)) => break,
            Some(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            Some(Err(e)) => panic!("read failed: {e}"),
            None => {
                // Held back: only legitimate while an upgrade is pending.
                assert!(reported < 64, "held without end after {reported} outcomes");
                handle.upgrade_outcome(outcomes >> (reported % 8) & 1 == 1);
                reported += 1;
            }
        }
    }
    match handle.rejection() {
        None => assert_eq!(out, input, "bytes changed without a rejection"),
        Some(why) => {
            assert!(!why.reason().is_empty());
            assert!(out.ends_with(POISON), "rejected without the poison line");
            let kept = &out[..out.len() - POISON.len()];
            assert!(
                input.starts_with(kept),
                "bytes before the rejection changed"
            );
        }
    }
});
