//! `ranges`: clients reading random 64 KiB ranges of one big blob through
//! `strata serve`, with spatial collapsing on and off: store reads per
//! client request and throughput. No peer: this compares strata with
//! itself.

use crate::peers::Proc;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Options of `ranges`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Blob size in MiB (a needle holds at most 127 MiB).
    #[arg(long, default_value_t = 100)]
    blob_mb: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Bytes per range.
    #[arg(long, default_value_t = 65_536)]
    range: u64,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Alternating rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Working directory.
    #[arg(long, default_value = "target/bench/ranges")]
    out: PathBuf,
}

fn store_reads(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("strata_store_reads_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct RunResult {
    rps: f64,
    store_reads_per_request: f64,
    p99_ms: f64,
}

async fn run_once(c: &testkit::Client, a: &Args, size: u64) -> anyhow::Result<RunResult> {
    let before = store_reads(&String::from_utf8_lossy(&c.get("/metrics").await?.body));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..a.clients {
        let (c, stop, count, range) = (c.clone(), stop.clone(), count.clone(), a.range);
        tasks.push(tokio::spawn(async move {
            let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let start = x % (size - range);
                let h = format!("bytes={start}-{}", start + range - 1);
                let t = Instant::now();
                let r = c
                    .send(
                        testkit::Method::GET,
                        "/v1/blobs/big",
                        &[("range", &h)],
                        vec![],
                    )
                    .await?;
                if r.status != testkit::StatusCode::PARTIAL_CONTENT || r.body.len() as u64 != range
                {
                    bail!("bad range reply {}", r.status);
                }
                lat.push(t.elapsed().as_micros() as u32);
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(lat)
        }));
    }
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for task in tasks {
        lat.extend(task.await??);
    }
    let took = t.elapsed().as_secs_f64();
    let n = count.load(Ordering::Relaxed);
    let after = store_reads(&String::from_utf8_lossy(&c.get("/metrics").await?.body));
    lat.sort_unstable();
    let p99 = lat.get(lat.len() * 99 / 100).copied().unwrap_or(0) as f64 / 1000.0;
    Ok(RunResult {
        rps: n as f64 / took,
        store_reads_per_request: (after - before) as f64 / n.max(1) as f64,
        p99_ms: p99,
    })
}

/// Runs `ranges`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let bin = crate::store_bench::strata_bin()?;
    let _ = std::fs::remove_dir_all(&a.out);
    std::fs::create_dir_all(&a.out)?;
    let out = std::fs::canonicalize(&a.out)?;
    let size = a.blob_mb << 20;
    let on = out.join("slices-on.toml");
    let off = out.join("slices-off.toml");
    let limit = format!("[limits]\nmax_body_bytes = {}\n", size + 1);
    std::fs::write(&on, &limit)?;
    std::fs::write(&off, format!("{limit}[proxy]\nslice_bytes = 0\n"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let addr = testkit::free_addr()?;
    let c = testkit::Client::new(format!("http://{addr}"));
    let start = |cfg: &PathBuf| -> anyhow::Result<Proc> {
        let child = Command::new(&bin)
            .args([
                "serve",
                "--nodes",
                "1",
                "--listen",
                &addr.to_string(),
                "--threads",
                "1",
                "--data",
            ])
            .arg(out.join("data"))
            .arg("--config")
            .arg(cfg)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting strata")?;
        Ok(Proc(child))
    };
    {
        let _s = start(&on)?;
        rt.block_on(async {
            c.wait_ready("/healthz", Duration::from_secs(20)).await?;
            let body = testkit::blob(1, size as usize);
            let r = c.put("/v1/blobs/big", body).await?;
            if r.status != testkit::StatusCode::CREATED {
                bail!("upload failed: {}", r.status);
            }
            anyhow::Ok(())
        })?;
    }
    let mut json = Vec::new();
    let mut rows = Vec::new();
    for round in 0..a.rounds {
        let mut pair = Vec::new();
        for (name, cfg) in [("slices on", &on), ("slices off", &off)] {
            let _s = start(cfg)?;
            let r = rt.block_on(async {
                c.wait_ready("/healthz", Duration::from_secs(20)).await?;
                run_once(&c, &a, size).await
            })?;
            eprintln!(
                "round {}: {name}: {:.0} req/s, {:.3} store reads per request, p99 {:.2} ms",
                round + 1,
                r.rps,
                r.store_reads_per_request,
                r.p99_ms
            );
            pair.push(r);
        }
        rows.push(format!(
            "| {} | {:.0} | {:.3} | {:.2} | {:.0} | {:.3} | {:.2} | {:.2}x |",
            round + 1,
            pair[0].rps,
            pair[0].store_reads_per_request,
            pair[0].p99_ms,
            pair[1].rps,
            pair[1].store_reads_per_request,
            pair[1].p99_ms,
            pair[0].rps / pair[1].rps
        ));
        json.push(serde_json::json!({"on": pair[0], "off": pair[1]}));
    }
    println!();
    println!(
        "ranges: {} clients, random {} B ranges of a {} MiB blob, strata serve --threads 1, {} s runs",
        a.clients, a.range, a.blob_mb, a.secs
    );
    println!("| round | slices on req/s | store reads/req | p99 ms | slices off req/s | store reads/req | p99 ms | on/off |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    std::fs::write(
        out.join("ranges.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    crate::plots_of::after_run(&out, "ranges", &serde_json::to_value(&json)?);
    Ok(())
}
