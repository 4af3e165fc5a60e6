//! [`StoreClient`]: a store member over the internal HTTP API that
//! [`crate::server`] serves. The client lives beside its server so the wire
//! format (paths, the metadata-then-blob PUT body, the multi-get and heads
//! encodings, status codes) is written in one crate.
//!
//! Answers map back onto this crate's [`Error`]: 404 is
//! [`Error::NotFound`], a `/heads` 409 is [`Error::Moved`], any other
//! refusal [`Error::Answered`] with its status and error code, and a store
//! that cannot be reached or does not answer in time
//! [`Error::Unreachable`].

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::header::{HeaderName, RANGE};
use hyper::{Method, StatusCode};
use rpc::{Reply, Rpc};

use crate::heads::{self, HeadPage};
use crate::server::{GENERATION, META_LEN, NEXT};
use crate::{Error, Result};

/// A store member at `http://addr`, with pooled keep-alive connections.
#[derive(Clone)]
pub struct StoreClient(Rpc);

/// One answer of [`StoreClient::mget`], in the order asked.
pub type MgetItem = (u64, Result<Bytes>);

impl StoreClient {
    /// A client of the member at `base` (e.g. `http://10.0.0.11:7001`) whose
    /// calls (connect and answer) give up after `timeout`.
    pub fn new(base: impl Into<String>, timeout: Duration) -> StoreClient {
        StoreClient(Rpc::new(base, timeout))
    }

