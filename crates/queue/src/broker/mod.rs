//! The broker: jobs, their states and indexes, leases, backoff, dead
//! letters, and the log that makes each acknowledged change durable.
//!
//! Every state change happens under one lock and writes its log record
//! before the lock is released (so records are in the same order as the
//! changes); the caller then waits for the fsync outside the lock, so many
//! callers share one fsync (group commit). A put becomes visible to
//! workers only once durable: a worker can never run a job that a crash
//! could still erase. Reservations and (unless `sync_deletes`) deletes are
//! the exceptions that are not waited for: their records ride the next
//! sync, so losing one to a machine crash can only run a job again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::job::check_queue;
use crate::job::{check_new, Job, NewJob, State};
use table::{lease_ok, Inner};
use tick::spawn_ticker;

mod table;
mod tick;
mod views;
use crate::log::{self, Log, Record};
use crate::{Error, Result};

/// Broker settings.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Largest payload, bytes.
    pub max_payload: usize,
    /// How long a finished job's result is kept, ms.
    pub result_ttl_ms: u64,
    /// First retry delay, ms; doubled per attempt, with jitter.
    pub backoff_base_ms: u64,
    /// Longest retry delay, ms.
    pub backoff_max_ms: u64,
    /// Compaction starts once the log is this big and twice the live data.
    pub compact_min_bytes: u64,
    /// How often leases, delays and result expiry are checked.
    pub tick: Duration,
    /// Whether `delete` answers only once its record is on disk. Off by
    /// default: the record is written at once (a process crash keeps it)
    /// and synced with the next change somebody waits for, or within
    /// [`log::LAZY_SYNC`]; so a delete is durable before any later change
    /// is acknowledged, and a machine crash in that window can only bring
    /// a deleted job back (run again, as at-least-once delivery allows),
    /// never lose a put.
    pub sync_deletes: bool,
    /// Tests: the log's segment files under this fault plan
    /// ([`storage::Faults`]); `None` writes the files themselves.
    pub faults: Option<Arc<storage::Faults>>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            max_payload: 64 << 20,
            result_ttl_ms: 24 * 3600 * 1000,
            backoff_base_ms: 1000,
            backoff_max_ms: 300_000,
            compact_min_bytes: 64 << 20,
            tick: Duration::from_millis(50),
            sync_deletes: false,
            faults: None,
        }
    }
}

/// Counts of one queue.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QueueStats {
    /// Name.
    pub name: String,
    /// Ready jobs.
    pub ready: usize,
    /// Ready jobs with priority < 1024.
    pub urgent: usize,
    /// Reserved jobs.
    pub reserved: usize,
    /// Delayed or retrying jobs.
    pub delayed: usize,
    /// Dead (buried) jobs.
    pub dead: usize,
    /// Succeeded jobs still holding a result.
    pub succeeded: usize,
    /// Jobs ever put.
    pub total: u64,
    /// Clients waiting in reserve.
    pub waiting: u64,
}

/// The broker.
pub struct Broker {
    inner: Mutex<Inner>,
    log: Log,
    clock: Arc<dyn Clock>,
    opts: BrokerOptions,
    /// Woken whenever a job becomes ready.
    ready: Notify,
}

impl Broker {
    /// Opens (or creates) the broker's log in `dir` and rebuilds its jobs.
    /// Jobs that were reserved when it stopped are ready again: their
    /// leases died with the old process.
    pub fn open(dir: &Path, opts: BrokerOptions, clock: Arc<dyn Clock>) -> Result<Arc<Broker>> {
        std::fs::create_dir_all(dir)?;
        let (records, last, bytes) = log::replay(dir)?;
        let mut inner = Inner {
            rng: clock.now_ms() | 1,
            log_bytes: bytes,
            ..Inner::default()
        };
        let mut jobs: HashMap<u64, Job> = HashMap::new();
        for r in records {
            match r {
                Record::Put(j) => {
                    inner.next_id = inner.next_id.max(j.id);
                    jobs.insert(j.id, j);
                }
                Record::Update(mut u) => {
                    if let Some(old) = jobs.get(&u.id) {
                        u.payload = old.payload.clone();
                        jobs.insert(u.id, u);
                    }
                }
                Record::Remove(id) => {
                    jobs.remove(&id);
                }
            }
        }
        let now = clock.now_ms();
        for (_, mut j) in jobs {
            inner.dead_seq = inner.dead_seq.max(j.dead_seq);
            *inner.totals.entry(j.queue.clone()).or_default() += 1;
            match j.state {
                State::Pending | State::Reserved => {
                    j.state = if j.state == State::Pending && j.at_ms > now {
                        State::Delayed
                    } else {
                        State::Ready
                    };
                }
                _ => {}
            }
            if let Some(k) = &j.idempotency_key {
                inner.idem.insert((j.queue.clone(), k.clone()), j.id);
            }
            inner.insert(j);
        }
        tracing::info!(dir = %dir.display(), jobs = inner.jobs.len(), "queue log replayed");
        let broker = Arc::new(Broker {
            inner: Mutex::new(inner),
            log: Log::start(dir, last, opts.faults.clone())?,
            clock,
            opts,
            ready: Notify::new(),
        });
        spawn_ticker(Arc::downgrade(&broker), broker.opts.tick);
        Ok(broker)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The settings.
    pub fn options(&self) -> &BrokerOptions {
        &self.opts
    }

    /// Now, by the broker's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    async fn durable(rx: tokio::sync::oneshot::Receiver<std::io::Result<()>>) -> Result<()> {
        match rx.await {
            Ok(r) => Ok(r?),
            Err(_) => Err(Error::Io(std::io::Error::other("log writer stopped"))),
        }
    }

