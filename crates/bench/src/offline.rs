//! Benchmarks that need no peer process: `hitratio` (S3-FIFO vs LRU on
//! Zipf and scan-mixed traces) and `ring` (balance and movement of the
//! consistent-hash ring).

use std::sync::Arc;

use bytes::Bytes;
use cache::{Cache, CacheConfig, Policy, StoreMode, SystemClock};
use cluster::{Ring, DEFAULT_POINTS};

use crate::dist::{Rng, Zipf};

/// Options of `hitratio`.
#[derive(clap::Args, Debug)]
pub struct HitArgs {
    /// Distinct keys in the Zipf working set.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Requests per trace.
    #[arg(long, default_value_t = 2_000_000)]
    requests: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value: usize,
}

fn trace(a: &HitArgs, scan_share: f64, seed: u64) -> Vec<String> {
    let z = Zipf::new(a.keys, 0.99);
    let mut r = Rng(seed);
    let mut scan_next = 0usize;
    let mut out = Vec::with_capacity(a.requests);
    while out.len() < a.requests {
        if r.unit() < scan_share {
            // A burst of a one-pass scan: keys never requested again.
            for _ in 0..1000 {
                out.push(format!("scan:{scan_next}"));
                scan_next += 1;
            }
        } else {
            out.push(format!("z:{}", z.sample(&mut r)));
        }
    }
    out.truncate(a.requests);
    out
}

fn hit_ratio(trace: &[String], bytes: usize, policy: Policy, value: &Bytes) -> f64 {
    let c = Cache::new(
        CacheConfig {
            max_bytes: bytes,
            item_max: 1 << 20,
            policy,
        },
        Arc::new(SystemClock),
    );
    let mut hits = 0usize;
    for k in trace {
        if c.get(k.as_bytes()).is_some() {
            hits += 1;
        } else {
            c.store(StoreMode::Set, k.as_bytes(), value.clone(), 0, 0);
        }
    }
    hits as f64 / trace.len() as f64
}

/// Runs `hitratio`.
pub fn hitratio(a: HitArgs) -> anyhow::Result<()> {
    let value = Bytes::from(vec![0u8; a.value]);
    // Working-set bytes as the cache charges them.
    let per_item = a.value + 10 + cache::shard::ITEM_OVERHEAD;
    let ws = a.keys * per_item;
    println!("hitratio: {} keys Zipf(0.99), {} requests, {} B values; cache sizes as % of the Zipf working set", a.keys, a.requests, a.value);
    println!("| trace | cache size | S3-FIFO hit % | LRU hit % | S3-FIFO - LRU (points) |");
    println!("|---|---|---|---|---|");
    let mut json = Vec::new();
    for (name, scan) in [("zipf", 0.0), ("scan-mixed", 0.0005)] {
        let t = trace(&a, scan, 0xC0FFEE);
        for pct in [1usize, 10] {
            let bytes = ws * pct / 100;
            let s3 = hit_ratio(&t, bytes, Policy::S3Fifo, &value) * 100.0;
            let lru = hit_ratio(&t, bytes, Policy::Lru, &value) * 100.0;
            println!(
                "| {name} | {pct}% | {s3:.2} | {lru:.2} | {:+.2} |",
                s3 - lru
            );
            json.push(
                serde_json::json!({"trace": name, "size_pct": pct, "s3fifo": s3, "lru": lru}),
            );
        }
    }
    std::fs::create_dir_all("target/bench")?;
    std::fs::write(
        "target/bench/hitratio.json",
        serde_json::to_string_pretty(&json)?,
    )?;
    crate::plots_of::after_run(
        std::path::Path::new("target/bench"),
        "hitratio",
        &serde_json::to_value(&json)?,
    );
    Ok(())
}

