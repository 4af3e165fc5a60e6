//! Cache engine semantics: memcached storage rules, TTLs, flush, arithmetic,
//! the memory bound, and S3-FIFO's scan resistance.

use std::sync::Arc;

use bytes::Bytes;
use cache::{Arith, Cache, CacheConfig, ManualClock, Policy, StoreMode as M, StoreResult as R};

const T0: u32 = 1_800_000_000;

fn cache(max: usize, policy: Policy) -> (Arc<ManualClock>, Cache) {
    let clock = Arc::new(ManualClock::new(T0));
    let c = Cache::new(
        CacheConfig {
            max_bytes: max,
            item_max: 1 << 20,
            policy,
        },
        clock.clone(),
    );
    (clock, c)
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[test]
fn storage_modes() {
    let (_, c) = cache(8 << 20, Policy::S3Fifo);
    assert!(matches!(c.store(M::Set, b"k", b("v1"), 5, 0), R::Stored(_)));
    let it = c.get(b"k").expect("hit");
    assert_eq!((it.value.as_ref(), it.flags), (&b"v1"[..], 5));
    assert_eq!(c.store(M::Add, b"k", b("x"), 0, 0), R::NotStored);
    assert!(matches!(
        c.store(M::Add, b"new", b("x"), 0, 0),
        R::Stored(_)
    ));
    assert_eq!(c.store(M::Replace, b"nope", b("x"), 0, 0), R::NotStored);
    assert!(matches!(
        c.store(M::Replace, b"k", b("v2"), 7, 0),
        R::Stored(_)
    ));
    assert!(matches!(
        c.store(M::Append, b"k", b("-a"), 99, 0),
        R::Stored(_)
    ));
    assert!(matches!(
        c.store(M::Prepend, b"k", b("p-"), 99, 0),
        R::Stored(_)
    ));
    let it = c.get(b"k").expect("hit");
    assert_eq!(
        (it.value.as_ref(), it.flags),
        (&b"p-v2-a"[..], 7),
        "append/prepend keep flags"
    );
    assert_eq!(c.store(M::Append, b"nope", b("x"), 0, 0), R::NotStored);
    let cas = it.cas;
    assert_eq!(c.store(M::Cas(cas + 100), b"k", b("c"), 0, 0), R::Exists);
    assert!(matches!(
        c.store(M::Cas(cas), b"k", b("c"), 0, 0),
        R::Stored(_)
    ));
    assert_eq!(
        c.store(M::Cas(cas), b"k", b("c2"), 0, 0),
        R::Exists,
        "cas changes on every store"
    );
    assert_eq!(c.store(M::Cas(1), b"missing", b("c"), 0, 0), R::NotFound);
    assert!(c.delete(b"k"));
    assert!(!c.delete(b"k"));
    assert!(c.get(b"k").is_none());
}

#[test]
fn oversized_set_removes_the_old_value() {
    let (_, c) = cache(64 << 20, Policy::S3Fifo);
    c.store(M::Set, b"k", b("old"), 0, 0);
    let big = Bytes::from(vec![0u8; (1 << 20) + 1]);
    assert_eq!(c.store(M::Set, b"k", big, 0, 0), R::TooLarge);
    assert!(c.get(b"k").is_none());
}

#[test]
fn ttl_semantics() {
    let (clock, c) = cache(8 << 20, Policy::S3Fifo);
    c.store(M::Set, b"rel", b("v"), 0, 10);
    c.store(M::Set, b"abs", b("v"), 0, i64::from(T0) + 5);
    c.store(M::Set, b"neg", b("v"), 0, -1);
    c.store(M::Set, b"never", b("v"), 0, 0);
    assert!(c.get(b"neg").is_none(), "negative exptime expires at once");
    assert!(c.get(b"rel").is_some());
    clock.advance(5);
    assert!(c.get(b"abs").is_none(), "absolute time reached");
    assert!(c.get(b"rel").is_some());
    assert!(c.touch(b"rel", 100));
    clock.advance(10);
    assert!(c.get(b"rel").is_some(), "touch extended it");
    assert!(
        c.get_and_touch(b"rel", -1).is_some(),
        "gat returns the item, then it is expired"
    );
    assert!(c.get(b"rel").is_none());
    clock.advance(1_000_000);
    assert!(c.get(b"never").is_some());
    assert_eq!(
        c.stats
            .get_expired
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}

#[test]
fn flush_all_now_and_later() {
    let (clock, c) = cache(8 << 20, Policy::S3Fifo);
    c.store(M::Set, b"a", b("1"), 0, 0);
    c.flush_all(0);
    assert!(c.get(b"a").is_none());
    c.store(M::Set, b"b", b("2"), 0, 0);
    assert!(c.get(b"b").is_some(), "stored after the flush");
    c.flush_all(10);
    assert!(c.get(b"b").is_some(), "delayed flush not yet due");
    clock.advance(10);
    assert!(c.get(b"b").is_none());
    clock.advance(1);
    c.store(M::Set, b"d", b("4"), 0, 0);
    assert!(c.get(b"d").is_some(), "stored after the flush moment");
}

#[test]
fn incr_decr() {
    let (_, c) = cache(8 << 20, Policy::S3Fifo);
    c.store(M::Set, b"n", b("10"), 0, 0);
    assert!(matches!(c.arith(b"n", 5, true), Arith::Value(15, _)));
    assert!(
        matches!(c.arith(b"n", 100, false), Arith::Value(0, _)),
        "decr stops at 0"
    );
    c.store(M::Set, b"n", b("18446744073709551615"), 0, 0);
    assert!(
        matches!(c.arith(b"n", 2, true), Arith::Value(1, _)),
        "incr wraps"
    );
    c.store(M::Set, b"s", b("abc"), 0, 0);
    assert_eq!(c.arith(b"s", 1, true), Arith::NonNumeric);
    assert_eq!(c.arith(b"none", 1, true), Arith::NotFound);
}

#[test]
fn never_grows_past_the_limit() {
    for policy in [Policy::S3Fifo, Policy::Lru] {
        let max = 4 << 20;
        let (_, c) = cache(max, policy);
        for i in 0..50_000u32 {
            let v = Bytes::from(vec![b'x'; (i as usize * 37) % 3000]);
            c.store(M::Set, format!("key:{i}").as_bytes(), v, 0, 0);
            if i % 997 == 0 {
                assert!(c.bytes() <= max, "{policy:?}: {} > {max}", c.bytes());
            }
        }
        assert!(c.bytes() <= max);
        assert!(c.stats.evictions.load(std::sync::atomic::Ordering::Relaxed) > 0);
        // The newest item is there.
        assert!(c.get(b"key:49999").is_some());
    }
}

/// Hot items read repeatedly, then a long scan of one-hit keys: S3-FIFO
/// keeps the hot set, LRU loses it.
#[test]
fn scan_resistance_beats_lru() {
    let mut ratios = Vec::new();
    for policy in [Policy::S3Fifo, Policy::Lru] {
        let (_, c) = cache(2 << 20, policy);
        let hot: Vec<String> = (0..2000).map(|i| format!("hot:{i}")).collect();
        let val = Bytes::from(vec![0u8; 300]);
        let mut hits = 0;
        let mut reads = 0;
        for round in 0..20 {
            for k in &hot {
                reads += 1;
                if c.get(k.as_bytes()).is_some() {
                    hits += 1;
                } else {
                    c.store(M::Set, k.as_bytes(), val.clone(), 0, 0);
                }
            }
            // A scan bigger than the cache between rounds.
            for i in 0..6000 {
                c.store(
                    M::Set,
                    format!("scan:{round}:{i}").as_bytes(),
                    val.clone(),
                    0,
                    0,
                );
            }
        }
        ratios.push(hits as f64 / reads as f64);
    }
    assert!(
        ratios[0] > ratios[1] + 0.3,
        "S3-FIFO {:.2} vs LRU {:.2}",
        ratios[0],
        ratios[1]
    );
}

/// One big item must not flush many hot small ones.
#[test]
fn a_big_item_does_not_flush_hot_small_ones() {
    let (_, c) = cache(4 << 20, Policy::S3Fifo);
    let small = Bytes::from(vec![1u8; 200]);
    for i in 0..5000 {
        c.store(M::Set, format!("s{i}").as_bytes(), small.clone(), 0, 0);
    }
    for _ in 0..2 {
        for i in 0..5000 {
            c.get(format!("s{i}").as_bytes());
        }
    }
    // Items of ~1 MiB (a quarter of the cache) arrive, one after another.
    for j in 0..3 {
        c.store(
            M::Set,
            format!("big{j}").as_bytes(),
            Bytes::from(vec![2u8; 1 << 20]),
            0,
            0,
        );
    }
    let kept = (0..5000)
        .filter(|i| c.peek(format!("s{i}").as_bytes()).is_some())
        .count();
    assert!(kept >= 4500, "only {kept} of 5000 hot small items survived");
}
