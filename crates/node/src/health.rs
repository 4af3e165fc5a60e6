//! Store health as the node sees it: up/down flags fed by request failures
//! (immediately) and by a background prober (which also brings stores back).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::tiers::StoreMember;

/// One flag per store, `true` = up, and since when a down store is down.
#[derive(Debug)]
pub(crate) struct Health {
    up: Vec<AtomicBool>,
    /// Milliseconds after `born` (plus one) when the store went down;
    /// 0 while it is up.
    down_since: Vec<AtomicU64>,
    born: Instant,
}

impl Health {
    pub(crate) fn new(n: usize) -> Self {
        Health {
            up: (0..n).map(|_| AtomicBool::new(true)).collect(),
            down_since: (0..n).map(|_| AtomicU64::new(0)).collect(),
            born: Instant::now(),
        }
    }
    pub(crate) fn is_up(&self, i: usize) -> bool {
        self.up[i].load(Ordering::Relaxed)
    }
    pub(crate) fn set(&self, i: usize, up: bool) -> bool {
        let was = self.up[i].swap(up, Ordering::Relaxed);
        if up {
            self.down_since[i].store(0, Ordering::Relaxed);
        } else if was {
            let now = self.born.elapsed().as_millis() as u64 + 1;
            self.down_since[i].store(now, Ordering::Relaxed);
        }
        was
    }
    /// The current outage of store `i`: an id (when it began) and how long
    /// it has lasted; `None` while the store is up.
    pub(crate) fn outage(&self, i: usize) -> Option<(u64, Duration)> {
        let since = self.down_since[i].load(Ordering::Relaxed);
        (since > 0).then(|| {
            let now = self.born.elapsed().as_millis() as u64 + 1;
            (since, Duration::from_millis(now.saturating_sub(since)))
        })
    }
    pub(crate) fn count_up(&self) -> usize {
        self.up.iter().filter(|u| u.load(Ordering::Relaxed)).count()
    }
}

/// Probes every store each `every` until `health` is dropped (with its
/// node).
pub(crate) fn spawn_prober(health: &Arc<Health>, stores: Vec<StoreMember>, every: Duration) {
    let weak = Arc::downgrade(health);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(health) = weak.upgrade() else { return };
            // All stores at once, each bounded by the probe interval: a
            // hung store must not delay the verdict on the others, nor its
            // own beyond one round.
            let limit = every.max(Duration::from_millis(250));
            let mut set = tokio::task::JoinSet::new();
            for (i, m) in stores.iter().enumerate() {
                let m = m.clone();
                set.spawn(async move {
                    let up = tokio::time::timeout(limit, m.handle.healthy(&m.name)).await;
                    (i, up.unwrap_or(false))
                });
            }
            while let Some(Ok((i, up))) = set.join_next().await {
                let was = health.set(i, up);
                if was != up {
                    let name = &stores[i].name;
                    tracing::info!(store = %name, up, "store health changed");
                }
            }
        }
    });
}
