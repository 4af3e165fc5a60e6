//! [`ShardClient`]: a search member over the internal HTTP API that
//! [`crate::server`] serves, for the request nodes' indexing and
//! scatter-gather. It lives beside its server so the wire format (the
//! page-ops body, the query parameters, the answers) is written in one
//! crate.
//!
//! Refusals map onto this crate's [`Error`]: a 400 is [`Error::BadQuery`]
//! or [`Error::Invalid`] as the shard said, any other
//! [`Error::Answered`], and a member that cannot be reached or does not
//! answer in time [`Error::Unreachable`].

use std::time::Duration;

use bytes::Bytes;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, StatusCode};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use rpc::Rpc;

use crate::model::{Applied, PageOp, Query, Results};
use crate::{Error, Result};

/// A search member at `http://addr`, with pooled keep-alive connections.
#[derive(Clone)]
pub struct ShardClient(Rpc);

impl ShardClient {
    /// A client of the member at `base` (e.g. `http://10.0.0.31:7100`)
    /// whose calls give up after `timeout`.
    pub fn new(base: impl Into<String>, timeout: Duration) -> ShardClient {
        ShardClient(Rpc::new(base, timeout))
    }

    /// The same client sending `name: value` with every call (the cluster
    /// secret); `None` sends nothing.
    pub fn with_header(self, name: &'static str, value: Option<&str>) -> ShardClient {
        ShardClient(self.0.with_header(name, value))
    }

    /// Sends `body` (JSON, or none) and decodes the JSON answer.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let headers = match &body {
            Some(_) => vec![(CONTENT_TYPE, "application/json".to_owned())],
            None => vec![],
        };
        let r = self
            .0
            .call(
                method,
                path,
                &headers,
                Bytes::from(body.unwrap_or_default()),
                Duration::ZERO,
            )
            .await
            .map_err(Error::Unreachable)?;
        if !r.status.is_success() {
            let f = r.refusal();
            return Err(match (f.status, f.code.as_str()) {
                (StatusCode::BAD_REQUEST, "bad_query") => Error::BadQuery(f.detail),
                (StatusCode::BAD_REQUEST, "invalid") => Error::Invalid(f.detail),
                _ => Error::Answered {
                    status: f.status.as_u16(),
                    code: f.code,
                    detail: f.detail,
                },
            });
        }
        serde_json::from_slice(&r.body).map_err(|e| Error::Unreachable(format!("bad JSON: {e}")))
    }

    /// Applies `ops` in order; the answers once they are durable and
    /// visible to searches.
    pub async fn apply(&self, ops: &[PageOp]) -> Result<Vec<Applied>> {
        #[derive(serde::Deserialize)]
        struct A {
            applied: Vec<Applied>,
        }
        let body = serde_json::to_vec(ops).map_err(|e| Error::Invalid(e.to_string()))?;
        let a: A = self.call(Method::POST, "/pages", Some(body)).await?;
        Ok(a.applied)
    }

    /// This shard's answer to `q`.
    pub async fn search(&self, q: &Query) -> Result<Results> {
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let mut path = format!(
            "/search?q={}&limit={}&pages={}",
            enc(&q.q),
            q.limit,
            q.pages
        );
        if let Some(b) = &q.book {
            path.push_str(&format!("&book={}", enc(b)));
        }
        self.call(Method::GET, &path, None).await
    }
}
