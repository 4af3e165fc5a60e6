//! [`PgQueue`]: the job queue in PostgreSQL, for a cluster. Same states and
//! rules as the built-in [`crate::Broker`] (leases with tokens, backoff with
//! jitter, dead letters, idempotency keys, results with a TTL, delays,
//! priorities), kept in one table, `strata_jobs`, so that any number of
//! stateless `queue` fronts and node workers share it:
//!
//! - a claim is one `UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)`
//!   (the pattern of River, Oban and Solid Queue): concurrent workers skip
//!   each other's rows instead of queueing on them;
//! - a put that made a ready job sends `NOTIFY strata_jobs, '<queue>'` once
//!   it has committed, as a statement of its own: a NOTIFY inside the
//!   writing transaction holds PostgreSQL's notification lock through the
//!   commit and its wait for the standby, which serialised every put
//!   (`bench -- pg`: 779 put+reserve+delete cycles/s with it, 1,225
//!   without). Every
//!   process LISTENs on one connection outside the pool and wakes one
//!   waiting reserve of that queue (which also looks again every second,
//!   in case a notification was missed across a failover);
//! - every change commits synchronously (on the standby too) before it
//!   returns; times come from the injected clock, so tests drive delays,
//!   leases and expiry by hand exactly as with the broker;
//! - idempotency keys live as long as their job (a partial unique index on
//!   `(queue, idem_key)`), as with the broker.
//!
//! Differences from the broker: a front's restart does not return its
//! reservations at once (they come back when their lease ends, since other
//! fronts may hold valid ones); `total` counts the jobs the table holds;
//! a put without an idempotency key whose answer was lost is retried and
//! may make a second job (give a key to make puts exactly-once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::backend::Queue;
use crate::broker::{BrokerOptions, Clock, QueueStats};
use crate::job::check_new;
use crate::job::{Job, NewJob, State, Status};
use crate::{Error, Result};

pub use pg::PgOptions;
use schema::{job, parse_state, state_name, COLS, LEASED, MIGRATIONS, OUT_OF_ATTEMPTS};

mod schema;

const CHANNEL: &str = "strata_jobs";

type Params<'a> = [&'a (dyn tokio_postgres::types::ToSql + Sync)];

/// This process's waiting reserves, per queue.
#[derive(Default)]
struct Wakeups {
    /// Reserves watching several queues.
    all: Notify,
    queues: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Wakeups {
    fn queue(&self, q: &str) -> Arc<Notify> {
        let mut m = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(q.to_owned()).or_default().clone()
    }

    /// A notification: a new ready job of `queue` wakes one of its
    /// waiters; anything else (`''`: releases, kicks, due jobs; `None`: a
    /// reconnect, after which notifications may have been missed) wakes
    /// them all.
    fn wake(&self, queue: Option<&str>) {
        let m = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        match queue.filter(|q| !q.is_empty()) {
            Some(q) => {
                if let Some(n) = m.get(q) {
                    n.notify_one();
                }
            }
            None => m.values().for_each(|n| n.notify_waiters()),
        }
        self.all.notify_waiters();
    }
}

/// The job queue in PostgreSQL.
pub struct PgQueue {
    db: pg::Db,
    opts: BrokerOptions,
    clock: Arc<dyn Clock>,
    /// Woken by notifications (and reconnects) of the LISTEN connection.
    ready: Arc<Wakeups>,
    waiting: Mutex<HashMap<String, u64>>,
    listener: tokio::task::JoinHandle<()>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for PgQueue {
    fn drop(&mut self) {
        self.listener.abort();
        if let Some(t) = &self.ticker {
            t.abort();
        }
    }
}

fn lease_param(lease: Option<u32>) -> i64 {
    lease.map_or(-1, i64::from)
}

impl PgQueue {
    /// Connects, creates or migrates the schema (refusing a newer one),
    /// starts listening for new jobs and, unless `opts.tick` is an hour or
    /// more (tests tick by hand), the timer that moves due and expired
    /// jobs.
    pub async fn connect(
        pg_opts: PgOptions,
        opts: BrokerOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<PgQueue>> {
        let db = pg::Db::new(pg_opts)?;
        db.migrate("queue", MIGRATIONS).await?;
        db.warm_up().await;
        let ready = Arc::new(Wakeups::default());
        let wake = ready.clone();
        let listener = db.listen(CHANNEL, move |queue| wake.wake(queue));
        let manual = opts.tick >= Duration::from_secs(3600);
        let every = opts.tick;
        let q = Arc::new_cyclic(|weak: &std::sync::Weak<PgQueue>| {
            let ticker = (!manual).then(|| {
                let weak = weak.clone();
                tokio::spawn(async move {
                    let mut t = tokio::time::interval(every);
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        t.tick().await;
                        let Some(q) = weak.upgrade() else { return };
                        if let Err(e) = q.tick().await {
                            tracing::warn!(error = %e, "queue tick failed");
                        }
                    }
                })
            });
            PgQueue {
                db,
                opts,
                clock,
                ready,
                waiting: Mutex::new(HashMap::new()),
                listener,
                ticker,
            }
        });
        Ok(q)
    }

