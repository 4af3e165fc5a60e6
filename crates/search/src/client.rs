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
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::model::{Applied, PageOp, Query, Results};
use crate::{Error, Result};

/// A search member at `http://addr`, with pooled keep-alive connections.
#[derive(Clone)]
pub struct ShardClient {
    base: String,
    /// Boxed: the client carries its HTTP/2 settings inline.
    http: Box<Client<HttpConnector, Full<Bytes>>>,
    timeout: Duration,
    /// Sent on every request (the cluster secret), if set.
    header: Option<(HeaderName, HeaderValue)>,
}

impl ShardClient {
    /// A client of the member at `base` (e.g. `http://10.0.0.31:7100`)
    /// whose calls give up after `timeout`.
    pub fn new(base: impl Into<String>, timeout: Duration) -> ShardClient {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(timeout));
        conn.set_nodelay(true);
        ShardClient {
            base: base.into(),
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
    /// secret); `None` sends nothing.
    pub fn with_header(mut self, name: &'static str, value: Option<&str>) -> ShardClient {
        self.header = value
            .and_then(|v| HeaderValue::from_str(v).ok())
            .map(|v| (HeaderName::from_static(name), v));
        self
    }

    /// Sends `body` (JSON, or none) and decodes the JSON answer.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some((n, v)) = &self.header {
            b = b.header(n, v);
        }
        if body.is_some() {
            b = b.header(CONTENT_TYPE, "application/json");
        }
        let req = b
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        let call = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| Error::Unreachable(e.to_string()))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| Error::Unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, Error>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| Error::Unreachable(format!("no answer within {:?}", self.timeout)))??;
        if !status.is_success() {
            #[derive(serde::Deserialize)]
            struct E {
                error: String,
                #[serde(default)]
                detail: String,
            }
            let (code, detail) = match serde_json::from_slice::<E>(&body) {
                Ok(e) => (e.error, e.detail),
                Err(_) => (String::new(), String::from_utf8_lossy(&body).into_owned()),
            };
            return Err(match (status, code.as_str()) {
                (StatusCode::BAD_REQUEST, "bad_query") => Error::BadQuery(detail),
                (StatusCode::BAD_REQUEST, "invalid") => Error::Invalid(detail),
                _ => Error::Answered {
                    status: status.as_u16(),
                    code,
                    detail,
                },
            });
        }
        serde_json::from_slice(&body).map_err(|e| Error::Unreachable(format!("bad JSON: {e}")))
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
