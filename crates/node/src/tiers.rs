//! Handles on the index and the stores: in-process (`strata serve`), over
//! HTTP through the clients beside their servers (`index::client`,
//! `store::client`), or (the index) in PostgreSQL. Same calls either way,
//! so the node logic has one path.

use std::sync::Arc;

use bytes::Bytes;
use index::{BlobMeta, Committed, Index, Listing};
use store::client::StoreClient;
use store::Store;

use crate::{Error, Result};

/// The name index: any [`index::Index`] backend — in-process redb
/// (`strata serve`), an index member over HTTP, or PostgreSQL (a cluster).
/// The node maps its errors to its own.
#[derive(Clone)]
pub struct IndexHandle(Arc<dyn Index>);

fn index_err(e: index::Error) -> Error {
    match e {
        index::Error::Invalid(detail) => Error::Rejected {
            tier: "index".into(),
            detail,
        },
        e => Error::Unavailable {
            tier: "index".into(),
            detail: e.to_string(),
        },
    }
}

impl IndexHandle {
    /// Wraps a backend.
    pub fn new(backend: Arc<dyn Index>) -> IndexHandle {
        IndexHandle(backend)
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Index> {
        &self.0
    }

    /// Looks `key` up.
    pub async fn get(&self, key: &str) -> Result<Option<BlobMeta>> {
        self.0.get(key).await.map_err(index_err)
    }

    /// Commits `meta` for `key`; returns its commit number and the
    /// replaced record.
    pub async fn put(&self, key: &str, meta: &BlobMeta) -> Result<Committed> {
        self.0.put(key, meta).await.map_err(index_err)
    }

    /// Removes `key`; returns the delete's commit number and what it held
    /// (`previous: None` if absent).
    pub async fn delete(&self, key: &str) -> Result<Committed> {
        self.0.delete(key).await.map_err(index_err)
    }

    /// A listing page by prefix, or by tag when `tag` is set.
    pub async fn list(
        &self,
        prefix: &str,
        tag: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Listing> {
        match tag {
            Some(t) => self.0.list_tag(t, after, limit).await,
            None => self.0.list(prefix, after, limit).await,
        }
        .map_err(index_err)
    }

    /// Replaces `key`'s replica list if it still names blob `id`; false
    /// when the key changed meanwhile (see [`Index::set_replicas`]).
    pub async fn set_replicas(&self, key: &str, id: u64, replicas: &[String]) -> Result<bool> {
        self.0
            .set_replicas(key, id, replicas)
            .await
            .map_err(index_err)
    }

    /// Reserves `count` blob ids; returns the first.
    pub async fn alloc_ids(&self, count: u64) -> Result<u64> {
        self.0.alloc_ids(count).await.map_err(index_err)
    }

    /// A commit number for a put about to be written.
    pub async fn next_version(&self) -> Result<u64> {
        self.0.next_version().await.map_err(index_err)
    }
}

/// Where one store is.
#[derive(Clone)]
pub enum StoreHandle {
    /// Same process.
    Local(Arc<Store>),
    /// Another process, through the client beside the store's server.
    Remote(StoreClient),
}

/// The node's error for a store's: a refusal over HTTP maps by its status
/// as the same error in process would.
fn store_err(name: &str, e: store::Error) -> Error {
    let tier = name.to_owned();
    match e {
        store::Error::NotFound(_) => Error::NotFound,
        store::Error::Corrupt { .. } => Error::Corrupt {
            tier,
            detail: e.to_string(),
        },
        store::Error::Full { .. } => Error::Full {
            tier,
            detail: e.to_string(),
        },
        store::Error::TooLarge(_)
        | store::Error::MetaTooLarge(_)
        | store::Error::BadRange { .. } => Error::Rejected {
            tier,
            detail: e.to_string(),
        },
        store::Error::Answered {
            status, ref code, ..
        } => {
            let detail = e.to_string();
            match status {
                404 => Error::NotFound,
                507 => Error::Full { tier, detail },
                500 if code == "corrupt" => Error::Corrupt { tier, detail },
                500..=599 => Error::Unavailable { tier, detail },
                _ => Error::Rejected { tier, detail },
            }
        }
        other => Error::Unavailable {
            tier,
            detail: other.to_string(),
        },
    }
}

impl StoreHandle {
    /// Writes a blob with its needle metadata (durable on success).
    pub async fn put(&self, name: &str, id: u64, meta: Bytes, body: Bytes) -> Result<()> {
        match self {
            StoreHandle::Local(s) => s.put(id, meta, body).await,
            StoreHandle::Remote(c) => c.put(id, meta, body).await,
        }
        .map_err(|e| store_err(name, e))
    }

    /// Reads from a store in this process without waiting: `None` for a
    /// remote one. `verify`: check the whole needle's CRC (a whole-blob
    /// read only); otherwise the bytes are a slice of the volume's mapping,
    /// as durably written and as the scrub keeps verifying.
    pub fn get_mapped(
        &self,
        name: &str,
        id: u64,
        range: (u64, u64),
        verify: bool,
    ) -> Option<Result<Bytes>> {
        let StoreHandle::Local(s) = self else {
            return None;
        };
        let r = if verify {
            s.get(id).map(|d| {
                let (a, b) = (range.0 as usize, (range.1 as usize).min(d.len()));
                d.slice(a.min(b)..b)
            })
        } else {
            s.get_range(id, range.0, range.1)
        };
        Some(r.map_err(|e| store_err(name, e)))
    }

    /// Where bytes `range` of a blob lie in a volume file of a store in
    /// this process (for `sendfile`); `None` for a remote store.
    pub fn extent(&self, name: &str, id: u64, range: (u64, u64)) -> Option<Result<store::Extent>> {
        let StoreHandle::Local(s) = self else {
            return None;
        };
        Some(
            s.extent(id, range.0, range.1)
                .map_err(|e| store_err(name, e)),
        )
    }

    /// Verifies a whole blob of a store in this process and says where its
    /// bytes lie (for `sendfile`); `None` for a remote store.
    pub fn verified_extent(&self, name: &str, id: u64) -> Option<Result<store::Extent>> {
        let StoreHandle::Local(s) = self else {
            return None;
        };
        Some(s.verified_extent(id).map_err(|e| store_err(name, e)))
    }

    /// Reads a blob, or bytes `start..end` of it.
    pub async fn get(&self, name: &str, id: u64, range: Option<(u64, u64)>) -> Result<Bytes> {
        match self {
            StoreHandle::Local(s) => match range {
                None => s.get(id),
                Some((a, b)) => s.get_range(id, a, b),
            },
            StoreHandle::Remote(c) => c.get(id, range).await,
        }
        .map_err(|e| store_err(name, e))
    }

    /// Several small blobs of one remote store in one round trip, each
    /// answered on its own; `None` for a store in this process.
    pub async fn mget(&self, name: &str, ids: &[u64]) -> Option<Result<Vec<(u64, Result<Bytes>)>>> {
        let StoreHandle::Remote(c) = self else {
            return None;
        };
        Some(
            c.mget(ids)
                .await
                .map(|items| {
                    items
                        .into_iter()
                        .map(|(id, r)| (id, r.map_err(|e| store_err(name, e))))
                        .collect()
                })
                .map_err(|e| store_err(name, e)),
        )
    }

    /// The needle metadata of a blob's copy here.
    pub async fn meta(&self, name: &str, id: u64) -> Result<Bytes> {
        match self {
            StoreHandle::Local(s) => s.meta(id),
            StoreHandle::Remote(c) => c.meta(id).await,
        }
        .map_err(|e| store_err(name, e))
    }

    /// The store's volumes and their generations.
    pub async fn volumes(&self, name: &str) -> Result<Vec<(u16, u64)>> {
        match self {
            StoreHandle::Local(s) => Ok(s.volumes()),
            StoreHandle::Remote(c) => c.volumes().await.map_err(|e| store_err(name, e)),
        }
    }

    /// One page of a volume's needle heads (see `store::heads`);
    /// `Ok(None)` when the volume was compacted since `generation` (list it
    /// again from the start).
    pub async fn heads(
        &self,
        name: &str,
        volume: u16,
        from: u64,
        generation: Option<u64>,
    ) -> Result<Option<store::HeadPage>> {
        let page = match self {
            StoreHandle::Local(s) => s.heads(volume, from, generation, 4096),
            StoreHandle::Remote(c) => c.heads(volume, from, generation, 4096).await,
        };
        match page {
            Ok(p) => Ok(Some(p)),
            Err(store::Error::Moved { .. }) => Ok(None),
            Err(e) => Err(store_err(name, e)),
        }
    }

    /// Opens a remote blob as a byte stream (headers received, body not
    /// yet read), with the client's per-request timeout. `None` for an
    /// in-process store, whose reads need no streaming.
    pub async fn open_stream(
        &self,
        name: &str,
        id: u64,
    ) -> Option<Result<(hyper::body::Incoming, std::time::Duration)>> {
        match self {
            StoreHandle::Local(_) => None,
            StoreHandle::Remote(c) => Some(
                c.open(id)
                    .await
                    .map(|b| (b, c.timeout()))
                    .map_err(|e| store_err(name, e)),
            ),
        }
    }

    /// Deletes a blob; its tombstone carries `meta` (why).
    pub async fn delete(&self, name: &str, id: u64, meta: Bytes) -> Result<()> {
        match self {
            StoreHandle::Local(s) => s.delete(id, meta).await,
            StoreHandle::Remote(c) => c.delete(id, meta).await,
        }
        .map_err(|e| store_err(name, e))
    }

    /// True if the store answers its health check.
    pub async fn healthy(&self, _name: &str) -> bool {
        match self {
            StoreHandle::Local(_) => true,
            StoreHandle::Remote(c) => c.healthy().await,
        }
    }
}

/// A store as the node knows it.
#[derive(Clone)]
pub struct StoreMember {
    /// Cluster-file name (recorded in [`BlobMeta::replicas`]).
    pub name: String,
    /// How to reach it.
    pub handle: StoreHandle,
}
