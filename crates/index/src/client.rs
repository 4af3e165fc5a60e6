//! [`IndexClient`]: the [`Index`] of an index member, over the internal HTTP
//! API that [`crate::server`] serves (the client lives beside its server so
//! the wire format is written in one crate).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use rpc::Rpc;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::backend::Index;
use crate::meta::{BlobMeta, Committed, Listing};
use crate::{Error, Result};

/// An index member at `http://addr`, with pooled keep-alive connections
/// (the transport the internal clients share, `rpc`).
#[derive(Clone)]
pub struct IndexClient {
    base: String,
    rpc: Rpc,
}

fn q(s: &str) -> percent_encoding::PercentEncode<'_> {
    utf8_percent_encode(s, NON_ALPHANUMERIC)
}

impl IndexClient {
    /// A client of the member at `base` (e.g. `http://10.0.0.5:7000`) whose
    /// calls give up after `timeout`.
    pub fn new(base: impl Into<String>, timeout: Duration) -> IndexClient {
        let base = base.into();
        IndexClient {
            rpc: Rpc::new(base.clone(), timeout),
            base,
        }
    }

    /// The same client sending `name: value` with every call (the cluster
    /// secret); a value that is not a valid header is an error.
    pub fn with_header(mut self, name: &'static str, value: &str) -> Result<IndexClient> {
        HeaderValue::from_str(value)
            .map_err(|_| Error::Invalid(format!("bad value for header {name}")))?;
        self.rpc = self.rpc.with_header(name, Some(value));
        Ok(self)
    }

    /// One call; the answer's status and body. Transport failures and
    /// timeouts are [`Error::Unavailable`].
    async fn call(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes)> {
        let headers = match &body {
            Some(_) => vec![(CONTENT_TYPE, "application/json".to_owned())],
            None => vec![],
        };
        let r = self
            .rpc
            .call(
                method,
                &path,
                &headers,
                body.map(Bytes::from).unwrap_or_default(),
                Duration::ZERO,
            )
            .await
            .map_err(|d| Error::Unavailable(format!("index member {}: {d}", self.base)))?;
        Ok((r.status, r.body))
    }

    /// A call whose 2xx answer is JSON `T`; `None` on 404.
    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
    ) -> Result<Option<T>> {
        let (status, bytes) = self.call(method, path, body).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let detail = || format!("{status}: {}", String::from_utf8_lossy(&bytes));
        if status.is_client_error() {
            return Err(Error::Invalid(detail()));
        }
        if !status.is_success() {
            return Err(Error::Unavailable(format!(
                "index member {}: {}",
                self.base,
                detail()
            )));
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Unavailable(format!("index member {}: bad JSON: {e}", self.base)))
    }

    fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(v).map_err(|e| Error::Invalid(e.to_string()))
    }
}

fn must<T>(v: Option<T>, what: &str) -> Result<T> {
    v.ok_or_else(|| Error::Unavailable(format!("index member answered 404 to {what}")))
}

#[async_trait]
impl Index for IndexClient {
    async fn get(&self, key: &str) -> Result<Option<BlobMeta>> {
        self.json(Method::GET, format!("/key?key={}", q(key)), None)
            .await
    }

    async fn put(&self, key: &str, meta: &BlobMeta) -> Result<Committed> {
        let body = Self::encode(meta)?;
        let c = self
            .json(Method::PUT, format!("/key?key={}", q(key)), Some(body))
            .await?;
        must(c, "a put")
    }

    async fn delete(&self, key: &str) -> Result<Committed> {
        let c = self
            .json(Method::DELETE, format!("/key?key={}", q(key)), None)
            .await?;
        // The member answers 404 for an absent key.
        Ok(c.unwrap_or_default())
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Listing> {
        let mut path = format!("/list?prefix={}&limit={limit}", q(prefix));
        if let Some(a) = after {
            path.push_str(&format!("&after={}", q(a)));
        }
        must(self.json(Method::GET, path, None).await?, "a listing")
    }

    async fn list_tag(&self, tag: &str, after: Option<&str>, limit: usize) -> Result<Listing> {
        let mut path = format!("/tag?tag={}&limit={limit}", q(tag));
        if let Some(a) = after {
            path.push_str(&format!("&after={}", q(a)));
        }
        must(self.json(Method::GET, path, None).await?, "a tag listing")
    }

    async fn alloc_ids(&self, count: u64) -> Result<u64> {
        #[derive(Deserialize)]
        struct Start {
            start: u64,
        }
        crate::meta::check_count(count)?;
        let s: Option<Start> = self
            .json(Method::POST, format!("/ids?count={count}"), None)
            .await?;
        Ok(must(s, "an id lease")?.start)
    }

    async fn next_version(&self) -> Result<u64> {
        #[derive(Deserialize)]
        struct Next {
            version: u64,
        }
        let n: Option<Next> = self.json(Method::POST, "/version".into(), None).await?;
        Ok(must(n, "a commit number")?.version)
    }

    async fn set_replicas(&self, key: &str, id: u64, replicas: &[String]) -> Result<bool> {
        #[derive(Deserialize)]
        struct Updated {
            updated: bool,
        }
        let body = Self::encode(&serde_json::json!({ "id": id, "replicas": replicas }))?;
        let u: Option<Updated> = self
            .json(
                Method::POST,
                format!("/replicas?key={}", q(key)),
                Some(body),
            )
            .await?;
        Ok(must(u, "a replica change")?.updated)
    }

    fn backend(&self) -> &'static str {
        "remote"
    }
}
