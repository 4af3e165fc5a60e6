//! Handles on the index and the stores: in-process (`strata serve`), over
//! HTTP, or (the index) in PostgreSQL. Same calls either way, so the node
//! logic has one path.

use std::sync::Arc;

use bytes::Bytes;
use hyper::Method;
use index::{BlobMeta, Committed, Index, Listing};
use store::Store;

use crate::http::{check, HttpClient};
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
    /// Another process.
    Remote {
        /// Base URL.
        base: String,
        /// Client.
        http: HttpClient,
    },
}

fn store_err(name: &str, e: store::Error) -> Error {
    match e {
        store::Error::NotFound(_) => Error::NotFound,
        store::Error::Corrupt { .. } => Error::Corrupt {
            tier: name.into(),
            detail: e.to_string(),
        },
        store::Error::Full { .. } => Error::Full {
            tier: name.into(),
            detail: e.to_string(),
        },
        store::Error::TooLarge(_)
        | store::Error::MetaTooLarge(_)
        | store::Error::BadRange { .. } => Error::Rejected {
            tier: name.into(),
            detail: e.to_string(),
        },
        other => Error::Unavailable {
            tier: name.into(),
            detail: other.to_string(),
        },
    }
}

impl StoreHandle {
    /// Writes a blob with its needle metadata (durable on success).
    pub async fn put(&self, name: &str, id: u64, meta: Bytes, body: Bytes) -> Result<()> {
        match self {
            StoreHandle::Local(s) => s.put(id, meta, body).await.map_err(|e| store_err(name, e)),
            StoreHandle::Remote { base, http } => {
                // One body: the metadata, then the blob.
                let mut both = bytes::BytesMut::with_capacity(meta.len() + body.len());
                both.extend_from_slice(&meta);
                both.extend_from_slice(&body);
                let headers = [(store::server::META_LEN, meta.len().to_string())];
                let r = http
                    .send(
                        name,
                        Method::PUT,
                        &format!("{base}/blobs/{id}"),
                        &headers,
                        both.freeze(),
                    )
                    .await?;
                check(name, &r)
            }
        }
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
            }
            .map_err(|e| store_err(name, e)),
            StoreHandle::Remote { base, http } => {
                let headers: Vec<(&str, String)> = match range {
                    Some((a, b)) if b > a => vec![("range", format!("bytes={a}-{}", b - 1))],
                    Some(_) => return Ok(Bytes::new()),
                    None => vec![],
                };
                let r = http
                    .send(
                        name,
                        Method::GET,
                        &format!("{base}/blobs/{id}"),
                        &headers,
                        Bytes::new(),
                    )
                    .await?;
                check(name, &r)?;
                Ok(r.body)
            }
        }
    }

    /// The needle metadata of a blob's copy here.
    pub async fn meta(&self, name: &str, id: u64) -> Result<Bytes> {
        match self {
            StoreHandle::Local(s) => s.meta(id).map_err(|e| store_err(name, e)),
            StoreHandle::Remote { base, http } => {
                let r = http
                    .send(
                        name,
                        Method::GET,
                        &format!("{base}/meta/{id}"),
                        &[],
                        Bytes::new(),
                    )
                    .await?;
                check(name, &r)?;
                Ok(r.body)
            }
        }
    }

    /// The store's volumes and their generations.
    pub async fn volumes(&self, name: &str) -> Result<Vec<(u16, u64)>> {
        match self {
            StoreHandle::Local(s) => Ok(s.volumes()),
            StoreHandle::Remote { base, http } => {
                #[derive(serde::Deserialize)]
                struct V {
                    volume: u16,
                    generation: u64,
                }
                let r = http
                    .send(
                        name,
                        Method::GET,
                        &format!("{base}/volumes"),
                        &[],
                        Bytes::new(),
                    )
                    .await?;
                check(name, &r)?;
                let list: Vec<V> =
                    serde_json::from_slice(&r.body).map_err(|e| Error::Unavailable {
                        tier: name.into(),
                        detail: format!("bad volume list: {e}"),
                    })?;
                Ok(list.into_iter().map(|v| (v.volume, v.generation)).collect())
            }
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
        match self {
            StoreHandle::Local(s) => match s.heads(volume, from, generation, 4096) {
                Ok(p) => Ok(Some(p)),
                Err(store::Error::Moved { .. }) => Ok(None),
                Err(e) => Err(store_err(name, e)),
            },
            StoreHandle::Remote { base, http } => {
                let mut url = format!("{base}/heads?volume={volume}&from={from}&limit=4096");
                if let Some(g) = generation {
                    url.push_str(&format!("&generation={g}"));
                }
                let r = http
                    .send(name, Method::GET, &url, &[], Bytes::new())
                    .await?;
                if r.status == hyper::StatusCode::CONFLICT {
                    return Ok(None);
                }
                check(name, &r)?;
                let bad = |what: &str| Error::Unavailable {
                    tier: name.into(),
                    detail: format!("bad heads page: {what}"),
                };
                let header = |h: &str| {
                    r.headers
                        .get(h)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                };
                let generation =
                    header(store::server::GENERATION).ok_or_else(|| bad("no generation"))?;
                let heads = store::heads::decode(r.body.clone()).ok_or_else(|| bad("cut short"))?;
                Ok(Some(store::HeadPage {
                    heads,
                    next: header(store::server::NEXT),
                    generation,
                }))
            }
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
            StoreHandle::Remote { base, http } => Some(
                http.get_streaming(name, &format!("{base}/blobs/{id}"))
                    .await
                    .map(|b| (b, http.timeout())),
            ),
        }
    }

    /// Deletes a blob; its tombstone carries `meta` (why).
    pub async fn delete(&self, name: &str, id: u64, meta: Bytes) -> Result<()> {
        match self {
            StoreHandle::Local(s) => s.delete(id, meta).await.map_err(|e| store_err(name, e)),
            StoreHandle::Remote { base, http } => {
                let r = http
                    .send(
                        name,
                        Method::DELETE,
                        &format!("{base}/blobs/{id}"),
                        &[],
                        meta,
                    )
                    .await?;
                check(name, &r)
            }
        }
    }

    /// True if the store answers its health check.
    pub async fn healthy(&self, name: &str) -> bool {
        match self {
            StoreHandle::Local(_) => true,
            StoreHandle::Remote { base, http } => http
                .send(
                    name,
                    Method::GET,
                    &format!("{base}/healthz"),
                    &[],
                    Bytes::new(),
                )
                .await
                .is_ok_and(|r| r.status.is_success()),
        }
    }
}
