//! Properties of strata's parsers and crash recovery.
//!
//! Each function takes arbitrary bytes and panics when a property does not
//! hold. The same functions are driven two ways: by the cargo-fuzz targets
//! under `fuzz/` (coverage-guided, nightly, run by hand for minutes or
//! hours) and by `tests/props.rs` in the normal test suite (proptest on
//! stable, plus a replay of every committed fuzz corpus file, so a crash
//! once found stays a regression test).

mod input;
mod parsers;
mod volume;

pub use input::Input;
pub use parsers::{beanstalk, config, memcached, range};
pub use volume::volume;
