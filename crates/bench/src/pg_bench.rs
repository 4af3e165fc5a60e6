//! `pg`: what keeping a cluster's state in PostgreSQL costs, measured
//! beside the embedded engines in one run, rounds alternating.
//!
//! 1. Name index at 50 concurrent clients: put, lookup and 100-key prefix
//!    listing; redb (in-process, group commit) vs PostgreSQL (a primary
//!    with a synchronous standby, `synchronous_commit = on`, `fsync = on`).
//! 2. Job queue over the beanstalkd protocol: put + reserve + delete
//!    cycles; a `strata queue` front on PostgreSQL vs the built-in broker
//!    vs beanstalkd `-b -f 0` (all durable per acknowledged job).
//! 3. PUTs through a cluster of processes (2 stores R = 2, 2 nodes, a
//!    gateway) with the index in PostgreSQL vs a redb index member.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use index::pg::{PgIndex, PgOptions};
use index::{BlobMeta, Index, IndexDb};
use testkit::{blob, PgCluster, StatusCode};

use crate::dist::median;
use crate::peers::{self, Proc};

/// Options of `pg`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds per measured run.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Rounds (each runs every contender once, order alternating).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Keys loaded before lookups and listings.
    #[arg(long, default_value_t = 20_000)]
    keys: usize,
    /// Parts to run: any of index, queue, cluster.
    #[arg(long, value_delimiter = ',', default_value = "index,queue,cluster")]
    parts: Vec<String>,
    /// Working directory.
    #[arg(long, default_value = "target/bench/pg")]
    out: PathBuf,
}

fn meta(id: u64) -> BlobMeta {
    BlobMeta {
        id,
        size: 4096 + id % 60_000,
        etag: format!("\"{id:016x}\""),
        content_type: "image/jpeg".into(),
        created_ms: 1_700_000_000_000 + id,
        replicas: vec!["store-1".into(), "store-2".into()],
        tags: vec![format!("t{}", id % 10)],
        version: 0,
        page: None,
        ..Default::default()
    }
}

/// Operations per second of `op` from `clients` tasks for `secs`, with
/// p50/p99 in ms.
async fn measure<F, Fut>(clients: usize, secs: u64, op: F) -> anyhow::Result<(f64, f64, f64)>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients as u64 {
        let (op, stop) = (op.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = c << 32;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                op(i).await?;
                lat.push(t.elapsed().as_micros() as u64);
                i += 1;
                // redb lookups never wait on I/O: without this, two tasks
                // would hold both worker threads and the other clients
                // (and the timer) would never run.
                tokio::task::yield_now().await;
            }
            anyhow::Ok(lat)
        }));
    }
    let t = Instant::now();
    let timer = stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        timer.store(true, Ordering::Relaxed);
    });
    let mut lat = Vec::new();
    for task in tasks {
        lat.extend(task.await??);
    }
    let took = t.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: usize| lat.get(lat.len() * p / 100).copied().unwrap_or(0) as f64 / 1000.0;
    Ok((lat.len() as f64 / took, pct(50), pct(99)))
}

struct Row {
    what: String,
    backend: &'static str,
    round: usize,
    ops: f64,
    p50: f64,
    p99: f64,
}

