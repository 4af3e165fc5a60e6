//! [`Index`]: everything a request node asks of the name index, as one
//! seam with three implementations — [`IndexDb`] (redb, in-process),
//! [`crate::client::IndexClient`] (an index member over HTTP) and
//! [`crate::pg::PgIndex`] (PostgreSQL, which a cluster's nodes talk to
//! directly). One model test suite (`tests/model.rs`) runs against each.

use async_trait::async_trait;

use crate::meta::{BlobMeta, Committed, Listing};
use crate::{IndexDb, Result};

/// The name index as the node sees it. Writes are durable when they
/// return; every put and every delete of a present key takes the next
/// commit number, so numbers order the changes of a key.
#[async_trait]
pub trait Index: Send + Sync + 'static {
    /// Looks `key` up.
    async fn get(&self, key: &str) -> Result<Option<BlobMeta>>;
    /// Commits `meta` under `key` with `meta.version` as its commit number
    /// (taken from [`Index::next_version`] before the blob was written, so
    /// the needles carry it too), or the next number when that is 0;
    /// returns the number and the record replaced.
    async fn put(&self, key: &str, meta: &BlobMeta) -> Result<Committed>;
    /// A commit number for a put about to be written: above every change
    /// committed before the call.
    async fn next_version(&self) -> Result<u64>;
    /// Removes `key`; returns the delete's commit number (0 when the key
    /// was absent) and what it held.
    async fn delete(&self, key: &str) -> Result<Committed>;
    /// Keys starting with `prefix`, in byte order, strictly after `after`,
    /// at most `limit` (clamped to 1..=[`crate::MAX_LIST_LIMIT`]).
    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Listing>;
    /// Keys carrying `tag`, in byte order, strictly after `after`.
    async fn list_tag(&self, tag: &str, after: Option<&str>, limit: usize) -> Result<Listing>;
    /// Reserves `count` consecutive blob ids (1..=2^20) in a committed
    /// change; returns the first. No id is ever handed out twice.
    async fn alloc_ids(&self, count: u64) -> Result<u64>;
    /// Replaces `key`'s replica list if it still names blob `id`; false when
    /// the key was overwritten or deleted meanwhile. Keeps the version.
    async fn set_replicas(&self, key: &str, id: u64, replicas: &[String]) -> Result<bool>;
    /// This backend's counters for a role's registry (none when the index
    /// lives in another process, which exports its own).
    fn metrics_collector(&self) -> Option<prom::Group> {
        None
    }
    /// Which backend: `redb`, `remote` or `postgres`.
    fn backend(&self) -> &'static str;
}

#[async_trait]
impl Index for IndexDb {
    async fn get(&self, key: &str) -> Result<Option<BlobMeta>> {
        IndexDb::get(self, key)
    }
    async fn put(&self, key: &str, meta: &BlobMeta) -> Result<Committed> {
        self.put_versioned(key.to_owned(), meta.clone()).await
    }
    async fn delete(&self, key: &str) -> Result<Committed> {
        self.delete_versioned(key.to_owned()).await
    }
    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Listing> {
        IndexDb::list(self, prefix, after, limit)
    }
    async fn list_tag(&self, tag: &str, after: Option<&str>, limit: usize) -> Result<Listing> {
        IndexDb::list_tag(self, tag, after, limit)
    }
    async fn alloc_ids(&self, count: u64) -> Result<u64> {
        IndexDb::alloc_ids(self, count).await
    }
    async fn next_version(&self) -> Result<u64> {
        Ok(IndexDb::next_version(self))
    }
    async fn set_replicas(&self, key: &str, id: u64, replicas: &[String]) -> Result<bool> {
        IndexDb::set_replicas(self, key.to_owned(), id, replicas.to_vec()).await
    }
    fn metrics_collector(&self) -> Option<prom::Group> {
        Some(self.metrics.collector())
    }
    fn backend(&self) -> &'static str {
        "redb"
    }
}
