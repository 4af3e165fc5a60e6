//! The broker's clock work, run by a ticker task: due delayed jobs become
//! ready, expired leases are redelivered (a lease that expires counts as
//! a failed attempt), expired results go, and the log is compacted when it
//! has grown well past the live data.

use std::sync::Weak;
use std::time::Duration;

use crate::job::State;
use crate::log;

use super::Broker;

impl Broker {
    /// Moves due delayed jobs to ready, redelivers expired leases (a lease
    /// that expires counts as a failed attempt), drops expired results, and
    /// compacts the log when it has grown well past the live data.
    pub fn tick(&self) {
        let now = self.clock.now_ms();
        let mut woke = false;
        let mut g = self.lock();
        let due: Vec<u64> = g
            .delayed
            .iter()
            .take_while(|x| x.0 <= now)
            .map(|x| x.1)
            .collect();
        for id in due {
            g.change(id, |j, _| j.state = State::Ready);
            woke = true;
        }
        let expired: Vec<u64> = g
            .leases
            .iter()
            .take_while(|x| x.0 <= now)
            .map(|x| x.1)
            .collect();
        for id in expired {
            if let Some((_, job)) = g.change(id, |j, seq| {
                j.timeouts += 1;
                j.holder = 0;
                if j.max_attempts > 0 && j.attempts >= j.max_attempts {
                    j.error = Some("lease expired on the last attempt".into());
                    *seq += 1;
                    j.dead_seq = *seq;
                    j.state = State::Dead;
                } else {
                    j.state = State::Ready;
                }
            }) {
                tracing::debug!(id, "lease expired; job redelivered");
                self.write_lazy(&mut g, log::encode(&job, false));
                woke = true;
            }
        }
        let ttl = self.opts.result_ttl_ms;
        let old: Vec<u64> = g
            .finished
            .iter()
            .take_while(|x| x.0.saturating_add(ttl) <= now)
            .map(|x| x.1)
            .collect();
        for id in old {
            g.remove(id);
            self.write_lazy(&mut g, log::encode_remove(id));
        }
        let live = g.live_bytes;
        if g.log_bytes > self.opts.compact_min_bytes && g.log_bytes > 2 * live {
            let snapshot: Vec<Vec<u8>> = g.jobs.values().map(|j| log::encode(j, true)).collect();
            tracing::info!(
                log_bytes = g.log_bytes,
                live,
                jobs = snapshot.len(),
                "compacting the queue log"
            );
            self.log.compact(snapshot);
            g.log_bytes = live;
        }
        drop(g);
        if woke {
            self.ready.notify_waiters();
        }
    }
}

pub(super) fn spawn_ticker(broker: Weak<Broker>, every: Duration) {
    tokio::spawn(async move {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            t.tick().await;
            let Some(b) = broker.upgrade() else { return };
            b.tick();
        }
    });
}
