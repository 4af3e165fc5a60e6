//! One lock's worth of cache: a hash map of items plus the eviction queues.
//!
//! **S3-FIFO** (Yang et al., SOSP '23): new items enter a small FIFO `S`
//! (10% of the bytes); items evicted from `S` that were read while there
//! move to the main FIFO `M`, the others leave and their key hash is kept in
//! a ghost FIFO `G`. A key found in `G` goes straight to `M`. `M` is a FIFO
//! with a 2-bit frequency: an item at its head that was read since it last
//! passed is reinserted with its frequency lowered, else evicted. A scan of
//! one-hit keys therefore only ever churns `S`, and hot items live in `M`.
//!
//! Size awareness: eviction frees whole items from the head of `S` first and
//! promotes (rather than drops) every item read while in `S`, so a large new
//! item can only push out items nobody asked for since they were stored; the
//! hot small ones move to `M` instead of being flushed.
//!
//! **LRU** is kept only as a comparison (the `hitratio` benchmark): the same
//! map with one recency queue, using lazy deletion (each access appends a
//! new queue entry; stale ones are skipped when popped).
//!
//! Queues hold `(slot, generation, stamp)`; a slot reused by another item, or
//! an item accessed again (LRU), makes older queue entries stale.

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;

/// Bytes charged per item on top of key and value (map slot, queue entry,
/// item header), so that many tiny items cannot exceed the memory limit.
pub const ITEM_OVERHEAD: usize = 64;

/// Eviction policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// S3-FIFO: scan resistant (default).
    S3Fifo,
    /// Plain LRU, for comparison.
    Lru,
}

/// One cached item.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// Opaque client flags.
    pub flags: u32,
    /// 0 = never; else the Unix second from which it is gone.
    pub exptime: u32,
    /// Unix second of the last store (for delayed flush_all).
    pub updated: u32,
    /// CAS unique.
    pub cas: u64,
    /// Read since stored? (meta protocol `h`).
    pub fetched: bool,
    /// Last access, Unix seconds (meta protocol `l`).
    pub last_access: u32,
    /// Stale (meta protocol invalidation): served with `X`, one winner.
    pub stale: bool,
    /// A client already won the right to recache it (meta `W`/`Z`).
    pub win_sent: bool,
    freq: u8,
    in_main: bool,
    gen: u32,
    stamp: u32,
}

impl Entry {
    /// A new item.
    pub fn new(key: Bytes, value: Bytes, flags: u32, exptime: u32, now: u32, cas: u64) -> Self {
        Entry {
            key,
            value,
            flags,
            exptime,
            updated: now,
            cas,
            fetched: false,
            last_access: now,
            stale: false,
            win_sent: false,
            freq: 0,
            in_main: false,
            gen: 0,
            stamp: 0,
        }
    }

    /// Bytes this item is charged.
    pub fn charge(&self) -> usize {
        self.key.len() + self.value.len() + ITEM_OVERHEAD
    }

    /// Expired at `now`?
    pub fn expired(&self, now: u32) -> bool {
        self.exptime != 0 && self.exptime <= now
    }
}

#[derive(Clone, Copy)]
struct QEntry {
    slot: u32,
    gen: u32,
    stamp: u32,
}

/// Why an item left the cache (for stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Pushed out for room while still valid.
    Evicted,
    /// Found expired while making room.
    Expired,
}

/// A shard: map + queues, bounded by `cap` bytes.
pub struct Shard {
    policy: Policy,
    cap: usize,
    small_cap: usize,
    map: HashMap<Bytes, u32, SeededXxh3>,
    slots: Vec<Option<Entry>>,
    gens: Vec<u32>,
    free: Vec<u32>,
    small: VecDeque<QEntry>,
    main: VecDeque<QEntry>,
    ghost: VecDeque<u64>,
    ghost_set: HashSet<u64>,
    small_bytes: usize,
    main_bytes: usize,
    stamp: u32,
}

/// Hashes keys for the item map with xxh3 keyed by a per-shard random
/// seed: much cheaper than SipHash on short keys, and the seed keeps keys
/// chosen by a client from piling into one bucket chain.
#[derive(Clone)]
pub struct SeededXxh3(u64);

