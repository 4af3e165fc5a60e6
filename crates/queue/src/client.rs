//! [`QueueClient`]: a queue member over the jobs API that [`crate::http`]
//! serves, for the request nodes' upload, thumbnail, repair, indexing and
//! chunk-drop workers. It lives beside its server so the wire format
//! (paths, query parameters, the `X-Job-*` headers of a reservation) is
//! written in one crate.
//!
//! Answers map onto this crate's [`Error`]: 404 is [`Error::NotFound`],
//! 409 [`Error::NotReserved`], any other refusal [`Error::Answered`], and
//! a member that cannot be reached or does not answer in time
//! [`Error::Unreachable`].

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::{Error, Result};

/// A queue member at `http://addr`, with pooled keep-alive connections.
#[derive(Clone)]
pub struct QueueClient {
    base: String,
    /// Boxed: the client carries its HTTP/2 settings inline.
    http: Box<Client<HttpConnector, Full<Bytes>>>,
    timeout: Duration,
    /// Sent on every request (the cluster secret), if set.
    header: Option<(HeaderName, HeaderValue)>,
}

/// A job leased by [`QueueClient::reserve`].
#[derive(Debug, Clone)]
pub struct Reserved {
    /// The job's id.
    pub id: u64,
    /// The lease token that completing or failing it names.
    pub lease: u32,
    /// Its payload.
    pub payload: Bytes,
}

struct Reply {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl QueueClient {
    /// A client of the member at `base` (e.g. `http://10.0.0.22:7700`)
    /// whose calls give up after `timeout` (a reservation's own wait comes
    /// on top).
    pub fn new(base: impl Into<String>, timeout: Duration) -> QueueClient {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(timeout));
        conn.set_nodelay(true);
        QueueClient {
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
    pub fn with_header(mut self, name: &'static str, value: Option<&str>) -> QueueClient {
        self.header = value
            .and_then(|v| HeaderValue::from_str(v).ok())
            .map(|v| (HeaderName::from_static(name), v));
        self
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
        wait: Duration,
    ) -> Result<Reply> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some((n, v)) = &self.header {
            b = b.header(n, v);
        }
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        let req = b
            .body(Full::new(body))
            .map_err(|e| Error::Unreachable(e.to_string()))?;
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
        let limit = self.timeout + wait;
        tokio::time::timeout(limit, call)
            .await
            .map_err(|_| Error::Unreachable(format!("no answer within {limit:?}")))?
    }

    fn check(id: Option<u64>, r: &Reply) -> Result<()> {
        if r.status.is_success() {
            return Ok(());
        }
        match (r.status, id) {
            (StatusCode::NOT_FOUND, Some(id)) => return Err(Error::NotFound(id)),
            (StatusCode::CONFLICT, Some(id)) => return Err(Error::NotReserved(id)),
            _ => {}
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

    /// Puts a job on `queue`; its id once durable. A repeated
    /// `idempotency_key` answers the first job's id.
    pub async fn put(
        &self,
        queue: &str,
        payload: Bytes,
        idempotency_key: Option<String>,
        max_attempts: u32,
    ) -> Result<u64> {
        let headers: Vec<(&'static str, String)> = idempotency_key
            .map(|k| ("idempotency-key", k))
            .into_iter()
            .collect();
        let path = format!("/v1/queues/{queue}/jobs?max_attempts={max_attempts}");
        let r = self
            .call(Method::POST, &path, &headers, payload, Duration::ZERO)
            .await?;
        Self::check(None, &r)?;
        let v: serde_json::Value = serde_json::from_slice(&r.body)
            .map_err(|e| Error::Unreachable(format!("bad put answer: {e}")))?;
        v["id"]
            .as_u64()
            .ok_or_else(|| Error::Unreachable("no job id in the answer".into()))
    }

    /// Job `id`'s status as the jobs API reports it; `None` when there is
    /// no such job.
    pub async fn status(&self, id: u64) -> Result<Option<serde_json::Value>> {
        let r = self
            .call(
                Method::GET,
                &format!("/v1/jobs/{id}"),
                &[],
                Bytes::new(),
                Duration::ZERO,
            )
            .await?;
        match Self::check(Some(id), &r) {
            Ok(()) => Ok(serde_json::from_slice(&r.body).ok()),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Leases the next ready job of `queue`, waiting up to `wait` for one.
    pub async fn reserve(&self, queue: &str, wait: Duration) -> Result<Option<Reserved>> {
        let path = format!("/v1/queues/{queue}/reserve?timeout_ms={}", wait.as_millis());
        let r = self
            .call(Method::POST, &path, &[], Bytes::new(), wait)
            .await?;
        Self::check(None, &r)?;
        if r.status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let num = |h: &str| {
            r.headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| Error::Unreachable(format!("reserve answer without {h}")))
        };
        Ok(Some(Reserved {
            id: num("x-job-id")?,
            lease: u32::try_from(num("x-job-lease")?)
                .map_err(|_| Error::Unreachable("lease out of range".into()))?,
            payload: r.body.clone(),
        }))
    }

    /// Completes job `id` under `lease` with `result`.
    pub async fn complete(&self, id: u64, lease: u32, result: Bytes) -> Result<()> {
        self.finish(id, lease, "complete", result).await
    }

    /// Fails job `id`'s attempt under `lease` (retried with backoff, or
    /// dead once out of attempts).
    pub async fn fail(&self, id: u64, lease: u32, error: &str) -> Result<()> {
        self.finish(id, lease, "fail", Bytes::from(error.to_owned()))
            .await
    }

    async fn finish(&self, id: u64, lease: u32, op: &str, body: Bytes) -> Result<()> {
        let path = format!("/v1/jobs/{id}/{op}?lease={lease}");
        let r = self
            .call(Method::POST, &path, &[], body, Duration::ZERO)
            .await?;
        Self::check(Some(id), &r)
    }
}
