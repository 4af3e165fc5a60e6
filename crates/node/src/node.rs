//! [`Node`]: the write path, the read path and the id lease, independent of
//! HTTP so that tests and other front ends can drive them directly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use index::needle_meta::{Kind, NeedleMeta};
use index::BlobMeta;

use crate::caching::Caching;
use crate::health::{self, Health};
use crate::metrics::{inc, NodeMetrics};
use crate::search::PageText;
pub use crate::tiers::StoreMember;
use crate::tiers::{IndexHandle, StoreHandle};
use crate::{Error, Result};

/// Appends one more section of Prometheus text to `/metrics`.
pub type MetricsSection = Box<dyn Fn(&mut String) + Send + Sync>;

/// Sleeps until `at`, or forever when there is no deadline.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Ids leased from the index per round trip.
const ID_LEASE: u64 = 256;

/// Settings of one node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Copies written per blob (R).
    pub replicas: usize,
    /// Largest upload body, in bytes.
    pub max_body_bytes: u64,
    /// Bodies longer than this are stored as chunks of this size.
    pub chunk_bytes: usize,
    /// When set, PUT and DELETE need `Authorization: Bearer <token>`.
    pub write_token: Option<String>,
    /// How often remote stores are health-checked.
    pub probe_every: Duration,
    /// `Cache-Control` sent with blobs.
    pub cache_control: String,
    /// Collapsed forwarding of store reads; `None` turns it off.
    pub collapse: Option<collapse::CollapseOptions>,
    /// Batching: small reads on one remote store within this window go as
    /// one multi-get; `None` = off (the default).
    pub batch_window: Option<Duration>,
    /// Largest blob read through a batch, bytes.
    pub batch_max_bytes: u64,
    /// Spatial collapsing: a range of a blob bigger than this is served
    /// from aligned slices of this size, each read (and cached) once;
    /// `None` reads exactly the asked bytes.
    pub slice_bytes: Option<u64>,
    /// Seconds a session (`/v1/session`) lives after its last write.
    pub session_ttl_secs: u32,
    /// Attempts an asynchronous upload gets before it is a dead letter.
    pub upload_attempts: u32,
    /// Thumbnail widths made after an asynchronous upload of a PNG or
    /// JPEG image (empty: none).
    pub thumbnail_widths: Vec<u32>,
    /// A store unreachable this long is declared dead and its blobs are
    /// re-replicated elsewhere (through the queue); `None` = never.
    pub dead_after: Option<Duration>,
    /// A store read or write with no answer after this long (plus the
    /// blob's transfer time) is also sent to the next replica or
    /// candidate store; `None` = never.
    pub store_hedge: Option<Duration>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            replicas: 1,
            max_body_bytes: 64 << 20,
            chunk_bytes: 64 << 20,
            write_token: None,
            probe_every: Duration::from_millis(500),
            cache_control: "public, max-age=300".into(),
            collapse: Some(collapse::CollapseOptions::default()),
            slice_bytes: Some(1 << 20),
            batch_window: None,
            batch_max_bytes: 64 << 10,
            session_ttl_secs: 86_400,
            upload_attempts: 5,
            thumbnail_widths: vec![128, 512],
            dead_after: None,
            store_hedge: Some(Duration::from_millis(250)),
        }
    }
}

/// A request node.
pub struct Node {
    /// Settings.
    pub opts: NodeOptions,
    /// The name index.
    pub index: IndexHandle,
    /// All stores, in cluster-file order.
    pub stores: Vec<StoreMember>,
    pub(crate) health: Arc<Health>,
    /// `(next, end)` of the current id lease.
    ids: Mutex<(u64, u64)>,
    /// Serialises lease refills so concurrent PUTs do not each take a block.
    refill: tokio::sync::Mutex<()>,
    /// Counters.
    pub metrics: NodeMetrics,
    /// Extra `/metrics` sections (e.g. in-process store and index).
    pub extra_metrics: Vec<MetricsSection>,
    /// Cache tiers in front of the index and stores, if configured.
    pub caching: Option<Caching>,
    /// Collapsed forwarding of store reads (one read per blob and range
    /// however many requests miss at once), if enabled.
    pub collapser: Option<Arc<BlobCollapser>>,
    /// Open shared store streams (big blobs to many clients).
    pub(crate) streams: Option<Arc<crate::streaming::Streams>>,
    /// Batching of small reads into multi-gets, if enabled.
    pub(crate) batcher: Option<Arc<crate::batch::Batcher>>,
    /// Last CPU sample for `/load`: (process CPU seconds, wall time).
    cpu_last: Mutex<Option<(f64, std::time::Instant)>>,
    /// The queue for asynchronous uploads, once set.
    queue: std::sync::OnceLock<crate::jobs::QueueHandle>,
    /// The search shards, once set.
    search: std::sync::OnceLock<crate::search::SearchTier>,
}

