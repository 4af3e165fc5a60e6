//! strata's request node: the public HTTP API composed from the tiers.
//!
//! A [`Node`] shares nothing with other nodes: it holds handles on the name
//! index ([`IndexHandle`]) and the stores ([`StoreHandle`]), each either
//! in-process (`strata serve`) or remote (a cluster). Writes go to R stores
//! picked by rendezvous hashing over the healthy ones, then commit the index
//! entry (the commit point). Reads look the key up and read one replica,
//! failing over to the next. [`api::router`] is the HTTP surface.
//!
//! Errors of the tier clients are one enum, [`Error`].

pub mod api;
mod batch;
mod caching;
pub mod direct;
mod error;
mod health;
pub mod jobs;
mod keys;
mod metrics;
mod node;
pub mod objects;
pub mod ready;
pub mod reindex;
pub mod repair;
mod reply;
pub mod search;
pub mod session;
mod streaming;
pub mod thumbs;
mod tiers;
mod upkeep;

pub use caching::{Caching, CachingOptions, GlobalCache};
pub use error::{Error, Result};
pub use keys::{validate_key, MAX_KEY_BYTES};
pub use metrics::NodeMetrics;
pub use node::{MetricsSection, Node, NodeOptions, StoreMember, WriteSpec};
pub use streaming::StreamBody;
pub use tiers::{IndexHandle, StoreHandle};
