//! `failover`: under steady load through a balancer in front of three
//! backends, one backend dies, then another turns slow (+200 ms on every
//! request). Measured from the clients: errors, p99 per phase; from the
//! backends: how long the slow one kept receiving requests. strata's
//! gateway and HAProxy 2.6, each with active checks and passive error
//! detection configured alike, in the same run, against fresh copies of the
//! same in-process backends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::peers::{self, Proc};

/// Options of `failover`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds of load; the backend dies at 1/4, the slow-down starts at 1/2.
    #[arg(long, default_value_t = 12)]
    secs: u64,
    /// Concurrent clients (keep-alive, closed loop).
    #[arg(long, default_value_t = 32)]
    conns: usize,
    /// Working directory.
    #[arg(long, default_value = "target/bench/failover")]
    out: PathBuf,
}

/// One backend under the bench's control.
struct Backend {
    addr: SocketAddr,
    /// Added delay per request, ms.
    delay_ms: Arc<AtomicU64>,
    /// Arrival times of non-check requests, ms since the epoch.
    arrivals: Arc<Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start(epoch: Instant) -> anyhow::Result<Backend> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        let delay_ms = Arc::new(AtomicU64::new(0));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let (d, a) = (delay_ms.clone(), arrivals.clone());
        let body = Bytes::from(vec![b'x'; 1024]);
        let task = tokio::spawn(async move {
            // Aborting this task drops the set, which aborts every open
            // connection: the backend dies as a killed process would.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let _ = s.set_nodelay(true);
                let (d, a, body) = (d.clone(), a.clone(), body.clone());
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (d, a, body) = (d.clone(), a.clone(), body.clone());
                        async move {
                            if req.uri().path() != "/healthz" {
                                let t = epoch.elapsed().as_millis() as u64;
                                a.lock().unwrap_or_else(|p| p.into_inner()).push(t);
                            }
                            let ms = d.load(Ordering::Relaxed);
                            if ms > 0 {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(body)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Ok(Backend {
            addr,
            delay_ms,
            arrivals,
            task,
        })
    }
}

/// One client request: start (ms since the epoch), latency, answered 200.
#[derive(Clone, Copy)]
struct Sample {
    at_ms: u64,
    lat_us: u64,
    ok: bool,
}

#[derive(Debug, serde::Serialize)]
struct Outcome {
    server: String,
    requests: usize,
    errors: usize,
    p99_before_ms: f64,
    p99_after_kill_ms: f64,
    p99_after_slow_ms: f64,
    /// Last client error after the kill, ms after it (0: none).
    error_window_ms: u64,
    /// How long after the slow-down the slow backend still got requests.
    slow_served_for_ms: u64,
    /// Requests the slow backend got after the slow-down.
    slow_requests: usize,
}

fn p99(samples: &[Sample], from: u64, to: u64) -> f64 {
    let mut v: Vec<u64> = samples
        .iter()
        .filter(|s| s.at_ms >= from && s.at_ms < to)
        .map(|s| s.lat_us)
        .collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    v[(v.len() * 99 / 100).min(v.len() - 1)] as f64 / 1000.0
}

/// Runs the scenario against a balancer that `launch` starts in front of
/// three fresh backends (it returns the balancer's process and port).
async fn scenario(
    name: &str,
    a: &Args,
    launch: impl FnOnce(&[SocketAddr]) -> anyhow::Result<(Proc, u16)>,
) -> anyhow::Result<Outcome> {
    let epoch = Instant::now();
    let mut backends = Vec::new();
    for _ in 0..3 {
        backends.push(Backend::start(epoch).await?);
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let (_proc, port) = launch(&addrs)?;
    wait_port(port).await?;
    // Let the balancer see every backend healthy before the clock starts.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let url: hyper::Uri = format!("http://127.0.0.1:{port}/img").parse()?;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(a.conns)
        .build_http();
    let start = Instant::now();
    let ms_now = move || start.elapsed().as_millis() as u64;
    let total = a.secs * 1000;
    let (kill_at, slow_at) = (total / 4, total / 2);
    let mut tasks = Vec::new();
    for _ in 0..a.conns {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while ms_now() < total {
                let t0 = Instant::now();
                let at_ms = ms_now();
                let ok = match client.get(url.clone()).await {
                    Ok(r) => {
                        let good = r.status().is_success();
                        r.into_body().collect().await.is_ok() && good
                    }
                    Err(_) => false,
                };
                out.push(Sample {
                    at_ms,
                    lat_us: t0.elapsed().as_micros() as u64,
                    ok,
                });
            }
            out
        }));
    }
    // The events, on the same clock as the samples.
    tokio::time::sleep(Duration::from_millis(kill_at)).await;
    backends[0].task.abort();
    let slow_epoch = {
        tokio::time::sleep(Duration::from_millis(slow_at.saturating_sub(ms_now()))).await;
        backends[1].delay_ms.store(200, Ordering::Relaxed);
        epoch.elapsed().as_millis() as u64
    };
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await?);
    }
    let errors: Vec<&Sample> = samples.iter().filter(|s| !s.ok).collect();
    let error_window_ms = errors
        .iter()
        .filter(|s| s.at_ms >= kill_at)
        .map(|s| s.at_ms - kill_at)
        .max()
        .unwrap_or(0);
    let slow_hits: Vec<u64> = backends[1]
        .arrivals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .copied()
        .filter(|&t| t >= slow_epoch)
        .collect();
    for b in &backends {
        b.task.abort();
    }
    Ok(Outcome {
        server: name.to_owned(),
        requests: samples.len(),
        errors: errors.len(),
        p99_before_ms: p99(&samples, 0, kill_at),
        p99_after_kill_ms: p99(&samples, kill_at, slow_at),
        p99_after_slow_ms: p99(&samples, slow_at, total),
        error_window_ms,
        slow_served_for_ms: slow_hits.iter().max().map_or(0, |t| t - slow_epoch),
        slow_requests: slow_hits.len(),
    })
}

