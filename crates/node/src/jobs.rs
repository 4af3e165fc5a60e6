//! The node's handle on the queue ([`QueueHandle`], over
//! [`queue::Handle`]: the broker in this process, the jobs in PostgreSQL,
//! or a queue member over HTTP) and the names of the queues the node's
//! work goes through. It knows nothing of the node: the workers that run
//! the jobs are [`crate::workers`].
//!
//! An asynchronous upload's payload is one JSON line ([`UploadHead`]) and
//! the body after it.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The queue uploads go through.
pub const UPLOADS: &str = "uploads";
/// The queue of thumbnail jobs (derived work after an upload).
pub const THUMBS: &str = "thumbnails";
/// The queue of repair jobs (lost or corrupt copies, a dead store's blobs).
pub const REPAIRS: &str = "repairs";
/// The queue of search index changes.
pub const SEARCH_JOBS: &str = "search";
/// The queue of chunk deletes (a replaced or deleted object's chunks).
pub const CHUNK_DROPS: &str = "chunk-drops";

/// Where the queue is ([`queue::Handle`]: in this process or a member
/// over HTTP), with the node's error type and upload payload format.
#[derive(Clone)]
pub struct QueueHandle(queue::Handle);

impl From<queue::Handle> for QueueHandle {
    fn from(h: queue::Handle) -> Self {
        QueueHandle(h)
    }
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
pub(crate) type Leased = queue::client::Reserved;

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
        self.0
            .put(queue, payload.into(), idempotency_key, max_attempts)
            .await
            .map_err(unavailable)
    }

    /// A job's status as JSON (`None`: no such job).
    pub async fn status(&self, id: u64) -> Result<Option<serde_json::Value>> {
        self.0.status(id).await.map_err(unavailable)
    }

    pub(crate) async fn reserve(&self, queue: &str, wait: Duration) -> Result<Option<Leased>> {
        self.0.reserve(queue, wait).await.map_err(unavailable)
    }

    pub(crate) async fn finish(
        &self,
        job: &Leased,
        outcome: std::result::Result<Bytes, String>,
    ) -> Result<()> {
        self.0.finish(job, outcome).await.map_err(unavailable)
    }
}

/// One repair.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum RepairJob {
    /// Copies missing from some of `replicas`.
    Lost {
        id: u64,
        size: u64,
        replicas: Vec<String>,
    },
    /// `dead` is gone for good: a new copy elsewhere, then the index.
    Dead {
        key: String,
        id: u64,
        size: u64,
        replicas: Vec<String>,
        dead: String,
    },
    /// `store` holds a bad needle of blob `id`.
    Corrupt { id: u64, store: String },
}

/// Payload and idempotency key of a job repairing blob `id`'s corrupt
/// needle on `store`, found by the scrub pass that started at `pass_ms`.
pub fn corrupt_job(id: u64, store: &str, pass_ms: u64) -> (Vec<u8>, String) {
    let job = RepairJob::Corrupt {
        id,
        store: store.to_owned(),
    };
    (
        serde_json::to_vec(&job).unwrap_or_default(),
        format!("scrub:{store}:{id}:{pass_ms}"),
    )
}
