//! The server's counters (memcached's names, so `stats` reads as
//! memcached's does): shared atomics, per-connection cells flushed into
//! them, and the `stats` reply.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, BytesMut};

use super::{CacheServer, VERSION};

/// Per-server counters, memcached names.
#[derive(Debug, Default)]
#[allow(missing_docs)]
pub struct ServerStats {
    pub curr_connections: AtomicU64,
    pub total_connections: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub cmd_get: AtomicU64,
    pub cmd_set: AtomicU64,
    pub cmd_flush: AtomicU64,
    pub cmd_touch: AtomicU64,
    pub get_hits: AtomicU64,
    pub get_misses: AtomicU64,
    pub delete_hits: AtomicU64,
    pub delete_misses: AtomicU64,
    pub incr_hits: AtomicU64,
    pub incr_misses: AtomicU64,
    pub decr_hits: AtomicU64,
    pub decr_misses: AtomicU64,
    pub cas_hits: AtomicU64,
    pub cas_misses: AtomicU64,
    pub cas_badval: AtomicU64,
    pub touch_hits: AtomicU64,
    pub touch_misses: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
}

/// A connection's own command counters, added to the shared ones once per
/// batch of commands: counting each command on shared atomics would bounce
/// their cache lines between cores on every request.
#[derive(Default)]
pub(super) struct LocalStats {
    pub(super) cmd_get: Cell<u64>,
    pub(super) cmd_set: Cell<u64>,
    pub(super) cmd_flush: Cell<u64>,
    pub(super) cmd_touch: Cell<u64>,
    pub(super) get_hits: Cell<u64>,
    pub(super) get_misses: Cell<u64>,
    pub(super) delete_hits: Cell<u64>,
    pub(super) delete_misses: Cell<u64>,
    pub(super) incr_hits: Cell<u64>,
    pub(super) incr_misses: Cell<u64>,
    pub(super) decr_hits: Cell<u64>,
    pub(super) decr_misses: Cell<u64>,
    pub(super) cas_hits: Cell<u64>,
    pub(super) cas_misses: Cell<u64>,
    pub(super) cas_badval: Cell<u64>,
    pub(super) touch_hits: Cell<u64>,
    pub(super) touch_misses: Cell<u64>,
}

impl LocalStats {
    pub(super) fn flush(&self, to: &ServerStats) {
        for (local, shared) in [
            (&self.cmd_get, &to.cmd_get),
            (&self.cmd_set, &to.cmd_set),
            (&self.cmd_flush, &to.cmd_flush),
            (&self.cmd_touch, &to.cmd_touch),
            (&self.get_hits, &to.get_hits),
            (&self.get_misses, &to.get_misses),
            (&self.delete_hits, &to.delete_hits),
            (&self.delete_misses, &to.delete_misses),
            (&self.incr_hits, &to.incr_hits),
            (&self.incr_misses, &to.incr_misses),
            (&self.decr_hits, &to.decr_hits),
            (&self.decr_misses, &to.decr_misses),
            (&self.cas_hits, &to.cas_hits),
            (&self.cas_misses, &to.cas_misses),
            (&self.cas_badval, &to.cas_badval),
            (&self.touch_hits, &to.touch_hits),
            (&self.touch_misses, &to.touch_misses),
        ] {
            let v = local.take();
            if v > 0 {
                shared.fetch_add(v, Ordering::Relaxed);
            }
        }
    }
}

/// A counter that can be bumped through a shared reference.
// Every command bumps a counter or two: `#[inline]` keeps them inlined
// into the connection loop now that they live in another module (another
// codegen unit, across which small functions are not inlined unasked).
pub(super) trait Bump {
    fn bump(&self);
}

impl Bump for AtomicU64 {
    #[inline]
    fn bump(&self) {
        self.fetch_add(1, Ordering::Relaxed);
    }
}

impl Bump for Cell<u64> {
    #[inline]
    fn bump(&self) {
        self.set(self.get() + 1);
    }
}

#[inline]
pub(super) fn inc<C: Bump + ?Sized>(c: &C) {
    c.bump();
}

/// `fmt::Write` into a `BytesMut`.
pub(super) struct Fmt<'a>(pub(super) &'a mut BytesMut);

impl std::fmt::Write for Fmt<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

fn cpu_times() -> (f64, f64) {
    // utime and stime of this process, from /proc (clock ticks of 1/100 s).
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return (0.0, 0.0);
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 100.0
    };
    (get(14), get(15))
}

pub(super) fn stats(s: &CacheServer, out: &mut BytesMut) {
    let c = &s.cache;
    let st = &s.stats;
    let es = &c.stats;
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (user, sys) = cpu_times();
    let mut t = String::with_capacity(2048);
    let mut stat = |name: &str, v: &dyn std::fmt::Display| {
        let _ = write!(t, "STAT {name} {v}\r\n");
    };
    stat("pid", &std::process::id());
    stat("uptime", &s.started.elapsed().as_secs());
    stat("time", &c.now());
    stat("version", &VERSION);
    stat("pointer_size", &(usize::BITS));
    stat("rusage_user", &format!("{user:.6}"));
    stat("rusage_system", &format!("{sys:.6}"));
    stat("max_connections", &s.opts.max_connections);
    stat("curr_connections", &l(&st.curr_connections));
    stat("total_connections", &l(&st.total_connections));
    stat("rejected_connections", &l(&st.rejected_connections));
    stat("cmd_get", &l(&st.cmd_get));
    stat("cmd_set", &l(&st.cmd_set));
    stat("cmd_flush", &l(&st.cmd_flush));
    stat("cmd_touch", &l(&st.cmd_touch));
    stat("get_hits", &l(&st.get_hits));
    stat("get_misses", &l(&st.get_misses));
    stat("get_expired", &l(&es.get_expired));
    stat("get_flushed", &l(&es.get_flushed));
    stat("delete_misses", &l(&st.delete_misses));
    stat("delete_hits", &l(&st.delete_hits));
    stat("incr_misses", &l(&st.incr_misses));
    stat("incr_hits", &l(&st.incr_hits));
    stat("decr_misses", &l(&st.decr_misses));
    stat("decr_hits", &l(&st.decr_hits));
    stat("cas_misses", &l(&st.cas_misses));
    stat("cas_hits", &l(&st.cas_hits));
    stat("cas_badval", &l(&st.cas_badval));
    stat("touch_hits", &l(&st.touch_hits));
    stat("touch_misses", &l(&st.touch_misses));
    stat("bytes_read", &l(&st.bytes_read));
    stat("bytes_written", &l(&st.bytes_written));
    stat("limit_maxbytes", &c.config().max_bytes);
    stat("threads", &s.opts.threads);
    stat("bytes", &c.bytes());
    stat("curr_items", &c.len());
    stat("total_items", &l(&es.total_items));
    stat("evictions", &l(&es.evictions));
    stat("reclaimed", &l(&es.reclaimed));
    out.put_slice(t.as_bytes());
    out.put_slice(b"END\r\n");
}
