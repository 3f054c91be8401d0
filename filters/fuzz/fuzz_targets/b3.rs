//! B3 single and multi headers: never panic; parsed ids are valid.
#![no_main]

use filters::trace::propagation::b3;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(parsed) = b3::parse_single(data) {
        if let Some((trace, span)) = parsed.ids {
            assert!(trace.is_valid() && span.is_valid());
        }
    }
    // Split the input into the four multi-header values at 0xff bytes.
    let mut parts = data.split(|&b| b == 0xff);
    let (t, s, d, f) = (parts.next(), parts.next(), parts.next(), parts.next());
    if let Some(parsed) = b3::parse_multi(t, s, d, f) {
        if let Some((trace, span)) = parsed.ids {
            assert!(trace.is_valid() && span.is_valid());
        }
    }
});
