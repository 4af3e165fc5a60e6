//! The node's workers: asynchronous uploads, thumbnails, repairs, search
//! index changes and chunk deletes, taken from the queue and run against
//! the node.
//!
//! Asynchronous uploads: `POST` or `PUT /v1/blobs/{key}` with `Prefer:
//! respond-async` answers `202` with `Location: /v1/jobs/{id}` as soon as
//! the job is durable in the broker; a worker then writes the blob (R
//! replicas and the index commit) and completes the job with the blob's
//! metadata, which `GET /v1/jobs/{id}` reports. A failed job is retried by
//! the queue with backoff; a job out of attempts is a dead letter.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::jobs::{UploadHead, CHUNK_DROPS, REPAIRS, SEARCH_JOBS, THUMBS, UPLOADS};
use crate::Node;

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
    for queue in [UPLOADS, THUMBS, REPAIRS, SEARCH_JOBS, CHUNK_DROPS] {
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
                    REPAIRS => crate::repair::run_repair(&node, &job.payload).await,
                    SEARCH_JOBS => crate::indexing::run_index(&node, &job.payload).await,
                    CHUNK_DROPS => crate::objects::run_drops(&node, &job.payload).await,
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
