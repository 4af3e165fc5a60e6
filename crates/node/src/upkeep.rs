//! Background upkeep on request nodes: a store gone longer than
//! `dead_after` has every blob it held re-replicated elsewhere.
//!
//! Every node with a queue sweeps; the jobs' idempotency keys
//! (`dead:<store>:<blob>`) make the second node's sweep cost a listing
//! and nothing else. A sweep runs once per outage; a store that comes
//! back and goes again starts a new outage and a new sweep.

use std::sync::Arc;
use std::time::Duration;

use crate::Node;

/// Keys listed from the index per round trip.
const PAGE: usize = 1000;

/// Starts the dead-store sweeper of `node` (a no-op without `dead_after`
/// or a queue). Checks every `every` until `stop` says true.
pub fn spawn(node: &Arc<Node>, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(dead_after) = node.opts.dead_after else {
        return;
    };
    let weak = Arc::downgrade(node);
    tokio::spawn(async move {
        // Per store: the outage already swept.
        let mut swept: Vec<u64> = Vec::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            let Some(node) = weak.upgrade() else { return };
            if node.queue().is_none() {
                return;
            }
            swept.resize(node.stores.len(), 0);
            for (i, done) in swept.iter_mut().enumerate() {
                let Some((outage, lasted)) = node.health.outage(i) else {
                    continue;
                };
                if lasted < dead_after || *done == outage {
                    continue;
                }
                let name = node.stores[i].name.clone();
                match sweep(&node, &name).await {
                    Ok(n) => {
                        tracing::warn!(store = %name, blobs = n, ?lasted, "store declared dead: re-replication queued");
                        *done = outage;
                    }
                    // The index is unreachable: try again next round.
                    Err(e) => tracing::warn!(store = %name, error = %e, "dead-store sweep failed"),
                }
            }
        }
    });
}

/// Queues a re-replication job for every key with a copy on `dead`.
async fn sweep(node: &Arc<Node>, dead: &str) -> crate::Result<usize> {
    let mut after: Option<String> = None;
    let mut queued = 0;
    loop {
        let page = node.index.list("", None, after.as_deref(), PAGE).await?;
        for e in &page.items {
            if e.meta.replicas.iter().any(|r| r == dead) {
                // A failure leaves the outage unswept, so the next round
                // queues again (the idempotency keys drop duplicates).
                node.queue_rereplicate(&e.key, &e.meta, dead).await?;
                queued += 1;
            }
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(queued),
        }
    }
}
