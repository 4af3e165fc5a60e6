//! The engine side of memcached's meta commands: each runs under one shard
//! lock, so that "exactly one client wins the right to recache" holds even
//! when many ask at once.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::clock::Expiry;
use crate::engine::{Cache, Item};
use crate::shard::Entry;

/// Options of a meta get.
#[derive(Debug, Clone, Default)]
pub struct MetaGet {
    /// `N`: on a miss, create an empty item with this TTL; the caller wins.
    pub vivify: Option<i64>,
    /// `R`: win the recache right when the TTL left is below this.
    pub recache_below: Option<u32>,
    /// `T`: set this TTL.
    pub ttl: Option<i64>,
    /// Count the read (not `u`).
    pub bump: bool,
}

/// What a meta get found.
#[derive(Debug, Clone)]
pub struct MetaGot {
    /// The item (after any TTL update).
    pub item: Item,
    /// `W`: this client should recache it.
    pub won: bool,
    /// `Z`: a winner was already chosen before this request.
    pub win_already_sent: bool,
    /// `X`: the item is stale.
    pub stale: bool,
    /// `h`: it had been read before this request.
    pub hit_before: bool,
    /// `l`: seconds since its last access before this request.
    pub idle_secs: u32,
    /// `t`: seconds of life left, -1 for never.
    pub ttl_left: i64,
}

/// Outcome of a meta delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaDeleted {
    /// Deleted (or invalidated).
    Done,
    /// No such item.
    NotFound,
    /// CAS mismatch.
    Exists,
}

/// Outcome of meta arithmetic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaArith {
    /// New value, the item after the change, and whether it was created.
    Value(u64, Item, i64),
    /// No such item (and no vivify).
    NotFound,
    /// CAS mismatch.
    Exists,
    /// The value is not a decimal u64.
    NonNumeric,
}

fn ttl_left(e: &Entry, now: u32) -> i64 {
    if e.exptime == 0 {
        -1
    } else {
        i64::from(e.exptime.saturating_sub(now))
    }
}

impl Cache {
    /// `mg`: read with the stampede-control flags.
    pub fn meta_get(&self, key: &[u8], o: &MetaGet) -> Option<MetaGot> {
        let now = self.now();
        let mut s = self.shard(key);
        let mut created = false;
        if self.live(&mut s, key, now).is_err() {
            let ttl = o.vivify?;
            let exptime = Expiry::from_raw(ttl, now).as_exptime(now);
            let e = Entry::new(
                Bytes::copy_from_slice(key),
                Bytes::new(),
                0,
                exptime,
                now,
                self.next_cas(),
            );
            let mut removed = Vec::new();
            s.insert(e, now, &mut removed);
            self.stats.total_items.fetch_add(1, Ordering::Relaxed);
            created = true;
        }
        let e = self.live(&mut s, key, now).ok()?;
        let hit_before = e.fetched;
        let idle_secs = now.saturating_sub(e.last_access);
        if let Some(t) = o.ttl {
            e.exptime = Expiry::from_raw(t, now).as_exptime(now);
        }
        let already = e.win_sent;
        let mut won = created;
        if let Some(r) = o.recache_below {
            if !already && !created && e.exptime != 0 && e.exptime < now.saturating_add(r) {
                won = true;
            }
        }
        if e.stale && !already {
            won = true;
        }
        if won {
            e.win_sent = true;
        }
        let got = MetaGot {
            item: Item::of(e),
            won,
            win_already_sent: already,
            stale: e.stale,
            hit_before,
            idle_secs,
            ttl_left: ttl_left(e, now),
        };
        if o.bump {
            s.touch_access(key, now);
        }
        Some(got)
    }

    /// `md`: delete, or with `invalidate` mark stale (and set `ttl`); with
    /// `clear_value` keep the item but drop its value.
    pub fn meta_delete(
        &self,
        key: &[u8],
        cas: Option<u64>,
        invalidate: bool,
        ttl: Option<i64>,
        clear_value: bool,
    ) -> MetaDeleted {
        let now = self.now();
        let mut s = self.shard(key);
        let Ok(e) = self.live(&mut s, key, now) else {
            return MetaDeleted::NotFound;
        };
        if cas.is_some_and(|c| c != e.cas) {
            return MetaDeleted::Exists;
        }
        if invalidate || clear_value {
            if invalidate {
                e.stale = true;
                e.win_sent = false;
                if let Some(t) = ttl {
                    e.exptime = Expiry::from_raw(t, now).as_exptime(now);
                }
            }
            if clear_value {
                e.value = Bytes::new();
            }
            e.cas = self.next_cas();
            return MetaDeleted::Done;
        }
        s.remove(key);
        MetaDeleted::Done
    }

    /// Marks a live item stale (ms with `I` and an older CAS).
    pub fn mark_stale(&self, key: &[u8]) {
        let now = self.now();
        let mut s = self.shard(key);
        if let Ok(e) = self.live(&mut s, key, now) {
            e.stale = true;
            e.win_sent = false;
        }
    }

    /// `ma`: incr/decr with optional vivify (`(ttl, initial)`), CAS check
    /// and TTL update.
    pub fn meta_arith(
        &self,
        key: &[u8],
        incr: bool,
        delta: u64,
        vivify: Option<(i64, u64)>,
        cas: Option<u64>,
        ttl: Option<i64>,
    ) -> MetaArith {
        let now = self.now();
        let mut s = self.shard(key);
        if self.live(&mut s, key, now).is_err() {
            let Some((vttl, initial)) = vivify else {
                return MetaArith::NotFound;
            };
            let exptime = Expiry::from_raw(vttl, now).as_exptime(now);
            let e = Entry::new(
                Bytes::copy_from_slice(key),
                Bytes::from(initial.to_string()),
                0,
                exptime,
                now,
                self.next_cas(),
            );
            let mut removed = Vec::new();
            s.insert(e, now, &mut removed);
            self.stats.total_items.fetch_add(1, Ordering::Relaxed);
            return match self.live(&mut s, key, now) {
                Ok(e) => MetaArith::Value(initial, Item::of(e), ttl_left(e, now)),
                Err(_) => MetaArith::NotFound,
            };
        }
        let Ok(e) = self.live(&mut s, key, now) else {
            return MetaArith::NotFound;
        };
        if cas.is_some_and(|c| c != e.cas) {
            return MetaArith::Exists;
        }
        let Some(cur) = std::str::from_utf8(&e.value)
            .ok()
            .and_then(|v| v.trim_ascii().parse::<u64>().ok())
        else {
            return MetaArith::NonNumeric;
        };
        let new = if incr {
            cur.wrapping_add(delta)
        } else {
            cur.saturating_sub(delta)
        };
        e.value = Bytes::from(new.to_string());
        e.cas = self.next_cas();
        e.updated = now;
        if let Some(t) = ttl {
            e.exptime = Expiry::from_raw(t, now).as_exptime(now);
        }
        let out = MetaArith::Value(new, Item::of(e), ttl_left(e, now));
        s.touch_access(key, now);
        out
    }
}
