//! `cargo +nightly fuzz run range`: see fuzzing::range for the property.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::range(data));
