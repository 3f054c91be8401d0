//! `x-trace-id` / `x-request-id`: never panic; an id round-trips through
//! its UUID form.
#![no_main]

use filters::trace::propagation::legacy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(id) = legacy::parse_id(data) {
        assert!(id.is_valid());
        assert_eq!(legacy::parse_id(&id.to_uuid()), Some(id));
        assert_eq!(legacy::parse_id(&id.to_hex()), Some(id));
    }
});
