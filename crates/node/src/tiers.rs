//! Handles on the index and the stores: in-process (`strata serve`) or over
//! HTTP (a cluster). Same calls either way, so the node logic has one path.

use std::sync::Arc;

use bytes::Bytes;
use hyper::Method;
use index::{BlobMeta, Committed, IndexDb, Listing};
use store::Store;

use crate::http::{check, encode_query, HttpClient};
use crate::{Error, Result};

/// Where the name index is.
#[derive(Clone)]
pub enum IndexHandle {
    /// Same process.
    Local(Arc<IndexDb>),
    /// Another process at `http://addr`.
    Remote {
        /// Base URL, e.g. `http://127.0.0.1:7000`.
        base: String,
        /// Client.
        http: HttpClient,
    },
}

fn index_err(e: index::Error) -> Error {
    Error::Unavailable {
        tier: "index".into(),
        detail: e.to_string(),
    }
}

fn json<T: serde::de::DeserializeOwned>(tier: &str, b: &Bytes) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Unavailable {
        tier: tier.into(),
        detail: format!("bad JSON: {e}"),
    })
}

impl IndexHandle {
    /// Looks `key` up.
    pub async fn get(&self, key: &str) -> Result<Option<BlobMeta>> {
        match self {
            IndexHandle::Local(db) => db.get(key).map_err(index_err),
            IndexHandle::Remote { base, http } => {
                let url = format!("{base}/key?key={}", encode_query(key));
                let r = http
                    .send("index", Method::GET, &url, &[], Bytes::new())
                    .await?;
                match check("index", &r) {
                    Ok(()) => Ok(Some(json("index", &r.body)?)),
                    Err(Error::NotFound) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Commits `meta` for `key`; returns its commit number and the
    /// replaced record.
    pub async fn put(&self, key: &str, meta: &BlobMeta) -> Result<Committed> {
        match self {
            IndexHandle::Local(db) => db
                .put_versioned(key.to_owned(), meta.clone())
                .await
                .map_err(index_err),
            IndexHandle::Remote { base, http } => {
                let url = format!("{base}/key?key={}", encode_query(key));
                let body = serde_json::to_vec(meta).map_err(|e| Error::Rejected {
                    tier: "index".into(),
                    detail: e.to_string(),
                })?;
                let r = http
                    .send(
                        "index",
                        Method::PUT,
                        &url,
                        &[("content-type", "application/json".into())],
                        body.into(),
                    )
                    .await?;
                check("index", &r)?;
                json("index", &r.body)
            }
        }
    }

    /// Removes `key`; returns the delete's commit number and what it held
    /// (`previous: None` if absent).
    pub async fn delete(&self, key: &str) -> Result<Committed> {
        match self {
            IndexHandle::Local(db) => db.delete_versioned(key.to_owned()).await.map_err(index_err),
            IndexHandle::Remote { base, http } => {
                let url = format!("{base}/key?key={}", encode_query(key));
                let r = http
                    .send("index", Method::DELETE, &url, &[], Bytes::new())
                    .await?;
                match check("index", &r) {
                    Ok(()) => json("index", &r.body),
                    Err(Error::NotFound) => Ok(Committed {
                        version: 0,
                        previous: None,
                    }),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// A listing page by prefix, or by tag when `tag` is set.
    pub async fn list(
        &self,
        prefix: &str,
        tag: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Listing> {
        match self {
            IndexHandle::Local(db) => match tag {
                Some(t) => db.list_tag(t, after, limit),
                None => db.list(prefix, after, limit),
            }
            .map_err(index_err),
            IndexHandle::Remote { base, http } => {
                let mut url = match tag {
                    Some(t) => format!("{base}/tag?tag={}&limit={limit}", encode_query(t)),
                    None => format!("{base}/list?prefix={}&limit={limit}", encode_query(prefix)),
                };
                if let Some(a) = after {
                    url.push_str(&format!("&after={}", encode_query(a)));
                }
                let r = http
                    .send("index", Method::GET, &url, &[], Bytes::new())
                    .await?;
                check("index", &r)?;
                json("index", &r.body)
            }
        }
    }

    /// Replaces `key`'s replica list if it still names blob `id`; false
    /// when the key changed meanwhile (see `IndexDb::set_replicas`).
    pub async fn set_replicas(&self, key: &str, id: u64, replicas: &[String]) -> Result<bool> {
        match self {
            IndexHandle::Local(db) => db
                .set_replicas(key.to_owned(), id, replicas.to_vec())
                .await
                .map_err(index_err),
            IndexHandle::Remote { base, http } => {
                let url = format!("{base}/replicas?key={}", encode_query(key));
                let body = serde_json::json!({ "id": id, "replicas": replicas }).to_string();
                let r = http
                    .send(
                        "index",
                        Method::POST,
                        &url,
                        &[("content-type", "application/json".into())],
                        body.into(),
                    )
                    .await?;
                check("index", &r)?;
                #[derive(serde::Deserialize)]
                struct Updated {
                    updated: bool,
                }
                Ok(json::<Updated>("index", &r.body)?.updated)
            }
        }
    }

    /// Reserves `count` blob ids; returns the first.
    pub async fn alloc_ids(&self, count: u64) -> Result<u64> {
        match self {
            IndexHandle::Local(db) => db.alloc_ids(count).await.map_err(index_err),
            IndexHandle::Remote { base, http } => {
                let url = format!("{base}/ids?count={count}");
                let r = http
                    .send("index", Method::POST, &url, &[], Bytes::new())
                    .await?;
                check("index", &r)?;
                #[derive(serde::Deserialize)]
                struct Start {
                    start: u64,
                }
                Ok(json::<Start>("index", &r.body)?.start)
            }
        }
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
        store::Error::TooLarge(_) | store::Error::BadRange { .. } => Error::Rejected {
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
    /// Writes a blob (durable on success).
    pub async fn put(&self, name: &str, id: u64, body: Bytes) -> Result<()> {
        match self {
            StoreHandle::Local(s) => s.put(id, body).await.map_err(|e| store_err(name, e)),
            StoreHandle::Remote { base, http } => {
                let r = http
                    .send(name, Method::PUT, &format!("{base}/blobs/{id}"), &[], body)
                    .await?;
                check(name, &r)
            }
        }
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

    /// Deletes a blob.
    pub async fn delete(&self, name: &str, id: u64) -> Result<()> {
        match self {
            StoreHandle::Local(s) => s.delete(id).await.map_err(|e| store_err(name, e)),
            StoreHandle::Remote { base, http } => {
                let r = http
                    .send(
                        name,
                        Method::DELETE,
                        &format!("{base}/blobs/{id}"),
                        &[],
                        Bytes::new(),
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
