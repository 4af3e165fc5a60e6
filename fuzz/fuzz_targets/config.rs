//! `cargo +nightly fuzz run config`: see fuzzing::config for the property.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::config(data));