impl SeededXxh3 {
    fn random() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5EED);
        SeededXxh3(h.finish())
    }
}

impl std::hash::BuildHasher for SeededXxh3 {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.0)
    }
}

/// The hasher built by [`SeededXxh3`].
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = self.0.rotate_left(5) ^ n as u64;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

fn key_hash(k: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(k)
}

impl Shard {
    /// An empty shard holding at most `cap` bytes.
    pub fn new(cap: usize, policy: Policy) -> Self {
        Shard {
            policy,
            cap,
            small_cap: (cap / 10).max(1),
            map: HashMap::with_hasher(SeededXxh3::random()),
            slots: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            small: VecDeque::new(),
            main: VecDeque::new(),
            ghost: VecDeque::new(),
            ghost_set: HashSet::new(),
            small_bytes: 0,
            main_bytes: 0,
            stamp: 0,
        }
    }

    /// Bytes charged now.
    pub fn bytes(&self) -> usize {
        self.small_bytes + self.main_bytes
    }

    /// Items held (expired ones included until they are found).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Capacity in bytes.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The item for `key`, without touching recency.
    pub fn peek(&self, key: &[u8]) -> Option<&Entry> {
        let slot = *self.map.get(key)?;
        self.slots[slot as usize].as_ref()
    }

    /// The item for `key`, mutable, without touching recency.
    pub fn peek_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        let slot = *self.map.get(key)?;
        self.slots[slot as usize].as_mut()
    }

    /// Records a read of `key` (frequency for S3-FIFO, recency for LRU).
    pub fn touch_access(&mut self, key: &[u8], now: u32) {
        let Some(&slot) = self.map.get(key) else {
            return;
        };
        self.stamp = self.stamp.wrapping_add(1);
        let stamp = self.stamp;
        let gen = self.gens[slot as usize];
        let Some(e) = self.slots[slot as usize].as_mut() else {
            return;
        };
        e.fetched = true;
        e.last_access = now;
        match self.policy {
            Policy::S3Fifo => e.freq = (e.freq + 1).min(3),
            Policy::Lru => {
                e.stamp = stamp;
                self.main.push_back(QEntry { slot, gen, stamp });
                self.compact_lru();
            }
        }
    }

    /// Removes `key`; returns the item.
    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let slot = self.map.remove(key)?;
        self.take_slot(slot)
    }

    fn take_slot(&mut self, slot: u32) -> Option<Entry> {
        let e = self.slots[slot as usize].take()?;
        self.gens[slot as usize] = self.gens[slot as usize].wrapping_add(1);
        self.free.push(slot);
        if e.in_main {
            self.main_bytes -= e.charge();
        } else {
            self.small_bytes -= e.charge();
        }
        Some(e)
    }

    /// Inserts (or replaces) an item, evicting as needed. Returns what had
    /// to leave for room. The caller checks that the item fits the shard.
    pub fn insert(&mut self, mut e: Entry, now: u32, removed: &mut Vec<(Entry, Removal)>) {
        let was_fetched_freq = self.remove(&e.key).map(|old| old.freq);
        let charge = e.charge();
        while self.bytes() + charge > self.cap {
            match self.evict_one(now) {
                Some(r) => removed.push(r),
                None => break,
            }
        }
        let to_main = match self.policy {
            Policy::Lru => true,
            Policy::S3Fifo => {
                let h = key_hash(&e.key);
                // A key remembered by the ghost queue, or an update of an
                // item that already earned a place in M, goes to M.
                self.ghost_set.remove(&h) || was_fetched_freq.is_some_and(|f| f > 0)
            }
        };
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.gens.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        self.stamp = self.stamp.wrapping_add(1);
        e.gen = self.gens[slot as usize];
        e.stamp = self.stamp;
        e.in_main = to_main;
        e.freq = 0;
        let q = QEntry {
            slot,
            gen: e.gen,
            stamp: e.stamp,
        };
        if to_main {
            self.main_bytes += charge;
            self.main.push_back(q);
        } else {
            self.small_bytes += charge;
            self.small.push_back(q);
        }
        self.map.insert(e.key.clone(), slot);
        self.slots[slot as usize] = Some(e);
    }

    /// Is this queue entry still the live one for its slot?
    fn live(&self, q: QEntry) -> bool {
        self.gens[q.slot as usize] == q.gen
            && self.slots[q.slot as usize]
                .as_ref()
                .is_some_and(|e| self.policy != Policy::Lru || e.stamp == q.stamp)
    }

    fn evict_one(&mut self, now: u32) -> Option<(Entry, Removal)> {
        match self.policy {
            Policy::Lru => {
                while let Some(q) = self.main.pop_front() {
                    if self.live(q) {
                        return self.drop_slot(q.slot, now);
                    }
                }
                None
            }
            Policy::S3Fifo => loop {
                let from_small = self.small_bytes >= self.small_cap || self.main_bytes == 0;
                let step = if from_small {
                    self.evict_small(now)
                } else {
                    self.evict_main(now)
                };
                let step = match step {
                    // The chosen queue held nothing live: try the other one.
                    Step::Empty if from_small => self.evict_main(now),
                    Step::Empty => self.evict_small(now),
                    other => other,
                };
                match step {
                    Step::Removed(r) => return Some(r),
                    Step::Moved => continue,
                    Step::Empty => return None,
                }
            },
        }
    }

    fn drop_slot(&mut self, slot: u32, now: u32) -> Option<(Entry, Removal)> {
        let key = self.slots[slot as usize].as_ref()?.key.clone();
        self.map.remove(&key);
        let e = self.take_slot(slot)?;
        let why = if e.expired(now) {
            Removal::Expired
        } else {
            Removal::Evicted
        };
        Some((e, why))
    }

    fn evict_small(&mut self, now: u32) -> Step {
        while let Some(q) = self.small.pop_front() {
            if !self.live(q) {
                continue;
            }
            let Some(e) = self.slots[q.slot as usize].as_mut() else {
                continue;
            };
            if e.freq > 0 && !e.expired(now) {
                // Read while in S: promote to M.
                e.freq = 0;
                e.in_main = true;
                let c = e.charge();
                self.small_bytes -= c;
                self.main_bytes += c;
                self.main.push_back(q);
                return Step::Moved;
            }
            let h = key_hash(&e.key);
            let r = self.drop_slot(q.slot, now);
            if let Some((_, Removal::Evicted)) = &r {
                self.remember_ghost(h);
            }
            return r.map_or(Step::Empty, Step::Removed);
        }
        Step::Empty
    }

    fn evict_main(&mut self, now: u32) -> Step {
        while let Some(q) = self.main.pop_front() {
            if !self.live(q) {
                continue;
            }
            let Some(e) = self.slots[q.slot as usize].as_mut() else {
                continue;
            };
            if e.freq > 0 && !e.expired(now) {
                e.freq -= 1;
                self.main.push_back(q);
                continue;
            }
            return self
                .drop_slot(q.slot, now)
                .map_or(Step::Empty, Step::Removed);
        }
        Step::Empty
    }

    fn remember_ghost(&mut self, h: u64) {
        // The ghost remembers about as many keys as M holds items.
        let limit = self.map.len().max(64);
        if self.ghost_set.insert(h) {
            self.ghost.push_back(h);
        }
        while self.ghost.len() > limit {
            if let Some(old) = self.ghost.pop_front() {
                self.ghost_set.remove(&old);
            }
        }
    }

    /// LRU's lazy queue can fill with stale entries; rebuild it when they
    /// outnumber the live ones.
    fn compact_lru(&mut self) {
        if self.main.len() > 2 * self.map.len() + 64 {
            let mut q: Vec<QEntry> = self.main.drain(..).collect();
            q.retain(|e| {
                self.gens[e.slot as usize] == e.gen
                    && self.slots[e.slot as usize]
                        .as_ref()
                        .is_some_and(|x| x.stamp == e.stamp)
            });
            self.main = q.into();
        }
    }
}

enum Step {
    Removed((Entry, Removal)),
    Moved,
    Empty,
}
