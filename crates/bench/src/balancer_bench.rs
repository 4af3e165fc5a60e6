//! `balancer`: strata gateway vs HAProxy 2.6 vs nginx, each in front of the
//! same two minimal backends (nginx, 1 KiB `return 200`), same load
//! generator (wrk, keep-alive). Added latency is measured against wrk
//! straight at one backend in the same run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::dist::median;
use crate::peers::{self, Proc};
use crate::proc_stat::{cpu_ticks, TICKS_PER_SEC};
use crate::wrk;

/// Options of `balancer`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Alternating rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Working directory.
    #[arg(long, default_value = "target/bench/balancer")]
    out: PathBuf,
}

pub(crate) fn write(path: &Path, text: &str) -> anyhow::Result<PathBuf> {
    std::fs::write(path, text)?;
    Ok(path.to_owned())
}

pub(crate) fn wait_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("port {port} never opened");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_pct: f64,
}

fn measure(pid: u32, port: u16, script: &Path, a: &Args) -> anyhow::Result<Run> {
    let before = cpu_ticks(pid);
    let t = Instant::now();
    let r = wrk::run(
        &format!("http://127.0.0.1:{port}"),
        script,
        1,
        a.conns,
        a.secs,
    )?;
    let cpu_pct =
        (cpu_ticks(pid) - before) as f64 / TICKS_PER_SEC / t.elapsed().as_secs_f64() * 100.0;
    if r.errors > 0 {
        bail!("{} errors on port {port}", r.errors);
    }
    Ok(Run {
        rps: r.rps,
        p50_ms: r.p50_ms,
        p99_ms: r.p99_ms,
        cpu_pct,
    })
}

/// Runs `balancer`.
pub fn run(a: Args) -> anyhow::Result<()> {
    peers::ensure_installed(&[
        ("/usr/sbin/nginx", "nginx"),
        ("/usr/sbin/haproxy", "haproxy"),
        ("/usr/bin/wrk", "wrk"),
    ])?;
    let bin = crate::store_bench::strata_bin()?;
    let _ = std::fs::remove_dir_all(&a.out);
    std::fs::create_dir_all(a.out.join("nginx-b"))?;
    std::fs::create_dir_all(a.out.join("nginx-p"))?;
    let out = std::fs::canonicalize(&a.out)?;
    let port = || testkit::free_addr().map(|x| x.port());
    let (b1, b2, hp, np, sp) = (port()?, port()?, port()?, port()?, port()?);
    let kib = "x".repeat(1024);
    let bdir = out.join("nginx-b");
    let backends = write(
        &bdir.join("nginx.conf"),
        &peers::nginx_conf(
            &bdir,
            &format!("server {{ listen 127.0.0.1:{b1}; location / {{ return 200 '{kib}'; }} }}\n  server {{ listen 127.0.0.1:{b2}; location / {{ return 200 '{kib}'; }} }}"),
        ),
    )?;
    let pdir = out.join("nginx-p");
    let nginx_proxy = write(
        &pdir.join("nginx.conf"),
        &peers::nginx_conf(
            &pdir,
            &format!("upstream b {{ server 127.0.0.1:{b1}; server 127.0.0.1:{b2}; keepalive 64; keepalive_requests 1000000; }}\n  server {{ listen 127.0.0.1:{np}; location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}"),
        ),
    )?;
    let haproxy = write(
        &out.join("haproxy.cfg"),
        &format!(
            "global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  option http-keep-alive\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\nfrontend f\n  bind 127.0.0.1:{hp}\n  default_backend b\nbackend b\n  balance roundrobin\n  http-reuse always\n  server s1 127.0.0.1:{b1}\n  server s2 127.0.0.1:{b2}\n"
        ),
    )?;
    let _backends = peers::spawn_nginx(&backends, &bdir)?;
    let nginx = peers::spawn_nginx(&nginx_proxy, &pdir)?;
    let hap = Proc(
        Command::new("/usr/sbin/haproxy")
            .arg("-f")
            .arg(&haproxy)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("haproxy")?,
    );
    let strata = Proc(
        Command::new(&bin)
            .args([
                "gateway",
                "--listen",
                &format!("127.0.0.1:{sp}"),
                "--backend",
                &format!("127.0.0.1:{b1}"),
            ])
            .args([
                "--backend",
                &format!("127.0.0.1:{b2}"),
                "--algorithm",
                "round-robin",
                "--threads",
                "1",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("strata gateway")?,
    );
    for p in [b1, b2, hp, np, sp] {
        wait_port(p)?;
    }
    let script = write(
        &out.join("get.lua"),
        "request = function() return wrk.format(\"GET\", \"/img\") end\n",
    )?;
    let servers: [(&str, u32, u16); 3] = [
        ("strata", strata.0.id(), sp),
        ("haproxy", hap.0.id(), hp),
        ("nginx", nginx.0.id(), np),
    ];
    for (_, pid, p) in servers {
        let warm = Args {
            secs: 2,
            ..Args {
                rounds: 0,
                secs: 2,
                conns: a.conns,
                out: out.clone(),
            }
        };
        measure(pid, p, &script, &warm)?;
    }
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); 4];
    for r in 0..a.rounds {
        let direct = measure(0, b1, &script, &a)?;
        runs[3].push(direct);
        for (k, (name, pid, p)) in servers.iter().enumerate() {
            let m = measure(*pid, *p, &script, &a)?;
            eprintln!(
                "round {}: {name} {:.0} req/s p50 {:.3} ms p99 {:.3} ms cpu {:.0}%",
                r + 1,
                m.rps,
                m.p50_ms,
                m.p99_ms,
                m.cpu_pct
            );
            runs[k].push(m);
        }
    }
    let med = |rs: &[Run], f: fn(&Run) -> f64| median(rs.iter().map(f).collect());
    let (d50, d99) = (med(&runs[3], |r| r.p50_ms), med(&runs[3], |r| r.p99_ms));
    println!();
    println!("balancer: wrk -t1 -c{} -d{}s keep-alive, 1 KiB responses, two nginx backends, each balancer 1 thread, 2 cores", a.conns, a.secs);
    println!("direct to one backend: p50 {d50:.3} ms, p99 {d99:.3} ms");
    println!(
        "| balancer | req/s (median) | added p50 ms | added p99 ms | CPU % | ratio vs HAProxy |"
    );
    println!("|---|---|---|---|---|---|");
    let hap_rps = med(&runs[1], |r| r.rps);
    let mut json = Vec::new();
    for (k, (name, _, _)) in servers.iter().enumerate() {
        let rps = med(&runs[k], |r| r.rps);
        println!(
            "| {name} | {rps:.0} | {:.3} | {:.3} | {:.0} | {:.2}x |",
            med(&runs[k], |r| r.p50_ms) - d50,
            med(&runs[k], |r| r.p99_ms) - d99,
            med(&runs[k], |r| r.cpu_pct),
            rps / hap_rps
        );
        json.push(serde_json::json!({"server": name, "runs": runs[k]}));
    }
    json.push(serde_json::json!({"server": "direct", "runs": runs[3]}));
    std::fs::write(
        out.join("balancer.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    crate::plots_of::after_run(&out, "balancer", &serde_json::to_value(&json)?);
    Ok(())
}
