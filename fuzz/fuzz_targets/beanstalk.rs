//! `cargo +nightly fuzz run beanstalk`: see fuzzing::beanstalk for the property.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::beanstalk(data));
