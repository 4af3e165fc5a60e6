//! The read path: the cache tiers first, then one replica (failing over
//! to the next, hedged when one is slow), with store reads collapsed per
//! blob and range, big ranges served from aligned slices, and small reads
//! on a remote store batched.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use index::BlobMeta;

use super::{sleep_until, Node};
use crate::metrics::inc;
use crate::tiers::StoreHandle;
use crate::{Error, Result};

/// What a collapsed store read also puts in the cache.
#[derive(Debug, Clone, Copy)]
enum Fill {
    Nothing,
    Blob,
    Slice(u64),
}

impl Node {
    /// Reads a blob (or `start..end` of it) from the first replica that
    /// answers: healthy replicas first, in the recorded order.
    pub async fn read_blob(&self, meta: &BlobMeta, range: Option<(u64, u64)>) -> Result<Bytes> {
        let idx: Vec<usize> = meta
            .replicas
            .iter()
            .filter_map(|n| self.stores.iter().position(|s| &s.name == n))
            .collect();
        let order = idx
            .iter()
            .filter(|&&i| self.health.is_up(i))
            .chain(idx.iter().filter(|&&i| !self.health.is_up(i)));
        let mut last = Error::Unavailable {
            tier: "store".into(),
            detail: "blob has no known replica".into(),
        };
        let mut lost = false;
        let mut corrupt = Vec::new();
        let order: Vec<usize> = order.copied().collect();
        let first = order.first().copied();
        let mut next = order.into_iter();
        // One replica at a time; one that neither answers nor fails within
        // the hedge delay gets company from the next, and the first answer
        // wins (a hung store costs the delay, not a timeout).
        let mut set = tokio::task::JoinSet::new();
        let spawn_get = |set: &mut tokio::task::JoinSet<(usize, Result<Bytes>)>, i: usize| {
            let m = self.stores[i].clone();
            let id = meta.id;
            set.spawn(async move { (i, m.handle.get(&m.name, id, range).await) });
        };
        if let Some(i) = next.next() {
            spawn_get(&mut set, i);
        }
        let hedge = self.hedge_after(range.map_or(meta.size, |(a, b)| b.saturating_sub(a)));
        let mut hedge_at = hedge.map(|h| tokio::time::Instant::now() + h);
        loop {
            let joined = tokio::select! {
                j = set.join_next() => match j {
                    Some(j) => j,
                    None => break,
                },
                _ = sleep_until(hedge_at) => {
                    if let Some(i) = next.next() {
                        spawn_get(&mut set, i);
                    }
                    hedge_at = hedge.map(|h| tokio::time::Instant::now() + h);
                    continue;
                }
            };
            let Ok((i, res)) = joined else { continue };
            let m = &self.stores[i];
            match res {
                Ok(b) => {
                    self.health.set(i, true);
                    if Some(i) != first {
                        inc(&self.metrics.failovers);
                    }
                    if lost {
                        // A replica answered that it lacks the blob: put the
                        // copy back (re-replication through the queue).
                        self.queue_repair(meta).await;
                    }
                    for name in corrupt {
                        self.queue_corrupt_repair(meta.id, name).await;
                    }
                    return Ok(b);
                }
                Err(e @ Error::Corrupt { .. }) => {
                    // The store is fine, this copy is not: no mark-down.
                    tracing::warn!(store = %m.name, blob = meta.id, error = %e, "corrupt replica; reading another");
                    corrupt.push(m.name.as_str());
                    last = e;
                }
                Err(Error::NotFound) => {
                    lost = true;
                    last = Error::Unavailable {
                        tier: m.name.clone(),
                        detail: format!("replica lacks blob {}", meta.id),
                    };
                }
                Err(e) => {
                    self.mark_down(i, &e);
                    last = e;
                }
            }
            // That replica failed: the next one at once.
            if let Some(i) = next.next() {
                spawn_get(&mut set, i);
                hedge_at = hedge.map(|h| tokio::time::Instant::now() + h);
            }
        }
        Err(last)
    }

    /// How long a store request may go without an answer before the next
    /// store is asked too: the configured delay plus the time a healthy
    /// store takes to move `bytes` (at 50 MB/s), so big blobs are not
    /// hedged for being big. `None` = no hedging.
    pub(super) fn hedge_after(&self, bytes: u64) -> Option<Duration> {
        self.opts
            .store_hedge
            .map(|base| base + Duration::from_nanos(bytes.saturating_mul(20)))
    }

    /// The metadata of `key`: cache tiers first, then the index (and the
    /// answer fills the caches).
    pub async fn lookup(&self, key: &str) -> Result<Option<BlobMeta>> {
        if let Some(c) = &self.caching {
            if let Some(m) = c.get_meta(key).await {
                return Ok(Some(m));
            }
        }
        let m = self.index.get(key).await?;
        if let (Some(c), Some(m)) = (&self.caching, &m) {
            c.put_meta(key, m).await;
        }
        Ok(m)
    }

    /// A whole small blob through a batch when batching is on and its first
    /// healthy replica is remote; otherwise (or if the batch fails) the
    /// normal read with failover.
    async fn read_small_or_blob(
        self: &Arc<Self>,
        meta: &BlobMeta,
        range: Option<(u64, u64)>,
    ) -> Result<Bytes> {
        if let (Some(b), None) = (&self.batcher, range) {
            if meta.size <= b.max_bytes {
                let idx = meta
                    .replicas
                    .iter()
                    .filter_map(|n| self.stores.iter().position(|s| &s.name == n))
                    .find(|&i| {
                        self.health.is_up(i)
                            && matches!(self.stores[i].handle, StoreHandle::Remote { .. })
                    });
                if let Some(i) = idx {
                    if let Ok(d) = b.read(i, &self.stores[i], meta.id).await {
                        if d.len() as u64 == meta.size {
                            return Ok(d);
                        }
                    }
                }
            }
        }
        self.read_blob(meta, range).await
    }

