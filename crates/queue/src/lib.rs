//! strata's durable job queue: slow, complex writes are handed to it, the
//! client gets a job id at once, polls the status and fetches the result.
//!
//! - [`Broker`] keeps the jobs (states: pending, ready, delayed, reserved,
//!   succeeded, retrying, dead), leases them to workers for their time to
//!   run, retries failures with exponential backoff and jitter, moves jobs
//!   out of attempts to the dead letters, and keeps results for a while.
//! - [`log`] makes every acknowledged change durable: CRC-checked records in
//!   segment files, one fsync per batch (group commit), torn tails cut on
//!   restart, compaction of finished jobs.
//! - [`http`] serves the JSON API; [`beanstalk`] speaks the beanstalkd
//!   protocol so that existing clients work unchanged.
//!
//! - Seam: [`Queue`] is every operation on jobs, with two backends —
//!   [`Broker`] (the built-in log; `strata serve`, a `queue` member with a
//!   data directory) and [`pg::PgQueue`] (PostgreSQL: `SKIP LOCKED`
//!   claims, LISTEN/NOTIFY wake-ups; `queue` members become stateless
//!   fronts). The HTTP API, the beanstalkd protocol and the node's workers
//!   take a `dyn Queue`.
//! - [`client::QueueClient`] is a queue member over HTTP, beside the
//!   server it calls; [`Handle`] is either (a local `dyn Queue` or a
//!   client), for the node's workers and the web console.
//!
//! Errors are one enum, [`Error`].

mod backend;
pub mod beanstalk;
pub mod beanstalk_cmd;
pub mod broker;
pub mod client;
mod clock;
mod error;
pub mod handle;
pub mod http;
pub mod job;
pub mod log;
pub mod pg;

pub use backend::Queue;
pub use broker::{Broker, BrokerOptions, Clock, ManualClock, QueueStats, SystemClock};
pub use error::{Error, Result};
pub use handle::Handle;
pub use job::{Job, NewJob, State, Status};
