//! The node's cache tiers on the read path (local -> distributed -> origin,
//! as ARCHITECTURE.md draws it), and invalidation on writes.
//!
//! Two kinds of entries:
//! - `m:<hash of key>` — the key's `BlobMeta` (JSON). Mutable: a PUT or
//!   DELETE deletes it from this node's local cache and from the
//!   distributed cache. Other nodes' local copies live at most
//!   `meta_ttl` seconds: that is the invalidation window.
//! - `d:<blob id>` — the blob's bytes. Immutable (an overwrite gets a new
//!   blob id), so never invalidated; an orphan just ages out.
//!
//! Values over the item limit are not cached (a big blob would evict many
//! small hot ones for one hit). A key read more than `hot_threshold` times a
//! second on this node is hot: its distributed copies go to R replicas.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cache::client::CacheClient;
use cache::{Cache, StoreMode};
use index::BlobMeta;

/// Where the distributed (global) cache is.
pub enum GlobalCache {
    /// No global cache.
    None,
    /// In this process (`strata serve`): the engine its memcached server
    /// also serves.
    Local(Arc<Cache>),
    /// Cache members over the memcached protocol.
    Remote(CacheClient),
}

/// Settings of the node's cache tiers.
#[derive(Debug, Clone)]
pub struct CachingOptions {
    /// Seconds a local copy of metadata is trusted.
    pub meta_ttl_secs: u32,
    /// Reads per second that make a key hot.
    pub hot_threshold: u32,
    /// Largest value cached, bytes.
    pub item_max: usize,
    /// Global-cache mode `through`: cache members load blob bytes from the
    /// stores themselves, so the node does not fill them.
    pub through: bool,
}

pub use crate::metrics::TierCounters;

/// The node's caches.
pub struct Caching {
    /// Node-local cache, if enabled.
    pub local: Option<Arc<Cache>>,
    /// Node-local disk tier under the local cache, if enabled.
    pub disk: Option<cache::disk::DiskTier>,
    /// The distributed cache.
    pub global: GlobalCache,
    /// Recently read keys' metadata, ready to answer with (shared by the
    /// nodes of one process in `serve`).
    pub ready: Option<Arc<crate::ready::ReadySet>>,
    opts: CachingOptions,
    hot_counts: Mutex<(u32, HashMap<u64, u32>)>,
    /// Local tier counters.
    pub local_counters: TierCounters,
    /// Global tier counters (for the in-process global cache; a remote one
    /// counts per member in its client).
    pub global_counters: TierCounters,
    /// Disk tier counters.
    pub disk_counters: TierCounters,
}

fn meta_key(key: &str) -> Vec<u8> {
    format!("m:{:032x}", xxhash_rust::xxh3::xxh3_128(key.as_bytes())).into_bytes()
}

fn session_key(id: &str) -> Vec<u8> {
    format!("sess:{id}").into_bytes()
}

fn data_key(id: u64) -> Vec<u8> {
    format!("d:{id}").into_bytes()
}

impl Caching {
    /// Builds the tiers.
    pub fn new(local: Option<Arc<Cache>>, global: GlobalCache, opts: CachingOptions) -> Caching {
        Caching {
            local,
            disk: None,
            global,
            ready: None,
            opts,
            hot_counts: Mutex::new((0, HashMap::new())),
            local_counters: TierCounters::default(),
            global_counters: TierCounters::default(),
            disk_counters: TierCounters::default(),
        }
    }

    /// Adds a ready set (see [`crate::ready`]) in front of the tiers.
    pub fn with_ready(mut self, ready: Arc<crate::ready::ReadySet>) -> Caching {
        self.ready = Some(ready);
        self
    }

    /// Adds a disk tier under the local cache (it survives restarts).
    pub fn with_disk(mut self, disk: cache::disk::DiskTier) -> Caching {
        self.disk = Some(disk);
        self
    }

    fn local_ttl(&self, k: &[u8]) -> i64 {
        if k.starts_with(b"m:") {
            i64::from(self.opts.meta_ttl_secs)
        } else {
            0
        }
    }

    /// True when `key` was read at least `hot_threshold` times this
    /// second; `count` records this call as one more read.
    fn hot(&self, key: &[u8], count: bool) -> bool {
        let now = self.now();
        let h = xxhash_rust::xxh3::xxh3_64(key);
        let mut g = self.hot_counts.lock().unwrap_or_else(|p| p.into_inner());
        if g.0 != now {
            // A new second: forget last second's counts.
            g.0 = now;
            g.1.clear();
        }
        let c = g.1.entry(h).or_insert(0);
        if count {
            *c += 1;
        }
        *c >= self.opts.hot_threshold
    }

