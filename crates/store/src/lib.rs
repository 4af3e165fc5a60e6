//! strata's blob store (layer 1 of the multi-layer index).
//!
//! A store keeps blobs as needles in append-only volume files, Haystack
//! style: [`needle`] is the on-disk record, [`NeedleMap`] the compact in-RAM
//! map from blob id to where its needle sits (16 bytes a blob), and
//! [`Store`] ties volumes, group-committed writes, index-file checkpoints,
//! crash recovery and online compaction together. Needles carry the node's
//! metadata (the key and its record), opaque here, which [`heads`] reads
//! back without the data so that the name index can be rebuilt from the
//! stores. [`server::serve`] exposes a store over internal HTTP and
//! [`client::StoreClient`] calls it (the wire format in one crate); the
//! writer reaches its files through the `storage` seam.
//!
//! Errors are one enum, [`Error`].

pub mod client;
mod compact;
mod error;
pub mod heads;
mod idx;
mod map;
mod metrics;
pub mod needle;
mod needle_map;
pub mod range;
mod scrub;
pub mod server;
mod store;
mod volume;

pub use compact::CompactReport;
pub use error::{Error, Result};
pub use heads::{Head, HeadPage};
pub use metrics::{DiskUse, Gauges, StoreMetrics};
pub use needle_map::{Loc, NeedleMap};
pub use scrub::ScrubReport;
pub use store::{Extent, OpenReport, Store, StoreOptions, VolStats};
pub use volume::{dat_path, idx_path, SUPERBLOCK_LEN};
