//! `collapse`: many clients released together onto one uncached blob,
//! through strata and through nginx with `proxy_cache_lock on`, both in
//! front of the same slow origin: a strata store process behind a proxy
//! that delays every request by 200 ms. Reports origin reads, the leader's
//! latency, and the followers' added latency.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::peers::{self, Proc};

/// Options of `collapse`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Clients released together.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Blob sizes to test, MiB.
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    sizes_mb: Vec<u64>,
    /// Origin delay per request, ms.
    #[arg(long, default_value_t = 200)]
    delay_ms: u64,
    /// Working directory.
    #[arg(long, default_value = "target/bench/collapse")]
    out: PathBuf,
}

/// A TCP proxy that holds every request it forwards for `delay`: the slow
/// origin. Counts requests (chunks that start an HTTP request line).
async fn delay_proxy(
    listener: TcpListener,
    upstream: SocketAddr,
    delay: Duration,
    count: Arc<AtomicU64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let count = count.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let up = async {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    // Blob reads only (not the nodes' health probes).
                    if buf[..n].starts_with(b"GET /blobs/") {
                        count.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(delay).await;
                    }
                    if sw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            };
            let down = async {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            };
            tokio::join!(up, down);
        });
    }
}

fn nginx_conf(dir: &Path, port: u16, origin: SocketAddr) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("cache"))?;
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    proxy_cache_path {d}/cache levels=1:2 keys_zone=blobs:10m max_size=2g inactive=60m use_temp_path=off;
    client_body_temp_path {d};
    proxy_temp_path {d};
    fastcgi_temp_path {d};
    uwsgi_temp_path {d};
    scgi_temp_path {d};
    upstream origin {{ server {origin}; keepalive 64; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://origin/blobs/;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_cache blobs;
            proxy_cache_valid 200 10m;
            proxy_cache_lock on;
            proxy_buffering on;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
",
            d = dir.display()
        ),
    )?;
    Ok(conf)
}

#[derive(Debug, Clone, serde::Serialize)]
struct Outcome {
    origin_reads: u64,
    leader_ttfb_ms: f64,
    added_ttfb_p50_ms: f64,
    added_ttfb_p99_ms: f64,
    leader_done_ms: f64,
    added_done_p50_ms: f64,
    added_done_p99_ms: f64,
    errors: usize,
}

type Http = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

/// GET that counts the body's bytes as they arrive and keeps none of them
/// (a thousand copies of a big blob must not sit in memory). Also returns
/// the time the response headers arrived (time to first byte).
async fn get_counting(c: &Http, url: &str) -> anyhow::Result<(u16, u64, Instant)> {
    use http_body_util::BodyExt;
    let resp = c.get(url.parse()?).await?;
    let ttfb = Instant::now();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame?.into_data() {
            n += d.len() as u64;
        }
    }
    Ok((status, n, ttfb))
}

/// What a burst measured: the leader's (first) time to first byte and
/// completion, and every follower's extra over the leader for both.
struct Burst {
    leader_ttfb: f64,
    leader_done: f64,
    added_ttfb: Vec<f64>,
    added_done: Vec<f64>,
    errors: usize,
}

/// Releases `n` clients together onto `path`. Times are measured from
/// the moment the barrier opens (one clock for everyone), so a client task
/// that the 2-core machine schedules late is charged for it.
async fn burst(addr: SocketAddr, path: &str, n: usize, size: u64) -> anyhow::Result<Burst> {
    let client: Http =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let url = format!("http://{addr}{path}");
    let barrier = Arc::new(tokio::sync::Barrier::new(n + 1));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (c, b, u) = (client.clone(), barrier.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            let r = get_counting(&c, &u).await;
            let done = Instant::now();
            match r {
                Ok((200, len, ttfb)) if len == size => (ttfb, done, true),
                _ => (done, done, false),
            }
        }));
    }
    barrier.wait().await;
    let t0 = Instant::now();
    let ms = |t: Instant| t.saturating_duration_since(t0).as_secs_f64() * 1000.0;
    let mut ttfb = Vec::new();
    let mut done = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (f, d, ok) = t.await?;
        if !ok {
            errors += 1;
        }
        ttfb.push(ms(f));
        done.push(ms(d));
    }
    ttfb.sort_by(|a, b| a.total_cmp(b));
    done.sort_by(|a, b| a.total_cmp(b));
    let (lt, ld) = (ttfb[0], done[0]);
    Ok(Burst {
        leader_ttfb: lt,
        leader_done: ld,
        added_ttfb: ttfb[1..].iter().map(|x| x - lt).collect(),
        added_done: done[1..].iter().map(|x| x - ld).collect(),
        errors,
    })
}

