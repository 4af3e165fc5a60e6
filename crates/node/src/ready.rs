//! The ready set: what a GET of a recently read key needs, kept ready.
//!
//! An entry is a key's [`BlobMeta`] with its response header lines already
//! rendered, so a read of such a key costs one hash lookup here and one slice
//! of the store's mapping (or one cache lookup for a remote store): no index
//! lookup, no metadata decode, no header formatting.
//!
//! Invalidation: every PUT and DELETE through a node that shares this set
//! drops the key before it answers, and bumps the key's stripe generation,
//! so a read that looked the key up before the change cannot put the old
//! entry back afterwards (it offers the generation it started with). In
//! `serve` every node of the process shares one set, so it is exact; a
//! cluster node's own set also expires entries after `meta_ttl_secs`, the
//! window other nodes' writes already have for local metadata copies.
//!
//! Eviction is CLOCK (second chance) per shard over a fixed number of
//! entries: entries are small (metadata, ~300 bytes), bodies are not held
//! here.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use index::BlobMeta;

use crate::metrics::TierCounters;

const SHARDS: usize = 16;
/// Generation stripes: a change bumps one, so unrelated keys rarely make
/// a fill be skipped.
const STRIPES: usize = 1024;

/// A key's metadata and its rendered header lines.
#[derive(Debug)]
pub struct Ready {
    /// The key's metadata.
    pub meta: BlobMeta,
    /// `etag`, `last-modified`, `cache-control` lines, then `content-type`
    /// and `accept-ranges`: each `name: value\r\n`.
    lines: Bytes,
    /// Length of the validator lines (what a 304 repeats).
    validators: usize,
    /// The whole blob was read and its CRC verified once since it entered
    /// the set (later reads of a mapped store skip the check).
    pub verified: std::sync::atomic::AtomicBool,
}

