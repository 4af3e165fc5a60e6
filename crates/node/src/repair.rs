//! Re-replication: a read that finds a replica without its blob queues a
//! repair job; a worker copies the blob from a replica that has it to each
//! one that lost it, so the blob is back at R copies.

use std::sync::Arc;

use bytes::Bytes;
use index::BlobMeta;
use serde::{Deserialize, Serialize};

use crate::{Error, Node};

/// The queue of repair jobs.
pub const REPAIRS: &str = "repairs";

/// What a repair job names: the blob and where its copies should be.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RepairJob {
    id: u64,
    size: u64,
    replicas: Vec<String>,
}

impl Node {
    /// Queues a repair of `meta`'s blob (once per blob id while the job's
    /// result is kept).
    pub(crate) async fn queue_repair(&self, meta: &BlobMeta) {
        let Some(q) = self.queue() else { return };
        let job = RepairJob {
            id: meta.id,
            size: meta.size,
            replicas: meta.replicas.clone(),
        };
        let Ok(payload) = serde_json::to_vec(&job) else {
            return;
        };
        match q
            .put_job(
                REPAIRS,
                payload,
                Some(format!("repair:{}", meta.id)),
                self.opts.upload_attempts,
            )
            .await
        {
            Ok(j) => tracing::info!(blob = meta.id, job = j, "replica lost: repair queued"),
            Err(e) => tracing::warn!(blob = meta.id, error = %e, "could not queue a repair"),
        }
    }
}

/// Runs one repair job: the names of the stores that got their copy back.
pub(crate) async fn run_repair(node: &Arc<Node>, payload: &Bytes) -> Result<Bytes, String> {
    let job: RepairJob =
        serde_json::from_slice(payload).map_err(|e| format!("bad repair job: {e}"))?;
    let mut missing = Vec::new();
    let mut source = None;
    for name in &job.replicas {
        let Some(m) = node.stores.iter().find(|s| &s.name == name) else {
            continue;
        };
        // A one-byte range is enough to know whether the copy is there.
        let probe = (job.size > 0).then_some((0, 1));
        match m.handle.get(&m.name, job.id, probe).await {
            Ok(_) => source = source.or(Some(m)),
            Err(Error::NotFound) => missing.push(m),
            // Unreachable now: fail, and the queue retries later.
            Err(e) => return Err(format!("{name}: {e}")),
        }
    }
    if missing.is_empty() {
        return Ok(Bytes::from(r#"{"repaired":[]}"#));
    }
    let src = source.ok_or("no replica has the blob any more")?;
    let body = src
        .handle
        .get(&src.name, job.id, None)
        .await
        .map_err(|e| format!("{}: {e}", src.name))?;
    let mut repaired = Vec::new();
    for m in missing {
        m.handle
            .put(&m.name, job.id, body.clone())
            .await
            .map_err(|e| format!("{}: {e}", m.name))?;
        repaired.push(m.name.clone());
    }
    tracing::info!(blob = job.id, ?repaired, "replicas restored");
    Ok(Bytes::from(
        serde_json::json!({"repaired": repaired}).to_string(),
    ))
}
