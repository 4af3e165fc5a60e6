//! [`Queue`]: the job queue's operations as one seam, with two backends —
//! the built-in [`Broker`] (a group-committed log, `strata serve` and a
//! `queue` member with a data directory) and [`crate::pg::PgQueue`]
//! (PostgreSQL, for a cluster: `queue` members become stateless fronts and
//! node workers claim jobs from the database directly). The HTTP API, the
//! beanstalkd protocol and the node's workers all speak to a
//! `dyn Queue`; one state-machine test suite runs against both.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::broker::{BrokerOptions, QueueStats};
use crate::job::{Job, NewJob, State, Status};
use crate::{Broker, Result};

/// A durable job queue. Every change is durable when it returns, except
/// the built-in broker's deletes without `sync_deletes` (durable before any
/// later change is acknowledged; see [`BrokerOptions::sync_deletes`]).
///
/// `holder` names a beanstalkd connection (0 for HTTP workers, which
/// present the lease token `lease` — the job's attempt number — instead).
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// The settings (payload limit, result TTL, backoff).
    fn options(&self) -> &BrokerOptions;
    /// Now, by the queue's clock (injected in tests).
    fn now_ms(&self) -> u64;
    /// Puts a job; its id once durable, and whether it is new (false: an
    /// earlier put with the same idempotency key made it).
    async fn put(&self, new: NewJob) -> Result<(u64, bool)>;
    /// Takes the most urgent ready job of `queues` (smallest priority, then
    /// oldest), leased to `holder` for its TTR; waits up to `timeout` for
    /// one (`None`: forever).
    async fn reserve(
        &self,
        queues: &[String],
        timeout: Option<Duration>,
        holder: u64,
    ) -> Result<Option<Job>>;
    /// Extends a reservation by the job's TTR from now.
    async fn touch(&self, id: u64, holder: u64, lease: Option<u32>) -> Result<()>;
    /// Marks a reserved job succeeded with `result`.
    async fn complete(&self, id: u64, holder: u64, lease: Option<u32>, result: Bytes)
        -> Result<()>;
    /// A failed attempt: retrying after a backoff with jitter, or dead.
    async fn fail(&self, id: u64, holder: u64, lease: Option<u32>, error: &str) -> Result<State>;
    /// Puts a reserved job back: ready now, or delayed by `delay_ms`.
    async fn release(
        &self,
        id: u64,
        holder: u64,
        lease: Option<u32>,
        priority: u32,
        delay_ms: u64,
    ) -> Result<()>;
    /// Buries a reserved job: dead until kicked.
    async fn bury(&self, id: u64, holder: u64, lease: Option<u32>, priority: u32) -> Result<()>;
    /// Deletes a job that is not reserved by someone else.
    async fn delete(&self, id: u64, holder: u64, lease: Option<u32>) -> Result<()>;
    /// Moves up to `bound` jobs of `queue` to ready: dead ones if any, else
    /// delayed ones (beanstalkd's kick).
    async fn kick(&self, queue: &str, bound: usize) -> Result<usize>;
    /// Kicks one dead or delayed job.
    async fn kick_job(&self, id: u64) -> Result<()>;
    /// Releases every job reserved by `holder` (a closed connection).
    async fn release_holder(&self, holder: u64) -> Result<()>;
    /// Waits until every change made so far is durable.
    async fn flush(&self) -> Result<()>;
    /// Job `id` (any state but pending).
    async fn get(&self, id: u64) -> Result<Option<Job>>;
    /// Job `id`'s status.
    async fn status(&self, id: u64) -> Result<Option<Status>> {
        Ok(self.get(id).await?.map(|j| j.status()))
    }
    /// The next job of `queue` in `state` (ready: most urgent; delayed:
    /// soonest; dead: oldest).
    async fn peek(&self, queue: &str, state: State) -> Result<Option<Job>>;
    /// Clients of this process waiting in `reserve` on `queue`.
    fn waiting(&self, queue: &str) -> u64;
    /// Dead jobs of `queue`, oldest first.
    async fn dead(&self, queue: &str, limit: usize) -> Result<Vec<Status>>;
    /// Queue names known.
    async fn queues(&self) -> Result<Vec<String>>;
    /// Counts for `queue`; `None` if it never had a job.
    async fn queue_stats(&self, queue: &str) -> Result<Option<QueueStats>>;
    /// Moves due delayed jobs to ready, redelivers expired leases, drops
    /// expired results (run by a timer; tests call it by hand).
    async fn tick(&self) -> Result<()>;
    /// Which backend: `builtin` or `postgres`.
    fn backend(&self) -> &'static str;
}

