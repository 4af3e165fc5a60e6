//! Batching of small reads: concurrent GETs of different small blobs on
//! the same remote store within a short window go to it as one multi-get
//! (`POST /mget`). Off by default: it trades up to one window of latency
//! for fewer store requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::{Error, Node, Result};

type Waiter = (u64, oneshot::Sender<Result<Bytes>>);

/// Pending small reads per store.
pub(crate) struct Batcher {
    window: Duration,
    /// Blobs up to this size are batched.
    pub(crate) max_bytes: u64,
    queues: Mutex<HashMap<usize, Vec<Waiter>>>,
}

impl Batcher {
    pub(crate) fn new(window: Duration, max_bytes: u64) -> Batcher {
        Batcher {
            window,
            max_bytes,
            queues: Mutex::new(HashMap::new()),
        }
    }
}

impl Node {
    /// Reads blob `id` from store `idx` as part of the next multi-get.
    pub(crate) async fn read_batched(self: &Arc<Self>, idx: usize, id: u64) -> Result<Bytes> {
        let Some(b) = &self.batcher else {
            return Err(Error::Unavailable {
                tier: "store".into(),
                detail: "batching is off".into(),
            });
        };
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut q = b.queues.lock().unwrap_or_else(|p| p.into_inner());
            let list = q.entry(idx).or_default();
            list.push((id, tx));
            list.len() == 1
        };
        if first {
            // The first request of a window sends the batch when it closes.
            let (node, window) = (self.clone(), b.window);
            tokio::spawn(async move {
                tokio::time::sleep(window).await;
                node.flush_batch(idx).await;
            });
        }
        rx.await.map_err(|_| Error::Unavailable {
            tier: "store".into(),
            detail: "batch dropped".into(),
        })?
    }

    async fn flush_batch(self: &Arc<Self>, idx: usize) {
        let Some(b) = &self.batcher else { return };
        let waiters = b
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&idx)
            .unwrap_or_default();
        if waiters.is_empty() {
            return;
        }
        self.metrics
            .batches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .batched_reads
            .fetch_add(waiters.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let m = &self.stores[idx];
        let ids: Vec<u64> = waiters.iter().map(|(id, _)| *id).collect();
        let Some(parsed) = m.handle.mget(&m.name, &ids).await else {
            return;
        };
        match parsed {
            Ok(items) => {
                for ((id, tx), (rid, item)) in waiters.into_iter().zip(items) {
                    let _ = tx.send(if rid == id {
                        item
                    } else {
                        Err(Error::NotFound)
                    });
                }
            }
            Err(e) => {
                for (_, tx) in waiters {
                    let _ = tx.send(Err(e.clone()));
                }
            }
        }
    }
}