    /// One statement with retries across connection failures.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<pg::Row>> {
        Ok(self.db.query(sql, params).await?)
    }

    /// Why a lease-guarded change matched no row.
    async fn not_leased(&self, id: u64) -> Error {
        let id64 = id as i64;
        match self
            .query("SELECT 1 FROM strata_jobs WHERE id = $1", &[&id64])
            .await
        {
            Ok(rows) if rows.is_empty() => Error::NotFound(id),
            Ok(_) => Error::NotReserved(id),
            Err(e) => e,
        }
    }

    /// A change of a job reserved under (`holder`, `lease`): `set` is the
    /// SET list, `$1` the id and `$4..` the extra parameters; returns the
    /// `returning` column.
    async fn leased_change(
        &self,
        id: u64,
        holder: u64,
        lease: Option<u32>,
        set: &str,
        extra: &Params<'_>,
    ) -> Result<pg::Row> {
        let sql =
            format!("UPDATE strata_jobs SET {set} WHERE id = $1 AND {LEASED} RETURNING state");
        let (id64, h, l) = (id as i64, holder as i64, lease_param(lease));
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&id64, &h, &l];
        params.extend_from_slice(extra);
        let mut rows = self.query(&sql, &params).await?;
        match rows.pop() {
            Some(r) => Ok(r),
            None => Err(self.not_leased(id).await),
        }
    }

    async fn try_reserve(&self, queues: &[String], holder: u64) -> Result<Option<Job>> {
        let now = self.clock.now_ms() as i64;
        let h = holder as i64;
        let sql = format!("SELECT {COLS} FROM strata_job_claim($1::text[], $2, $3)");
        let rows = self.query(&sql, &[&queues, &now, &h]).await?;
        Ok(rows.first().map(job))
    }

    fn count_waiting(&self, queues: &[String], delta: i64) {
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        for q in queues {
            let e = w.entry(q.clone()).or_default();
            *e = e.saturating_add_signed(delta);
        }
    }

    async fn notify(&self) -> Result<()> {
        self.query("SELECT pg_notify($1, '')", &[&CHANNEL]).await?;
        Ok(())
    }
}

#[async_trait]
impl Queue for PgQueue {
    fn options(&self) -> &BrokerOptions {
        &self.opts
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    async fn put(&self, new: NewJob) -> Result<(u64, bool)> {
        check_new(&new, self.opts.max_payload)?;
        let now = self.clock.now_ms();
        let at = now + new.delay_ms;
        let state = if at > now {
            State::Delayed
        } else {
            State::Ready
        };
        let rows = self
            .query(
                "SELECT o_id, o_new FROM strata_job_put($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &new.queue,
                    &&new.payload[..],
                    &i64::from(new.priority),
                    &(new.ttr_ms.max(1000) as i64),
                    &i64::from(new.max_attempts),
                    &new.idempotency_key,
                    &state_name(state),
                    &(now as i64),
                    &(at as i64),
                ],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| Error::Invalid("strata_job_put returned no row".into()))?;
        let (id, created) = (row.get::<_, i64>(0) as u64, row.get(1));
        if created && state == State::Ready {
            // The job is durable; a lost notification only delays it to
            // the waiters' next look.
            self.query("SELECT pg_notify($1, $2)", &[&CHANNEL, &new.queue])
                .await?;
        }
        Ok((id, created))
    }

