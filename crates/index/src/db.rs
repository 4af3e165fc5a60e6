//! [`IndexDb`]: the redb tables and the group-commit writer.
//!
//! Tables:
//! - `blobs`: key (`&str`) -> JSON-encoded [`BlobMeta`]
//! - `tags`: (tag, key) -> () — the by-tag view, kept in the same
//!   transaction as `blobs` so the two never disagree
//! - `counters`: `"next_id"` -> next unallocated blob id

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prom::IntCounter;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::meta::{BlobMeta, Committed, Entry, Listing, MAX_LIST_LIMIT};
use crate::{Error, Result};

const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
const TAGS: TableDefinition<(&str, &str), ()> = TableDefinition::new("tags");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// Key -> commit number of its delete, until a later put: a put that took
/// its number before the delete committed must not bring the key back.
const DELETED: TableDefinition<&str, u64> = TableDefinition::new("deleted");
const NEXT_ID: &str = "next_id";
const VERSION: &str = "version";

/// Counters exported on `/metrics` (the `prometheus` library's own).
#[derive(Debug, Clone)]
pub struct IndexMetrics {
    /// Key lookups.
    pub lookups: IntCounter,
    /// Keys written (put or delete).
    pub writes: IntCounter,
    /// Write transactions committed (one fsync each).
    pub commits: IntCounter,
    /// Listing pages served.
    pub listings: IntCounter,
}

impl Default for IndexMetrics {
    fn default() -> Self {
        IndexMetrics {
            lookups: prom::counter("strata_index_lookups_total", "Key lookups."),
            writes: prom::counter("strata_index_writes_total", "Keys put or deleted."),
            commits: prom::counter(
                "strata_index_commits_total",
                "Write transactions (one fsync each).",
            ),
            listings: prom::counter("strata_index_listings_total", "Listing pages served."),
        }
    }
}

impl IndexMetrics {
    /// The counters as one collector, for a role's registry.
    pub fn collector(&self) -> prom::Group {
        prom::Group::new().with_counters([
            &self.lookups,
            &self.writes,
            &self.commits,
            &self.listings,
        ])
    }
}

enum Op {
    Put {
        key: String,
        meta: BlobMeta,
        reply: oneshot::Sender<Result<Committed>>,
    },
    Delete {
        key: String,
        reply: oneshot::Sender<Result<Committed>>,
    },
    Alloc {
        count: u64,
        reply: oneshot::Sender<Result<u64>>,
    },
    SetReplicas {
        key: String,
        id: u64,
        replicas: Vec<String>,
        reply: oneshot::Sender<Result<bool>>,
    },
}

/// The name index over one redb file.
pub struct IndexDb {
    db: Arc<Database>,
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<Op>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// The last commit number handed out (by [`IndexDb::next_version`] or
    /// a commit); the stored counter follows it as changes commit.
    versions: Arc<AtomicU64>,
    /// Counters for `/metrics`.
    pub metrics: Arc<IndexMetrics>,
}

