//! The config loader on arbitrary bytes: never a panic, only `Ok` or a `ConfigError`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok((tree, _, _)) = butler_agent::config::parse_str(text, "fuzz.yaml") {
            let _ = butler_agent::telemetry::features::derive(&tree);
        }
    }
});
