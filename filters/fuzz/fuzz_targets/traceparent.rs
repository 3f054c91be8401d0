//! W3C `traceparent` and `tracestate`: never panic; a parsed context is valid
//! and re-encodes to the same ids.
#![no_main]

use filters::trace::propagation::w3c;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(tp) = w3c::parse_traceparent(data) {
        assert!(tp.trace_id.is_valid());
        assert!(tp.parent_id.is_valid());
        assert_eq!(&tp.trace_id.to_hex()[..], &data[3..35]);
        assert_eq!(&tp.parent_id.to_hex()[..], &data[36..52]);
    }
    let _ = w3c::valid_tracestate(data);
});
