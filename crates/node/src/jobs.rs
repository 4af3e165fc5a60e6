//! Asynchronous uploads through the queue: `POST` or `PUT
//! /v1/blobs/{key}` with `Prefer: respond-async` answers `202` with
//! `Location: /v1/jobs/{id}` as soon as the job is durable in the broker;
//! workers in the node processes then write the blob (R replicas and the
//! index commit) and complete the job with the blob's metadata, which
//! `GET /v1/jobs/{id}` reports. A failed write is retried by the queue
//! with backoff; a job out of attempts is a dead letter.
//!
//! The job payload is one JSON line (`key`, `content_type`, `tags`) and
//! the body after it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Error, Node, Result};

/// The queue uploads go through.
pub const UPLOADS: &str = "uploads";
/// The queue of thumbnail jobs (derived work after an upload).
pub const THUMBS: &str = "thumbnails";

/// Where the queue is.
pub enum QueueHandle {
    /// Reached by direct calls: the in-process broker (`strata serve`) or
    /// the jobs in PostgreSQL (a cluster with `queue.backend = "postgres"`).
    Local(Arc<dyn queue::Queue>),
    /// A queue member over its HTTP API, through the client beside its
    /// server.
    Remote(queue::client::QueueClient),
}

/// What an upload job carries besides the body.
#[derive(Debug, Serialize, Deserialize)]
pub struct UploadHead {
    /// The blob's key.
    pub key: String,
    /// Its Content-Type.
    pub content_type: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Set when the image is a book page to index.
    #[serde(default)]
    pub page: Option<crate::search::PageUpload>,
}

/// A job leased to this node's worker (the queue client's type, whichever
/// way the queue is reached).
type Leased = queue::client::Reserved;

fn unavailable(detail: impl ToString) -> Error {
    Error::Unavailable {
        tier: "queue".into(),
        detail: detail.to_string(),
    }
}

impl QueueHandle {
    /// Puts an upload job; its id once durable.
    pub async fn put_upload(
        &self,
        head: &UploadHead,
        body: &Bytes,
        idempotency_key: Option<String>,
        max_attempts: u32,
    ) -> Result<u64> {
        let mut payload = serde_json::to_vec(head).map_err(unavailable)?;
        payload.push(b'\n');
        payload.extend_from_slice(body);
        self.put_job(UPLOADS, payload, idempotency_key, max_attempts)
            .await
    }

    /// Puts a job on `queue`; its id once durable.
    pub async fn put_job(
        &self,
        queue: &str,
        payload: Vec<u8>,
        idempotency_key: Option<String>,
        max_attempts: u32,
    ) -> Result<u64> {
        match self {
            QueueHandle::Local(b) => {
                let mut job = queue::NewJob::new(queue, payload);
                job.idempotency_key = idempotency_key;
                job.max_attempts = max_attempts;
                b.put(job).await.map(|(id, _)| id).map_err(unavailable)
            }
            QueueHandle::Remote(c) => c
                .put(queue, Bytes::from(payload), idempotency_key, max_attempts)
                .await
                .map_err(unavailable),
        }
    }

    /// A job's status as JSON (`None`: no such job).
    pub async fn status(&self, id: u64) -> Result<Option<serde_json::Value>> {
        match self {
            QueueHandle::Local(b) => Ok(b
                .status(id)
                .await
                .map_err(unavailable)?
                .map(|s| serde_json::to_value(s).unwrap_or_default())),
            QueueHandle::Remote(c) => c.status(id).await.map_err(unavailable),
        }
    }

    async fn reserve(&self, queue: &str, wait: Duration) -> Result<Option<Leased>> {
        match self {
            QueueHandle::Local(b) => Ok(b
                .reserve(&[queue.to_owned()], Some(wait), 0)
                .await
                .map_err(unavailable)?
                .map(|j| Leased {
                    id: j.id,
                    lease: j.attempts,
                    payload: j.payload,
                })),
            QueueHandle::Remote(c) => c.reserve(queue, wait).await.map_err(unavailable),
        }
    }

    async fn finish(
        &self,
        job: &Leased,
        outcome: std::result::Result<Bytes, String>,
    ) -> Result<()> {
        match self {
            QueueHandle::Local(b) => match outcome {
                Ok(result) => b.complete(job.id, 0, Some(job.lease), result).await,
                Err(e) => b.fail(job.id, 0, Some(job.lease), &e).await.map(|_| ()),
            }
            .map_err(unavailable),
            QueueHandle::Remote(c) => match outcome {
                Ok(r) => c.complete(job.id, job.lease, r).await,
                Err(e) => c.fail(job.id, job.lease, &e).await,
            }
            .map_err(unavailable),
        }
    }
}

