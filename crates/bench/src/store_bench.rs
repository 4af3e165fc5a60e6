//! `store`: random small-blob GETs through strata vs nginx serving the same
//! blobs as one file each, plus the needle map's RAM per blob and the
//! store's restart time at 1M blobs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;

use crate::dist::median;
use crate::peers::{self, Proc};
use crate::proc_stat::{cpu_ticks, TICKS_PER_SEC};
use crate::wrk::{self, WrkResult};

/// Options of the `store` scenario.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Blobs to load (sizes 4-64 KiB, seeded).
    #[arg(long, default_value_t = 100_000)]
    blobs: u64,
    /// Alternating rounds (strata, nginx, strata, nginx, ...).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Server threads: strata worker threads = nginx worker processes.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// wrk connections.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Blobs for the needle-map and restart measurement (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    map_blobs: u64,
    /// Working directory (data, configs, results).
    #[arg(long, default_value = "target/bench/store")]
    out: PathBuf,
}

pub(crate) fn size_of(i: u64) -> usize {
    // Seeded, uniform over 4..=64 KiB.
    let mut x = i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x9E37_79B9;
    x ^= x >> 29;
    4096 + (x % (60 * 1024 + 1)) as usize
}

pub(crate) fn key_of(i: u64) -> String {
    format!("img/{:02x}/{i}", i % 256)
}

pub(crate) fn strata_bin() -> anyhow::Result<PathBuf> {
    // STRATA_BIN names a binary built elsewhere (an A/B of two builds).
    if let Some(bin) = std::env::var_os("STRATA_BIN") {
        return Ok(PathBuf::from(bin));
    }
    // Built together with the bench, so that dependencies get the same
    // features as `cargo run -p bench` gives them: building strata alone
    // would rebuild them, and the next bench run would rebuild them back.
    let ok = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "-p",
            "strata",
            "-p",
            "bench",
            "--quiet",
        ])
        .status()
        .context("building strata")?
        .success();
    if !ok {
        bail!("cargo build --release -p strata failed");
    }
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("bench has no parent dir")?
        .join("strata");
    if !bin.exists() {
        bail!("{} not found", bin.display());
    }
    Ok(bin)
}

fn start_strata(
    bin: &Path,
    data: &Path,
    addr: std::net::SocketAddr,
    threads: usize,
    config: Option<&Path>,
) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(bin);
    // `serve` as a user starts it: the gateway in front of its in-process
    // nodes (direct reads, `sendfile`). `--nodes 1` would measure the
    // node's own HTTP API instead, which copies bodies through hyper.
    cmd.arg("serve")
        .arg("--data")
        .arg(data)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--threads")
        .arg(threads.to_string());
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting strata")?;
    Ok(Proc(child))
}

/// One measured run: wrk's figures and the server's CPU use.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Run {
    wrk: WrkResult,
    cpu_pct: f64,
}

fn measure(pid: u32, url: &str, script: &Path, a: &Args, secs: u64) -> anyhow::Result<Run> {
    let before = cpu_ticks(pid);
    let t = Instant::now();
    let wrk = wrk::run(url, script, 1, a.conns, secs)?;
    let took = t.elapsed().as_secs_f64();
    let cpu_pct = (cpu_ticks(pid) - before) as f64 / TICKS_PER_SEC / took * 100.0;
    Ok(Run { wrk, cpu_pct })
}

