//! `cargo +nightly fuzz run volume`: see fuzzing::volume for the property.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::volume(data));
