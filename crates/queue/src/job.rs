//! Jobs and their states.

use bytes::Bytes;
use serde::Serialize;

use crate::{Error, Result};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Put, not yet durable: invisible to workers.
    Pending,
    /// Waiting for a worker.
    Ready,
    /// Waiting for its delay to pass.
    Delayed,
    /// Leased to a worker until its lease ends.
    Reserved,
    /// Done; its result is kept for a while.
    Succeeded,
    /// Failed; waits for its backoff before the next attempt.
    Retrying,
    /// Out of attempts, or buried: a dead letter until kicked or deleted.
    Dead,
}

impl State {
    /// The name beanstalkd gives the state.
    pub fn beanstalk(self) -> &'static str {
        match self {
            State::Pending | State::Ready => "ready",
            State::Delayed | State::Retrying => "delayed",
            State::Reserved => "reserved",
            State::Dead => "buried",
            State::Succeeded => "succeeded",
        }
    }
}

/// What a put asks for.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Queue (beanstalkd: tube) name.
    pub queue: String,
    /// Opaque bytes.
    pub payload: Bytes,
    /// Smaller runs first.
    pub priority: u32,
    /// Milliseconds before it becomes ready.
    pub delay_ms: u64,
    /// Lease length per reservation, milliseconds (at least 1000).
    pub ttr_ms: u64,
    /// Attempts before it goes dead; 0 = unlimited (beanstalkd's jobs).
    pub max_attempts: u32,
    /// Puts with the same key (in one queue) get the same job.
    pub idempotency_key: Option<String>,
}

impl NewJob {
    /// A job with default settings: priority 1024, no delay, a 60 s lease,
    /// 5 attempts.
    pub fn new(queue: &str, payload: impl Into<Bytes>) -> NewJob {
        NewJob {
            queue: queue.to_owned(),
            payload: payload.into(),
            priority: 1024,
            delay_ms: 0,
            ttr_ms: 60_000,
            max_attempts: 5,
            idempotency_key: None,
        }
    }
}

/// A job as the broker keeps it.
#[derive(Debug, Clone)]
pub struct Job {
    /// Unique id (never reused).
    pub id: u64,
    /// Its queue.
    pub queue: String,
    /// Opaque bytes.
    pub payload: Bytes,
    /// Current priority.
    pub priority: u32,
    /// Lease length, ms.
    pub ttr_ms: u64,
    /// Attempts allowed (0 = unlimited).
    pub max_attempts: u32,
    /// Idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// State.
    pub state: State,
    /// When it was put, ms since the epoch.
    pub created_ms: u64,
    /// Delayed/Retrying: when it becomes ready; Reserved: when the lease
    /// ends; Succeeded: when it finished.
    pub at_ms: u64,
    /// Reservations so far (the current one included): also the lease
    /// token a worker must present.
    pub attempts: u32,
    /// The result of a successful run.
    pub result: Option<Bytes>,
    /// The last failure's message.
    pub error: Option<String>,
    /// beanstalkd counters.
    pub timeouts: u32,
    /// Times released.
    pub releases: u32,
    /// Times buried.
    pub buries: u32,
    /// Times kicked.
    pub kicks: u32,
    /// beanstalkd connection holding the reservation (0 = an HTTP worker).
    pub(crate) holder: u64,
    /// Order among dead jobs (kick takes the oldest first).
    pub(crate) dead_seq: u64,
}

/// A job's status as the HTTP API and the node report it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Id.
    pub id: u64,
    /// Queue.
    pub queue: String,
    /// State.
    pub state: State,
    /// Reservations so far.
    pub attempts: u32,
    /// Attempts allowed (0 = unlimited).
    pub max_attempts: u32,
    /// Priority.
    pub priority: u32,
    /// Result (UTF-8 lossy) once succeeded.
    pub result: Option<String>,
    /// Last error.
    pub error: Option<String>,
    /// Payload size.
    pub size: usize,
    /// Put time, ms since the epoch.
    pub created_ms: u64,
}

impl Job {
    /// Its status.
    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            queue: self.queue.clone(),
            state: self.state,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            priority: self.priority,
            result: self
                .result
                .as_ref()
                .map(|r| String::from_utf8_lossy(r).into_owned()),
            error: self.error.clone(),
            size: self.payload.len(),
            created_ms: self.created_ms,
        }
    }
}

/// What every backend checks of a put: its queue name and payload size.
pub(crate) fn check_new(new: &NewJob, max_payload: usize) -> Result<()> {
    check_queue(&new.queue)?;
    if new.payload.len() > max_payload {
        return Err(Error::TooBig {
            size: new.payload.len(),
            limit: max_payload,
        });
    }
    Ok(())
}

/// Queue (tube) names: beanstalkd's rule — 1 to 200 bytes of letters,
/// digits and `-+/;.$_()`, not starting with `-`.
pub fn check_queue(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-+/;.$_()".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "bad queue name `{name}`: 1-200 of letters, digits and -+/;.$_(), not starting with -"
        )))
    }
}