    /// A store read, collapsed with concurrent reads of the same blob and
    /// range when collapsing is on.
    async fn fetch(self: &Arc<Self>, meta: &BlobMeta, range: Option<(u64, u64)>) -> Result<Bytes> {
        self.fetch_filling(meta, range, Fill::Nothing).await
    }

    /// [`Node::fetch`] that also caches what it read (`fill`) inside the
    /// collapsed fetch: the flight ends only once the cache holds the bytes,
    /// so a request that missed the cache either joins the flight or finds
    /// the bytes (checked again inside the fetch), never a second store
    /// read.
    async fn fetch_filling(
        self: &Arc<Self>,
        meta: &BlobMeta,
        range: Option<(u64, u64)>,
        fill: Fill,
    ) -> Result<Bytes> {
        let want = range.map_or(meta.size, |(a, b)| b - a);
        let Some(c) = &self.collapser else {
            if matches!(fill, Fill::Slice(_)) {
                inc(&self.metrics.slice_reads);
            }
            let d = self.read_blob(meta, range).await?;
            self.fill_cache(meta.id, fill, &d).await;
            return Ok(d);
        };
        let (node, m) = (self.clone(), meta.clone());
        c.get((meta.id, range), move || async move {
            if let Some(d) = node
                .cached(m.id, fill)
                .await
                .filter(|d| d.len() as u64 == want)
            {
                return Ok(d);
            }
            if matches!(fill, Fill::Slice(_)) {
                inc(&node.metrics.slice_reads);
            }
            let d = node.read_small_or_blob(&m, range).await?;
            node.fill_cache(m.id, fill, &d).await;
            Ok(d)
        })
        .await
        .map_err(|e| match e {
            collapse::Error::Origin(e) => e,
            other => Error::Unavailable {
                tier: "store".into(),
                detail: other.to_string(),
            },
        })
    }

    async fn cached(&self, id: u64, fill: Fill) -> Option<Bytes> {
        let c = self.caching.as_ref()?;
        match fill {
            Fill::Nothing => None,
            Fill::Blob => c.get_data(id).await,
            Fill::Slice(n) => c.get_slice(id, n).await,
        }
    }

    async fn fill_cache(&self, id: u64, fill: Fill, d: &Bytes) {
        let Some(c) = &self.caching else { return };
        match fill {
            Fill::Nothing => {}
            Fill::Blob => c.put_data(id, d.clone()).await,
            Fill::Slice(n) => c.put_slice(id, n, d.clone()).await,
        }
    }

    /// Bytes `a..b` of a big blob, assembled from aligned slices: each slice
    /// comes from the cache or from one (collapsed) store read, and is
    /// cached on its own. Concurrent ranges inside one slice cost one read.
    async fn read_sliced(
        self: &Arc<Self>,
        meta: &BlobMeta,
        a: u64,
        b: u64,
        slice: u64,
    ) -> Result<Bytes> {
        let (first, last) = (a / slice, (b - 1) / slice);
        let mut parts: Vec<(u64, Bytes)> = Vec::with_capacity((last - first + 1) as usize);
        for idx in first..=last {
            let (s0, s1) = (idx * slice, ((idx + 1) * slice).min(meta.size));
            let cached = match &self.caching {
                Some(c) => c
                    .get_slice(meta.id, idx)
                    .await
                    .filter(|d| d.len() as u64 == s1 - s0),
                None => None,
            };
            let data = match cached {
                Some(d) => d,
                None => {
                    self.fetch_filling(meta, Some((s0, s1)), Fill::Slice(idx))
                        .await?
                }
            };
            parts.push((s0, data));
        }
        inc(&self.metrics.sliced_requests);
        if let [(s0, d)] = parts.as_slice() {
            return Ok(d.slice((a - s0) as usize..(b - s0) as usize));
        }
        let mut out = bytes::BytesMut::with_capacity((b - a) as usize);
        for (s0, d) in &parts {
            let from = a.max(*s0) - s0;
            let to = b.min(s0 + d.len() as u64) - s0;
            out.extend_from_slice(&d[from as usize..to as usize]);
        }
        Ok(out.freeze())
    }

    /// Reads a blob through the cache tiers: small blobs are cached whole
    /// (and ranges cut from the cached copy); big ones go to a store.
    /// Misses are collapsed (behind the cache: a hit never waits on one).
    pub async fn read(
        self: &Arc<Self>,
        meta: &BlobMeta,
        range: Option<(u64, u64)>,
    ) -> Result<Bytes> {
        let cut = |d: Bytes| match range {
            Some((a, b)) => d.slice(a as usize..b as usize),
            None => d,
        };
        if let Some(c) = &self.caching {
            if meta.size as usize <= c.item_max() {
                if let Some(d) = c.get_data(meta.id).await {
                    if d.len() as u64 == meta.size {
                        return Ok(cut(d));
                    }
                }
                let d = self.fetch_filling(meta, None, Fill::Blob).await?;
                return Ok(cut(d));
            }
        }
        if let (Some((a, b)), Some(slice)) = (range, self.opts.slice_bytes) {
            if meta.size > slice && b > a {
                return self.read_sliced(meta, a, b, slice).await;
            }
        }
        self.fetch(meta, range).await
    }

    /// After a read failed on every replica: a local copy of the metadata
    /// may name a blob that an overwrite elsewhere already removed. Forget
    /// it and ask the index again.
    pub async fn relookup(&self, key: &str) -> Result<Option<BlobMeta>> {
        if let Some(c) = &self.caching {
            c.drop_local_meta(key);
        }
        self.index.get(key).await
    }
}
