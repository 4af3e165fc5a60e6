//! The broker's job table under its lock: every job by id and the
//! indexes that find the next one to run (ready by priority per queue,
//! delayed and retrying by time, leases by expiry, dead letters in order,
//! results by expiry, idempotency keys), kept in step by `index` and
//! `unindex` around every change.

use std::collections::{BTreeSet, HashMap};

use crate::job::{Job, State};
use crate::{Error, Result};

#[derive(Default)]
pub(super) struct Inner {
    pub(super) jobs: HashMap<u64, Job>,
    pub(super) next_id: u64,
    /// (priority, id) per queue.
    pub(super) ready: HashMap<String, BTreeSet<(u32, u64)>>,
    /// (ready at, id): delayed and retrying jobs.
    pub(super) delayed: BTreeSet<(u64, u64)>,
    /// (lease end, id).
    pub(super) leases: BTreeSet<(u64, u64)>,
    /// (dead order, id) per queue.
    pub(super) dead: HashMap<String, BTreeSet<(u64, u64)>>,
    /// (finished at, id): results waiting to expire.
    pub(super) finished: BTreeSet<(u64, u64)>,
    pub(super) idem: HashMap<(String, String), u64>,
    pub(super) dead_seq: u64,
    pub(super) totals: HashMap<String, u64>,
    pub(super) waiting: HashMap<String, u64>,
    /// Bytes written to the log since the last compaction (estimate).
    pub(super) log_bytes: u64,
    /// What a snapshot of the live jobs would take (estimate), kept as
    /// jobs come and go so the ticker need not add it up.
    pub(super) live_bytes: u64,
    pub(super) rng: u64,
}

impl Inner {
    pub(super) fn unindex(&mut self, j: &Job) {
        match j.state {
            State::Ready => {
                if let Some(r) = self.ready.get_mut(&j.queue) {
                    r.remove(&(j.priority, j.id));
                }
            }
            State::Delayed | State::Retrying => {
                self.delayed.remove(&(j.at_ms, j.id));
            }
            State::Reserved => {
                self.leases.remove(&(j.at_ms, j.id));
            }
            State::Dead => {
                if let Some(d) = self.dead.get_mut(&j.queue) {
                    d.remove(&(j.dead_seq, j.id));
                }
            }
            State::Succeeded => {
                self.finished.remove(&(j.at_ms, j.id));
            }
            State::Pending => {}
        }
    }

    pub(super) fn index(&mut self, j: &Job) {
        match j.state {
            State::Ready => {
                self.ready
                    .entry(j.queue.clone())
                    .or_default()
                    .insert((j.priority, j.id));
            }
            State::Delayed | State::Retrying => {
                self.delayed.insert((j.at_ms, j.id));
            }
            State::Reserved => {
                self.leases.insert((j.at_ms, j.id));
            }
            State::Dead => {
                self.dead
                    .entry(j.queue.clone())
                    .or_default()
                    .insert((j.dead_seq, j.id));
            }
            State::Succeeded => {
                self.finished.insert((j.at_ms, j.id));
            }
            State::Pending => {}
        }
    }

    /// Applies `f` to job `id`, keeping the indexes right.
    pub(super) fn change<T>(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut Job, &mut u64) -> T,
    ) -> Option<(T, Job)> {
        let mut j = self.jobs.remove(&id)?;
        self.unindex(&j);
        let t = f(&mut j, &mut self.dead_seq);
        self.index(&j);
        let copy = j.clone();
        self.jobs.insert(id, j);
        Some((t, copy))
    }

    /// Adds a new job.
    pub(super) fn insert(&mut self, j: Job) {
        self.live_bytes += snapshot_bytes(&j);
        self.index(&j);
        self.jobs.insert(j.id, j);
    }

    pub(super) fn remove(&mut self, id: u64) -> Option<Job> {
        let j = self.jobs.remove(&id)?;
        self.live_bytes -= snapshot_bytes(&j);
        self.unindex(&j);
        if let Some(k) = &j.idempotency_key {
            self.idem.remove(&(j.queue.clone(), k.clone()));
        }
        Some(j)
    }

    /// Job `id` if it is reserved under this holder or lease token.
    pub(super) fn leased(&self, id: u64, holder: u64, lease: Option<u32>) -> Result<&Job> {
        match self.jobs.get(&id) {
            Some(j) if lease_ok(j, holder, lease) => Ok(j),
            Some(_) => Err(Error::NotReserved(id)),
            None => Err(Error::NotFound(id)),
        }
    }

    pub(super) fn random(&mut self) -> u64 {
        let mut x = self.rng.max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// What a job adds to a compaction snapshot (payload plus metadata).
fn snapshot_bytes(j: &Job) -> u64 {
    j.payload.len() as u64 + 96
}

pub(super) fn lease_ok(j: &Job, holder: u64, lease: Option<u32>) -> bool {
    j.state == State::Reserved
        && match lease {
            Some(l) => l == j.attempts,
            None => j.holder == holder,
        }
}