/// What a collapsed store read also puts in the cache.
#[derive(Debug, Clone, Copy)]
enum Fill {
    Nothing,
    Blob,
    Slice(u64),
}

/// Store reads collapsed per (blob id, byte range).
pub type BlobCollapser = collapse::Collapser<(u64, Option<(u64, u64)>), Bytes, Error>;

impl Node {
    /// Connects the search shards (once).
    pub fn set_search(&self, tier: crate::search::SearchTier) {
        let _ = self.search.set(tier);
    }

    /// The search shards, if connected.
    pub fn search(&self) -> Option<&crate::search::SearchTier> {
        self.search.get()
    }

    /// Connects the queue for asynchronous uploads (once).
    pub fn set_queue(&self, q: crate::jobs::QueueHandle) {
        let _ = self.queue.set(q);
    }

    /// The queue, if connected.
    pub fn queue(&self) -> Option<&crate::jobs::QueueHandle> {
        self.queue.get()
    }

    /// After a write or delete of `key` committed as `version`: queues the
    /// search change if the key is, or was, a page. Returns the job id
    /// (`None` when nothing was queued). Search members need a queue
    /// member (the cluster file is refused otherwise), so a node with
    /// search has a queue.
    pub(crate) async fn after_change(
        &self,
        key: &str,
        version: u64,
        page: Option<crate::search::PageUpload>,
        previous: Option<&BlobMeta>,
    ) -> Result<Option<u64>> {
        if self.search().is_none() {
            return Ok(None);
        }
        let Some((payload, once)) = crate::search::change_job(key, version, page, previous)? else {
            return Ok(None);
        };
        let q = self.queue().ok_or_else(|| Error::Unavailable {
            tier: "search".into(),
            detail: "search needs a queue; this node has none".into(),
        })?;
        let id = q
            .put_job(
                crate::jobs::SEARCH_JOBS,
                payload,
                Some(once),
                self.opts.upload_attempts,
            )
            .await?;
        Ok(Some(id))
    }

