//! The sink's capture request parser (gzip, JSON, PostHog's rules) on arbitrary bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = butler_agent::sink::capture::accept(data, 1 << 20);
});