    /// Puts a job; returns its id once it is durable, and whether it is new
    /// (false: an earlier put with the same idempotency key made it).
    pub async fn put(&self, new: NewJob) -> Result<(u64, bool)> {
        check_new(&new, self.opts.max_payload)?;
        let now = self.clock.now_ms();
        let (id, rx) = {
            let mut g = self.lock();
            if let Some(k) = &new.idempotency_key {
                if let Some(&id) = g.idem.get(&(new.queue.clone(), k.clone())) {
                    return Ok((id, false));
                }
            }
            g.next_id += 1;
            let id = g.next_id;
            let job = Job {
                id,
                queue: new.queue.clone(),
                payload: new.payload,
                priority: new.priority,
                ttr_ms: new.ttr_ms.max(1000),
                max_attempts: new.max_attempts,
                idempotency_key: new.idempotency_key.clone(),
                state: State::Pending,
                created_ms: now,
                at_ms: now + new.delay_ms,
                attempts: 0,
                result: None,
                error: None,
                timeouts: 0,
                releases: 0,
                buries: 0,
                kicks: 0,
                holder: 0,
                dead_seq: 0,
            };
            let rx = self.write(&mut g, log::encode(&job, true));
            if let Some(k) = new.idempotency_key {
                g.idem.insert((new.queue.clone(), k), id);
            }
            *g.totals.entry(new.queue).or_default() += 1;
            g.insert(job);
            (id, rx)
        };
        if let Err(e) = Self::durable(rx).await {
            self.lock().remove(id);
            return Err(e);
        }
        let delayed = {
            let mut g = self.lock();
            g.change(id, |j, _| {
                j.state = if j.at_ms > now {
                    State::Delayed
                } else {
                    State::Ready
                };
                j.state == State::Delayed
            })
            .is_some_and(|(d, _)| d)
        };
        if !delayed {
            self.ready.notify_waiters();
        }
        Ok((id, true))
    }