impl Ready {
    /// Renders `meta`'s header lines once.
    pub fn new(meta: BlobMeta, cache_control: &str) -> Ready {
        let modified = std::time::UNIX_EPOCH + std::time::Duration::from_millis(meta.created_ms);
        let validators = format!(
            "etag: {}\r\nlast-modified: {}\r\ncache-control: {}\r\n",
            meta.etag,
            httpdate::fmt_http_date(modified),
            cache_control
        );
        let n = validators.len();
        let mut all = validators;
        all.push_str("content-type: ");
        all.push_str(&meta.content_type);
        all.push_str("\r\naccept-ranges: bytes\r\n");
        Ready {
            meta,
            lines: Bytes::from(all),
            validators: n,
            verified: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Header lines of a 200 or 206.
    pub fn lines(&self) -> Bytes {
        self.lines.clone()
    }

    /// Header lines of a 304: the validators only.
    pub fn validator_lines(&self) -> Bytes {
        self.lines.slice(..self.validators)
    }
}

struct Slot {
    key: Box<str>,
    ready: Arc<Ready>,
    /// When it was filled, clock seconds (for the TTL).
    at: u32,
    /// Read since the clock hand last passed.
    seen: bool,
}

#[derive(Default)]
struct Shard {
    map: HashMap<u64, Slot>,
    /// Clock order of the hashes in `map`.
    ring: VecDeque<u64>,
}

/// Recently read keys' metadata, shared by the nodes of one process.
pub struct ReadySet {
    shards: Box<[Mutex<Shard>]>,
    gens: Box<[AtomicU64]>,
    per_shard: usize,
    /// Seconds an entry is trusted, on this clock (the local cache's, so
    /// tests move both together).
    ttl: Option<(u32, Arc<dyn cache::Clock>)>,
    /// Hit and miss counts.
    pub counters: TierCounters,
}

/// A stripe generation read before a lookup; a fill offers it back.
#[derive(Debug, Clone, Copy)]
pub struct Stamp(u64);

fn hash(key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
}

impl ReadySet {
    /// A set of at most `entries` keys; `ttl`: how many seconds of
    /// `clock` an entry is trusted (`None` when every writer invalidates
    /// this set).
    pub fn new(entries: usize, ttl: Option<(u32, Arc<dyn cache::Clock>)>) -> ReadySet {
        ReadySet {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            gens: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            per_shard: entries.div_ceil(SHARDS).max(1),
            ttl,
            counters: TierCounters::default(),
        }
    }

    fn shard(&self, h: u64) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[(h as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn gen(&self, h: u64) -> &AtomicU64 {
        &self.gens[((h >> 32) as usize) % STRIPES]
    }

    fn now(&self) -> u32 {
        self.ttl.as_ref().map_or(0, |(_, c)| c.now())
    }

    /// The entry of `key`, if held and fresh.
    pub fn get(&self, key: &str) -> Option<Arc<Ready>> {
        let now = self.now();
        let h = hash(key);
        let mut s = self.shard(h);
        let found = match s.map.get_mut(&h) {
            Some(slot) if &*slot.key == key => {
                if self
                    .ttl
                    .as_ref()
                    .is_some_and(|(t, _)| now >= slot.at.saturating_add(*t))
                {
                    None
                } else {
                    slot.seen = true;
                    Some(slot.ready.clone())
                }
            }
            _ => None,
        };
        drop(s);
        let c = if found.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        c.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The generation to offer when filling `key` after a lookup.
    pub fn stamp(&self, key: &str) -> Stamp {
        Stamp(self.gen(hash(key)).load(Ordering::Acquire))
    }

    /// Keeps `ready` for `key`, unless the key changed since `stamp` was
    /// taken (the entry could be older than the change).
    pub fn put(&self, key: &str, ready: Arc<Ready>, stamp: Stamp) {
        let now = self.now();
        let h = hash(key);
        let mut s = self.shard(h);
        // Checked under the shard lock: `forget` bumps the generation
        // before it takes the lock, so a change either shows here or
        // removes this entry after it was put.
        if self.gen(h).load(Ordering::Acquire) != stamp.0 {
            return;
        }
        let slot = Slot {
            key: key.into(),
            ready,
            at: now,
            seen: false,
        };
        if s.map.insert(h, slot).is_none() {
            s.ring.push_back(h);
        }
        // CLOCK: the hand passes over entries read since it last came by
        // (clearing their mark) and takes the first one that was not; a
        // new entry, unread yet, goes if every older one was read.
        while s.map.len() > self.per_shard {
            let Some(victim) = s.ring.pop_front() else {
                break;
            };
            let second_chance = match s.map.get_mut(&victim) {
                Some(v) if v.seen => {
                    v.seen = false;
                    true
                }
                Some(_) => false,
                None => continue,
            };
            if second_chance {
                s.ring.push_back(victim);
            } else {
                s.map.remove(&victim);
            }
        }
    }

    /// Drops `key` (it was written or deleted).
    pub fn forget(&self, key: &str) {
        let h = hash(key);
        self.gen(h).fetch_add(1, Ordering::AcqRel);
        let mut s = self.shard(h);
        if s.map.get(&h).is_some_and(|slot| &*slot.key == key) {
            s.map.remove(&h);
            s.ring.retain(|&x| x != h);
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).map.len())
            .sum()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: u64) -> BlobMeta {
        BlobMeta {
            id,
            size: 10,
            etag: format!("\"{id:016x}\""),
            content_type: "image/jpeg".into(),
            created_ms: 1_700_000_000_000,
            replicas: vec!["s1".into()],
            tags: vec![],
            version: 1,
            page: None,
            ..Default::default()
        }
    }

    #[test]
    fn lines_are_rendered_once_and_304_keeps_the_validators() {
        let h = Ready::new(meta(7), "public, max-age=60");
        let all = String::from_utf8(h.lines().to_vec()).unwrap();
        assert!(all.starts_with("etag: \"0000000000000007\"\r\nlast-modified: Tue, 14 Nov 2023"));
        assert!(all.ends_with("content-type: image/jpeg\r\naccept-ranges: bytes\r\n"));
        let v = String::from_utf8(h.validator_lines().to_vec()).unwrap();
        assert!(v.ends_with("cache-control: public, max-age=60\r\n"));
        assert!(!v.contains("content-type"));
    }

    #[test]
    fn a_fill_that_started_before_a_change_is_not_kept() {
        let set = ReadySet::new(100, None);
        let before = set.stamp("a");
        set.forget("a");
        set.put("a", Arc::new(Ready::new(meta(1), "x")), before);
        assert!(set.get("a").is_none());
        let now = set.stamp("a");
        set.put("a", Arc::new(Ready::new(meta(2), "x")), now);
        assert_eq!(set.get("a").unwrap().meta.id, 2);
        set.forget("a");
        assert!(set.get("a").is_none());
    }

    #[test]
    fn the_clock_keeps_entries_read_since_it_last_passed() {
        // One shard's worth: 16 shards of 2 entries.
        let set = ReadySet::new(32, None);
        let keys: Vec<String> = (0..2000).map(|i| format!("k{i}")).collect();
        set.put(
            "keep",
            Arc::new(Ready::new(meta(0), "x")),
            set.stamp("keep"),
        );
        for (i, k) in keys.iter().enumerate() {
            assert!(set.get("keep").is_some(), "evicted after {i} fills");
            set.put(k, Arc::new(Ready::new(meta(i as u64), "x")), set.stamp(k));
        }
        assert!(set.len() <= 32);
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let clock = Arc::new(cache::ManualClock::new(1_000));
        let set = ReadySet::new(10, Some((2, clock.clone())));
        set.put("a", Arc::new(Ready::new(meta(1), "x")), set.stamp("a"));
        clock.advance(1);
        assert!(set.get("a").is_some());
        clock.advance(1);
        assert!(set.get("a").is_none(), "gone after the TTL");
    }
}