fn pct(v: &[f64], p: f64) -> f64 {
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

/// Runs `collapse`.
pub fn run(a: Args) -> anyhow::Result<()> {
    peers::ensure_installed(&[("/usr/sbin/nginx", "nginx")])?;
    let bin = crate::store_bench::strata_bin()?;
    let _ = std::fs::remove_dir_all(&a.out);
    std::fs::create_dir_all(&a.out)?;
    let out = std::fs::canonicalize(&a.out)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let free = testkit::free_addr;
    let (index_a, store_a, proxy_a, node_a) = (free()?, free()?, free()?, free()?);
    let max_body = a.sizes_mb.iter().max().copied().unwrap_or(1) << 20;
    // Default cache settings: a 1 MiB blob is cached whole (item limit
    // 1 MiB), a bigger one is streamed to the followers.
    let common = format!("[limits]\nmax_body_bytes = {}\n", max_body + 1);
    let member = |name: &str, role: &str, addr: SocketAddr, data: bool| {
        let mut m =
            format!("[[member]]\nname = \"{name}\"\nrole = \"{role}\"\naddr = \"{addr}\"\n");
        if data {
            m.push_str(&format!("data_dir = \"{}\"\n", out.join(name).display()));
        }
        m
    };
    // The node sees the store at the slow proxy; the store listens behind it.
    let node_cfg = out.join("cluster.toml");
    std::fs::write(
        &node_cfg,
        format!(
            "{common}{}{}{}",
            member("index", "index", index_a, true),
            member("store", "store", proxy_a, true),
            member("node", "node", node_a, false)
        ),
    )?;
    let store_cfg = out.join("store.toml");
    std::fs::write(
        &store_cfg,
        format!(
            "{common}{}{}",
            member("index", "index", index_a, true),
            member("store", "store", store_a, true)
        ),
    )?;
    let spawn = |role: &str, cfg: &Path| -> anyhow::Result<Proc> {
        Ok(Proc(
            Command::new(&bin)
                .args([role, "--config"])
                .arg(cfg)
                .args(["--name", role, "--threads", "2"])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {role}"))?,
        ))
    };
    let _index = spawn("index", &node_cfg)?;
    let _store = spawn("store", &store_cfg)?;
    let _node = spawn("node", &node_cfg)?;
    let origin_reads = Arc::new(AtomicU64::new(0));
    let nginx_port = free()?.port();
    let _nginx = Proc(
        Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(nginx_conf(&out.join("nginx"), nginx_port, proxy_a)?)
            .arg("-p")
            .arg(out.join("nginx"))
            .stdout(Stdio::null())
            .spawn()
            .context("starting nginx")?,
    );
    let mut table = Vec::new();
    let mut json = Vec::new();
    rt.block_on(async {
        let l = TcpListener::bind(proxy_a).await?;
        tokio::spawn(delay_proxy(
            l,
            store_a,
            Duration::from_millis(a.delay_ms),
            origin_reads.clone(),
        ));
        let node = testkit::Client::new(format!("http://{node_a}"));
        node.wait_ready("/healthz", Duration::from_secs(20)).await?;
        testkit::Client::new(format!("http://127.0.0.1:{nginx_port}"))
            .wait_ready("/nonexistent", Duration::from_millis(1))
            .await
            .ok();
        for &mb in &a.sizes_mb {
            let size = mb << 20;
            // Two copies of the same bytes: one for each path, both cold.
            let body = testkit::blob(mb, size as usize);
            let r1 = node.put(&format!("/v1/blobs/s{mb}"), body.clone()).await?;
            let r2 = node.put(&format!("/v1/blobs/n{mb}"), body).await?;
            if r1.status != testkit::StatusCode::CREATED
                || r2.status != testkit::StatusCode::CREATED
            {
                bail!("upload failed: {} {}", r1.status, r2.status);
            }
            let nginx_id = r2.json()["id"].as_u64().context("blob id")?;
            // Warm the node's metadata so that only the bytes are cold.
            node.send(
                testkit::Method::HEAD,
                &format!("/v1/blobs/s{mb}"),
                &[],
                vec![],
            )
            .await?;
            for (name, addr, path) in [
                ("strata", node_a, format!("/v1/blobs/s{mb}")),
                (
                    "nginx",
                    SocketAddr::from(([127, 0, 0, 1], nginx_port)),
                    format!("/{nginx_id}"),
                ),
            ] {
                let before = origin_reads.load(Ordering::Relaxed);
                let b = burst(addr, &path, a.clients, size).await?;
                let o = Outcome {
                    origin_reads: origin_reads.load(Ordering::Relaxed) - before,
                    leader_ttfb_ms: b.leader_ttfb,
                    added_ttfb_p50_ms: pct(&b.added_ttfb, 0.5),
                    added_ttfb_p99_ms: pct(&b.added_ttfb, 0.99),
                    leader_done_ms: b.leader_done,
                    added_done_p50_ms: pct(&b.added_done, 0.5),
                    added_done_p99_ms: pct(&b.added_done, 0.99),
                    errors: b.errors,
                };
                eprintln!("{mb} MiB, {name}: {o:?}");
                table.push(format!(
                    "| {mb} MiB | {name} | {} | {:.1} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {} |",
                    o.origin_reads,
                    o.leader_ttfb_ms,
                    o.added_ttfb_p50_ms,
                    o.added_ttfb_p99_ms,
                    o.leader_done_ms,
                    o.added_done_p50_ms,
                    o.added_done_p99_ms,
                    o.errors
                ));
                json.push(serde_json::json!({"size_mb": mb, "server": name, "outcome": o}));
            }
        }
        anyhow::Ok(())
    })?;
    println!();
    println!(
        "collapse: {} clients released together onto one cold blob, origin delay {} ms, 2 cores",
        a.clients, a.delay_ms
    );
    println!("| blob | server | origin reads | leader first byte ms | followers' added first-byte p50 ms | p99 ms | leader done ms | followers' added done p50 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in table {
        println!("{r}");
    }
    std::fs::write(
        out.join("collapse.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    crate::plots_of::after_run(&out, "collapse", &serde_json::to_value(&json)?);
    Ok(())
}
