//! strata's request node: the public HTTP API composed from the tiers.
//!
//! A [`Node`] shares nothing with other nodes: it holds handles on the name
//! index ([`IndexHandle`]) and the stores ([`StoreHandle`]), each either
//! in-process (`strata serve`) or remote (a cluster). Writes go to R stores
//! picked by rendezvous hashing over the healthy ones, then commit the index
//! entry (the commit point). Reads look the key up and read one replica,
//! failing over to the next. [`api::router`] is the HTTP surface.
//!
//! The modules form layers with no import cycle:
//!
//! - Features that own their state and know nothing of a `Node` (each is
//!   built and tested alone): the tier handles and [`StoreMember`]
//!   (`tiers`), store health and its prober (`health`), read batching
//!   (`batch`), shared streams of big blobs (`streaming`), the cache tiers
//!   ([`Caching`]), the queue handle, queue names and job payloads
//!   ([`jobs`]), the search shards ([`search`]), keys, metrics, and the
//!   JSON error body (`reply`).
//! - [`Node`] (`node`): the write path, the read path and the id lease
//!   over those features; a write queues its own follow-up work (search
//!   changes, repairs, chunk deletes) through the queue handle.
//! - Work over a node: chunked objects ([`objects`]), direct reads for the
//!   gateway ([`direct`]), the jobs the workers run ([`workers`],
//!   [`repair`], `indexing`, `upkeep`), [`reindex`], sessions
//!   ([`session`]) and the HTTP API ([`api`]).
//!
//! Errors of the tier clients are one enum, [`Error`].

pub mod api;
mod batch;
mod caching;
pub mod direct;
mod error;
mod health;
mod indexing;
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
pub mod workers;

pub use caching::{Caching, CachingOptions, GlobalCache};
pub use error::{Error, Result};
pub use keys::{validate_key, MAX_KEY_BYTES};
pub use metrics::NodeMetrics;
pub use node::{MetricsSection, Node, NodeOptions, StoreMember, WriteSpec};
pub use streaming::StreamBody;
pub use tiers::{IndexHandle, StoreHandle};