    async fn reserve(
        &self,
        queues: &[String],
        timeout: Option<Duration>,
        holder: u64,
    ) -> Result<Option<Job>> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut counted = false;
        let out = loop {
            // One queue: woken one waiter per new job of that queue, so a
            // put costs one claim query, not one per waiting worker.
            // Several: woken by every notification.
            let one = (queues.len() == 1).then(|| self.ready.queue(&queues[0]));
            let notified = match &one {
                Some(n) => n.notified(),
                None => self.ready.all.notified(),
            };
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_reserve(queues, holder).await {
                Ok(Some(j)) => break Ok(Some(j)),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            if !counted {
                counted = true;
                self.count_waiting(queues, 1);
            }
            // Look again at least every second: a notification sent while
            // the LISTEN connection was being re-made is lost.
            let poll = tokio::time::Instant::now() + Duration::from_secs(1);
            let until = deadline.map_or(poll, |d| d.min(poll));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        break self.try_reserve(queues, holder).await;
                    }
                }
            }
        };
        if counted {
            self.count_waiting(queues, -1);
        }
        out
    }

    async fn touch(&self, id: u64, holder: u64, lease: Option<u32>) -> Result<()> {
        let now = self.clock.now_ms() as i64;
        self.leased_change(id, holder, lease, "at_ms = $4::bigint + ttr_ms", &[&now])
            .await
            .map(|_| ())
    }

    async fn complete(
        &self,
        id: u64,
        holder: u64,
        lease: Option<u32>,
        result: Bytes,
    ) -> Result<()> {
        let now = self.clock.now_ms() as i64;
        self.leased_change(
            id,
            holder,
            lease,
            "state = 'succeeded', at_ms = $4::bigint, result = $5::bytea, error = NULL, holder = 0",
            &[&now, &&result[..]],
        )
        .await
        .map(|_| ())
    }

    async fn fail(&self, id: u64, holder: u64, lease: Option<u32>, error: &str) -> Result<State> {
        let now = self.clock.now_ms() as i64;
        let (base, cap) = (
            self.opts.backoff_base_ms as i64,
            self.opts.backoff_max_ms as i64,
        );
        let set = format!(
            "error = $4, holder = 0,
             state = CASE WHEN {OUT_OF_ATTEMPTS} THEN 'dead' ELSE 'retrying' END,
             dead_seq = CASE WHEN {OUT_OF_ATTEMPTS} THEN nextval('strata_dead_seq') ELSE dead_seq END,
             at_ms = CASE WHEN {OUT_OF_ATTEMPTS} THEN at_ms ELSE $5::bigint + strata_backoff(attempts, $6::bigint, $7::bigint) END"
        );
        let row = self
            .leased_change(id, holder, lease, &set, &[&error, &now, &base, &cap])
            .await?;
        Ok(parse_state(row.get(0)))
    }

    async fn release(
        &self,
        id: u64,
        holder: u64,
        lease: Option<u32>,
        priority: u32,
        delay_ms: u64,
    ) -> Result<()> {
        let at = (self.clock.now_ms() + delay_ms) as i64;
        let (p, delayed) = (i64::from(priority), delay_ms > 0);
        self.leased_change(
            id,
            holder,
            lease,
            "priority = $4, releases = releases + 1, holder = 0,
             state = CASE WHEN $5::bool THEN 'delayed' ELSE 'ready' END,
             at_ms = CASE WHEN $5::bool THEN $6::bigint ELSE at_ms END",
            &[&p, &delayed, &at],
        )
        .await?;
        if !delayed {
            self.notify().await?;
        }
        Ok(())
    }

    async fn bury(&self, id: u64, holder: u64, lease: Option<u32>, priority: u32) -> Result<()> {
        let p = i64::from(priority);
        self.leased_change(
            id,
            holder,
            lease,
            "state = 'dead', dead_seq = nextval('strata_dead_seq'), priority = $4,
             buries = buries + 1, holder = 0",
            &[&p],
        )
        .await
        .map(|_| ())
    }

    async fn delete(&self, id: u64, holder: u64, lease: Option<u32>) -> Result<()> {
        let (id64, h, l) = (id as i64, holder as i64, lease_param(lease));
        let sql = format!(
            "DELETE FROM strata_jobs WHERE id = $1 AND (state <> 'reserved' OR ({LEASED})) RETURNING id"
        );
        if self.query(&sql, &[&id64, &h, &l]).await?.is_empty() {
            return Err(self.not_leased(id).await);
        }
        Ok(())
    }

    async fn kick(&self, queue: &str, bound: usize) -> Result<usize> {
        let n = bound as i64;
        let mut kicked = 0;
        for (states, order) in [
            ("'dead'", "dead_seq"),
            ("'delayed', 'retrying'", "at_ms, id"),
        ] {
            let sql = format!(
                "UPDATE strata_jobs SET kicks = kicks + 1, state = 'ready',
                     max_attempts = CASE WHEN {OUT_OF_ATTEMPTS} THEN attempts + 1 ELSE max_attempts END
                 WHERE id IN (SELECT id FROM strata_jobs WHERE queue = $1 AND state IN ({states})
                              ORDER BY {order} LIMIT $2 FOR UPDATE SKIP LOCKED)
                 RETURNING id"
            );
            kicked = self.query(&sql, &[&queue, &n]).await?.len();
            if kicked > 0 {
                break;
            }
        }
        if kicked > 0 {
            self.notify().await?;
        }
        Ok(kicked)
    }

    async fn kick_job(&self, id: u64) -> Result<()> {
        let id64 = id as i64;
        let sql = format!(
            "UPDATE strata_jobs SET kicks = kicks + 1, state = 'ready',
                 max_attempts = CASE WHEN {OUT_OF_ATTEMPTS} THEN attempts + 1 ELSE max_attempts END
             WHERE id = $1 AND state IN ('dead', 'delayed', 'retrying') RETURNING id"
        );
        if self.query(&sql, &[&id64]).await?.is_empty() {
            return Err(Error::NotFound(id));
        }
        self.notify().await
    }

    async fn release_holder(&self, holder: u64) -> Result<()> {
        let h = holder as i64;
        let n = self
            .query(
                "UPDATE strata_jobs SET state = 'ready', holder = 0
                 WHERE state = 'reserved' AND holder = $1 RETURNING id",
                &[&h],
            )
            .await?
            .len();
        if n > 0 {
            self.notify().await?;
        }
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        // Every change committed synchronously before it returned.
        Ok(())
    }

    async fn get(&self, id: u64) -> Result<Option<Job>> {
        let id64 = id as i64;
        let sql = format!("SELECT {COLS} FROM strata_jobs WHERE id = $1");
        Ok(self.query(&sql, &[&id64]).await?.first().map(job))
    }

    async fn peek(&self, queue: &str, state: State) -> Result<Option<Job>> {
        let (states, order) = match state {
            State::Ready => ("'ready'", "priority, id"),
            State::Dead => ("'dead'", "dead_seq"),
            State::Delayed | State::Retrying => ("'delayed', 'retrying'", "at_ms, id"),
            _ => return Ok(None),
        };
        let sql = format!(
            "SELECT {COLS} FROM strata_jobs WHERE queue = $1 AND state IN ({states})
             ORDER BY {order} LIMIT 1"
        );
        Ok(self.query(&sql, &[&queue]).await?.first().map(job))
    }

    fn waiting(&self, queue: &str) -> u64 {
        let w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        w.get(queue).copied().unwrap_or(0)
    }

    async fn dead(&self, queue: &str, limit: usize) -> Result<Vec<Status>> {
        let n = limit as i64;
        let sql = format!(
            "SELECT {COLS} FROM strata_jobs WHERE queue = $1 AND state = 'dead'
             ORDER BY dead_seq LIMIT $2"
        );
        Ok(self
            .query(&sql, &[&queue, &n])
            .await?
            .iter()
            .map(|r| job(r).status())
            .collect())
    }

    async fn queues(&self) -> Result<Vec<String>> {
        Ok(self
            .query("SELECT name FROM strata_queues ORDER BY name", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    async fn queue_stats(&self, queue: &str) -> Result<Option<QueueStats>> {
        let rows = self
            .query(
                "SELECT j.state, count(j.id), count(j.id) FILTER (WHERE j.priority < 1024)
                 FROM strata_queues q LEFT JOIN strata_jobs j ON j.queue = q.name
                 WHERE q.name = $1 GROUP BY j.state",
                &[&queue],
            )
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut s = QueueStats {
            name: queue.to_owned(),
            waiting: Queue::waiting(self, queue),
            ..QueueStats::default()
        };
        for r in rows {
            let n = r.get::<_, i64>(1) as usize;
            s.total += n as u64;
            match r.get::<_, Option<&str>>(0).map(parse_state) {
                Some(State::Ready) => {
                    s.ready += n;
                    s.urgent += r.get::<_, i64>(2) as usize;
                }
                Some(State::Reserved) => s.reserved += n,
                Some(State::Delayed | State::Retrying) => s.delayed += n,
                Some(State::Dead) => s.dead += n,
                Some(State::Succeeded) => s.succeeded += n,
                _ => {}
            }
        }
        Ok(Some(s))
    }

    async fn tick(&self) -> Result<()> {
        let now = self.clock.now_ms() as i64;
        let due = self
            .query(
                "UPDATE strata_jobs SET state = 'ready'
                 WHERE state IN ('delayed', 'retrying') AND at_ms <= $1 RETURNING id",
                &[&now],
            )
            .await?
            .len();
        let sql = format!(
            "UPDATE strata_jobs SET timeouts = timeouts + 1, holder = 0,
                 error = CASE WHEN {OUT_OF_ATTEMPTS} THEN 'lease expired on the last attempt' ELSE error END,
                 dead_seq = CASE WHEN {OUT_OF_ATTEMPTS} THEN nextval('strata_dead_seq') ELSE dead_seq END,
                 state = CASE WHEN {OUT_OF_ATTEMPTS} THEN 'dead' ELSE 'ready' END
             WHERE state = 'reserved' AND at_ms <= $1 RETURNING state"
        );
        let expired = self.query(&sql, &[&now]).await?;
        let ttl = self.opts.result_ttl_ms as i64;
        self.query(
            "DELETE FROM strata_jobs WHERE state = 'succeeded' AND at_ms + $2 <= $1",
            &[&now, &ttl],
        )
        .await?;
        let woke = due > 0 || expired.iter().any(|r| r.get::<_, &str>(0) == "ready");
        if woke {
            self.notify().await?;
        }
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}
