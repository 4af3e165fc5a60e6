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
use hyper::header::HeaderName;
use hyper::{Method, StatusCode};
use rpc::{Reply, Rpc};

use crate::{Error, Result};

/// A queue member at `http://addr`, with pooled keep-alive connections.
#[derive(Clone)]
pub struct QueueClient(Rpc);

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

impl QueueClient {
    /// A client of the member at `base` (e.g. `http://10.0.0.22:7700`)
    /// whose calls give up after `timeout` (a reservation's own wait comes
    /// on top).
    pub fn new(base: impl Into<String>, timeout: Duration) -> QueueClient {
        QueueClient(Rpc::new(base, timeout))
    }

    /// The same client sending `name: value` with every call (the cluster
    /// secret); `None` sends nothing.
    pub fn with_header(self, name: &'static str, value: Option<&str>) -> QueueClient {
        QueueClient(self.0.with_header(name, value))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, String)],
        body: Bytes,
        wait: Duration,
    ) -> Result<Reply> {
        self.0
            .call(method, path, headers, body, wait)
            .await
            .map_err(Error::Unreachable)
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
        let f = r.refusal();
        Err(Error::Answered {
            status: f.status.as_u16(),
            code: f.code,
            detail: f.detail,
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
        let headers: Vec<(HeaderName, String)> = idempotency_key
            .map(|k| (HeaderName::from_static("idempotency-key"), k))
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

    /// Every queue's counts, as `GET /v1/queues` answers them.
    pub async fn queues(&self) -> Result<Vec<serde_json::Value>> {
        let r = self
            .call(Method::GET, "/v1/queues", &[], Bytes::new(), Duration::ZERO)
            .await?;
        Self::check(None, &r)?;
        let v: serde_json::Value = serde_json::from_slice(&r.body)
            .map_err(|e| Error::Unreachable(format!("bad queues answer: {e}")))?;
        Ok(v["queues"].as_array().cloned().unwrap_or_default())
    }

    /// Up to `limit` dead jobs of `queue`, oldest first, as statuses.
    pub async fn dead(&self, queue: &str, limit: usize) -> Result<Vec<serde_json::Value>> {
        let path = format!("/v1/queues/{queue}/dead?limit={limit}");
        let r = self
            .call(Method::GET, &path, &[], Bytes::new(), Duration::ZERO)
            .await?;
        Self::check(None, &r)?;
        let v: serde_json::Value = serde_json::from_slice(&r.body)
            .map_err(|e| Error::Unreachable(format!("bad dead answer: {e}")))?;
        Ok(v["jobs"].as_array().cloned().unwrap_or_default())
    }

    /// Moves dead or delayed job `id` back to ready.
    pub async fn kick_job(&self, id: u64) -> Result<()> {
        let path = format!("/v1/jobs/{id}/kick");
        let r = self
            .call(Method::POST, &path, &[], Bytes::new(), Duration::ZERO)
            .await?;
        Self::check(Some(id), &r)
    }

    /// Deletes job `id` (one nobody holds).
    pub async fn delete(&self, id: u64) -> Result<()> {
        let path = format!("/v1/jobs/{id}");
        let r = self
            .call(Method::DELETE, &path, &[], Bytes::new(), Duration::ZERO)
            .await?;
        Self::check(Some(id), &r)
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
            r.number(h)
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
