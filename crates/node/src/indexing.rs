//! Search indexing against the node: the queue's indexing jobs applied
//! to the shards that own each book (a text sidecar read through the
//! node), with a catch-up job for a replica that was away. The jobs are
//! made by the write path ([`crate::search::change_job`]).

use std::sync::Arc;

use bytes::Bytes;
use search::{Applied, PageOp};
use serde::Deserialize;

use crate::jobs::SEARCH_JOBS;
use crate::search::{rejected, unavailable, IndexJob, PageText, CATCH_UP_ATTEMPTS, MAX_TEXT_BYTES};
use crate::{Node, Result};

/// Runs one indexing job from the queue.
pub(crate) async fn run_index(
    node: &Arc<Node>,
    payload: &Bytes,
) -> std::result::Result<Bytes, String> {
    let job: IndexJob =
        serde_json::from_slice(payload).map_err(|e| format!("bad search job: {e}"))?;
    let applied = run_job(node, job).await.map_err(|e| e.to_string())?;
    Ok(Bytes::from(
        serde_json::json!({ "applied": applied }).to_string(),
    ))
}

async fn run_job(node: &Arc<Node>, job: IndexJob) -> Result<Vec<Applied>> {
    let tier = node
        .search()
        .ok_or_else(|| unavailable("this node has no search shards"))?;
    let mut applied = Vec::new();
    let mut missed: Vec<String> = Vec::new();
    let mut ops = Vec::new();
    if let Some(old) = &job.old_book {
        let op = PageOp::Delete {
            key: job.key.clone(),
            version: job.version,
        };
        ops.push((old.clone(), op));
    }
    if let Some(p) = &job.page {
        let text = match &p.text {
            PageText::Inline(t) => t.clone(),
            PageText::Sidecar(k) => read_sidecar(node, k).await?,
        };
        let op = PageOp::Upsert {
            key: job.key.clone(),
            book: p.at.book.clone(),
            page: p.at.page,
            text,
            version: job.version,
        };
        ops.push((p.at.book.clone(), op));
    }
    for (book, op) in ops {
        match &job.only {
            // A catch-up job: the change only where the member holds the
            // book (the ring is the same for every node).
            Some(m) => {
                if tier.holds(m, &book) {
                    applied.extend(tier.apply_on(m, vec![op]).await?);
                }
            }
            None => {
                let r = tier.apply(&book, vec![op]).await?;
                applied.extend(r.applied);
                for m in r.missed {
                    if !missed.contains(&m) {
                        missed.push(m);
                    }
                }
            }
        }
    }
    // The change is searchable; a replica that was away gets it from a
    // job of its own, retried until it is back. Queued before this job
    // completes, and once (the key) however often this job runs.
    if !missed.is_empty() {
        let q = node
            .queue()
            .ok_or_else(|| unavailable("search needs a queue; this node has none"))?;
        for m in missed {
            let catch_up = IndexJob {
                only: Some(m.clone()),
                ..job.clone()
            };
            let payload = serde_json::to_vec(&catch_up).map_err(rejected)?;
            q.put_job(
                SEARCH_JOBS,
                payload,
                Some(format!("search:{}:{}:{m}", job.key, job.version)),
                CATCH_UP_ATTEMPTS,
            )
            .await?;
        }
    }
    Ok(applied)
}

/// Reads a JSON sidecar `{"text": "..."}`. The blob may be up to twice
/// the text limit (JSON escapes); the text itself at most the limit.
pub(crate) async fn read_sidecar(node: &Arc<Node>, key: &str) -> Result<String> {
    let meta = node
        .lookup(key)
        .await?
        .ok_or_else(|| rejected(format!("text sidecar {key:?} does not exist")))?;
    let too_big = || {
        rejected(format!(
            "text sidecar {key:?} is over {MAX_TEXT_BYTES} bytes"
        ))
    };
    if meta.size > 2 * MAX_TEXT_BYTES as u64 {
        return Err(too_big());
    }
    let raw = node.read_blob(&meta, None).await?;
    #[derive(Deserialize)]
    struct Sidecar {
        text: String,
    }
    let text = serde_json::from_slice::<Sidecar>(&raw)
        .map(|s| s.text)
        .map_err(|e| {
            rejected(format!(
                "text sidecar {key:?} is not {{\"text\": ...}}: {e}"
            ))
        })?;
    if text.len() > MAX_TEXT_BYTES {
        return Err(too_big());
    }
    Ok(text)
}
