//! `put`: durable writes near the disk's limit. Acknowledged PUTs of 4-64
//! KiB blobs from many concurrent clients through `strata serve` (gateway,
//! node, store: every 201 means the blob's needle was fdatasync'd), in
//! MB/s of blob bytes, next to fio writing sequentially on the same disk
//! with an fdatasync per 1 MiB — the physical limit for group-committed
//! appends. Rounds alternate strata and fio; each strata round starts on
//! an empty data directory, and every round's files are removed after it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dist::median;
use crate::peers::{self, Proc};
use crate::proc_stat::{cpu_ticks, TICKS_PER_SEC};
use crate::store_bench::{size_of, strata_bin};

/// Options of the `put` scenario.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Alternating rounds (strata, fio, strata, fio, ...).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Concurrent clients, one keep-alive connection each.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// `strata serve --threads`.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Working directory (on the disk under test).
    #[arg(long, default_value = "target/bench/put")]
    out: PathBuf,
}

/// One measured run.
#[derive(Debug, Clone, serde::Serialize)]
struct Run {
    mb_per_s: f64,
    /// Acknowledged PUTs per second (strata only).
    puts_per_s: f64,
    /// Server CPU, percent of one core (strata only).
    cpu_pct: f64,
}

/// PUTs `size_of(n)` bytes under fresh keys over one connection until
/// `stop`; returns the blob bytes acknowledged with 201.
async fn client(
    addr: std::net::SocketAddr,
    me: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    puts: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut n = me;
    let mut req = Vec::with_capacity(70 << 10);
    let mut resp = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let size = size_of(n);
        req.clear();
        req.extend_from_slice(
            format!(
                "PUT /v1/blobs/put/{me}/{n} HTTP/1.1\r\nHost: b\r\nContent-Type: image/jpeg\r\nContent-Length: {size}\r\n\r\n"
            )
            .as_bytes(),
        );
        // Bytes that do not compress or repeat between blobs.
        let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        req.extend((0..size).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        }));
        s.write_all(&req).await?;
        resp.clear();
        let status = loop {
            let mut buf = [0u8; 4096];
            let k = s.read(&mut buf).await?;
            if k == 0 {
                bail!("connection closed");
            }
            resp.extend_from_slice(&buf[..k]);
            if let Some(end) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&resp[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if resp.len() >= end + 4 + len {
                    break head.get(9..12).unwrap_or("").to_owned();
                }
            }
        };
        if status != "201" {
            bail!("PUT answered {status}");
        }
        acked.fetch_add(size as u64, Ordering::Relaxed);
        puts.fetch_add(1, Ordering::Relaxed);
        n += 1 << 20;
    }
    Ok(())
}

fn measure_strata(
    bin: &Path,
    dir: &Path,
    a: &Args,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Run> {
    let _ = std::fs::remove_dir_all(dir);
    let addr = testkit::free_addr()?;
    let child = Proc(
        Command::new(bin)
            .arg("serve")
            .arg("--data")
            .arg(dir)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--threads")
            .arg(a.threads.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting strata")?,
    );
    rt.block_on(
        testkit::Client::new(format!("http://{addr}"))
            .wait_ready("/healthz", Duration::from_secs(30)),
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, puts) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let tasks: Vec<_> = (0..a.conns as u64)
        .map(|me| rt.spawn(client(addr, me, stop.clone(), acked.clone(), puts.clone())))
        .collect();
    // One second of warm-up (connections, the first volume), then the
    // measured window.
    std::thread::sleep(Duration::from_secs(1));
    let (b0, p0, c0) = (
        acked.load(Ordering::Relaxed),
        puts.load(Ordering::Relaxed),
        cpu_ticks(child.0.id()),
    );
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(a.secs));
    let (b1, p1, c1) = (
        acked.load(Ordering::Relaxed),
        puts.load(Ordering::Relaxed),
        cpu_ticks(child.0.id()),
    );
    let took = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        rt.block_on(t)??;
    }
    drop(child);
    let _ = std::fs::remove_dir_all(dir);
    Ok(Run {
        mb_per_s: (b1 - b0) as f64 / 1e6 / took,
        puts_per_s: (p1 - p0) as f64 / took,
        cpu_pct: (c1 - c0) as f64 / TICKS_PER_SEC / took * 100.0,
    })
}

