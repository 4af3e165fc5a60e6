//! A memcached load generator: N connections, a get/set mix over a fixed key
//! set, optional pipelining; reports ops/s and latency percentiles. The same
//! generator drives strata and memcached, so their figures compare directly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One load run's shape.
#[derive(Debug, Clone)]
pub struct Load {
    /// Connections.
    pub conns: usize,
    /// Keys (each 32 bytes).
    pub keys: usize,
    /// Value size in bytes.
    pub value: usize,
    /// Fraction of gets (the rest are sets).
    pub get_ratio: f64,
    /// Requests sent per round trip (1 = no pipelining).
    pub depth: usize,
    /// How long to run.
    pub secs: f64,
}

/// What a run measured.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct LoadResult {
    /// Operations per second.
    pub ops: f64,
    /// Median latency of a request, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Gets that hit.
    pub hit_ratio: f64,
}

fn key(i: usize) -> String {
    format!("key:{i:028}")
}

/// Stores every key once, so that gets hit.
pub async fn preload(addr: std::net::SocketAddr, load: &Load) -> anyhow::Result<()> {
    let s = TcpStream::connect(addr).await?;
    let mut s = BufReader::new(s);
    let val = vec![b'v'; load.value];
    for chunk in (0..load.keys).collect::<Vec<_>>().chunks(100) {
        let mut req = Vec::new();
        for &i in chunk {
            req.extend_from_slice(format!("set {} 0 0 {}\r\n", key(i), load.value).as_bytes());
            req.extend_from_slice(&val);
            req.extend_from_slice(b"\r\n");
        }
        s.get_mut().write_all(&req).await?;
        for _ in chunk {
            let mut line = String::new();
            s.read_line(&mut line).await?;
            if line != "STORED\r\n" {
                bail!("preload: {line:?}");
            }
        }
    }
    Ok(())
}

/// Runs `load` against `addr`.
pub async fn run(addr: std::net::SocketAddr, load: &Load) -> anyhow::Result<LoadResult> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..load.conns {
        let (load, stop) = (load.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            conn(addr, &load, &stop, c as u64).await
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(load.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<u32> = Vec::new();
    let (mut ops, mut gets, mut hits) = (0u64, 0u64, 0u64);
    for t in tasks {
        let r = t.await.context("load task")??;
        ops += r.ops;
        gets += r.gets;
        hits += r.hits;
        lat.extend(r.lat);
    }
    let took = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
    };
    Ok(LoadResult {
        ops: ops as f64 / took,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        hit_ratio: if gets == 0 {
            0.0
        } else {
            hits as f64 / gets as f64
        },
    })
}

struct ConnResult {
    ops: u64,
    gets: u64,
    hits: u64,
    lat: Vec<u32>,
}

async fn conn(
    addr: std::net::SocketAddr,
    load: &Load,
    stop: &AtomicBool,
    seed: u64,
) -> anyhow::Result<ConnResult> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut s = BufReader::with_capacity(64 << 10, s);
    let val = vec![b'v'; load.value];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut r = ConnResult {
        ops: 0,
        gets: 0,
        hits: 0,
        lat: Vec::with_capacity(1 << 16),
    };
    let mut req = Vec::with_capacity(load.depth * (64 + load.value));
    let mut kinds = Vec::with_capacity(load.depth);
    let mut line = Vec::with_capacity(128);
    let mut sink = vec![0u8; load.value + 2];
    while !stop.load(Ordering::Relaxed) {
        req.clear();
        kinds.clear();
        for _ in 0..load.depth {
            let k = key(rnd() as usize % load.keys);
            let is_get = (rnd() % 10_000) as f64 / 10_000.0 < load.get_ratio;
            if is_get {
                req.extend_from_slice(b"get ");
                req.extend_from_slice(k.as_bytes());
                req.extend_from_slice(b"\r\n");
            } else {
                req.extend_from_slice(format!("set {k} 0 0 {}\r\n", load.value).as_bytes());
                req.extend_from_slice(&val);
                req.extend_from_slice(b"\r\n");
            }
            kinds.push(is_get);
        }
        let t = Instant::now();
        s.get_mut().write_all(&req).await?;
        for &is_get in &kinds {
            line.clear();
            s.read_until(b'\n', &mut line).await?;
            if is_get {
                r.gets += 1;
                if line.starts_with(b"VALUE ") {
                    r.hits += 1;
                    let len: usize = std::str::from_utf8(&line)?
                        .split_whitespace()
                        .nth(3)
                        .context("VALUE line")?
                        .parse()?;
                    if sink.len() < len + 2 {
                        sink.resize(len + 2, 0);
                    }
                    s.read_exact(&mut sink[..len + 2]).await?;
                    line.clear();
                    s.read_until(b'\n', &mut line).await?;
                }
                if line != b"END\r\n" {
                    bail!("bad get reply {:?}", String::from_utf8_lossy(&line));
                }
            } else if line != b"STORED\r\n" {
                bail!("bad set reply {:?}", String::from_utf8_lossy(&line));
            }
        }
        let us = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
        for _ in 0..load.depth {
            r.lat.push(us);
        }
        r.ops += load.depth as u64;
    }
    Ok(r)
}