fn decode(key: &str, raw: &[u8]) -> Result<BlobMeta> {
    serde_json::from_slice(raw).map_err(|e| Error::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

impl IndexDb {
    /// Opens or creates `dir/index.redb` and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Arc<IndexDb>> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Db(redb::Error::Io(e)))?;
        let db = Arc::new(Database::create(dir.join("index.redb"))?);
        {
            let w = db.begin_write()?;
            w.open_table(BLOBS)?;
            w.open_table(TAGS)?;
            w.open_table(COUNTERS)?;
            w.open_table(DELETED)?;
            w.commit()?;
        }
        let last = {
            let r = db.begin_read()?;
            let c = r.open_table(COUNTERS)?;
            c.get(VERSION)?.map_or(0, |v| v.value())
        };
        let versions = Arc::new(AtomicU64::new(last));
        let (tx, rx) = mpsc::channel(4096);
        let metrics = Arc::new(IndexMetrics::default());
        let (wdb, wm, wv) = (db.clone(), metrics.clone(), versions.clone());
        let handle = std::thread::Builder::new()
            .name("index-writer".into())
            .spawn(move || writer(wdb, wm, wv, rx))
            .map_err(|e| Error::Db(redb::Error::Io(e)))?;
        Ok(Arc::new(IndexDb {
            db,
            tx: Some(tx),
            writer: Some(handle),
            versions,
            metrics,
        }))
    }

    async fn submit(&self, op: Op) -> Result<()> {
        self.tx
            .as_ref()
            .ok_or(Error::Closed)?
            .send(op)
            .await
            .map_err(|_| Error::Closed)
    }

    /// Looks a key up.
    pub fn get(&self, key: &str) -> Result<Option<BlobMeta>> {
        self.metrics.lookups.inc();
        let r = self.db.begin_read()?;
        let t = r.open_table(BLOBS)?;
        match t.get(key)? {
            Some(v) => Ok(Some(decode(key, v.value())?)),
            None => Ok(None),
        }
    }

    /// Commits `meta` under `key` (durable on return); returns what it replaced.
    pub async fn put(&self, key: String, meta: BlobMeta) -> Result<Option<BlobMeta>> {
        Ok(self.put_versioned(key, meta).await?.previous)
    }

    /// A commit number for a put about to be written: above every change
    /// committed so far. Not stored until a put commits with it (one that
    /// never does leaves a gap).
    pub fn next_version(&self) -> u64 {
        self.versions.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Commits `meta` under `key` (durable on return) with `meta.version`
    /// as its commit number, or the next one when that is 0; returns the
    /// number and what it replaced.
    pub async fn put_versioned(&self, key: String, meta: BlobMeta) -> Result<Committed> {
        let (reply, rx) = oneshot::channel();
        self.submit(Op::Put { key, meta, reply }).await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Removes `key` (durable on return); returns what it held.
    pub async fn delete(&self, key: String) -> Result<Option<BlobMeta>> {
        Ok(self.delete_versioned(key).await?.previous)
    }

    /// Removes `key` (durable on return); returns the delete's commit
    /// number (0 when the key was absent) and what it held.
    pub async fn delete_versioned(&self, key: String) -> Result<Committed> {
        let (reply, rx) = oneshot::channel();
        self.submit(Op::Delete { key, reply }).await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Reserves `count` consecutive blob ids; returns the first. The counter
    /// is committed before returning, so an id is never handed out twice,
    /// even across crashes.
    pub async fn alloc_ids(&self, count: u64) -> Result<u64> {
        crate::meta::check_count(count)?;
        let (reply, rx) = oneshot::channel();
        self.submit(Op::Alloc { count, reply }).await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Replaces the replica list of `key` if it still names blob `id`
    /// (durable on return); false when the key was overwritten or deleted
    /// meanwhile, which leaves it untouched. Not a change of the key's
    /// content: its version stays.
    pub async fn set_replicas(&self, key: String, id: u64, replicas: Vec<String>) -> Result<bool> {
        let (reply, rx) = oneshot::channel();
        self.submit(Op::SetReplicas {
            key,
            id,
            replicas,
            reply,
        })
        .await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Keys starting with `prefix`, strictly after `after`, at most `limit`.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Listing> {
        self.metrics.listings.inc();
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        let r = self.db.begin_read()?;
        let t = r.open_table(BLOBS)?;
        let start = match after {
            Some(a) if a >= prefix => a,
            _ => prefix,
        };
        let mut items = Vec::new();
        let mut next = None;
        for row in t.range(start..)? {
            let (k, v) = row?;
            let key = k.value();
            if Some(key) == after {
                continue;
            }
            if !key.starts_with(prefix) {
                break;
            }
            if items.len() == limit {
                next = items.last().map(|e: &Entry| e.key.clone());
                break;
            }
            items.push(Entry {
                key: key.to_owned(),
                meta: decode(key, v.value())?,
            });
        }
        Ok(Listing { items, next })
    }

    /// Keys carrying `tag`, sorted, strictly after `after`, at most `limit`.
    pub fn list_tag(&self, tag: &str, after: Option<&str>, limit: usize) -> Result<Listing> {
        self.metrics.listings.inc();
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        let r = self.db.begin_read()?;
        let tags = r.open_table(TAGS)?;
        let blobs = r.open_table(BLOBS)?;
        let mut items = Vec::new();
        let mut next = None;
        for row in tags.range((tag, after.unwrap_or(""))..)? {
            let (k, _) = row?;
            let (t, key) = k.value();
            if t != tag {
                break;
            }
            if Some(key) == after {
                continue;
            }
            if items.len() == limit {
                next = items.last().map(|e: &Entry| e.key.clone());
                break;
            }
            if let Some(v) = blobs.get(key)? {
                items.push(Entry {
                    key: key.to_owned(),
                    meta: decode(key, v.value())?,
                });
            }
        }
        Ok(Listing { items, next })
    }
}

impl Drop for IndexDb {
    /// Closes the queue and waits for the writer to finish its last batch,
    /// so that the database file is released when the handle is gone and can
    /// be opened again at once.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

/// The writer thread: drains queued ops into one transaction per batch.
fn writer(
    db: Arc<Database>,
    metrics: Arc<IndexMetrics>,
    versions: Arc<AtomicU64>,
    mut rx: mpsc::Receiver<Op>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        // Results are held until the commit succeeds: nobody hears "done"
        // before the batch is durable.
        let mut results: Vec<(Op, Result<Outcome>)> = Vec::with_capacity(batch.len());
        let committed = (|| -> Result<()> {
            let w = db.begin_write()?;
            {
                let mut blobs = w.open_table(BLOBS)?;
                let mut tags = w.open_table(TAGS)?;
                let mut counters = w.open_table(COUNTERS)?;
                let mut deleted = w.open_table(DELETED)?;
                let mut t = Tables {
                    blobs: &mut blobs,
                    tags: &mut tags,
                    counters: &mut counters,
                    deleted: &mut deleted,
                };
                for op in batch {
                    let res = apply(&op, &mut t, &versions);
                    results.push((op, res));
                }
            }
            w.commit()?;
            Ok(())
        })();
        metrics.commits.inc();
        for (op, res) in results {
            let res = match (&committed, res) {
                (Err(e), _) => Err(Error::Invalid(format!("commit failed: {e}"))),
                (Ok(()), r) => r,
            };
            match op {
                Op::Put { reply, .. } | Op::Delete { reply, .. } => {
                    metrics.writes.inc();
                    let _ = reply.send(res.map(|o| match o {
                        Outcome::Committed(c) => *c,
                        Outcome::Id(_) | Outcome::Updated(_) => Committed::default(),
                    }));
                }
                Op::Alloc { reply, .. } => {
                    let _ = reply.send(res.map(|o| match o {
                        Outcome::Id(id) => id,
                        _ => 0,
                    }));
                }
                Op::SetReplicas { reply, .. } => {
                    metrics.writes.inc();
                    let _ = reply.send(res.map(|o| matches!(o, Outcome::Updated(true))));
                }
            }
        }
    }
}

enum Outcome {
    Committed(Box<Committed>),
    Id(u64),
    Updated(bool),
}

/// The tables one write transaction changes.
struct Tables<'a, 't> {
    blobs: &'a mut redb::Table<'t, &'static str, &'static [u8]>,
    tags: &'a mut redb::Table<'t, (&'static str, &'static str), ()>,
    counters: &'a mut redb::Table<'t, &'static str, u64>,
    deleted: &'a mut redb::Table<'t, &'static str, u64>,
}

fn apply(op: &Op, t: &mut Tables, versions: &AtomicU64) -> Result<Outcome> {
    let Tables {
        blobs,
        tags,
        counters,
        deleted,
    } = t;
    match op {
        Op::Put { key, meta, .. } => {
            let version = match meta.version {
                0 => versions.fetch_add(1, Ordering::Relaxed) + 1,
                v => {
                    versions.fetch_max(v, Ordering::Relaxed);
                    v
                }
            };
            // The highest (commit number, blob id) holds the key, whatever
            // order the changes commit in: as recover-index and search see it.
            let current = blobs.get(key.as_str())?.map(|v| decode(key, v.value()));
            let current = current.transpose()?;
            let floor = match &current {
                Some(c) => (c.version, c.id),
                None => (
                    deleted.get(key.as_str())?.map_or(0, |v| v.value()),
                    u64::MAX,
                ),
            };
            if meta.version != 0 && floor > (version, meta.id) {
                return Ok(Outcome::Committed(Box::new(Committed {
                    version,
                    previous: None,
                    superseded: true,
                })));
            }
            record_version(counters, version)?;
            let mut meta = meta.clone();
            meta.version = version;
            let raw = serde_json::to_vec(&meta).map_err(|e| Error::Invalid(e.to_string()))?;
            blobs.insert(key.as_str(), raw.as_slice())?;
            deleted.remove(key.as_str())?;
            if let Some(p) = &current {
                for t in &p.tags {
                    tags.remove((t.as_str(), key.as_str()))?;
                }
            }
            for t in &meta.tags {
                tags.insert((t.as_str(), key.as_str()), ())?;
            }
            Ok(Outcome::Committed(Box::new(Committed {
                version,
                previous: current,
                superseded: false,
            })))
        }
        Op::Delete { key, .. } => {
            let prev = blobs.remove(key.as_str())?.map(|v| decode(key, v.value()));
            let prev = prev.transpose()?;
            if let Some(p) = &prev {
                for t in &p.tags {
                    tags.remove((t.as_str(), key.as_str()))?;
                }
            }
            let version = match prev {
                Some(_) => {
                    let v = versions.fetch_add(1, Ordering::Relaxed) + 1;
                    record_version(counters, v)?;
                    deleted.insert(key.as_str(), v)?;
                    v
                }
                None => 0,
            };
            Ok(Outcome::Committed(Box::new(Committed {
                version,
                previous: prev,
                superseded: false,
            })))
        }
        Op::SetReplicas {
            key, id, replicas, ..
        } => {
            let current = match blobs.get(key.as_str())? {
                Some(v) => decode(key, v.value())?,
                None => return Ok(Outcome::Updated(false)),
            };
            if current.id != *id {
                return Ok(Outcome::Updated(false));
            }
            let meta = BlobMeta {
                replicas: replicas.clone(),
                ..current
            };
            let raw = serde_json::to_vec(&meta).map_err(|e| Error::Invalid(e.to_string()))?;
            blobs.insert(key.as_str(), raw.as_slice())?;
            Ok(Outcome::Updated(true))
        }
        Op::Alloc { count, .. } => {
            // Ids start at 1: 0 is never a valid blob id.
            let next = counters.get(NEXT_ID)?.map_or(1, |v| v.value());
            counters.insert(NEXT_ID, next + count)?;
            Ok(Outcome::Id(next))
        }
    }
}

/// Stores commit number `v` as the last one if it is higher.
fn record_version(counters: &mut redb::Table<&str, u64>, v: u64) -> Result<()> {
    let last = counters.get(VERSION)?.map_or(0, |v| v.value());
    if v > last {
        counters.insert(VERSION, v)?;
    }
    Ok(())
}
