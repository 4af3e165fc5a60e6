//! Store health as the node sees it: up/down flags fed by request failures
//! (immediately) and by a background prober (which also brings stores back).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::node::Node;

/// One flag per store, `true` = up.
#[derive(Debug)]
pub(crate) struct Health {
    up: Vec<AtomicBool>,
}

impl Health {
    pub(crate) fn new(n: usize) -> Self {
        Health {
            up: (0..n).map(|_| AtomicBool::new(true)).collect(),
        }
    }
    pub(crate) fn is_up(&self, i: usize) -> bool {
        self.up[i].load(Ordering::Relaxed)
    }
    pub(crate) fn set(&self, i: usize, up: bool) -> bool {
        self.up[i].swap(up, Ordering::Relaxed)
    }
    pub(crate) fn count_up(&self) -> usize {
        self.up.iter().filter(|u| u.load(Ordering::Relaxed)).count()
    }
}

/// Probes every store each `every` until the node is dropped.
pub(crate) fn spawn_prober(node: &Arc<Node>, every: Duration) {
    let weak = Arc::downgrade(node);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(node) = weak.upgrade() else { return };
            for (i, m) in node.stores.iter().enumerate() {
                let up = m.handle.healthy(&m.name).await;
                let was = node.health.set(i, up);
                if was != up {
                    tracing::info!(store = %m.name, up, "store health changed");
                }
            }
        }
    });
}