/// Runs the scenario.
pub fn run(a: Args) -> anyhow::Result<()> {
    peers::ensure_installed(&[("/usr/sbin/nginx", "nginx"), ("/usr/bin/wrk", "wrk")])?;
    let bin = strata_bin()?;
    let _ = std::fs::remove_dir_all(&a.out);
    std::fs::create_dir_all(&a.out)?;
    let out = std::fs::canonicalize(&a.out)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    // strata
    let data = out.join("strata-data");
    let strata_addr = testkit::free_addr()?;
    let strata = start_strata(&bin, &data, strata_addr, a.threads, None)?;
    let client = testkit::Client::new(format!("http://{strata_addr}"));
    rt.block_on(client.wait_ready("/healthz", Duration::from_secs(20)))?;

    // The same blobs as files for nginx, and as PUTs into strata.
    let root = out.join("nginx-root");
    eprintln!(
        "loading {} blobs (4-64 KiB) into strata and {} ...",
        a.blobs,
        root.display()
    );
    let t = Instant::now();
    let total_bytes = rt.block_on(load(&client, &root, a.blobs))?;
    eprintln!(
        "loaded {:.1} MiB in {:.1}s",
        total_bytes as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    drop(strata);

    let nginx_port = testkit::free_addr()?.port();
    let nginx = Proc(peers::start_nginx_static(
        &out.join("nginx"),
        &root,
        nginx_port,
        a.threads,
        false,
    )?);
    let nginx_client = testkit::Client::new(format!("http://127.0.0.1:{nginx_port}"));
    rt.block_on(nginx_client.wait_ready(&format!("/{}", key_of(0)), Duration::from_secs(20)))?;

    let s_script = out.join("strata.lua");
    let n_script = out.join("nginx.lua");
    wrk::random_key_script(&s_script, "/v1/blobs/img/", a.blobs, 42)?;
    wrk::random_key_script(&n_script, "/img/", a.blobs, 42)?;
    let s_url = format!("http://{strata_addr}");
    let n_url = format!("http://127.0.0.1:{nginx_port}");
    // strata is measured twice: as `serve` runs by default (cache tier in
    // the read path) and with `[cache] enabled = false` (the store path
    // alone). Uniform random keys over 3+ GiB have no locality for a
    // 64 MiB cache, so the first shows what the cache costs when it cannot
    // help.
    let no_cache = out.join("no-cache.toml");
    std::fs::write(&no_cache, "[cache]\nenabled = false\n")?;
    measure(nginx.0.id(), &n_url, &n_script, &a, 3)?;

    let mut s_runs = Vec::new();
    let mut o_runs = Vec::new();
    let mut n_runs = Vec::new();
    for r in 0..a.rounds {
        let mut pair = Vec::new();
        for cfg in [None, Some(no_cache.as_path())] {
            let srv = start_strata(&bin, &data, strata_addr, a.threads, cfg)?;
            rt.block_on(client.wait_ready("/healthz", Duration::from_secs(20)))?;
            // Warm-up (page tables of the mapped volumes, connections).
            measure(srv.0.id(), &s_url, &s_script, &a, 3)?;
            pair.push(measure(srv.0.id(), &s_url, &s_script, &a, a.secs)?);
        }
        let n = measure(nginx.0.id(), &n_url, &n_script, &a, a.secs)?;
        let (s, o) = (pair[0], pair[1]);
        eprintln!(
            "round {}: strata {:.0} req/s (p50 {:.2} ms, p99 {:.2} ms, cpu {:.0}%) | strata no cache {:.0} req/s (p50 {:.2} ms, p99 {:.2} ms, cpu {:.0}%) | nginx {:.0} req/s (p50 {:.2} ms, p99 {:.2} ms, cpu {:.0}%)",
            r + 1,
            s.wrk.rps, s.wrk.p50_ms, s.wrk.p99_ms, s.cpu_pct,
            o.wrk.rps, o.wrk.p50_ms, o.wrk.p99_ms, o.cpu_pct,
            n.wrk.rps, n.wrk.p50_ms, n.wrk.p99_ms, n.cpu_pct
        );
        if s.wrk.errors > 0 || o.wrk.errors > 0 || n.wrk.errors > 0 {
            bail!(
                "errors during the run: strata {}, strata no cache {}, nginx {}",
                s.wrk.errors,
                o.wrk.errors,
                n.wrk.errors
            );
        }
        s_runs.push(s);
        o_runs.push(o);
        n_runs.push(n);
    }
    drop(nginx);

    let med = |runs: &[Run], f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let ratios: Vec<f64> = s_runs
        .iter()
        .zip(&n_runs)
        .map(|(s, n)| s.wrk.rps / n.wrk.rps)
        .collect();
    let ratio = median(ratios.clone());
    let o_ratios: Vec<f64> = o_runs
        .iter()
        .zip(&n_runs)
        .map(|(s, n)| s.wrk.rps / n.wrk.rps)
        .collect();
    let o_ratio = median(o_ratios.clone());

    let map = if a.map_blobs > 0 {
        Some(rt.block_on(needle_map(&out, a.map_blobs))?)
    } else {
        None
    };

    println!();
    println!("store: random GETs of {} blobs (4-64 KiB), wrk -t1 -c{} -d{}s, {} server thread(s), {} cores", a.blobs, a.conns, a.secs, a.threads, std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!("| server | req/s (median) | p50 ms | p99 ms | server CPU % |");
    println!("|---|---|---|---|---|");
    for (name, runs) in [
        ("strata", &s_runs),
        ("strata, cache off", &o_runs),
        ("nginx", &n_runs),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.0} |",
            med(runs, |r| r.wrk.rps),
            med(runs, |r| r.wrk.p50_ms),
            med(runs, |r| r.wrk.p99_ms),
            med(runs, |r| r.cpu_pct)
        );
    }
    println!(
        "ratio strata/nginx req/s: {ratio:.2}x (per round: {})",
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "ratio strata (cache off)/nginx req/s: {o_ratio:.2}x (per round: {})",
        o_ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(m) = &map {
        println!(
            "needle map at {} blobs: {:.2} bytes/blob; restart (checkpointed) {:.0} ms; restart (full rescan, no index files) {:.0} ms",
            m.blobs, m.bytes_per_blob, m.restart_ms, m.rescan_ms
        );
    }
    let json = serde_json::json!({
        "scenario": "store",
        "blobs": a.blobs,
        "conns": a.conns,
        "secs": a.secs,
        "threads": a.threads,
        "strata": s_runs,
        "strata_no_cache": o_runs,
        "nginx": n_runs,
        "ratio_no_cache_median": o_ratio,
        "ratios_no_cache": o_ratios,
        "ratio_median": ratio,
        "ratios": ratios,
        "needle_map": map,
    });
    let path = out.join("store.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    crate::plots_of::after_run(&out, "store", &json);
    println!("results: {}", path.display());
    Ok(())
}

/// PUTs blobs `0..n` into strata and writes the same bytes as one file
/// each under `root` (for nginx); the bytes written.
pub(crate) async fn load(client: &testkit::Client, root: &Path, n: u64) -> anyhow::Result<u64> {
    for d in 0..256 {
        std::fs::create_dir_all(root.join(format!("img/{d:02x}")))?;
    }
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, root, next) = (client.clone(), root.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut bytes = 0u64;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(bytes);
                }
                let body = Bytes::from(testkit::blob(i, size_of(i)));
                let key = key_of(i);
                std::fs::write(root.join(&key), &body)?;
                bytes += body.len() as u64;
                let r = client.put(&format!("/v1/blobs/{key}"), body).await?;
                if r.status != testkit::StatusCode::CREATED {
                    bail!("PUT {key}: {}", r.status);
                }
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total)
}

