//! Helpers shared by the integration tests of the `strata` binary (each
//! test file is its own crate; this module is compiled into each that
//! names it).

use std::path::Path;

/// The `strata` binary cargo built for these tests.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_strata"))
}