    /// Takes the most urgent ready job of `queues` (smallest priority, then
    /// oldest), leased to `holder` for its TTR; waits up to `timeout` for
    /// one (`None`: forever).
    pub async fn reserve(
        &self,
        queues: &[String],
        timeout: Option<Duration>,
        holder: u64,
    ) -> Result<Option<Job>> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut counted = false;
        let out = loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(j) = self.try_reserve(queues, holder) {
                break Some(j);
            }
            if !counted {
                counted = true;
                let mut g = self.lock();
                for q in queues {
                    *g.waiting.entry(q.clone()).or_default() += 1;
                }
            }
            match deadline {
                Some(d) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(d) => break self.try_reserve(queues, holder),
                    }
                }
                None => notified.await,
            }
        };
        if counted {
            let mut g = self.lock();
            for q in queues {
                if let Some(w) = g.waiting.get_mut(q) {
                    *w = w.saturating_sub(1);
                }
            }
        }
        Ok(out)
    }

    fn try_reserve(&self, queues: &[String], holder: u64) -> Option<Job> {
        let now = self.clock.now_ms();
        let mut g = self.lock();
        let best = queues
            .iter()
            .filter_map(|q| g.ready.get(q).and_then(|r| r.first().copied()))
            .min()?;
        let (_, job) = g.change(best.1, |j, _| {
            j.state = State::Reserved;
            j.attempts += 1;
            j.holder = holder;
            j.at_ms = now + j.ttr_ms;
        })?;
        // Attempts are counted durably with the next batch, so a poison job
        // cannot loop forever across restarts; the lease itself is not.
        self.write_lazy(&mut g, log::encode(&job, false));
        Some(job)
    }

    fn record(
        &self,
        mut g: MutexGuard<'_, Inner>,
        job: &Job,
    ) -> tokio::sync::oneshot::Receiver<std::io::Result<()>> {
        self.write(&mut g, log::encode(job, false))
    }

    /// Sends a record to the log (counted for compaction); the receiver
    /// resolves once it is on disk.
    fn write(
        &self,
        g: &mut Inner,
        rec: Vec<u8>,
    ) -> tokio::sync::oneshot::Receiver<std::io::Result<()>> {
        g.log_bytes += rec.len() as u64 + 8;
        self.log.append(rec)
    }

    /// Sends a record nobody waits for (synced with the next batch).
    fn write_lazy(&self, g: &mut Inner, rec: Vec<u8>) {
        g.log_bytes += rec.len() as u64 + 8;
        self.log.append_lazy(rec);
    }

    /// Extends a reservation by the job's TTR from now.
    pub async fn touch(&self, id: u64, holder: u64, lease: Option<u32>) -> Result<()> {
        self.touch_now(id, holder, lease)
    }

    fn touch_now(&self, id: u64, holder: u64, lease: Option<u32>) -> Result<()> {
        let now = self.clock.now_ms();
        let mut g = self.lock();
        g.leased(id, holder, lease)?;
        g.change(id, |j, _| j.at_ms = now + j.ttr_ms);
        Ok(())
    }

    /// Marks a reserved job succeeded with `result` (kept `result_ttl_ms`).
    pub async fn complete(
        &self,
        id: u64,
        holder: u64,
        lease: Option<u32>,
        result: Bytes,
    ) -> Result<()> {
        let now = self.clock.now_ms();
        let rx = {
            let mut g = self.lock();
            g.leased(id, holder, lease)?;
            let (_, job) = g
                .change(id, |j, _| {
                    j.state = State::Succeeded;
                    j.at_ms = now;
                    j.result = Some(result);
                    j.error = None;
                    j.holder = 0;
                })
                .ok_or(Error::NotFound(id))?;
            self.record(g, &job)
        };
        Self::durable(rx).await
    }

    /// A failed attempt: retried after an exponential backoff with jitter,
    /// or dead once out of attempts.
    pub async fn fail(
        &self,
        id: u64,
        holder: u64,
        lease: Option<u32>,
        error: &str,
    ) -> Result<State> {
        let now = self.clock.now_ms();
        let (state, rx) = {
            let mut g = self.lock();
            let attempts = g.leased(id, holder, lease)?.attempts;
            let delay = self.backoff(&mut g, attempts);
            let (state, job) = g
                .change(id, |j, seq| {
                    j.error = Some(error.to_owned());
                    j.holder = 0;
                    if j.max_attempts > 0 && j.attempts >= j.max_attempts {
                        *seq += 1;
                        j.dead_seq = *seq;
                        j.state = State::Dead;
                    } else {
                        j.state = State::Retrying;
                        j.at_ms = now + delay;
                    }
                    j.state
                })
                .ok_or(Error::NotFound(id))?;
            (state, self.record(g, &job))
        };
        Self::durable(rx).await?;
        Ok(state)
    }

    /// `base * 2^(attempts-1)`, capped, times a random factor in [0.5, 1.5).
    fn backoff(&self, g: &mut Inner, attempts: u32) -> u64 {
        let exp = self
            .opts
            .backoff_base_ms
            .saturating_mul(1u64 << attempts.saturating_sub(1).min(30))
            .min(self.opts.backoff_max_ms);
        let jitter = g.random() % 1000;
        exp / 2 + exp * jitter / 1000
    }

    /// Puts a reserved job back: ready now, or delayed by `delay_ms`.
    pub async fn release(
        &self,
        id: u64,
        holder: u64,
        lease: Option<u32>,
        priority: u32,
        delay_ms: u64,
    ) -> Result<()> {
        let now = self.clock.now_ms();
        let rx = {
            let mut g = self.lock();
            g.leased(id, holder, lease)?;
            let (_, job) = g
                .change(id, |j, _| {
                    j.priority = priority;
                    j.releases += 1;
                    j.holder = 0;
                    if delay_ms > 0 {
                        j.state = State::Delayed;
                        j.at_ms = now + delay_ms;
                    } else {
                        j.state = State::Ready;
                    }
                })
                .ok_or(Error::NotFound(id))?;
            self.record(g, &job)
        };
        Self::durable(rx).await?;
        self.ready.notify_waiters();
        Ok(())
    }

    /// Buries a reserved job: dead until kicked.
    pub async fn bury(
        &self,
        id: u64,
        holder: u64,
        lease: Option<u32>,
        priority: u32,
    ) -> Result<()> {
        let rx = {
            let mut g = self.lock();
            g.leased(id, holder, lease)?;
            let (_, job) = g
                .change(id, |j, seq| {
                    *seq += 1;
                    j.dead_seq = *seq;
                    j.priority = priority;
                    j.buries += 1;
                    j.holder = 0;
                    j.state = State::Dead;
                })
                .ok_or(Error::NotFound(id))?;
            self.record(g, &job)
        };
        Self::durable(rx).await
    }

    /// Deletes a job that is not reserved by someone else.
    pub async fn delete(&self, id: u64, holder: u64, lease: Option<u32>) -> Result<()> {
        let rx = {
            let mut g = self.lock();
            match g.jobs.get(&id) {
                Some(j) if j.state == State::Pending => return Err(Error::NotFound(id)),
                Some(j) if j.state == State::Reserved && !lease_ok(j, holder, lease) => {
                    return Err(Error::NotReserved(id))
                }
                Some(_) => {}
                None => return Err(Error::NotFound(id)),
            }
            g.remove(id);
            if !self.opts.sync_deletes {
                self.write_lazy(&mut g, log::encode_remove(id));
                return Ok(());
            }
            self.write(&mut g, log::encode_remove(id))
        };
        Self::durable(rx).await
    }

    /// Moves up to `bound` jobs of `queue` to ready: dead ones if there are
    /// any, else delayed ones (beanstalkd's kick).
    pub async fn kick(&self, queue: &str, bound: usize) -> Result<usize> {
        let rx = {
            let mut g = self.lock();
            let dead: Vec<u64> = g
                .dead
                .get(queue)
                .map(|d| d.iter().take(bound).map(|x| x.1).collect())
                .unwrap_or_default();
            let ids = if dead.is_empty() {
                let delayed: Vec<u64> = g.delayed.iter().map(|x| x.1).collect();
                delayed
                    .into_iter()
                    .filter(|id| g.jobs.get(id).is_some_and(|j| j.queue == queue))
                    .take(bound)
                    .collect()
            } else {
                dead
            };
            if ids.is_empty() {
                return Ok(0);
            }
            let mut last = None;
            for &id in &ids {
                if let Some((_, job)) = g.change(id, |j, _| {
                    j.kicks += 1;
                    j.state = State::Ready;
                    if j.max_attempts > 0 && j.attempts >= j.max_attempts {
                        // A kicked dead letter gets one more attempt.
                        j.max_attempts = j.attempts + 1;
                    }
                }) {
                    last = Some(self.write(&mut g, log::encode(&job, false)));
                }
            }
            (last, ids.len())
        };
        if let Some(rx) = rx.0 {
            Self::durable(rx).await?;
        }
        self.ready.notify_waiters();
        Ok(rx.1)
    }

    /// Kicks one dead or delayed job.
    pub async fn kick_job(&self, id: u64) -> Result<()> {
        let rx = {
            let mut g = self.lock();
            match g.jobs.get(&id) {
                Some(j) if matches!(j.state, State::Dead | State::Delayed | State::Retrying) => {}
                _ => return Err(Error::NotFound(id)),
            }
            let (_, job) = g
                .change(id, |j, _| {
                    j.kicks += 1;
                    j.state = State::Ready;
                    if j.max_attempts > 0 && j.attempts >= j.max_attempts {
                        j.max_attempts = j.attempts + 1;
                    }
                })
                .ok_or(Error::NotFound(id))?;
            self.record(g, &job)
        };
        Self::durable(rx).await?;
        self.ready.notify_waiters();
        Ok(())
    }

    /// Releases every job reserved by `holder` (a beanstalkd connection
    /// that closed).
    pub fn release_holder(&self, holder: u64) {
        let mut g = self.lock();
        let ids: Vec<u64> = g
            .leases
            .iter()
            .map(|x| x.1)
            .filter(|id| g.jobs.get(id).is_some_and(|j| j.holder == holder))
            .collect();
        for id in &ids {
            g.change(*id, |j, _| {
                j.state = State::Ready;
                j.holder = 0;
            });
        }
        drop(g);
        if !ids.is_empty() {
            self.ready.notify_waiters();
        }
    }

    /// Waits until every change made so far is on disk (reservations and
    /// expiries are otherwise written with the next batch).
    pub async fn flush(&self) -> Result<()> {
        // Removing id 0 (never a job) is a no-op record that rides the
        // group commit like any other.
        let rx = self.log.append(log::encode_remove(0));
        Self::durable(rx).await
    }
}