/// Runs one upload job: the same write as a synchronous PUT.
async fn run_upload(node: &Arc<Node>, payload: &Bytes) -> std::result::Result<Bytes, String> {
    let nl = payload
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("upload job without a header line")?;
    let head: UploadHead = serde_json::from_slice(&payload[..nl])
        .map_err(|e| format!("bad upload job header: {e}"))?;
    let body = payload.slice(nl + 1..);
    let is_image = matches!(head.content_type.as_str(), "image/png" | "image/jpeg");
    let (meta, index_job) = node
        .write_page(&head.key, body, head.content_type, head.tags, head.page)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(c) = &node.caching {
        c.invalidate(&head.key).await;
    }
    if is_image && !node.opts.thumbnail_widths.is_empty() {
        if let Some(q) = node.queue() {
            // Derived work, queued durably before this job completes; the
            // key makes a re-run of this job queue it only once.
            let payload = serde_json::json!({"key": head.key, "etag": meta.etag}).to_string();
            q.put_job(
                THUMBS,
                payload.into_bytes(),
                Some(format!("{}:{}", head.key, meta.etag)),
                node.opts.upload_attempts,
            )
            .await
            .map_err(|e| e.to_string())?;
        }
    }
    let mut v = serde_json::json!({"key": head.key, "id": meta.id, "size": meta.size, "etag": meta.etag, "content_type": meta.content_type});
    if let Some(j) = index_job {
        v["index_job"] = format!("/v1/jobs/{j}").into();
    }
    Ok(Bytes::from(v.to_string()))
}

/// Runs one thumbnail job: every configured width of the blob.
async fn run_thumbnails(node: &Arc<Node>, payload: &Bytes) -> std::result::Result<Bytes, String> {
    let v: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("bad thumbnail job: {e}"))?;
    let key = v["key"].as_str().ok_or("thumbnail job without a key")?;
    let meta = match node.lookup(key).await.map_err(|e| e.to_string())? {
        Some(m) => m,
        // Deleted meanwhile: nothing to make.
        None => return Ok(Bytes::from(r#"{"thumbnails":[]}"#)),
    };
    let data = node
        .read_blob(&meta, None)
        .await
        .map_err(|e| e.to_string())?;
    let mut made = Vec::new();
    for &w in &node.opts.thumbnail_widths {
        let data = data.clone();
        // Decoding and scaling are CPU work: off the async threads.
        let t = tokio::task::spawn_blocking(move || crate::thumbs::make(&data, w))
            .await
            .map_err(|e| e.to_string())??;
        let Some((bytes, ctype)) = t else {
            return Ok(Bytes::from(
                r#"{"thumbnails":[],"skipped":"not a PNG or JPEG image"}"#,
            ));
        };
        let tk = crate::thumbs::thumb_key(key, w);
        let m = node
            .write_blob(&tk, bytes, ctype.to_owned(), Vec::new())
            .await
            .map_err(|e| e.to_string())?;
        if let Some(c) = &node.caching {
            c.invalidate(&tk).await;
        }
        made.push(serde_json::json!({"width": w, "key": tk, "size": m.size}));
    }
    Ok(Bytes::from(
        serde_json::json!({"thumbnails": made}).to_string(),
    ))
}

/// Starts `n` workers per queue (uploads, thumbnails, repairs, search,
/// chunk drops)
/// taking jobs for `node` until `stop` says true (or its sender is
/// dropped). A job a worker holds when it stops is redelivered when its
/// lease expires.
pub fn spawn_workers(node: &Arc<Node>, n: usize, stop: tokio::sync::watch::Receiver<bool>) {
    for queue in [
        UPLOADS,
        THUMBS,
        crate::repair::REPAIRS,
        crate::search::SEARCH_JOBS,
        crate::objects::CHUNK_DROPS,
    ] {
        spawn_queue_workers(node, queue, n, stop.clone());
    }
    crate::upkeep::spawn(node, node.opts.probe_every, stop);
}

fn spawn_queue_workers(
    node: &Arc<Node>,
    queue: &'static str,
    n: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    for _ in 0..n {
        let weak = Arc::downgrade(node);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            loop {
                if *stop.borrow() {
                    return;
                }
                let Some(node) = weak.upgrade() else { return };
                let Some(q) = node.queue() else { return };
                let reserved = tokio::select! {
                    r = q.reserve(queue, Duration::from_millis(1000)) => r,
                    // The node is shutting down: let go of it.
                    _ = stop.changed() => return,
                };
                let job = match reserved {
                    Ok(Some(j)) => j,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "queue unreachable; worker waits");
                        drop(node);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                let outcome = match queue {
                    THUMBS => run_thumbnails(&node, &job.payload).await,
                    crate::repair::REPAIRS => crate::repair::run_repair(&node, &job.payload).await,
                    crate::search::SEARCH_JOBS => {
                        crate::search::run_index(&node, &job.payload).await
                    }
                    crate::objects::CHUNK_DROPS => {
                        crate::objects::run_drops(&node, &job.payload).await
                    }
                    _ => run_upload(&node, &job.payload).await,
                };
                if let Err(e) = &outcome {
                    tracing::warn!(job = job.id, error = %e, "job failed; the queue retries it");
                }
                if let Err(e) = q.finish(&job, outcome).await {
                    // The lease will expire and the job be redelivered.
                    tracing::warn!(job = job.id, error = %e, "could not report the job's outcome");
                }
            }
        });
    }
}
