//! `cargo +nightly fuzz run memcached`: see fuzzing::memcached for the property.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::memcached(data));
