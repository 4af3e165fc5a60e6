//! Read-only views of the broker: a job and its status, the next job of a
//! queue in a state, dead letters, and per-queue counts.

use crate::job::{Job, State, Status};

use super::{Broker, QueueStats};

impl Broker {
    /// A copy of job `id` (any state but pending).
    pub fn get(&self, id: u64) -> Option<Job> {
        self.lock()
            .jobs
            .get(&id)
            .filter(|j| j.state != State::Pending)
            .cloned()
    }

    /// Job `id`'s status.
    pub fn status(&self, id: u64) -> Option<Status> {
        self.get(id).map(|j| j.status())
    }

    /// The next job of `queue` in `state` (ready: most urgent; delayed:
    /// soonest; dead: oldest).
    pub fn peek(&self, queue: &str, state: State) -> Option<Job> {
        let g = self.lock();
        let id = match state {
            State::Ready => g.ready.get(queue)?.first()?.1,
            State::Dead => g.dead.get(queue)?.first()?.1,
            State::Delayed | State::Retrying => g
                .delayed
                .iter()
                .map(|x| x.1)
                .find(|id| g.jobs.get(id).is_some_and(|j| j.queue == queue))?,
            _ => return None,
        };
        g.jobs.get(&id).cloned()
    }

    /// Clients waiting in `reserve` on `queue`.
    pub fn waiting(&self, queue: &str) -> u64 {
        self.lock().waiting.get(queue).copied().unwrap_or(0)
    }

    /// Dead jobs of `queue`, oldest first.
    pub fn dead(&self, queue: &str, limit: usize) -> Vec<Status> {
        let g = self.lock();
        g.dead
            .get(queue)
            .map(|d| {
                d.iter()
                    .take(limit)
                    .filter_map(|x| g.jobs.get(&x.1).map(Job::status))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Queue names known (with jobs now or ever since start).
    pub fn queues(&self) -> Vec<String> {
        let g = self.lock();
        let mut q: Vec<String> = g.totals.keys().cloned().collect();
        q.sort();
        q
    }

    /// Counts for `queue`, `None` if it has never had a job.
    pub fn queue_stats(&self, queue: &str) -> Option<QueueStats> {
        let g = self.lock();
        let total = *g.totals.get(queue)?;
        let mut s = QueueStats {
            name: queue.to_owned(),
            total,
            waiting: g.waiting.get(queue).copied().unwrap_or(0),
            ..QueueStats::default()
        };
        for j in g.jobs.values().filter(|j| j.queue == queue) {
            match j.state {
                State::Ready => {
                    s.ready += 1;
                    if j.priority < 1024 {
                        s.urgent += 1;
                    }
                }
                State::Reserved => s.reserved += 1,
                State::Delayed | State::Retrying => s.delayed += 1,
                State::Dead => s.dead += 1,
                State::Succeeded => s.succeeded += 1,
                State::Pending => {}
            }
        }
        Some(s)
    }
}