async fn index_rounds(args: &Args, pg: &PgCluster, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let dir = args.out.join("redb");
    std::fs::create_dir_all(&dir)?;
    let redb: Arc<dyn Index> = IndexDb::open(&dir)?;
    let mut o = PgOptions::new("index", &pg.url());
    o.password = Some(pg.password.clone());
    o.pool_size = args.clients;
    let pgi: Arc<dyn Index> = PgIndex::connect(o).await?;
    for (name, db) in [("redb", &redb), ("postgres", &pgi)] {
        // The same keys in both, for lookups and listings.
        let loads: Vec<_> = (0..args.clients)
            .map(|c| {
                let db = db.clone();
                let (n, clients) = (args.keys, args.clients);
                tokio::spawn(async move {
                    let mut i = c;
                    while i < n {
                        db.put(&format!("img/{:03}/{i:08}.jpg", i % 200), &meta(i as u64))
                            .await?;
                        i += clients;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for l in loads {
            l.await??;
        }
        eprintln!("loaded {} keys into {name}", args.keys);
    }
    let backends = [("redb", redb), ("postgres", pgi)];
    for round in 0..args.rounds {
        for k in 0..2 {
            let (name, db) = &backends[(k + round) % 2];
            let keys = args.keys as u64;
            let d = db.clone();
            let (ops, p50, p99) = measure(args.clients, args.secs, move |i| {
                let d = d.clone();
                async move {
                    d.put(&format!("put/{i:016x}"), &meta(i)).await?;
                    Ok(())
                }
            })
            .await?;
            rows.push(Row {
                what: "index put".into(),
                backend: name,
                round,
                ops,
                p50,
                p99,
            });
            let d = db.clone();
            let (ops, p50, p99) = measure(args.clients, args.secs, move |i| {
                let d = d.clone();
                async move {
                    let n = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) % keys;
                    let k = format!("img/{:03}/{n:08}.jpg", n % 200);
                    anyhow::ensure!(d.get(&k).await?.is_some(), "{k} missing");
                    Ok(())
                }
            })
            .await?;
            rows.push(Row {
                what: "index lookup".into(),
                backend: name,
                round,
                ops,
                p50,
                p99,
            });
            let d = db.clone();
            let (ops, p50, p99) = measure(args.clients, args.secs, move |i| {
                let d = d.clone();
                async move {
                    let p = format!("img/{:03}/", i % 200);
                    let l = d.list(&p, None, 100).await?;
                    anyhow::ensure!(l.items.len() == 100, "short listing of {p}");
                    Ok(())
                }
            })
            .await?;
            rows.push(Row {
                what: "index list 100".into(),
                backend: name,
                round,
                ops,
                p50,
                p99,
            });
        }
    }
    Ok(())
}

fn queue_front(bin: &Path, cfg: &Path, password: &str) -> anyhow::Result<Proc> {
    Ok(Proc(
        Command::new(bin)
            .args(["queue", "--threads", "1", "--config"])
            .arg(cfg)
            .args(["--name", "queue-1"])
            .env("RUST_LOG", "error")
            .env("STRATA_PG_PASSWORD", password)
            .stdout(Stdio::null())
            .spawn()
            .context("strata queue")?,
    ))
}

async fn queue_rounds(
    args: &Args,
    pg: &PgCluster,
    bin: &Path,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    peers::ensure_installed(&[("/usr/bin/beanstalkd", "beanstalkd")])?;
    let url = pg.create_database("bench_queue")?;
    let qargs = crate::queue_bench::Args::with(args.secs, args.clients, 100);
    for round in 0..args.rounds {
        for k in 0..3 {
            let contender = (k + round) % 3;
            let dir = args.out.join(format!("q{round}-{contender}"));
            std::fs::create_dir_all(&dir)?;
            let (http, bean) = (testkit::free_addr()?, testkit::free_addr()?);
            let (name, _p) = match contender {
                0 => {
                    let cfg = dir.join("cluster.toml");
                    std::fs::write(
                        &cfg,
                        format!(
                            "[queue]\nbackend = \"postgres\"\nurl = \"{url}\"\npassword_env = \"STRATA_PG_PASSWORD\"\npool_size = {}\n\
                             [[member]]\nname = \"queue-1\"\nrole = \"queue\"\naddr = \"{http}\"\nbeanstalk_addr = \"{bean}\"\n",
                            args.clients
                        ),
                    )?;
                    ("postgres", queue_front(bin, &cfg, &pg.password)?)
                }
                1 => (
                    "builtin",
                    crate::queue_bench::strata(bin, &dir, http, bean, true)?,
                ),
                _ => (
                    "beanstalkd -f 0",
                    crate::queue_bench::beanstalkd(&dir, bean, Some(0))?,
                ),
            };
            crate::queue_bench::wait_port(bean).await?;
            let r = crate::queue_bench::cycles(name, bean, &qargs).await?;
            rows.push(Row {
                what: "queue put+reserve+delete".into(),
                backend: name,
                round,
                ops: r.cycles_per_sec,
                p50: r.p50_ms,
                p99: r.p99_ms,
            });
        }
    }
    Ok(())
}

async fn cluster_rounds(
    args: &Args,
    pg: &PgCluster,
    bin: &Path,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let url = pg.create_database("bench_cluster")?;
    let pg_extra = format!(
        "[index]\nbackend = \"postgres\"\nurl = \"{url}\"\npassword_env = \"STRATA_PG_PASSWORD\"\npool_size = {}\n",
        args.clients
    );
    let layout = |external: bool| testkit::Layout {
        stores: 2,
        replicas: 2,
        nodes: 2,
        external_index: external,
        ..testkit::Layout::default()
    };
    for round in 0..args.rounds {
        for k in 0..2 {
            let postgres = (k + round) % 2 == 0;
            let name = if postgres { "postgres" } else { "redb member" };
            let p = if postgres {
                testkit::Procs::launch_with_env(
                    bin,
                    layout(true),
                    &pg_extra,
                    &[("STRATA_PG_PASSWORD", pg.password.as_str())],
                )
                .await?
            } else {
                testkit::Procs::launch(bin, layout(false), "").await?
            };
            let gw = p.client();
            let (ops, p50, p99) = measure(args.clients, args.secs, move |i| {
                let gw = gw.clone();
                async move {
                    let body = blob(i, 4096 + (i % 16) as usize * 1024);
                    let r = gw.put(&format!("/v1/blobs/b/{i:016x}"), body).await?;
                    anyhow::ensure!(r.status == StatusCode::CREATED, "PUT: {}", r.status);
                    Ok(())
                }
            })
            .await?;
            rows.push(Row {
                what: "cluster PUT 4-19 KiB".into(),
                backend: name,
                round,
                ops,
                p50,
                p99,
            });
        }
    }
    Ok(())
}

/// Runs `pg`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let bin = crate::store_bench::strata_bin()?;
    let _ = std::fs::remove_dir_all(&args.out);
    std::fs::create_dir_all(&args.out)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let pg = PgCluster::replicated()?;
    let mut rows = Vec::new();
    rt.block_on(async {
        let part = |p: &str| args.parts.iter().any(|x| x == p);
        if part("index") {
            index_rounds(&args, &pg, &mut rows).await?;
        }
        if part("queue") {
            queue_rounds(&args, &pg, &bin, &mut rows).await?;
        }
        if part("cluster") {
            cluster_rounds(&args, &pg, &bin, &mut rows).await?;
        }
        anyhow::Ok(())
    })?;
    println!();
    println!(
        "pg: {} clients, {} s per run, {} rounds alternating; PostgreSQL {} with a synchronous standby (synchronous_commit = on, fsync = on), same machine (2 cores)",
        args.clients,
        args.secs,
        args.rounds,
        pg.sql_primary("SHOW server_version")?.trim()
    );
    println!("| workload | backend | ops/s per round | median ops/s | p50 ms | p99 ms | postgres / this |");
    println!("|---|---|---|---|---|---|---|");
    let mut json = Vec::new();
    let mut whats: Vec<String> = Vec::new();
    for r in &rows {
        if !whats.contains(&r.what) {
            whats.push(r.what.clone());
        }
    }
    for what in whats {
        let mut backends: Vec<&'static str> = rows
            .iter()
            .filter(|r| r.what == what)
            .map(|r| r.backend)
            .collect();
        backends.sort();
        backends.dedup();
        backends.sort_by_key(|b| if *b == "postgres" { 0 } else { 1 });
        let mut first = None;
        for b in backends {
            let rs: Vec<&Row> = rows
                .iter()
                .filter(|r| r.what == what && r.backend == b)
                .collect();
            let m = median(rs.iter().map(|r| r.ops).collect());
            let first = *first.get_or_insert(m);
            let per: Vec<String> = {
                let mut rs = rs.clone();
                rs.sort_by_key(|r| r.round);
                rs.iter().map(|r| format!("{:.0}", r.ops)).collect()
            };
            println!(
                "| {what} | {b} | {} | {m:.0} | {:.2} | {:.2} | {:.2}x |",
                per.join(" / "),
                median(rs.iter().map(|r| r.p50).collect()),
                median(rs.iter().map(|r| r.p99).collect()),
                first / m
            );
            json.push(serde_json::json!({
                "workload": what, "backend": b, "median_ops": m,
                "rounds": rs.iter().map(|r| r.ops).collect::<Vec<_>>(),
            }));
        }
    }
    std::fs::write(
        args.out.join("pg.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    crate::plots_of::after_run(&args.out, "pg", &serde_json::to_value(&json)?);
    Ok(())
}
