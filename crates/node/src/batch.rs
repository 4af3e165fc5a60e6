//! Batching of small reads: concurrent GETs of different small blobs on
//! the same remote store within a short window go to it as one multi-get
//! (`POST /mget`). Off by default: it trades up to one window of latency
//! for fewer store requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use tokio::sync::oneshot;

use crate::http::check;
use crate::{Error, Node, Result, StoreHandle};

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
        let StoreHandle::Remote { base, http } = &m.handle else {
            return;
        };
        let body: Vec<u8> = waiters
            .iter()
            .flat_map(|(id, _)| id.to_le_bytes())
            .collect();
        let res = http
            .send(
                &m.name,
                Method::POST,
                &format!("{base}/mget"),
                &[],
                Bytes::from(body),
            )
            .await;
        let parsed = res.and_then(|r| {
            check(&m.name, &r)?;
            parse_mget(&r.body, waiters.len()).ok_or_else(|| Error::Unavailable {
                tier: m.name.clone(),
                detail: "malformed mget reply".into(),
            })
        });
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

/// Splits a multi-get reply into `n` answers.
fn parse_mget(b: &Bytes, n: usize) -> Option<Vec<(u64, Result<Bytes>)>> {
    let mut out = Vec::with_capacity(n);
    let mut at = 0usize;
    for _ in 0..n {
        let id = u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?);
        let status = *b.get(at + 8)?;
        let len = u32::from_le_bytes(b.get(at + 9..at + 13)?.try_into().ok()?) as usize;
        let data = b
            .get(at + 13..at + 13 + len)
            .map(|_| b.slice(at + 13..at + 13 + len))?;
        at += 13 + len;
        out.push((
            id,
            match status {
                0 => Ok(data),
                1 => Err(Error::NotFound),
                _ => Err(Error::Unavailable {
                    tier: "store".into(),
                    detail: "store read failed".into(),
                }),
            },
        ));
    }
    (at == b.len()).then_some(out)
}