/// Runs `ring`.
pub fn ring() -> anyhow::Result<()> {
    let keys: Vec<Vec<u8>> = (0..1_000_000)
        .map(|i| format!("img:{i}").into_bytes())
        .collect();
    println!("ring: 1,000,000 keys, {DEFAULT_POINTS} points per node");
    println!("| nodes | max/avg keys per node | moved when adding 1 | ideal 1/(N+1) | moved when removing 1 | ideal 1/N |");
    println!("|---|---|---|---|---|---|");
    let mut json = Vec::new();
    for n in [3usize, 10, 100] {
        let names: Vec<String> = (0..n).map(|i| format!("cache-{i}")).collect();
        let r = Ring::new(&names, DEFAULT_POINTS);
        let mut counts = vec![0usize; n];
        let owners: Vec<usize> = keys.iter().map(|k| r.owner(k).unwrap_or(0)).collect();
        for &o in &owners {
            counts[o] += 1;
        }
        let max = *counts.iter().max().unwrap_or(&0) as f64;
        let avg = keys.len() as f64 / n as f64;
        let mut more = names.clone();
        more.push(format!("cache-{n}"));
        let r2 = Ring::new(&more, DEFAULT_POINTS);
        let added = keys
            .iter()
            .zip(&owners)
            .filter(|(k, &o)| r2.owner(k) != Some(o))
            .count() as f64
            / keys.len() as f64;
        let fewer: Vec<String> = names[1..].to_vec();
        let r3 = Ring::new(&fewer, DEFAULT_POINTS);
        let removed = keys
            .iter()
            .zip(&owners)
            .filter(|(k, &o)| r3.owner(k).map(|x| &fewer[x]) != Some(&names[o]))
            .count() as f64
            / keys.len() as f64;
        println!(
            "| {n} | {:.3} | {:.2}% | {:.2}% | {:.2}% | {:.2}% |",
            max / avg,
            added * 100.0,
            100.0 / (n + 1) as f64,
            removed * 100.0,
            100.0 / n as f64
        );
        json.push(serde_json::json!({"nodes": n, "max_over_avg": max / avg, "moved_add": added, "moved_remove": removed}));
    }
    std::fs::create_dir_all("target/bench")?;
    std::fs::write(
        "target/bench/ring.json",
        serde_json::to_string_pretty(&json)?,
    )?;
    crate::plots_of::after_run(
        std::path::Path::new("target/bench"),
        "ring",
        &serde_json::to_value(&json)?,
    );
    Ok(())
}

/// Runs `affinity`: Zipf(0.99) GETs over `keys` images through 4 request
/// nodes, each with its own local cache, picked by the real gateway pool
/// with random selection vs consistent hash with bounded load. Reports the
/// nodes' combined local hit ratio.
pub fn affinity(keys: usize, requests: usize) -> anyhow::Result<()> {
    use balancer::{Algorithm, Backend, HealthOptions, Pool};
    let z = Zipf::new(keys, 0.99);
    let value = Bytes::from(vec![0u8; 1000]);
    // Each node's cache holds 5% of the working set.
    let per_node = keys * (1000 + 16 + cache::shard::ITEM_OVERHEAD) / 20;
    println!("affinity: {keys} images (1000 B), {requests} Zipf(0.99) GETs, 4 nodes, each local cache 5% of the working set");
    println!("| selection | local hit % |");
    println!("|---|---|");
    let mut json = Vec::new();
    for (name, algo) in [
        ("random", Algorithm::Random),
        ("round-robin", Algorithm::RoundRobin),
        ("hash (bounded load)", Algorithm::Hash),
    ] {
        let backends = (0..4u16)
            .map(|i| Backend::new(std::net::SocketAddr::from(([127, 0, 0, 1], 9000 + i)), 1))
            .collect();
        let pool = Pool::new(backends, algo, HealthOptions::default())?;
        let caches: Vec<Cache> = (0..4)
            .map(|_| {
                Cache::new(
                    CacheConfig {
                        max_bytes: per_node,
                        item_max: 1 << 20,
                        policy: Policy::S3Fifo,
                    },
                    Arc::new(SystemClock),
                )
            })
            .collect();
        let mut r = Rng(0xABCDEF);
        let now = std::time::Instant::now();
        let mut hits = 0usize;
        for _ in 0..requests {
            let key = format!("/v1/blobs/img{}", z.sample(&mut r));
            let node = pool.pick(key.as_bytes(), &[], now).unwrap_or(0);
            if caches[node].get(key.as_bytes()).is_some() {
                hits += 1;
            } else {
                caches[node].store(StoreMode::Set, key.as_bytes(), value.clone(), 0, 0);
            }
        }
        let pct = hits as f64 * 100.0 / requests as f64;
        println!("| {name} | {pct:.2} |");
        json.push(serde_json::json!({"selection": name, "hit_pct": pct}));
    }
    std::fs::create_dir_all("target/bench")?;
    std::fs::write(
        "target/bench/affinity.json",
        serde_json::to_string_pretty(&json)?,
    )?;
    crate::plots_of::after_run(
        std::path::Path::new("target/bench"),
        "affinity",
        &serde_json::to_value(&json)?,
    );
    Ok(())
}
