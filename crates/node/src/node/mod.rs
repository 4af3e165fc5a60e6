//! [`Node`]: the write path, the read path and the id lease, independent of
//! HTTP so that tests and other front ends can drive them directly.
//!
//! This file holds the node's state, its settings, the id lease and the
//! follow-up work a write queues (search changes, repairs, chunk deletes);
//! the write path is `write`, the read path (cache tiers, collapsing,
//! slices, batching, failover, hedging) is `read`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use index::BlobMeta;

use crate::caching::Caching;
use crate::health::{self, Health};
use crate::metrics::{inc, NodeMetrics};
pub use crate::tiers::StoreMember;
use crate::tiers::{IndexHandle, StoreHandle};
use crate::{Error, Result};
pub use write::WriteSpec;

mod read;
mod write;

/// More families for the node's `/metrics` (e.g. the in-process store
/// and index of `strata serve`): any collector of the `prometheus` library.
pub type MetricsSection = Box<dyn prom::Collector>;

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
    /// This node's metrics registry: its own families, its features' and
    /// the extra sections it was built with; `/metrics` renders it.
    pub registry: prom::Registry,
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
        let q = self.queue().ok_or_else(|| {
            crate::search::unavailable("search needs a queue; this node has none")
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
            registry: prom::Registry::new(),
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
        // The section holds the node weakly: the registry lives in the
        // node, and a strong handle would keep both alive forever.
        let weak = Arc::downgrade(&node);
        prom::register(
            &node.registry,
            prom::Section::new(move || weak.upgrade().map_or_else(Vec::new, |n| n.families())),
        );
        prom::register(&node.registry, prom::Group::from(extra_metrics));
        node
    }

    /// The node's own families and those of its features (cache tiers,
    /// collapsing), read at each scrape.
    fn families(&self) -> Vec<prom::Family> {
        let batched = self.batcher.as_ref().map_or((0, 0), |b| {
            (
                b.batches.load(std::sync::atomic::Ordering::Relaxed),
                b.batched_reads.load(std::sync::atomic::Ordering::Relaxed),
            )
        });
        let mut out = self.metrics.families(self.healthy_stores(), batched);
        if let Some(c) = &self.caching {
            out.extend(c.families());
        }
        if let Some(c) = &self.collapser {
            out.extend(c.metrics.families("strata_proxy"));
        }
        out
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
}
