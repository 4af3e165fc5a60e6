//! strata's cache tier.
//!
//! [`Cache`] is the engine: memory bounded in bytes (per-item overhead
//! included), memcached's TTL and CAS semantics, and S3-FIFO eviction
//! ([`shard`]) that resists scans and keeps hot small items when a large one
//! arrives; plain LRU is kept for comparison. [`server`] speaks memcached's
//! text protocol over TCP, so any memcached client works unchanged:
//! [`text`] parses it (meta commands in `text::meta`), [`meta`] runs the
//! meta commands, `reply` writes large values by reference.
//! [`client::CacheClient`] is the distributed client (a ketama ring over
//! the members), [`through`] the read-through mode, [`disk`] the node's
//! disk tier.
//!
//! Seams: [`Clock`] (the engine's time, injected in tests) and
//! [`through::Origin`] (where a read-through miss is fetched).
//!
//! Errors are one enum, [`Error`].

pub mod client;
mod clock;
pub mod disk;
mod engine;
mod engine_meta;
mod error;
pub mod meta;
mod reply;
pub mod server;
pub mod shard;
pub mod text;
pub mod through;

pub use clock::{Clock, Expiry, ManualClock, SystemClock};
pub use engine::{Arith, Cache, CacheConfig, EngineStats, Item, StoreMode, StoreResult};
pub use engine_meta::{MetaArith, MetaDeleted, MetaGet, MetaGot};
pub use error::Error;
pub use shard::Policy;
