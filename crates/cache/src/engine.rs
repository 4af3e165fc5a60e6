//! [`Cache`]: the sharded engine with memcached's storage semantics.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};

use crate::clock::{Clock, Expiry};
use crate::shard::{Entry, Policy, Removal, Shard, ITEM_OVERHEAD};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Memory limit in bytes, per-item overhead included.
    pub max_bytes: usize,
    /// Largest value accepted, in bytes (memcached's `-I`, default 1 MiB).
    pub item_max: usize,
    /// Eviction policy.
    pub policy: Policy,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 64 << 20,
            item_max: 1 << 20,
            policy: Policy::S3Fifo,
        }
    }
}

/// How a store command treats an existing item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// Always store.
    Set,
    /// Only if absent.
    Add,
    /// Only if present.
    Replace,
    /// Append to the present value (flags and exptime kept).
    Append,
    /// Prepend to the present value.
    Prepend,
    /// Only if present with this CAS unique.
    Cas(u64),
}

/// Outcome of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreResult {
    /// Stored; carries the new CAS unique.
    Stored(u64),
    /// The mode's condition failed (add/replace/append/prepend).
    NotStored,
    /// CAS mismatch.
    Exists,
    /// CAS on a missing item.
    NotFound,
    /// Value over the item limit, or the item cannot fit the memory at all.
    TooLarge,
}

/// Outcome of incr/decr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arith {
    /// The new value (and its CAS).
    Value(u64, u64),
    /// No such item.
    NotFound,
    /// The value is not a decimal u64.
    NonNumeric,
}

/// A copy of an item handed to readers (the value is a cheap `Bytes` clone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Value.
    pub value: Bytes,
    /// Client flags.
    pub flags: u32,
    /// CAS unique.
    pub cas: u64,
    /// 0 = never, else Unix second it expires.
    pub exptime: u32,
}

impl Item {
    pub(crate) fn of(e: &Entry) -> Item {
        Item {
            value: e.value.clone(),
            flags: e.flags,
            cas: e.cas,
            exptime: e.exptime,
        }
    }
}

/// Counters, memcached names.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Items ever stored.
    pub total_items: AtomicU64,
    /// Valid items pushed out for room.
    pub evictions: AtomicU64,
    /// Expired items reclaimed while making room.
    pub reclaimed: AtomicU64,
    /// Gets that found an expired item.
    pub get_expired: AtomicU64,
    /// Gets that found a flushed item.
    pub get_flushed: AtomicU64,
}

/// The cache engine: shards of S3-FIFO (or LRU) under one byte limit.
pub struct Cache {
    cfg: CacheConfig,
    shards: Box<[Mutex<Shard>]>,
    mask: u64,
    cas: AtomicU64,
    /// Items with CAS <= this are flushed (immediate `flush_all`).
    flushed_cas: AtomicU64,
    /// Delayed `flush_all`: items stored before this second are gone once
    /// it arrives (0 = none pending).
    flush_at: AtomicU32,
    clock: Arc<dyn Clock>,
    /// Counters.
    pub stats: EngineStats,
}

