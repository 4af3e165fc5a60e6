//! `serve`: the whole stack on image traffic. `strata serve` with its
//! defaults (gateway, two nodes, cache tier, store) against nginx serving
//! the same bytes as one file per blob, and against Varnish in front of
//! that nginx, on a Zipf-skewed request sequence (the shape of image
//! traffic) and on a uniform one.
//!
//! Blobs are 4-64 KiB (seeded sizes and bytes, as `store`). Each workload
//! is a fixed sequence of blob numbers drawn once (Zipf ranks are mapped
//! to blobs through a fixed permutation, so hot blobs have every size) and
//! written to a file that a wrk Lua script replays from the start in every
//! run, so every server sees exactly the same requests. Rounds alternate
//! the servers; each run is warmed (caches filled by the same sequence)
//! then measured. Reported per server: req/s, p50, p99, server CPU % and
//! RSS (process and its children; Varnish + nginx counted together), and
//! the ratios strata/nginx and strata/Varnish per round and their median.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::dist::median;
use crate::dist::{Rng, Zipf};
use crate::peers::{self, Proc};
use crate::proc_stat::{cpu_ticks, rss_bytes, TICKS_PER_SEC};
use crate::store_bench::{key_of, load, strata_bin};
use crate::wrk::{self, WrkResult};

/// Options of the `serve` scenario.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Blobs (sizes 4-64 KiB, seeded).
    #[arg(long, default_value_t = 20_000)]
    blobs: u64,
    /// Zipf exponent of the skewed workload.
    #[arg(long, default_value_t = 0.99)]
    s: f64,
    /// Length of each pre-drawn request sequence (replayed in a loop).
    #[arg(long, default_value_t = 1_000_000)]
    sequence: usize,
    /// Alternating rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per measured wrk run (each after a 3 s warm-up).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Server threads: `strata serve --threads` = nginx worker processes.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// wrk connections.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Working directory (data, configs, sequences, results).
    #[arg(long, default_value = "target/bench/serve")]
    out: PathBuf,
}

/// One measured run.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Run {
    wrk: WrkResult,
    cpu_pct: f64,
    rss_mib: f64,
}

/// A server under test: its processes (CPU and RSS are summed over them)
/// and its URL prefix for blob `i`.
struct Server {
    name: &'static str,
    pids: Vec<u32>,
    url: String,
    prefix: &'static str,
}

/// Writes the sequence of blob numbers for a workload, one per line.
fn write_sequence(path: &Path, a: &Args, zipf: bool) -> anyhow::Result<()> {
    let mut rng = Rng(if zipf { 0x5eed_0001 } else { 0x5eed_0002 });
    let law = Zipf::new(a.blobs as usize, a.s);
    // A fixed permutation of blob numbers: rank r is blob (r * P) mod n,
    // P a prime that does not divide n.
    let p = [1_000_003u64, 1_000_033, 1_000_037]
        .into_iter()
        .find(|p| a.blobs % p != 0)
        .unwrap_or(1);
    let mut text = String::with_capacity(a.sequence * 6);
    for _ in 0..a.sequence {
        let i = if zipf {
            (law.sample(&mut rng) as u64 * p) % a.blobs
        } else {
            rng.next() % a.blobs
        };
        text.push_str(&i.to_string());
        text.push('\n');
    }
    std::fs::write(path, text)?;
    Ok(())
}