#[derive(Debug, serde::Serialize)]
struct MapFigures {
    blobs: u64,
    bytes_per_blob: f64,
    restart_ms: f64,
    rescan_ms: f64,
}

/// Fills an in-process store with `n` tiny blobs, then measures the needle
/// map's heap bytes per blob and how long a restart takes.
async fn needle_map(out: &Path, n: u64) -> anyhow::Result<MapFigures> {
    let dir = out.join("map-store");
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("writing {n} blobs into an in-process store for the needle-map figures ...");
    let (s, _) = store::Store::open(&dir, store::StoreOptions::default())?;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let body = Bytes::from(vec![7u8; 64]);
    let mut tasks = Vec::new();
    for _ in 0..512 {
        let (s, next, body) = (s.clone(), next.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if id > n {
                    return anyhow::Ok(());
                }
                s.put(id, Bytes::from(format!("bench/key/{id:012}")), body.clone())
                    .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    s.checkpoint().await?;
    // Restart measures the map as built by recovery, which is what a
    // long-running store holds after its first restart.
    drop(s);
    let t = Instant::now();
    let (s, report) = store::Store::open(&dir, store::StoreOptions::default())?;
    let restart_ms = t.elapsed().as_secs_f64() * 1000.0;
    if s.len() as u64 != n || report.scanned != 0 {
        bail!(
            "restart found {} blobs ({} rescanned), expected {n}",
            s.len(),
            report.scanned
        );
    }
    let bytes_per_blob = s.needle_map_bytes() as f64 / s.len() as f64;
    drop(s);
    std::fs::remove_file(store::idx_path(&dir, 1))?;
    let t = Instant::now();
    let (s, _) = store::Store::open(&dir, store::StoreOptions::default())?;
    let rescan_ms = t.elapsed().as_secs_f64() * 1000.0;
    if s.len() as u64 != n {
        bail!("rescan found {} blobs, expected {n}", s.len());
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(MapFigures {
        blobs: n,
        bytes_per_blob,
        restart_ms,
        rescan_ms,
    })
}