    /// The same client sending `name: value` with every call (the cluster
    /// secret); `None` sends nothing.
    pub fn with_header(self, name: &'static str, value: Option<&str>) -> StoreClient {
        StoreClient(self.0.with_header(name, value))
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        self.0.base()
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.0.timeout()
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, String)],
        body: Bytes,
    ) -> Result<Reply> {
        self.0
            .call(method, path, headers, body, Duration::ZERO)
            .await
            .map_err(Error::Unreachable)
    }

    /// `Ok` for a 2xx answer, else the error it stands for.
    fn check(id: Option<u64>, r: &Reply) -> Result<()> {
        if r.status.is_success() {
            return Ok(());
        }
        if let (StatusCode::NOT_FOUND, Some(id)) = (r.status, id) {
            return Err(Error::NotFound(id));
        }
        let f = r.refusal();
        Err(Error::Answered {
            status: f.status.as_u16(),
            code: f.code,
            detail: f.detail,
        })
    }

    /// Writes blob `id` with its needle metadata; durable once `Ok`.
    pub async fn put(&self, id: u64, meta: Bytes, body: Bytes) -> Result<()> {
        // One body: the metadata, then the blob.
        let mut both = BytesMut::with_capacity(meta.len() + body.len());
        both.extend_from_slice(&meta);
        both.extend_from_slice(&body);
        let headers = [(HeaderName::from_static(META_LEN), meta.len().to_string())];
        let r = self
            .send(
                Method::PUT,
                &format!("/blobs/{id}"),
                &headers,
                both.freeze(),
            )
            .await?;
        Self::check(Some(id), &r)
    }

    /// Blob `id`, or bytes `start..end` of it.
    pub async fn get(&self, id: u64, range: Option<(u64, u64)>) -> Result<Bytes> {
        let headers = match range {
            Some((a, b)) if b > a => vec![(RANGE, format!("bytes={a}-{}", b - 1))],
            Some(_) => return Ok(Bytes::new()),
            None => vec![],
        };
        let r = self
            .send(Method::GET, &format!("/blobs/{id}"), &headers, Bytes::new())
            .await?;
        Self::check(Some(id), &r)?;
        Ok(r.body)
    }

    /// Blobs `ids` in one round trip, in order; each answer found, missing
    /// or failed on its own.
    pub async fn mget(&self, ids: &[u64]) -> Result<Vec<MgetItem>> {
        let body: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        let r = self
            .send(Method::POST, "/mget", &[], Bytes::from(body))
            .await?;
        Self::check(None, &r)?;
        parse_mget(&r.body, ids.len())
            .ok_or_else(|| Error::Unreachable("malformed mget reply".into()))
    }

    /// The needle metadata of blob `id`'s copy.
    pub async fn meta(&self, id: u64) -> Result<Bytes> {
        let r = self
            .send(Method::GET, &format!("/meta/{id}"), &[], Bytes::new())
            .await?;
        Self::check(Some(id), &r)?;
        Ok(r.body)
    }

    /// The store's volumes and their generations.
    pub async fn volumes(&self) -> Result<Vec<(u16, u64)>> {
        #[derive(serde::Deserialize)]
        struct V {
            volume: u16,
            generation: u64,
        }
        let r = self
            .send(Method::GET, "/volumes", &[], Bytes::new())
            .await?;
        Self::check(None, &r)?;
        let list: Vec<V> = serde_json::from_slice(&r.body)
            .map_err(|e| Error::Unreachable(format!("bad volume list: {e}")))?;
        Ok(list.into_iter().map(|v| (v.volume, v.generation)).collect())
    }

    /// One page of at most `limit` needle heads of `volume` from `from`
    /// ([`crate::Store::heads`]); [`Error::Moved`] when the volume was
    /// compacted since `generation`.
    pub async fn heads(
        &self,
        volume: u16,
        from: u64,
        generation: Option<u64>,
        limit: usize,
    ) -> Result<HeadPage> {
        let mut path = format!("/heads?volume={volume}&from={from}&limit={limit}");
        if let Some(g) = generation {
            path.push_str(&format!("&generation={g}"));
        }
        let r = self.send(Method::GET, &path, &[], Bytes::new()).await?;
        if r.status == StatusCode::CONFLICT {
            return Err(Error::Moved { volume });
        }
        Self::check(None, &r)?;
        let bad = |what: &str| Error::Unreachable(format!("bad heads page: {what}"));
        Ok(HeadPage {
            heads: heads::decode(r.body.clone()).ok_or_else(|| bad("cut short"))?,
            next: r.number(NEXT),
            generation: r.number(GENERATION).ok_or_else(|| bad("no generation"))?,
        })
    }

    /// Opens blob `id` as a byte stream: the answer's headers have arrived,
    /// its body is the caller's to read (within [`Self::timeout`] per
    /// piece, as the caller sees fit).
    pub async fn open(&self, id: u64) -> Result<hyper::body::Incoming> {
        let resp = self
            .0
            .open(&format!("/blobs/{id}"))
            .await
            .map_err(Error::Unreachable)?;
        match resp.status() {
            s if s.is_success() => Ok(resp.into_body()),
            StatusCode::NOT_FOUND => Err(Error::NotFound(id)),
            s => Err(Error::Answered {
                status: s.as_u16(),
                code: String::new(),
                detail: format!("opening blob {id}"),
            }),
        }
    }

    /// Deletes blob `id`; its tombstone carries `meta` (why).
    pub async fn delete(&self, id: u64, meta: Bytes) -> Result<()> {
        let r = self
            .send(Method::DELETE, &format!("/blobs/{id}"), &[], meta)
            .await?;
        Self::check(Some(id), &r)
    }

    /// Whether the member answers its health check.
    pub async fn healthy(&self) -> bool {
        self.send(Method::GET, "/healthz", &[], Bytes::new())
            .await
            .is_ok_and(|r| r.status.is_success())
    }
}

/// Splits a multi-get reply (see the server's `mget`) into `n` answers.
fn parse_mget(b: &Bytes, n: usize) -> Option<Vec<MgetItem>> {
    let mut out = Vec::with_capacity(n);
    let mut at = 0usize;
    for _ in 0..n {
        let id = u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?);
        let status = *b.get(at + 8)?;
        let len = u32::from_le_bytes(b.get(at + 9..at + 13)?.try_into().ok()?) as usize;
        let data = b
            .get(at + 13..at + 13 + len)
            .map(|_| b.slice(at + 13..at + 13 + len))?;
        at += 13 + len;
        out.push((
            id,
            match status {
                0 => Ok(data),
                1 => Err(Error::NotFound(id)),
                _ => Err(Error::Answered {
                    status: 500,
                    code: "internal".into(),
                    detail: format!("blob {id}: read failed"),
                }),
            },
        ));
    }
    (at == b.len()).then_some(out)
}