/// A wrk script that replays `sequence` from its start, in a loop.
fn replay_script(path: &Path, sequence: &Path, prefix: &str) -> anyhow::Result<()> {
    std::fs::write(
        path,
        format!(
            "local ids = {{}}
for line in io.lines(\"{seq}\") do ids[#ids + 1] = tonumber(line) end
local n = 0
request = function()
  n = n % #ids + 1
  local i = ids[n]
  return wrk.format(\"GET\", string.format(\"{prefix}%02x/%d\", i % 256, i))
end
",
            seq = sequence.display()
        ),
    )?;
    Ok(())
}

fn measure(s: &Server, script: &Path, a: &Args, secs: u64) -> anyhow::Result<Run> {
    let ticks = |pids: &[u32]| pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>();
    let before = ticks(&s.pids);
    let t = Instant::now();
    let wrk = wrk::run(&s.url, script, 1, a.conns, secs)?;
    let took = t.elapsed().as_secs_f64();
    let cpu_pct = (ticks(&s.pids) - before) as f64 / TICKS_PER_SEC / took * 100.0;
    let rss = s.pids.iter().map(|&p| rss_bytes(p)).sum::<u64>();
    if wrk.errors > 0 {
        bail!("{}: {} errors during the run", s.name, wrk.errors);
    }
    Ok(Run {
        wrk,
        cpu_pct,
        rss_mib: rss as f64 / 1048576.0,
    })
}

fn start_strata(
    bin: &Path,
    data: &Path,
    addr: std::net::SocketAddr,
    threads: usize,
) -> anyhow::Result<Proc> {
    // `serve` as a new user runs it: its default nodes, cache and all.
    let child = Command::new(bin)
        .arg("serve")
        .arg("--data")
        .arg(data)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--threads")
        .arg(threads.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting strata")?;
    Ok(Proc(child))
}

fn start_varnish(dir: &Path, port: u16, backend: u16) -> anyhow::Result<Proc> {
    std::fs::create_dir_all(dir)?;
    let child = Command::new("/usr/sbin/varnishd")
        .arg("-F")
        .args(["-j", "none"])
        .arg("-a")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-b")
        .arg(format!("127.0.0.1:{backend}"))
        .args(["-s", "malloc,256m"])
        // nginx sends no Cache-Control: keep objects for the whole run.
        .args(["-t", "3600"])
        .arg("-n")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .context("starting varnishd")?;
    Ok(Proc(child))
}

/// Runs the scenario.
pub fn run(a: Args) -> anyhow::Result<()> {
    peers::ensure_installed(&[
        ("/usr/sbin/nginx", "nginx"),
        ("/usr/bin/wrk", "wrk"),
        ("/usr/sbin/varnishd", "varnish"),
    ])?;
    let bin = strata_bin()?;
    let _ = std::fs::remove_dir_all(&a.out);
    std::fs::create_dir_all(&a.out)?;
    let out = std::fs::canonicalize(&a.out)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    let data = out.join("strata-data");
    let strata_addr = testkit::free_addr()?;
    let strata = start_strata(&bin, &data, strata_addr, a.threads)?;
    let client = testkit::Client::new(format!("http://{strata_addr}"));
    rt.block_on(client.wait_ready("/healthz", Duration::from_secs(30)))?;
    let root = out.join("nginx-root");
    eprintln!(
        "loading {} blobs (4-64 KiB) into strata and {} ...",
        a.blobs,
        root.display()
    );
    let bytes = rt.block_on(load(&client, &root, a.blobs))?;
    eprintln!("loaded {:.1} MiB", bytes as f64 / 1048576.0);
    // Restarted for the runs: nothing of the load stays in its caches.
    drop(strata);

    let nginx_port = testkit::free_addr()?.port();
    let nginx = Proc(peers::start_nginx_static(
        &out.join("nginx"),
        &root,
        nginx_port,
        a.threads,
        true,
    )?);
    let nginx_url = format!("http://127.0.0.1:{nginx_port}");
    rt.block_on(
        testkit::Client::new(nginx_url.clone())
            .wait_ready(&format!("/{}", key_of(0)), Duration::from_secs(20)),
    )?;
    let varnish_port = testkit::free_addr()?.port();
    let varnish = start_varnish(&out.join("varnish"), varnish_port, nginx_port)?;
    let varnish_url = format!("http://127.0.0.1:{varnish_port}");
    rt.block_on(
        testkit::Client::new(varnish_url.clone())
            .wait_ready(&format!("/{}", key_of(0)), Duration::from_secs(30)),
    )?;
    let strata = start_strata(&bin, &data, strata_addr, a.threads)?;
    rt.block_on(client.wait_ready("/healthz", Duration::from_secs(30)))?;
    let servers = [
        Server {
            name: "strata",
            pids: vec![strata.0.id()],
            url: format!("http://{strata_addr}"),
            prefix: "/v1/blobs/img/",
        },
        Server {
            name: "nginx",
            pids: vec![nginx.0.id()],
            url: nginx_url,
            prefix: "/img/",
        },
        Server {
            name: "varnish+nginx",
            pids: vec![varnish.0.id(), nginx.0.id()],
            url: varnish_url,
            prefix: "/img/",
        },
    ];

    let mut report = serde_json::Map::new();
    for (workload, zipf) in [("zipf", true), ("uniform", false)] {
        let seq = out.join(format!("{workload}.seq"));
        write_sequence(&seq, &a, zipf)?;
        let scripts: Vec<PathBuf> = servers
            .iter()
            .map(|s| {
                let p = out.join(format!("{workload}-{}.lua", s.name.replace('+', "-")));
                replay_script(&p, &seq, s.prefix).map(|_| p)
            })
            .collect::<anyhow::Result<_>>()?;
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); servers.len()];
        for r in 0..a.rounds {
            for (i, s) in servers.iter().enumerate() {
                measure(s, &scripts[i], &a, 3)?;
                let run = measure(s, &scripts[i], &a, a.secs)?;
                eprintln!(
                    "{workload} round {}: {} {:.0} req/s (p50 {:.2} ms, p99 {:.2} ms, cpu {:.0}%, rss {:.0} MiB)",
                    r + 1,
                    s.name,
                    run.wrk.rps,
                    run.wrk.p50_ms,
                    run.wrk.p99_ms,
                    run.cpu_pct,
                    run.rss_mib
                );
                runs[i].push(run);
            }
        }
        let med = |rs: &[Run], f: fn(&Run) -> f64| median(rs.iter().map(f).collect());
        println!();
        println!(
            "serve, {workload}{}: {} blobs (4-64 KiB), wrk -t1 -c{} -d{}s replaying one fixed sequence, {} server thread(s)",
            if zipf { format!(" ({})", a.s) } else { String::new() },
            a.blobs,
            a.conns,
            a.secs,
            a.threads
        );
        println!("| server | req/s (median) | p50 ms | p99 ms | server CPU % | RSS MiB |");
        println!("|---|---|---|---|---|---|");
        for (s, rs) in servers.iter().zip(&runs) {
            println!(
                "| {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} |",
                s.name,
                med(rs, |r| r.wrk.rps),
                med(rs, |r| r.wrk.p50_ms),
                med(rs, |r| r.wrk.p99_ms),
                med(rs, |r| r.cpu_pct),
                med(rs, |r| r.rss_mib)
            );
        }
        let mut w = serde_json::Map::new();
        for (i, peer) in [(1usize, "nginx"), (2, "varnish+nginx")] {
            let ratios: Vec<f64> = runs[0]
                .iter()
                .zip(&runs[i])
                .map(|(s, p)| s.wrk.rps / p.wrk.rps)
                .collect();
            println!(
                "ratio strata/{peer} req/s: {:.2}x (per round: {})",
                median(ratios.clone()),
                ratios
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            w.insert(format!("ratios_{peer}"), serde_json::json!(ratios));
        }
        for (s, rs) in servers.iter().zip(&runs) {
            w.insert(s.name.to_owned(), serde_json::json!(rs));
        }
        report.insert(workload.to_owned(), serde_json::Value::Object(w));
    }
    drop((strata, varnish, nginx));
    let path = out.join("serve.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    crate::plots_of::after_run(&out, "serve", &serde_json::to_value(&report)?);
    println!("results: {}", path.display());
    Ok(())
}
