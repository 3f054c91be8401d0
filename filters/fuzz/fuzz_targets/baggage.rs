//! W3C `baggage`: never panic; accepted values respect the size limit.
#![no_main]

use filters::trace::propagation::baggage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if baggage::valid_baggage(data) {
        assert!(data.len() <= baggage::MAX_BAGGAGE_BYTES);
    }
});