    /// Deletes blobs nothing names any more (chunks of a replaced or
    /// deleted object, of a failed upload, parts of an aborted one): as a
    /// job on [`crate::jobs::CHUNK_DROPS`] when the node has a queue, so a failed
    /// delete is retried with the queue's backoff, else in the background.
    /// Whatever a crash leaves before the job is durable,
    /// [`crate::objects::sweep_orphans`] finds later.
    pub fn drop_keys(self: &Arc<Self>, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            if let Some(q) = node.queue() {
                let payload = serde_json::to_vec(&keys).unwrap_or_default();
                // Chunk keys are never reused: the first one names the job.
                let once = format!("drop:{}", keys[0]);
                match q
                    .put_job(
                        crate::jobs::CHUNK_DROPS,
                        payload,
                        Some(once),
                        node.opts.upload_attempts,
                    )
                    .await
                {
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "queue unreachable; chunks deleted in the background")
                    }
                }
            }
            if let Err(e) = node.delete_keys(&keys).await {
                tracing::warn!(error = %e, "could not delete unused chunks");
            }
        });
    }

    /// Deletes `keys` (a key already gone counts as deleted); the first
    /// failure stops and is returned, so a retry starts over.
    pub(crate) async fn delete_keys(self: &Arc<Self>, keys: &[String]) -> Result<()> {
        for k in keys {
            self.delete_blob(k).await?;
        }
        Ok(())
    }

    /// A streamed body for a full GET of `meta`, or `None` when streaming
    /// does not apply (small enough to cache whole, in-process store,
    /// collapsing off).
    pub async fn read_streaming(
        self: &Arc<Self>,
        meta: &BlobMeta,
    ) -> Option<Result<crate::StreamBody>> {
        let floor = self.caching.as_ref().map_or(0, |c| c.item_max() as u64);
        self.streams.as_ref()?.read(meta, &self.stores, floor).await
    }

    /// Puts a repair on the queue (nothing without a queue).
    async fn put_repair(
        &self,
        job: &crate::jobs::RepairJob,
        idempotency: String,
    ) -> crate::Result<()> {
        let Some(q) = self.queue() else {
            return Ok(());
        };
        let payload = serde_json::to_vec(job).map_err(|e| Error::Rejected {
            tier: "queue".into(),
            detail: e.to_string(),
        })?;
        match q
            .put_job(
                crate::jobs::REPAIRS,
                payload,
                Some(idempotency),
                self.opts.upload_attempts,
            )
            .await
        {
            Ok(j) => {
                tracing::info!(job = j, ?job, "repair queued");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(?job, error = %e, "could not queue a repair");
                Err(e)
            }
        }
    }

    /// Queues a repair of `meta`'s blob (once per blob id while the job's
    /// result is kept).
    pub(crate) async fn queue_repair(&self, meta: &BlobMeta) {
        let job = crate::jobs::RepairJob::Lost {
            id: meta.id,
            size: meta.size,
            replicas: meta.replicas.clone(),
        };
        // Best effort: the next read that meets the loss queues it again.
        let _ = self.put_repair(&job, format!("repair:{}", meta.id)).await;
    }

    /// Queues the rewrite of blob `id`'s corrupt copy on `store`, found by
    /// a read (once per blob and store while the job's result is kept).
    pub(crate) async fn queue_corrupt_repair(&self, id: u64, store: &str) {
        let job = crate::jobs::RepairJob::Corrupt {
            id,
            store: store.to_owned(),
        };
        let _ = self.put_repair(&job, format!("corrupt:{store}:{id}")).await;
    }

    /// Queues the re-replication of `key` away from the dead store `dead`.
    pub(crate) async fn queue_rereplicate(
        &self,
        key: &str,
        meta: &BlobMeta,
        dead: &str,
    ) -> crate::Result<()> {
        let job = crate::jobs::RepairJob::Dead {
            key: key.to_owned(),
            id: meta.id,
            size: meta.size,
            replicas: meta.replicas.clone(),
            dead: dead.to_owned(),
        };
        self.put_repair(&job, format!("dead:{dead}:{}", meta.id))
            .await
    }

    /// Builds a node; starts the store health prober when any store is remote.
    pub fn new(
        opts: NodeOptions,
        index: IndexHandle,
        stores: Vec<StoreMember>,
        extra_metrics: Vec<MetricsSection>,
        caching: Option<Caching>,
    ) -> Arc<Node> {
        let any_remote = stores
            .iter()
            .any(|s| matches!(s.handle, StoreHandle::Remote { .. }));
        let probe = opts.probe_every;
        let opts_collapse = opts.collapse.clone();
        let opts_batch = opts.batch_window.map(|w| (w, opts.batch_max_bytes));
        let node = Arc::new(Node {
            health: Arc::new(Health::new(stores.len())),
            opts,
            index,
            stores,
            ids: Mutex::new((0, 0)),
            refill: tokio::sync::Mutex::new(()),
            metrics: NodeMetrics::default(),
            extra_metrics,
            caching,
            collapser: opts_collapse.clone().map(collapse::Collapser::new),
            streams: opts_collapse.map(crate::streaming::Streams::new),
            batcher: opts_batch.map(|(w, max)| crate::batch::Batcher::new(w, max)),
            cpu_last: Mutex::new(None),
            queue: std::sync::OnceLock::new(),
            search: std::sync::OnceLock::new(),
        });
        if any_remote {
            health::spawn_prober(&node.health, node.stores.clone(), probe);
        }
        node
    }

    /// This process's CPU use since the previous call, percent of one core
    /// (0 on the first call).
    pub fn cpu_sample(&self) -> f64 {
        let secs = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.to_owned();
                let f: Vec<&str> = rest.split_whitespace().collect();
                let t = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
                Some((t(14)? + t(15)?) / 100.0)
            })
            .unwrap_or(0.0);
        let now = std::time::Instant::now();
        let mut last = self.cpu_last.lock().unwrap_or_else(|p| p.into_inner());
        let pct = match *last {
            Some((s0, t0)) if now > t0 => {
                (secs - s0) / now.duration_since(t0).as_secs_f64() * 100.0
            }
            _ => 0.0,
        };
        *last = Some((secs, now));
        pct.max(0.0)
    }

    /// Stores currently marked up.
    pub fn healthy_stores(&self) -> usize {
        self.health.count_up()
    }

    fn take_id(&self) -> Option<u64> {
        let mut g = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        (g.0 < g.1).then(|| {
            g.0 += 1;
            g.0 - 1
        })
    }

    /// A fresh blob id from the current lease, refilling it when spent.
    pub async fn next_id(&self) -> Result<u64> {
        loop {
            if let Some(id) = self.take_id() {
                return Ok(id);
            }
            let _g = self.refill.lock().await;
            if let Some(id) = self.take_id() {
                return Ok(id);
            }
            let start = self.index.alloc_ids(ID_LEASE).await?;
            *self.ids.lock().unwrap_or_else(|p| p.into_inner()) = (start, start + ID_LEASE);
        }
    }

    fn mark_down(&self, i: usize, e: &Error) {
        inc(&self.metrics.store_errors);
        if self.health.set(i, false) {
            tracing::warn!(store = %self.stores[i].name, error = %e, "store marked down");
        }
    }

    /// Writes `body` to R stores, then commits `key` in the index. Returns
    /// the new record; the one it replaced has its blob deleted from its
    /// stores in the background.
    pub async fn write_blob(
        self: &Arc<Self>,
        key: &str,
        body: Bytes,
        content_type: String,
        tags: Vec<String>,
    ) -> Result<BlobMeta> {
        let spec = WriteSpec {
            content_type,
            tags,
            ..WriteSpec::default()
        };
        Ok(self.write_one(key, body, spec, None).await?.0)
    }

    /// [`Node::write_blob`] with response headers, a given entity tag, or
    /// (for an object stored in chunks) its chunk list: see [`WriteSpec`].
    pub async fn write_with(
        self: &Arc<Self>,
        key: &str,
        body: Bytes,
        spec: WriteSpec,
    ) -> Result<BlobMeta> {
        Ok(self.write_one(key, body, spec, None).await?.0)
    }

    /// [`Node::write_blob`] of an image that may be a book page: once the
    /// index has committed, the search change is queued (also when the key
    /// was a page and no longer is). Returns the record and the indexing
    /// job, if one was queued.
    ///
    /// A page's words are always kept in a blob, so that a search shard can
    /// be rebuilt from the stores: text given inline is written first as
    /// the JSON blob `_text/{key}` (committed before the page names it);
    /// text in a sidecar the client stored is named as it is.
    pub async fn write_page(
        self: &Arc<Self>,
        key: &str,
        body: Bytes,
        content_type: String,
        tags: Vec<String>,
        mut page: Option<crate::search::PageUpload>,
    ) -> Result<(BlobMeta, Option<u64>)> {
        if let Some(p) = &mut page {
            p.at.text_key = Some(match &p.text {
                PageText::Inline(t) => {
                    let tk = text_key(key);
                    let json = serde_json::json!({ "text": t }).to_string();
                    let spec = WriteSpec {
                        content_type: "application/json".into(),
                        ..WriteSpec::default()
                    };
                    self.write_one(&tk, json.into(), spec, None).await?;
                    tk
                }
                PageText::Sidecar(k) => k.clone(),
            });
        }
        let spec = WriteSpec {
            content_type,
            tags,
            ..WriteSpec::default()
        };
        self.write_one(key, body, spec, page).await
    }

    async fn write_one(
        self: &Arc<Self>,
        key: &str,
        body: Bytes,
        spec: WriteSpec,
        page: Option<crate::search::PageUpload>,
    ) -> Result<(BlobMeta, Option<u64>)> {
        // The commit number is taken first: the needles carry it, so the
        // index can be rebuilt from the stores (`recover-index`).
        let (id, version) = tokio::try_join!(self.next_id(), self.index.next_version())?;
        let size = if spec.chunks.is_empty() {
            body.len() as u64
        } else {
            spec.chunks.iter().map(|c| c.size).sum()
        };
        let mut meta = BlobMeta {
            id,
            size,
            etag: spec
                .etag
                .unwrap_or_else(|| format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(&body))),
            content_type: spec.content_type,
            created_ms: now_ms(),
            replicas: Vec::new(),
            tags: spec.tags,
            version,
            page: page.as_ref().map(|p| p.at.clone()),
            headers: spec.headers,
            chunks: spec.chunks,
        };
        let head = NeedleMeta::blob(key, &meta).encode();
        let dropped = Dropped {
            key: key.to_owned(),
            version,
        };
        let names: Vec<&str> = self.stores.iter().map(|s| s.name.as_str()).collect();
        let ranked: Vec<usize> = cluster::rendezvous(&names, id)
            .into_iter()
            .filter_map(|n| names.iter().position(|x| *x == n))
            .collect();
        let need = self.opts.replicas.min(self.stores.len()).max(1);
        // Healthy stores first, in rendezvous order; stores marked down come
        // last, so a store that just came back (before the prober noticed)
        // is still tried rather than failing the write.
        let mut candidates = ranked
            .iter()
            .copied()
            .filter(|&i| self.health.is_up(i))
            .chain(ranked.iter().copied().filter(|&i| !self.health.is_up(i)))
            .collect::<Vec<_>>()
            .into_iter();
        let mut written: Vec<usize> = Vec::with_capacity(need);
        let mut launched: Vec<usize> = Vec::with_capacity(need + 1);

        // Write to R candidates at once; replace each failure with the next
        // healthy store in rendezvous order until R copies exist. A store
        // that neither answers nor fails (hung, partitioned) is hedged: past
        // the hedge delay one more candidate starts, so a write waits for
        // the R fastest stores, not for a timeout.
        let mut set = tokio::task::JoinSet::new();
        let mut spawn_put = |set: &mut tokio::task::JoinSet<(usize, Result<()>)>, i: usize| {
            let m = self.stores[i].clone();
            let (body, head) = (body.clone(), head.clone());
            launched.push(i);
            set.spawn(async move { (i, m.handle.put(&m.name, id, head, body).await) });
        };
        for _ in 0..need {
            match candidates.next() {
                Some(i) => spawn_put(&mut set, i),
                None => break,
            }
        }
        let hedge = self.hedge_after(body.len() as u64);
        let mut hedge_at = hedge.map(|h| tokio::time::Instant::now() + h);
        while written.len() < need {
            let joined = tokio::select! {
                j = set.join_next() => match j {
                    Some(j) => j,
                    None => break,
                },
                _ = sleep_until(hedge_at) => {
                    if let Some(next) = candidates.next() {
                        spawn_put(&mut set, next);
                    }
                    hedge_at = hedge.map(|h| tokio::time::Instant::now() + h);
                    continue;
                }
            };
            let Ok((i, res)) = joined else { continue };
            match res {
                Ok(()) => {
                    self.health.set(i, true);
                    written.push(i);
                }
                Err(e @ Error::Rejected { .. }) => {
                    self.cleanup(&dropped, id, &launched);
                    return Err(e);
                }
                Err(e) => {
                    // A full store still serves reads: skip it for this
                    // write without marking it down.
                    if !matches!(e, Error::Full { .. }) {
                        self.mark_down(i, &e);
                    }
                    if let Some(next) = candidates.next() {
                        spawn_put(&mut set, next);
                    }
                }
            }
        }
        // Puts still in flight are dropped; a store that took the body
        // anyway holds a copy nobody names: delete it in the background.
        drop(set);
        let stray: Vec<usize> = launched
            .iter()
            .copied()
            .filter(|i| !written.contains(i))
            .collect();
        if written.len() < need {
            self.cleanup(&dropped, id, &launched);
            return Err(Error::NotEnoughStores {
                need,
                have: written.len(),
            });
        }
        if !stray.is_empty() {
            self.cleanup(&dropped, id, &stray);
        }
        // Keep the replica list in rendezvous order: readers try it in order.
        written.sort_by_key(|i| ranked.iter().position(|r| r == i));
        meta.replicas = written
            .iter()
            .map(|&i| self.stores[i].name.clone())
            .collect();
        let committed = self.index.put(key, &meta).await;
        if committed.is_ok() {
            if let Some(c) = &self.caching {
                c.invalidate(key).await;
            }
        }
        let previous = match committed {
            // A change numbered after this put holds the key already: this
            // put is ordered just before it, and its copies are garbage.
            // Its page is still handed to search, which keeps the newest
            // version (this one is older), so every page upload has a job
            // to wait on.
            Ok(c) if c.superseded => {
                self.cleanup(&dropped, id, &written);
                let job = self.after_change(key, meta.version, page, None).await;
                return Ok((meta, job?));
            }
            Ok(c) => {
                meta.version = c.version;
                c.previous
            }
            Err(e) => {
                // Not committed: the copies are unreachable garbage; drop them.
                self.cleanup(&dropped, id, &written);
                return Err(e);
            }
        };
        let inline_text = page
            .as_ref()
            .is_some_and(|p| matches!(p.text, PageText::Inline(_)));
        let job = self
            .after_change(key, meta.version, page, previous.as_ref())
            .await;
        if let Some(prev) = previous {
            if !inline_text {
                self.drop_own_text(key, &prev);
            }
            self.drop_chunks(&prev);
            self.delete_copies(&dropped, prev);
        }
        Ok((meta, job?))
    }

    /// Deletes `_text/{key}` when `prev` (the record of `key` just replaced
    /// or deleted) named it: the page's words went with the page. In the
    /// background; a failure leaves a text blob that nothing names, which
    /// costs space and nothing else.
    fn drop_own_text(self: &Arc<Self>, key: &str, prev: &BlobMeta) {
        let own = text_key(key);
        if prev.page.as_ref().and_then(|p| p.text_key.as_ref()) != Some(&own) {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            if let Err(e) = node.delete_blob(&own).await {
                tracing::warn!(key = %own, error = %e, "could not delete a page's text");
            }
        });
    }

    /// Deletes the chunks of `prev` (a record just replaced or deleted)
    /// when it was an object stored in chunks. In the background; a chunk
    /// left by a crash is a blob nothing names (see the ARCHITECTURE's
    /// limits).
    fn drop_chunks(self: &Arc<Self>, prev: &BlobMeta) {
        self.drop_keys(prev.chunks.iter().map(|c| c.key.clone()).collect());
    }

    fn cleanup(self: &Arc<Self>, why: &Dropped, id: u64, written: &[usize]) {
        let names = written
            .iter()
            .map(|&i| self.stores[i].name.clone())
            .collect();
        self.delete_copies_of(why.tombstone(Kind::Dropped), id, names);
    }

    /// Deletes a replaced blob from its stores, in the background. A store
    /// that is down keeps its copy as unreachable garbage.
    fn delete_copies(self: &Arc<Self>, why: &Dropped, meta: BlobMeta) {
        self.delete_copies_of(why.tombstone(Kind::Dropped), meta.id, meta.replicas);
    }

    fn delete_copies_of(self: &Arc<Self>, tombstone: Bytes, id: u64, replicas: Vec<String>) {
        let node = self.clone();
        tokio::spawn(async move {
            for name in replicas {
                if let Some(m) = node.stores.iter().find(|s| s.name == name) {
                    if let Err(e) = m.handle.delete(&m.name, id, tombstone.clone()).await {
                        if !matches!(e, Error::NotFound) {
                            tracing::warn!(store = %name, id, error = %e, "could not delete old copy");
                        }
                    }
                }
            }
        });
    }

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
    fn hedge_after(&self, bytes: u64) -> Option<Duration> {
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

    /// Removes `key`; `None` if it did not exist. Store copies are deleted in
    /// the background once the index no longer names them.
    pub async fn delete_blob(self: &Arc<Self>, key: &str) -> Result<Option<BlobMeta>> {
        let committed = self.index.delete(key).await?;
        let prev = committed.previous;
        if let Some(c) = &self.caching {
            c.invalidate(key).await;
        }
        if let Err(e) = self
            .after_change(key, committed.version, None, prev.as_ref())
            .await
        {
            // The blob is gone; its page stays findable until the next
            // change of the key (the queue was unreachable).
            tracing::error!(key, error = %e, "deleted page could not be removed from search");
        }
        if let Some(p) = &prev {
            let why = Dropped {
                key: key.to_owned(),
                version: committed.version,
            };
            self.delete_copies_of(why.tombstone(Kind::Deleted), p.id, p.replicas.clone());
            self.drop_own_text(key, p);
            self.drop_chunks(p);
        }
        Ok(prev)
    }
}

/// What a write records besides the bytes.
#[derive(Debug, Clone, Default)]
pub struct WriteSpec {
    /// Content-Type.
    pub content_type: String,
    /// Tags (`X-Strata-Tags`).
    pub tags: Vec<String>,
    /// Response headers to keep with the blob ([`BlobMeta::headers`]).
    pub headers: Vec<(String, String)>,
    /// The entity tag, quoted; by default a hash of the body. The S3 API
    /// gives the body's MD5, which is what its clients check.
    pub etag: Option<String>,
    /// An object stored in chunks: the chunks, already written; the body
    /// is then the manifest ([`BlobMeta::chunks`]).
    pub chunks: Vec<index::Chunk>,
}

/// Where the words of page `key` given inline are kept.
pub fn text_key(key: &str) -> String {
    format!("_text/{key}")
}

/// The key and commit number a tombstone names.
struct Dropped {
    key: String,
    version: u64,
}

impl Dropped {
    /// A tombstone's metadata: the key was deleted, or just this copy.
    fn tombstone(&self, kind: Kind) -> Bytes {
        NeedleMeta {
            key: self.key.clone(),
            version: self.version,
            created_ms: now_ms(),
            kind,
        }
        .encode()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
