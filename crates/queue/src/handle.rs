//! [`Handle`]: the queue as a user of it sees it, wherever it is — a
//! backend in this process ([`crate::Broker`] in `strata serve`,
//! [`crate::pg::PgQueue`] when the jobs live in PostgreSQL) or a queue
//! member over HTTP ([`QueueClient`]). The request nodes' workers and the
//! web console's jobs view both hold one, so the choice between a direct
//! call and a wire call is written once, here, beside both.
//!
//! Only what a producer, a worker and an operator need is here: put, a
//! job's status, lease and finish, the queues with their dead letters, and
//! kicking or deleting one job. Leases are always the job's own attempt
//! number, which is what the HTTP API names, so a worker does not care how
//! it reached the queue.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::client::{QueueClient, Reserved};
use crate::{NewJob, Queue, Result};

/// Where the queue is.
#[derive(Clone)]
pub enum Handle {
    /// Reached by direct calls: the in-process broker or the jobs in
    /// PostgreSQL.
    Local(Arc<dyn Queue>),
    /// A queue member over its HTTP API.
    Remote(QueueClient),
}

impl Handle {
    /// Puts a job on `queue`; its id once durable. A repeated
    /// `idempotency_key` answers the first job's id.
    pub async fn put(
        &self,
        queue: &str,
        payload: Bytes,
        idempotency_key: Option<String>,
        max_attempts: u32,
    ) -> Result<u64> {
        match self {
            Handle::Local(q) => {
                let mut job = NewJob::new(queue, payload);
                job.idempotency_key = idempotency_key;
                job.max_attempts = max_attempts;
                q.put(job).await.map(|(id, _)| id)
            }
            Handle::Remote(c) => c.put(queue, payload, idempotency_key, max_attempts).await,
        }
    }

    /// Job `id`'s status as the jobs API reports it; `None` when there is
    /// no such job.
    pub async fn status(&self, id: u64) -> Result<Option<serde_json::Value>> {
        match self {
            Handle::Local(q) => Ok(q
                .status(id)
                .await?
                .map(|s| serde_json::to_value(s).unwrap_or_default())),
            Handle::Remote(c) => c.status(id).await,
        }
    }

    /// Leases the next ready job of `queue`, waiting up to `wait` for one.
    pub async fn reserve(&self, queue: &str, wait: Duration) -> Result<Option<Reserved>> {
        match self {
            // Holder 0: a lease named by its attempt number, as over HTTP.
            Handle::Local(q) => Ok(q
                .reserve(&[queue.to_owned()], Some(wait), 0)
                .await?
                .map(|j| Reserved {
                    id: j.id,
                    lease: j.attempts,
                    payload: j.payload,
                })),
            Handle::Remote(c) => c.reserve(queue, wait).await,
        }
    }

    /// Completes a leased job with its result (`Ok`) or fails this attempt
    /// (`Err`: retried with backoff, or dead once out of attempts).
    pub async fn finish(
        &self,
        job: &Reserved,
        outcome: std::result::Result<Bytes, String>,
    ) -> Result<()> {
        match (self, outcome) {
            (Handle::Local(q), Ok(r)) => q.complete(job.id, 0, Some(job.lease), r).await,
            (Handle::Local(q), Err(e)) => q.fail(job.id, 0, Some(job.lease), &e).await.map(|_| ()),
            (Handle::Remote(c), Ok(r)) => c.complete(job.id, job.lease, r).await,
            (Handle::Remote(c), Err(e)) => c.fail(job.id, job.lease, &e).await,
        }
    }

    /// Every queue's counts as `GET /v1/queues` answers them, each with up
    /// to `dead` of its oldest dead letters under `dead_jobs`.
    pub async fn overview(&self, dead: usize) -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        match self {
            Handle::Local(q) => {
                for name in q.queues().await? {
                    // A queue emptied and forgotten since it was listed.
                    let Some(s) = q.queue_stats(&name).await? else {
                        continue;
                    };
                    let mut v = serde_json::to_value(s).unwrap_or_default();
                    v["dead_jobs"] =
                        serde_json::to_value(q.dead(&name, dead).await?).unwrap_or_default();
                    out.push(v);
                }
            }
            Handle::Remote(c) => {
                for mut v in c.queues().await? {
                    let name = v["name"].as_str().unwrap_or_default().to_owned();
                    v["dead_jobs"] = c.dead(&name, dead).await?.into();
                    out.push(v);
                }
            }
        }
        Ok(out)
    }

    /// Moves dead or delayed job `id` back to ready.
    pub async fn kick_job(&self, id: u64) -> Result<()> {
        match self {
            Handle::Local(q) => q.kick_job(id).await,
            Handle::Remote(c) => c.kick_job(id).await,
        }
    }

    /// Deletes job `id` (one nobody holds).
    pub async fn delete(&self, id: u64) -> Result<()> {
        match self {
            Handle::Local(q) => q.delete(id, 0, None).await,
            Handle::Remote(c) => c.delete(id).await,
        }
    }
}