fn measure_fio(dir: &Path, secs: u64) -> anyhow::Result<Run> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    // Sequential 64 KiB writes, fdatasync after every 16 (1 MiB): a log
    // appender's group commit at its best.
    let out = Command::new("/usr/bin/fio")
        .args([
            "--name=seq",
            "--rw=write",
            "--bs=64k",
            "--size=4g",
            "--fdatasync=16",
            "--ioengine=psync",
            "--time_based",
            "--ramp_time=1",
            "--output-format=json",
        ])
        .arg(format!("--runtime={secs}"))
        .arg(format!("--directory={}", dir.display()))
        .output()
        .context("running fio")?;
    let _ = std::fs::remove_dir_all(dir);
    if !out.status.success() {
        bail!("fio failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("fio's JSON")?;
    let bw = v["jobs"][0]["write"]["bw_bytes"]
        .as_f64()
        .context("fio reported no write bandwidth")?;
    Ok(Run {
        mb_per_s: bw / 1e6,
        puts_per_s: 0.0,
        cpu_pct: 0.0,
    })
}

/// Runs the scenario.
pub fn run(a: Args) -> anyhow::Result<()> {
    peers::ensure_installed(&[("/usr/bin/fio", "fio")])?;
    let bin = strata_bin()?;
    std::fs::create_dir_all(&a.out)?;
    let out = std::fs::canonicalize(&a.out)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (mut strata, mut fio) = (Vec::new(), Vec::new());
    for r in 0..a.rounds {
        let s = measure_strata(&bin, &out.join("strata-data"), &a, &rt)?;
        eprintln!(
            "round {}: strata {:.1} MB/s ({:.0} PUTs/s, cpu {:.0}%)",
            r + 1,
            s.mb_per_s,
            s.puts_per_s,
            s.cpu_pct
        );
        let f = measure_fio(&out.join("fio"), a.secs)?;
        eprintln!("round {}: fio {:.1} MB/s", r + 1, f.mb_per_s);
        strata.push(s);
        fio.push(f);
    }
    let ratios: Vec<f64> = strata
        .iter()
        .zip(&fio)
        .map(|(s, f)| s.mb_per_s / f.mb_per_s)
        .collect();
    println!();
    println!(
        "put: {} clients, 4-64 KiB blobs, acknowledged (fdatasync'd) PUTs through `strata serve --threads {}` vs fio sequential 64 KiB writes, fdatasync per 1 MiB",
        a.conns, a.threads
    );
    println!("| round | strata MB/s | PUTs/s | strata CPU % | fio MB/s | ratio |");
    println!("|---|---|---|---|---|---|");
    for (i, ((s, f), r)) in strata.iter().zip(&fio).zip(&ratios).enumerate() {
        println!(
            "| {} | {:.1} | {:.0} | {:.0} | {:.1} | {:.2} |",
            i + 1,
            s.mb_per_s,
            s.puts_per_s,
            s.cpu_pct,
            f.mb_per_s,
            r
        );
    }
    println!(
        "median: strata {:.1} MB/s, fio {:.1} MB/s, ratio {:.2}x",
        median(strata.iter().map(|r| r.mb_per_s).collect()),
        median(fio.iter().map(|r| r.mb_per_s).collect()),
        median(ratios.clone())
    );
    let path = out.join("put.json");
    let json = serde_json::json!({
        "strata": strata, "fio": fio, "ratios": ratios,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    println!("results: {}", path.display());
    crate::plots_of::after_run(&out, "put", &json);
    Ok(())
}
