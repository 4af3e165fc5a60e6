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
            // Each store bounded by the probe interval: a hung store must
            // not delay its own verdict beyond one round.
            probe(&health, &stores, every.max(Duration::from_millis(250))).await;
        }
    });
}

/// One round: every store at once, each given `limit` to answer, so a
/// hung store cannot delay the verdict on the others.
async fn probe(health: &Health, stores: &[StoreMember], limit: Duration) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiers::StoreHandle;
    use store::client::StoreClient;

    #[test]
    fn a_store_down_reports_its_outage_until_it_is_back() {
        let h = Health::new(2);
        assert_eq!(h.count_up(), 2);
        assert!(h.set(1, false), "it was up");
        assert!(!h.is_up(1) && h.is_up(0));
        let (id, _) = h.outage(1).expect("an outage");
        assert!(!h.set(1, false), "already down");
        assert_eq!(h.outage(1).expect("the same outage").0, id);
        h.set(1, true);
        assert_eq!((h.outage(1), h.count_up()), (None, 2));
    }

    /// The prober on its own: a store that answers its health check is up,
    /// one that accepts connections but never answers goes down.
    #[tokio::test]
    async fn the_prober_marks_a_silent_store_down_and_a_live_one_up() {
        let dir = tempfile::tempdir().expect("tmp");
        let (st, _) =
            store::Store::open(dir.path(), store::StoreOptions::default()).expect("store");
        let live = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let live_addr = live.local_addr().expect("addr");
        tokio::spawn(store::server::serve(live, st, std::future::pending()));
        // Bound and never accepted: the connect succeeds, no answer comes.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let silent_addr = silent.local_addr().expect("addr");
        let member = |name: &str, addr| StoreMember {
            name: name.into(),
            handle: StoreHandle::Remote(StoreClient::new(
                format!("http://{addr}"),
                Duration::from_millis(200),
            )),
        };
        let health = Health::new(2);
        health.set(0, false);
        let stores = vec![member("live", live_addr), member("silent", silent_addr)];
        probe(&health, &stores, Duration::from_secs(5)).await;
        assert!(health.is_up(0), "the live store answered");
        assert!(!health.is_up(1), "the silent store timed out");
        assert!(health.outage(1).is_some());
        drop(silent);
    }
}
