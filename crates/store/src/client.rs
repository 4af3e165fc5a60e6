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
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::heads::{self, HeadPage};
use crate::server::{GENERATION, META_LEN, NEXT};
use crate::{Error, Result};

/// A store member at `http://addr`, with pooled keep-alive connections.
#[derive(Clone)]
pub struct StoreClient {
    base: String,
    /// Boxed: the client carries its HTTP/2 settings inline (hundreds of
    /// bytes), and handles holding one sit in small enums.
    http: Box<Client<HttpConnector, Full<Bytes>>>,
    timeout: Duration,
    /// Sent on every request (the cluster secret), if set.
    header: Option<(HeaderName, HeaderValue)>,
}

/// One answer of [`StoreClient::mget`], in the order asked.
pub type MgetItem = (u64, Result<Bytes>);

/// A response read whole.
struct Reply {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl StoreClient {
    /// A client of the member at `base` (e.g. `http://10.0.0.11:7001`) whose
    /// calls (connect and answer) give up after `timeout`.
    pub fn new(base: impl Into<String>, timeout: Duration) -> StoreClient {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(timeout));
        conn.set_nodelay(true);
        StoreClient {
            base: base.into(),
            // Idle connections go before the member's own idle cut-off.
            http: Box::new(
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(5))
                    .build(conn),
            ),
            timeout,
            header: None,
        }
    }

    /// The same client sending `name: value` with every call (the cluster
    /// secret); `None` sends nothing. A value that is not a valid header
    /// is dropped.
    pub fn with_header(mut self, name: &'static str, value: Option<&str>) -> StoreClient {
        self.header = value
            .and_then(|v| HeaderValue::from_str(v).ok())
            .map(|v| (HeaderName::from_static(name), v));
        self
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn request(&self, method: Method, path: &str, body: Bytes) -> Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some((n, v)) = &self.header {
            b = b.header(n, v);
        }
        b.body(Full::new(body))
            .map_err(|e| Error::Unreachable(e.to_string()))
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<Reply> {
        let call = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| Error::Unreachable(e.to_string()))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| Error::Unreachable(e.to_string()))?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| Error::Unreachable(format!("no answer within {:?}", self.timeout)))?
    }

    /// `Ok` for a 2xx answer, else the error it stands for.
    fn check(id: Option<u64>, r: &Reply) -> Result<()> {
        if r.status.is_success() {
            return Ok(());
        }
        if let (StatusCode::NOT_FOUND, Some(id)) = (r.status, id) {
            return Err(Error::NotFound(id));
        }
        #[derive(serde::Deserialize)]
        struct Body {
            error: String,
            #[serde(default)]
            detail: String,
        }
        let (code, detail) = match serde_json::from_slice::<Body>(&r.body) {
            Ok(b) => (b.error, b.detail),
            Err(_) => (String::new(), String::from_utf8_lossy(&r.body).into_owned()),
        };
        Err(Error::Answered {
            status: r.status.as_u16(),
            code,
            detail,
        })
    }

    /// Writes blob `id` with its needle metadata; durable once `Ok`.
    pub async fn put(&self, id: u64, meta: Bytes, body: Bytes) -> Result<()> {
        // One body: the metadata, then the blob.
        let mut both = BytesMut::with_capacity(meta.len() + body.len());
        both.extend_from_slice(&meta);
        both.extend_from_slice(&body);
        let mut req = self.request(Method::PUT, &format!("/blobs/{id}"), both.freeze())?;
        req.headers_mut().insert(META_LEN, meta.len().into());
        Self::check(Some(id), &self.send(req).await?)
    }

    /// Blob `id`, or bytes `start..end` of it.
    pub async fn get(&self, id: u64, range: Option<(u64, u64)>) -> Result<Bytes> {
        let mut req = self.request(Method::GET, &format!("/blobs/{id}"), Bytes::new())?;
        match range {
            Some((a, b)) if b > a => {
                let v = format!("bytes={a}-{}", b - 1);
                req.headers_mut().insert(
                    hyper::header::RANGE,
                    HeaderValue::from_str(&v).map_err(|e| Error::Unreachable(e.to_string()))?,
                );
            }
            Some(_) => return Ok(Bytes::new()),
            None => {}
        }
        let r = self.send(req).await?;
        Self::check(Some(id), &r)?;
        Ok(r.body)
    }

    /// Blobs `ids` in one round trip, in order; each answer found, missing
    /// or failed on its own.
    pub async fn mget(&self, ids: &[u64]) -> Result<Vec<MgetItem>> {
        let body: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        let r = self
            .send(self.request(Method::POST, "/mget", Bytes::from(body))?)
            .await?;
        Self::check(None, &r)?;
        parse_mget(&r.body, ids.len())
            .ok_or_else(|| Error::Unreachable("malformed mget reply".into()))
    }

    /// The needle metadata of blob `id`'s copy.
    pub async fn meta(&self, id: u64) -> Result<Bytes> {
        let r = self
            .send(self.request(Method::GET, &format!("/meta/{id}"), Bytes::new())?)
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
            .send(self.request(Method::GET, "/volumes", Bytes::new())?)
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
        let r = self
            .send(self.request(Method::GET, &path, Bytes::new())?)
            .await?;
        if r.status == StatusCode::CONFLICT {
            return Err(Error::Moved { volume });
        }
        Self::check(None, &r)?;
        let bad = |what: &str| Error::Unreachable(format!("bad heads page: {what}"));
        let header = |h: &str| {
            r.headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        Ok(HeadPage {
            heads: heads::decode(r.body.clone()).ok_or_else(|| bad("cut short"))?,
            next: header(NEXT),
            generation: header(GENERATION).ok_or_else(|| bad("no generation"))?,
        })
    }

    /// Opens blob `id` as a byte stream: the answer's headers have arrived,
    /// its body is the caller's to read (within [`Self::timeout`] per
    /// piece, as the caller sees fit).
    pub async fn open(&self, id: u64) -> Result<hyper::body::Incoming> {
        let req = self.request(Method::GET, &format!("/blobs/{id}"), Bytes::new())?;
        let resp = tokio::time::timeout(self.timeout, self.http.request(req))
            .await
            .map_err(|_| Error::Unreachable(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| Error::Unreachable(e.to_string()))?;
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
            .send(self.request(Method::DELETE, &format!("/blobs/{id}"), meta)?)
            .await?;
        Self::check(Some(id), &r)
    }

    /// Whether the member answers its health check.
    pub async fn healthy(&self) -> bool {
        match self.request(Method::GET, "/healthz", Bytes::new()) {
            Ok(req) => self.send(req).await.is_ok_and(|r| r.status.is_success()),
            Err(_) => false,
        }
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