#[async_trait]
impl Queue for Broker {
    fn options(&self) -> &BrokerOptions {
        Broker::options(self)
    }
    fn now_ms(&self) -> u64 {
        Broker::now_ms(self)
    }
    async fn put(&self, new: NewJob) -> Result<(u64, bool)> {
        Broker::put(self, new).await
    }
    async fn reserve(
        &self,
        queues: &[String],
        timeout: Option<Duration>,
        holder: u64,
    ) -> Result<Option<Job>> {
        Broker::reserve(self, queues, timeout, holder).await
    }
    async fn touch(&self, id: u64, holder: u64, lease: Option<u32>) -> Result<()> {
        Broker::touch(self, id, holder, lease).await
    }
    async fn complete(
        &self,
        id: u64,
        holder: u64,
        lease: Option<u32>,
        result: Bytes,
    ) -> Result<()> {
        Broker::complete(self, id, holder, lease, result).await
    }
    async fn fail(&self, id: u64, holder: u64, lease: Option<u32>, error: &str) -> Result<State> {
        Broker::fail(self, id, holder, lease, error).await
    }
    async fn release(
        &self,
        id: u64,
        holder: u64,
        lease: Option<u32>,
        priority: u32,
        delay_ms: u64,
    ) -> Result<()> {
        Broker::release(self, id, holder, lease, priority, delay_ms).await
    }
    async fn bury(&self, id: u64, holder: u64, lease: Option<u32>, priority: u32) -> Result<()> {
        Broker::bury(self, id, holder, lease, priority).await
    }
    async fn delete(&self, id: u64, holder: u64, lease: Option<u32>) -> Result<()> {
        Broker::delete(self, id, holder, lease).await
    }
    async fn kick(&self, queue: &str, bound: usize) -> Result<usize> {
        Broker::kick(self, queue, bound).await
    }
    async fn kick_job(&self, id: u64) -> Result<()> {
        Broker::kick_job(self, id).await
    }
    async fn release_holder(&self, holder: u64) -> Result<()> {
        Broker::release_holder(self, holder);
        Ok(())
    }
    async fn flush(&self) -> Result<()> {
        Broker::flush(self).await
    }
    async fn get(&self, id: u64) -> Result<Option<Job>> {
        Ok(Broker::get(self, id))
    }
    async fn peek(&self, queue: &str, state: State) -> Result<Option<Job>> {
        Ok(Broker::peek(self, queue, state))
    }
    fn waiting(&self, queue: &str) -> u64 {
        Broker::waiting(self, queue)
    }
    async fn dead(&self, queue: &str, limit: usize) -> Result<Vec<Status>> {
        Ok(Broker::dead(self, queue, limit))
    }
    async fn queues(&self) -> Result<Vec<String>> {
        Ok(Broker::queues(self))
    }
    async fn queue_stats(&self, queue: &str) -> Result<Option<QueueStats>> {
        Ok(Broker::queue_stats(self, queue))
    }
    async fn tick(&self) -> Result<()> {
        Broker::tick(self);
        Ok(())
    }
    fn backend(&self) -> &'static str {
        "builtin"
    }
}