impl Cache {
    /// A cache with `cfg`, reading time from `clock`.
    pub fn new(cfg: CacheConfig, clock: Arc<dyn Clock>) -> Cache {
        // Enough shards to spread lock contention, few enough that each can
        // hold several maximal items.
        let want = (cfg.max_bytes / (4 * (cfg.item_max + ITEM_OVERHEAD)).max(1)).clamp(1, 64);
        // Largest power of two not above `want` (the shard index is a mask).
        let n = 1usize << (usize::BITS - 1 - want.leading_zeros());
        let per = cfg.max_bytes / n;
        let shards = (0..n)
            .map(|_| Mutex::new(Shard::new(per, cfg.policy)))
            .collect();
        Cache {
            mask: (n - 1) as u64,
            shards,
            cas: AtomicU64::new(0),
            flushed_cas: AtomicU64::new(0),
            flush_at: AtomicU32::new(0),
            clock,
            stats: EngineStats::default(),
            cfg,
        }
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// Now, per the cache's clock.
    pub fn now(&self) -> u32 {
        self.clock.now()
    }

    pub(crate) fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        let i = (xxhash_rust::xxh3::xxh3_64(key) & self.mask) as usize;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn next_cas(&self) -> u64 {
        self.cas.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Is `e` invisible because of expiry or flush_all?
    fn gone(&self, e: &Entry, now: u32) -> Option<Gone> {
        if e.cas <= self.flushed_cas.load(Ordering::Relaxed) {
            return Some(Gone::Flushed);
        }
        let fa = self.flush_at.load(Ordering::Relaxed);
        if fa != 0 && now >= fa && e.updated < fa {
            return Some(Gone::Flushed);
        }
        e.expired(now).then_some(Gone::Expired)
    }

    /// Looks up a live item, removing it if it is expired or flushed.
    pub(crate) fn live<'a>(
        &self,
        shard: &'a mut Shard,
        key: &[u8],
        now: u32,
    ) -> Result<&'a mut Entry, Option<Gone>> {
        let why = match shard.peek(key) {
            None => return Err(None),
            Some(e) => self.gone(e, now),
        };
        if let Some(w) = why {
            shard.remove(key);
            return Err(Some(w));
        }
        shard.peek_mut(key).ok_or(None)
    }