async fn wait_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("port {port} never opened");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn strata(bin: &Path, dir: &Path, backends: &[SocketAddr]) -> anyhow::Result<(Proc, u16)> {
    let port = testkit::free_addr()?.port();
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    // Checks every 200 ms with a 100 ms timeout, down after 2; passive
    // ejection after 3 failures or as a latency outlier; up to 2 of the 3
    // ejected, panic mode only below one third.
    let cfg = format!(
        "[gateway]\nalgorithm = \"round-robin\"\ncheck_interval_ms = 200\ncheck_timeout_ms = 100\n\
         fall = 2\nrise = 2\nconsecutive_failures = 3\nbase_ejection_ms = 30000\n\
         max_ejection_percent = 67\npanic_threshold_percent = 30\n\
         [[gateway.pool]]\nname = \"b\"\nbackends = [{}]\n\
         [[member]]\nname = \"gw\"\nrole = \"gateway\"\naddr = \"127.0.0.1:{port}\"\n",
        list.join(", ")
    );
    let path = dir.join("strata.toml");
    std::fs::write(&path, cfg)?;
    let child = Command::new(bin)
        .arg("gateway")
        .arg("--config")
        .arg(&path)
        .args(["--name", "gw", "--threads", "1"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .context("strata gateway")?;
    Ok((Proc(child), port))
}

fn haproxy(dir: &Path, backends: &[SocketAddr]) -> anyhow::Result<(Proc, u16)> {
    let port = testkit::free_addr()?.port();
    let mut servers = String::new();
    for (i, b) in backends.iter().enumerate() {
        servers.push_str(&format!("  server s{i} {b} check\n"));
    }
    // The same detection as strata's: checks every 200 ms, 100 ms timeout,
    // down after 2, up after 2; passive: 3 consecutive errors mark a server
    // down; GETs retried on another server after a connection failure or
    // an empty response.
    let cfg = format!(
        "global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  option http-keep-alive\n  \
         timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  timeout check 100ms\n\
         frontend f\n  bind 127.0.0.1:{port}\n  default_backend b\n\
         backend b\n  balance roundrobin\n  http-reuse always\n  option httpchk GET /healthz\n  \
         retries 3\n  option redispatch 1\n  retry-on conn-failure empty-response\n  \
         default-server inter 200ms fall 2 rise 2 observe layer7 error-limit 3 on-error mark-down\n{servers}"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg)?;
    let child = Command::new("/usr/sbin/haproxy")
        .arg("-f")
        .arg(&path)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("haproxy")?;
    Ok((Proc(child), port))
}

/// Runs `failover`.
pub fn run(a: Args) -> anyhow::Result<()> {
    peers::ensure_installed(&[("/usr/sbin/haproxy", "haproxy")])?;
    let bin = crate::store_bench::strata_bin()?;
    let _ = std::fs::remove_dir_all(&a.out);
    std::fs::create_dir_all(&a.out)?;
    let out = std::fs::canonicalize(&a.out)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let results = rt.block_on(async {
        let s = scenario("strata", &a, |b| strata(&bin, &out, b)).await?;
        let h = scenario("haproxy", &a, |b| haproxy(&out, b)).await?;
        anyhow::Ok(vec![s, h])
    })?;
    println!();
    println!(
        "failover: {} clients keep-alive through each balancer (1 thread) to 3 backends; backend 1 killed at {} s, backend 2 +200 ms from {} s, end at {} s",
        a.conns,
        a.secs / 4,
        a.secs / 2,
        a.secs
    );
    println!("| balancer | requests | client errors | error window ms | p99 before ms | p99 after kill ms | p99 after slow-down ms | slow backend served for ms | requests to slow backend |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {} |",
            r.server,
            r.requests,
            r.errors,
            r.error_window_ms,
            r.p99_before_ms,
            r.p99_after_kill_ms,
            r.p99_after_slow_ms,
            r.slow_served_for_ms,
            r.slow_requests
        );
    }
    std::fs::write(
        out.join("failover.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    crate::plots_of::after_run(&out, "failover", &serde_json::to_value(&results)?);
    Ok(())
}
