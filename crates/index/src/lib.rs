//! strata's name index (layer 0 of the multi-layer index).
//!
//! [`IndexDb`] maps a key to its [`BlobMeta`] (blob id, size, etag, content
//! type, creation time, replica stores, tags) in a redb B-tree. Because the
//! tree is sorted, prefix listings with cursor pagination and the by-tag view
//! ([`Listing`]) are range scans: no second copy of the data. The index also
//! hands out blob ids in leased blocks, so ids are dense and increasing,
//! which keeps the stores' needle maps compact. Writes are group-committed:
//! one redb transaction (one fsync) per batch of concurrent requests.
//! [`server::serve`] exposes it over internal HTTP.
//!
//! Seams: [`Index`] is everything a request node asks of the name index,
//! with three backends — [`IndexDb`] (redb, `strata serve` and an index
//! member), [`client::IndexClient`] (an index member over HTTP) and
//! [`pg::PgIndex`] (PostgreSQL: a cluster's nodes talk to the database
//! directly, and its replication keeps the names safe when a machine is
//! lost). The PostgreSQL plumbing under it ([`::pg::Db`]: pooled
//! connections, failover retries, migrations; [`pg::PgOptions`]) is the
//! `pg` crate's, shared with the queue's PostgreSQL backend.
//!
//! Errors are one enum, [`Error`].

mod backend;
pub mod client;
mod db;
mod error;
mod meta;
pub mod needle_meta;
pub mod pg;
pub mod recover;
pub mod server;

pub use backend::Index;
pub use db::{IndexDb, IndexMetrics};
pub use error::{Error, Result};
pub use meta::{BlobMeta, Chunk, Committed, Entry, Listing, PageRef, MAX_LIST_LIMIT};
pub use needle_meta::NeedleMeta;
