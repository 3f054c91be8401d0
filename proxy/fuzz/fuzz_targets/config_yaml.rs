//! The config loader: any text either loads or gets an error that says
//! something, never a panic; a config that loads loads the same way twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidetrace::config::parse_yaml;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_yaml(text) {
        Ok(config) => {
            let again = parse_yaml(text).expect("the same text loaded once");
            assert_eq!(format!("{config:?}"), format!("{again:?}"));
        }
        Err(e) => assert!(!e.to_string().trim().is_empty(), "empty config error"),
    }
});
