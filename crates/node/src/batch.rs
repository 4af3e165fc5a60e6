//! Batching of small reads: concurrent GETs of different small blobs on
//! the same remote store within a short window go to it as one multi-get
//! (`POST /mget`). Off by default: it trades up to one window of latency
//! for fewer store requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::tiers::StoreMember;
use crate::{Error, Result};

type Waiter = (u64, oneshot::Sender<Result<Bytes>>);

/// Pending small reads per store, and how many batches and reads went out.
pub(crate) struct Batcher {
    window: Duration,
    /// Blobs up to this size are batched.
    pub(crate) max_bytes: u64,
    queues: Mutex<HashMap<usize, Vec<Waiter>>>,
    /// Multi-gets sent.
    pub(crate) batches: AtomicU64,
    /// Reads they carried.
    pub(crate) batched_reads: AtomicU64,
}

impl Batcher {
    pub(crate) fn new(window: Duration, max_bytes: u64) -> Arc<Batcher> {
        Arc::new(Batcher {
            window,
            max_bytes,
            queues: Mutex::new(HashMap::new()),
            batches: AtomicU64::new(0),
            batched_reads: AtomicU64::new(0),
        })
    }

    /// Reads blob `id` from `store` (the node's store number `idx`) as part
    /// of the next multi-get to it.
    pub(crate) async fn read(
        self: &Arc<Self>,
        idx: usize,
        store: &StoreMember,
        id: u64,
    ) -> Result<Bytes> {
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut q = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            let list = q.entry(idx).or_default();
            list.push((id, tx));
            list.len() == 1
        };
        if first {
            // The first request of a window sends the batch when it closes.
            let (me, store) = (self.clone(), store.clone());
            tokio::spawn(async move {
                tokio::time::sleep(me.window).await;
                me.flush(idx, &store).await;
            });
        }
        rx.await.map_err(|_| Error::Unavailable {
            tier: "store".into(),
            detail: "batch dropped".into(),
        })?
    }

    async fn flush(&self, idx: usize, m: &StoreMember) {
        let waiters = self
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&idx)
            .unwrap_or_default();
        if waiters.is_empty() {
            return;
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batched_reads
            .fetch_add(waiters.len() as u64, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiers::StoreHandle;

    /// The batcher on its own against a real store: reads that arrive
    /// within one window go out as one multi-get, each gets its own blob,
    /// and a missing one is NotFound without failing the others.
    #[tokio::test]
    async fn reads_within_a_window_share_one_multi_get() {
        let dir = tempfile::tempdir().expect("tmp");
        let (st, _) =
            store::Store::open(dir.path(), store::StoreOptions::default()).expect("store");
        for id in 1..=3u64 {
            let data = Bytes::from(format!("blob {id}"));
            st.put(id, Bytes::new(), data).await.expect("put");
        }
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(store::server::serve(l, st, std::future::pending()));
        let member = StoreMember {
            name: "s".into(),
            handle: StoreHandle::Remote(store::client::StoreClient::new(
                format!("http://{addr}"),
                Duration::from_secs(5),
            )),
        };
        let b = Batcher::new(Duration::from_millis(20), 1 << 20);
        // join! polls each read once before any window can close: all four
        // are queued for store 0 together.
        let (r1, r2, r3, r9) = tokio::join!(
            b.read(0, &member, 1),
            b.read(0, &member, 2),
            b.read(0, &member, 3),
            b.read(0, &member, 9),
        );
        assert_eq!(r1.expect("1"), Bytes::from("blob 1"));
        assert_eq!(r2.expect("2"), Bytes::from("blob 2"));
        assert_eq!(r3.expect("3"), Bytes::from("blob 3"));
        assert!(matches!(r9, Err(Error::NotFound)), "{r9:?}");
        assert_eq!(b.batches.load(Ordering::Relaxed), 1);
        assert_eq!(b.batched_reads.load(Ordering::Relaxed), 4);
    }
}
