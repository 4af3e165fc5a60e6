//! strata's full-text search over book pages.
//!
//! Book pages are hosted as images; their words are indexed here so pages
//! can be found by what is written on them. A [`Shard`] is one tantivy
//! index of pages {book, page number, key of the page image, text} with
//! BM25 ranking and phrase queries (positions are indexed). Answers are
//! nested — word -> book -> page — so a result is a short list of books,
//! each with its best pages and highlighted snippets, not a flood of pages.
//!
//! Pages are placed on shards by book (the cluster's ring), so a book's
//! pages are together and a query restricted to one book touches one shard.
//! Changes carry a version (the name index's commit counter for the page
//! image's key); a shard keeps the last version per key, so changes that
//! arrive out of order end with the newest. Scatter-gather over shards,
//! with partial answers when a shard is down, lives in the node
//! (`node::search`); [`server`] is a shard's internal HTTP API.
//!
//! Errors are one enum, [`Error`].

pub mod client;
mod error;
mod model;
pub mod server;
mod shard;

pub use error::{Error, Result};
pub use model::{
    Applied, BookHit, PageHit, PageOp, Query, Results, MAX_LIMIT, MAX_PAGES, MAX_QUERY_BYTES,
};
pub use shard::{book_id, Shard, ShardMetrics, ShardOptions};
