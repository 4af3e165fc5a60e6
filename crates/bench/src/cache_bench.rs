//! `cache`: strata's cache server vs memcached 1.6 (Debian), same threads
//! and memory, 100 B and 4 KiB values, 90:10 get:set over 51,200 keys, 50
//! connections, with and without pipelining.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::dist::median;
use crate::memload::{self, Load, LoadResult};
use crate::peers::{self, Proc};
use crate::proc_stat::{cpu_ticks, TICKS_PER_SEC};

/// Options of the `cache` scenario.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Alternating rounds per configuration.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Server threads (memcached -t = strata --threads).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Connections.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Memory for each server, MiB.
    #[arg(long, default_value_t = 256)]
    memory_mb: usize,
    /// Keys in the working set.
    #[arg(long, default_value_t = 51_200)]
    keys: usize,
    /// Where results go.
    #[arg(long, default_value = "target/bench/cache")]
    out: PathBuf,
}

async fn wait_accepting(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("{addr} never accepted connections");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Run {
    load: LoadResult,
    cpu_pct: f64,
}

async fn measure(pid: u32, addr: SocketAddr, load: &Load) -> anyhow::Result<Run> {
    let before = cpu_ticks(pid);
    let t = Instant::now();
    let load = memload::run(addr, load).await?;
    let cpu_pct =
        (cpu_ticks(pid) - before) as f64 / TICKS_PER_SEC / t.elapsed().as_secs_f64() * 100.0;
    Ok(Run { load, cpu_pct })
}

/// Runs the scenario.
pub fn run(a: Args) -> anyhow::Result<()> {
    peers::ensure_installed(&[("/usr/bin/memcached", "memcached")])?;
    let bin = crate::store_bench::strata_bin()?;
    std::fs::create_dir_all(&a.out)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let m_addr = testkit::free_addr()?;
    let memcached = Proc(
        Command::new("/usr/bin/memcached")
            .args([
                "-u",
                "nobody",
                "-l",
                "127.0.0.1",
                "-p",
                &m_addr.port().to_string(),
            ])
            .args([
                "-m",
                &a.memory_mb.to_string(),
                "-t",
                &a.threads.to_string(),
                "-c",
                "4096",
            ])
            .stdout(Stdio::null())
            .spawn()
            .context("starting memcached")?,
    );
    let s_addr = testkit::free_addr()?;
    let strata = Proc(
        Command::new(&bin)
            .args([
                "cache",
                "--listen",
                &s_addr.to_string(),
                "--memory-mb",
                &a.memory_mb.to_string(),
            ])
            .args([
                "--threads",
                &a.threads.to_string(),
                "--max-connections",
                "4096",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting strata cache")?,
    );
    rt.block_on(async {
        wait_accepting(m_addr).await?;
        wait_accepting(s_addr).await
    })?;

    let mut table = Vec::new();
    let mut json = Vec::new();
    for value in [100usize, 4096] {
        for depth in [1usize, 16] {
            let load = Load {
                conns: a.conns,
                keys: a.keys,
                value,
                get_ratio: 0.9,
                depth,
                secs: a.secs,
            };
            rt.block_on(async {
                memload::preload(s_addr, &load).await?;
                memload::preload(m_addr, &load).await
            })?;
            let mut s_runs = Vec::new();
            let mut m_runs = Vec::new();
            for round in 0..a.rounds {
                let s = rt.block_on(measure(strata.0.id(), s_addr, &load))?;
                let m = rt.block_on(measure(memcached.0.id(), m_addr, &load))?;
                eprintln!(
                    "value {value} B, depth {depth}, round {}: strata {:.0} ops/s (p50 {:.0} us, p99 {:.0} us, cpu {:.0}%, hits {:.3}) | memcached {:.0} ops/s (p50 {:.0} us, p99 {:.0} us, cpu {:.0}%, hits {:.3})",
                    round + 1,
                    s.load.ops, s.load.p50_us, s.load.p99_us, s.cpu_pct, s.load.hit_ratio,
                    m.load.ops, m.load.p50_us, m.load.p99_us, m.cpu_pct, m.load.hit_ratio,
                );
                s_runs.push(s);
                m_runs.push(m);
            }
            let ratios: Vec<f64> = s_runs
                .iter()
                .zip(&m_runs)
                .map(|(s, m)| s.load.ops / m.load.ops)
                .collect();
            let med = |r: &[Run], f: fn(&Run) -> f64| median(r.iter().map(f).collect());
            table.push(format!(
                "| {value} B | {depth} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}x |",
                med(&s_runs, |r| r.load.ops),
                med(&s_runs, |r| r.load.p50_us),
                med(&s_runs, |r| r.load.p99_us),
                med(&s_runs, |r| r.cpu_pct),
                med(&m_runs, |r| r.load.ops),
                med(&m_runs, |r| r.load.p50_us),
                med(&m_runs, |r| r.load.p99_us),
                med(&m_runs, |r| r.cpu_pct),
                median(ratios.clone()),
            ));
            json.push(serde_json::json!({
                "value": value, "depth": depth, "strata": s_runs, "memcached": m_runs,
                "ratios": ratios, "ratio_median": median(ratios.clone()),
            }));
        }
    }
    println!();
    println!(
        "cache: {} keys, 90% gets, {} connections, {} server threads, {} MiB each, {} s runs, {} cores",
        a.keys,
        a.conns,
        a.threads,
        a.memory_mb,
        a.secs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| value | pipeline depth | strata ops/s | p50 us | p99 us | CPU % | memcached ops/s | p50 us | p99 us | CPU % | ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for row in &table {
        println!("{row}");
    }
    let path = a.out.join("cache.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    println!("results: {}", path.display());
    crate::plots_of::after_run(&a.out, "cache", &serde_json::to_value(&json)?);
    Ok(())
}