    fn count_gone(&self, g: Option<Gone>) {
        match g {
            Some(Gone::Expired) => self.stats.get_expired.fetch_add(1, Ordering::Relaxed),
            Some(Gone::Flushed) => self.stats.get_flushed.fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
    }

    /// Reads `key`, counting it as an access.
    pub fn get(&self, key: &[u8]) -> Option<Item> {
        let now = self.now();
        let mut s = self.shard(key);
        match self.live(&mut s, key, now) {
            Ok(e) => {
                let item = Item::of(e);
                s.touch_access(key, now);
                Some(item)
            }
            Err(g) => {
                self.count_gone(g);
                None
            }
        }
    }

    /// Reads `key` without counting an access (meta `u` flag, tests).
    pub fn peek(&self, key: &[u8]) -> Option<Item> {
        let now = self.now();
        let mut s = self.shard(key);
        self.live(&mut s, key, now).ok().map(|e| Item::of(e))
    }

    /// Reads `key` and sets its expiration (gat/gats).
    pub fn get_and_touch(&self, key: &[u8], exptime: i64) -> Option<Item> {
        let now = self.now();
        let mut s = self.shard(key);
        match self.live(&mut s, key, now) {
            Ok(e) => {
                e.exptime = Expiry::from_raw(exptime, now).as_exptime(now);
                let item = Item::of(e);
                s.touch_access(key, now);
                Some(item)
            }
            Err(g) => {
                self.count_gone(g);
                None
            }
        }
    }

    /// Stores `value` under `key` per `mode`.
    pub fn store(
        &self,
        mode: StoreMode,
        key: &[u8],
        value: Bytes,
        flags: u32,
        exptime: i64,
    ) -> StoreResult {
        self.store_with(mode, key, value, flags, exptime, None)
    }

    /// Like [`Cache::store`], with an explicit CAS unique to assign (meta `E`).
    pub fn store_with(
        &self,
        mode: StoreMode,
        key: &[u8],
        value: Bytes,
        flags: u32,
        exptime: i64,
        new_cas: Option<u64>,
    ) -> StoreResult {
        let now = self.now();
        let mut s = self.shard(key);
        if value.len() > self.cfg.item_max || key.len() + value.len() + ITEM_OVERHEAD > s.cap() {
            // memcached drops the old value when a set is refused for size,
            // so that a reader never sees the value the writer replaced.
            s.remove(key);
            return StoreResult::TooLarge;
        }
        let existing = self.live(&mut s, key, now).ok().map(|e| Item::of(e));
        let (value, flags, exptime) = match (mode, &existing) {
            (StoreMode::Add, Some(_)) => {
                // memcached bumps the existing item on a failed add.
                s.touch_access(key, now);
                return StoreResult::NotStored;
            }
            (StoreMode::Replace | StoreMode::Append | StoreMode::Prepend, None) => {
                return StoreResult::NotStored
            }
            (StoreMode::Cas(_), None) => return StoreResult::NotFound,
            (StoreMode::Cas(c), Some(old)) if old.cas != c => return StoreResult::Exists,
            (StoreMode::Append, Some(old)) => (concat(&old.value, &value), old.flags, old.exptime),
            (StoreMode::Prepend, Some(old)) => (concat(&value, &old.value), old.flags, old.exptime),
            _ => (value, flags, Expiry::from_raw(exptime, now).as_exptime(now)),
        };
        if value.len() > self.cfg.item_max {
            return StoreResult::TooLarge;
        }
        let cas = new_cas.unwrap_or_else(|| self.next_cas());
        let mut removed = Vec::new();
        let entry = Entry::new(Bytes::copy_from_slice(key), value, flags, exptime, now, cas);
        s.insert(entry, now, &mut removed);
        drop(s);
        self.stats.total_items.fetch_add(1, Ordering::Relaxed);
        for (_, why) in removed {
            match why {
                Removal::Evicted => self.stats.evictions.fetch_add(1, Ordering::Relaxed),
                Removal::Expired => self.stats.reclaimed.fetch_add(1, Ordering::Relaxed),
            };
        }
        StoreResult::Stored(cas)
    }

    /// Deletes `key`; true if a live item was removed.
    pub fn delete(&self, key: &[u8]) -> bool {
        let now = self.now();
        let mut s = self.shard(key);
        let live = self.live(&mut s, key, now).is_ok();
        s.remove(key);
        live
    }

    /// Sets the expiration of a live item.
    pub fn touch(&self, key: &[u8], exptime: i64) -> bool {
        let now = self.now();
        let mut s = self.shard(key);
        match self.live(&mut s, key, now) {
            Ok(e) => {
                e.exptime = Expiry::from_raw(exptime, now).as_exptime(now);
                s.touch_access(key, now);
                true
            }
            Err(_) => false,
        }
    }

    /// incr (wrapping at 2^64) or decr (stopping at 0).
    pub fn arith(&self, key: &[u8], delta: u64, incr: bool) -> Arith {
        let now = self.now();
        let mut s = self.shard(key);
        let e = match self.live(&mut s, key, now) {
            Ok(e) => e,
            Err(_) => return Arith::NotFound,
        };
        let Some(cur) = std::str::from_utf8(&e.value)
            .ok()
            // strtoull rules, as memcached: surrounding whitespace is allowed.
            .and_then(|v| v.trim_ascii().parse::<u64>().ok())
        else {
            return Arith::NonNumeric;
        };
        let new = if incr {
            cur.wrapping_add(delta)
        } else {
            cur.saturating_sub(delta)
        };
        let cas = self.next_cas();
        e.value = Bytes::from(new.to_string());
        e.cas = cas;
        e.updated = now;
        s.touch_access(key, now);
        Arith::Value(new, cas)
    }

    /// Invalidates every item now, or every item stored before `delay`
    /// seconds from now once that time comes.
    pub fn flush_all(&self, delay: i64) {
        if delay <= 0 {
            self.flushed_cas
                .store(self.cas.load(Ordering::Relaxed), Ordering::Relaxed);
            self.flush_at.store(0, Ordering::Relaxed);
        } else {
            let now = self.now();
            self.flush_at.store(
                Expiry::from_raw(delay, now).as_exptime(now),
                Ordering::Relaxed,
            );
        }
    }

    /// Items held (flushed or expired ones not yet found included).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged (never above `max_bytes`).
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).bytes())
            .sum()
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Gone {
    Expired,
    Flushed,
}

fn concat(a: &[u8], b: &[u8]) -> Bytes {
    let mut v = BytesMut::with_capacity(a.len() + b.len());
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    v.freeze()
}