    fn now(&self) -> u32 {
        self.local.as_ref().map_or_else(
            || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as u32)
            },
            |c| c.now(),
        )
    }

    async fn get(&self, k: &[u8]) -> Option<Bytes> {
        if let Some(l) = &self.local {
            if let Some(it) = l.get(k) {
                self.local_counters.hits.fetch_add(1, Ordering::Relaxed);
                return Some(it.value);
            }
            self.local_counters.misses.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(d) = &self.disk {
            let now = self.now();
            if let Some((v, exptime)) = d.get(k, now) {
                self.disk_counters.hits.fetch_add(1, Ordering::Relaxed);
                if let Some(l) = &self.local {
                    // Promote; an absolute exptime keeps the original expiry.
                    l.store(StoreMode::Set, k, v.clone(), 0, i64::from(exptime));
                }
                return Some(v);
            }
            self.disk_counters.misses.fetch_add(1, Ordering::Relaxed);
        }
        let found = match &self.global {
            GlobalCache::None => None,
            GlobalCache::Local(c) => {
                let v = c.get(k).map(|it| it.value);
                let ctr = &self.global_counters;
                if v.is_some() { &ctr.hits } else { &ctr.misses }.fetch_add(1, Ordering::Relaxed);
                v
            }
            // Only the distributed tier uses hotness (R replicas), so only its
            // reads are counted: no lock on the path otherwise.
            GlobalCache::Remote(c) => c.get(k, self.hot(k, true)).await,
        };
        if let Some(v) = &found {
            // Filled from the global tier: keep a local copy too.
            self.fill_local(k, v);
        }
        found
    }

    fn fill_local(&self, k: &[u8], v: &Bytes) {
        if v.len() > self.opts.item_max {
            return;
        }
        let ttl = self.local_ttl(k);
        if let Some(l) = &self.local {
            l.store(StoreMode::Set, k, v.clone(), 0, ttl);
        }
        if let Some(d) = &self.disk {
            let exptime = if ttl == 0 {
                0
            } else {
                self.now().saturating_add(ttl as u32)
            };
            d.put(k, v, exptime);
        }
    }

    async fn fill(&self, k: &[u8], v: Bytes) {
        if v.len() > self.opts.item_max {
            return;
        }
        self.fill_local(k, &v);
        if self.opts.through && k.starts_with(b"d:") {
            // The cache member read it through already (or was down).
            return;
        }
        match &self.global {
            GlobalCache::None => {}
            GlobalCache::Local(c) => {
                c.store(StoreMode::Set, k, v, 0, 0);
            }
            GlobalCache::Remote(c) => c.set(k, &v, 0, self.hot(k, false)).await,
        }
    }

    /// Cached metadata of `key`.
    pub async fn get_meta(&self, key: &str) -> Option<BlobMeta> {
        let k = meta_key(key);
        let raw = self.get(&k).await?;
        serde_json::from_slice(&raw).ok()
    }

    /// Caches metadata read from the index.
    pub async fn put_meta(&self, key: &str, meta: &BlobMeta) {
        let k = meta_key(key);
        if let Ok(raw) = serde_json::to_vec(meta) {
            self.fill(&k, Bytes::from(raw)).await;
        }
    }

    /// Forgets `key`'s metadata here and in the distributed cache (after a
    /// PUT or DELETE committed).
    pub async fn invalidate(&self, key: &str) {
        if let Some(h) = &self.ready {
            h.forget(key);
        }
        let k = meta_key(key);
        if let Some(l) = &self.local {
            l.delete(&k);
        }
        if let Some(d) = &self.disk {
            d.delete(&k);
        }
        match &self.global {
            GlobalCache::None => {}
            GlobalCache::Local(c) => {
                c.delete(&k);
            }
            GlobalCache::Remote(c) => c.delete(&k).await,
        }
    }

    /// Forgets a local metadata copy only (it named a blob that is gone).
    pub fn drop_local_meta(&self, key: &str) {
        if let Some(h) = &self.ready {
            h.forget(key);
        }
        let k = meta_key(key);
        if let Some(l) = &self.local {
            l.delete(&k);
        }
        if let Some(d) = &self.disk {
            d.delete(&k);
        }
    }

    /// Cached bytes of blob `id`.
    pub async fn get_data(&self, id: u64) -> Option<Bytes> {
        let k = data_key(id);
        self.get(&k).await
    }

    /// Caches blob bytes read from a store (skipped above the item limit).
    pub async fn put_data(&self, id: u64, data: Bytes) {
        let k = data_key(id);
        self.fill(&k, data).await;
    }

    /// Cached slice `idx` of blob `id`.
    pub async fn get_slice(&self, id: u64, idx: u64) -> Option<Bytes> {
        let k = format!("s:{id}:{idx}").into_bytes();
        self.get(&k).await
    }

    /// Caches slice `idx` of blob `id` (immutable, like blob bytes).
    pub async fn put_slice(&self, id: u64, idx: u64, data: Bytes) {
        let k = format!("s:{id}:{idx}").into_bytes();
        self.fill(&k, data).await;
    }

    /// Whether sessions can be kept: they live in the global tier only
    /// (a node-local copy would go stale when another node takes the
    /// session over).
    pub fn has_sessions(&self) -> bool {
        !matches!(self.global, GlobalCache::None)
    }

    /// Session `id`'s data from the global tier.
    pub async fn get_session(&self, id: &str) -> Option<Bytes> {
        let k = session_key(id);
        match &self.global {
            GlobalCache::None => None,
            GlobalCache::Local(c) => c.get(&k).map(|it| it.value),
            GlobalCache::Remote(c) => c.get_replicated(&k).await,
        }
    }

    /// Stores session `id` for `ttl` seconds on every replica of the
    /// global tier; false when no replica took it.
    pub async fn put_session(&self, id: &str, data: Bytes, ttl: u32) -> bool {
        let k = session_key(id);
        match &self.global {
            GlobalCache::None => false,
            GlobalCache::Local(c) => {
                c.store(StoreMode::Set, &k, data, 0, i64::from(ttl));
                c.get(&k).is_some()
            }
            GlobalCache::Remote(c) => c.set_replicated(&k, &data, ttl).await > 0,
        }
    }

    /// Forgets session `id` everywhere.
    pub async fn delete_session(&self, id: &str) {
        let k = session_key(id);
        match &self.global {
            GlobalCache::None => {}
            GlobalCache::Local(c) => {
                c.delete(&k);
            }
            GlobalCache::Remote(c) => c.delete(&k).await,
        }
    }

    /// Largest cacheable value.
    pub fn item_max(&self) -> usize {
        self.opts.item_max
    }

    /// The tiers' families for the node's registry: hits and misses per
    /// tier (and per member of a remote global tier), evictions, bytes and
    /// items per tier, and each cache member's errors and state.
    pub fn families(&self) -> Vec<prom::Family> {
        use prom::Family;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let mut hits = Family::counter("strata_cache_hits_total", "Reads a cache tier answered.");
        let mut misses = Family::counter(
            "strata_cache_misses_total",
            "Reads a cache tier did not have.",
        );
        let mut evictions = Family::counter(
            "strata_cache_evictions_total",
            "Entries evicted from a memory tier.",
        );
        let mut bytes = Family::gauge("strata_cache_bytes", "Bytes held by a cache tier.");
        let mut items = Family::gauge("strata_cache_items", "Entries held by a cache tier.");
        let mut errors = Family::counter(
            "strata_cache_errors_total",
            "Calls to a cache member that failed.",
        );
        let mut down_marks = Family::counter(
            "strata_cache_down_marks_total",
            "Times a cache member was marked down.",
        );
        let mut up = Family::gauge(
            "strata_cache_node_up",
            "1 while a cache member is marked up.",
        );
        let mut counted = |tier: &str, c: &TierCounters| {
            hits.add(&[("tier", tier)], l(&c.hits));
            misses.add(&[("tier", tier)], l(&c.misses));
        };
        if self.disk.is_some() {
            counted("disk", &self.disk_counters);
        }
        // The ready set is shared by `serve`'s nodes: each node's page
        // shows the set's own totals.
        if let Some(r) = &self.ready {
            counted("ready", &r.counters);
        }
        if self.local.is_some() {
            counted("local", &self.local_counters);
        }
        if let GlobalCache::Local(_) = &self.global {
            counted("global", &self.global_counters);
        }
        if let GlobalCache::Remote(c) = &self.global {
            for (name, ctr, is_up) in c.counters() {
                let member = [("tier", "global"), ("node", name)];
                hits.add(&member, l(&ctr.hits));
                misses.add(&member, l(&ctr.misses));
                errors.add(&[("node", name)], l(&ctr.errors));
                down_marks.add(&[("node", name)], l(&ctr.down_marks));
                up.add(&[("node", name)], f64::from(u8::from(is_up)));
            }
        }
        if let Some(d) = &self.disk {
            bytes.add(&[("tier", "disk")], d.bytes() as f64);
            items.add(&[("tier", "disk")], d.len() as f64);
        }
        if let Some(r) = &self.ready {
            items.add(&[("tier", "ready")], r.len() as f64);
        }
        for (tier, c) in [
            ("local", self.local.as_ref()),
            (
                "global",
                match &self.global {
                    GlobalCache::Local(c) => Some(c),
                    _ => None,
                },
            ),
        ] {
            if let Some(c) = c {
                evictions.add(&[("tier", tier)], l(&c.stats.evictions));
                bytes.add(&[("tier", tier)], c.bytes() as f64);
                items.add(&[("tier", tier)], c.len() as f64);
            }
        }
        vec![
            hits, misses, evictions, bytes, items, errors, down_marks, up,
        ]
    }
}
