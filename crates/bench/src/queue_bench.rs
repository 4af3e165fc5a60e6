//! `queue`: put + reserve + delete cycles over the beanstalkd protocol,
//! strata's broker (every put acknowledged after fsync, group-committed)
//! vs beanstalkd 1.12 with its binlog at its default (fsync at most every
//! 50 ms) and with `-f 0` (fsync every write); same client, same
//! concurrency, same run. Then the crash test: kill -9 during a stream of
//! puts, restart, count the acknowledged jobs still there.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::dist::median;
use crate::peers::{self, Proc};

/// Options of `queue`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Job body bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Rounds; each runs every contender once, in rotating order.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Puts streamed in the crash test (killed about half way).
    #[arg(long, default_value_t = 100_000)]
    crash_puts: u64,
    /// Working directory.
    #[arg(long, default_value = "target/bench/queue")]
    out: PathBuf,
}

impl Args {
    /// Cycles of `size`-byte jobs from `conns` connections for `secs`.
    pub(crate) fn with(secs: u64, conns: usize, size: usize) -> Args {
        Args {
            secs,
            conns,
            size,
            rounds: 1,
            crash_puts: 0,
            out: PathBuf::new(),
        }
    }
}

/// One beanstalkd-protocol connection.
struct Conn(BufReader<TcpStream>);

impl Conn {
    async fn open(a: SocketAddr) -> anyhow::Result<Conn> {
        let s = TcpStream::connect(a).await?;
        s.set_nodelay(true)?;
        Ok(Conn(BufReader::new(s)))
    }

    async fn line(&mut self) -> anyhow::Result<String> {
        let mut l = String::new();
        if self.0.read_line(&mut l).await? == 0 {
            bail!("connection closed");
        }
        Ok(l)
    }

    async fn put(&mut self, body: &[u8]) -> anyhow::Result<u64> {
        let mut req = format!("put 0 0 60 {}\r\n", body.len()).into_bytes();
        req.extend_from_slice(body);
        req.extend_from_slice(b"\r\n");
        self.0.get_mut().write_all(&req).await?;
        let l = self.line().await?;
        l.trim()
            .strip_prefix("INSERTED ")
            .and_then(|id| id.parse().ok())
            .with_context(|| format!("put: {l:?}"))
    }

    async fn reserve_delete(&mut self) -> anyhow::Result<()> {
        self.0.get_mut().write_all(b"reserve\r\n").await?;
        let l = self.line().await?;
        let mut parts = l.trim().split(' ');
        let (Some("RESERVED"), Some(id), Some(n)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("reserve: {l:?}");
        };
        let n: usize = n.parse()?;
        let mut body = vec![0u8; n + 2];
        self.0.read_exact(&mut body).await?;
        self.0
            .get_mut()
            .write_all(format!("delete {id}\r\n").as_bytes())
            .await?;
        let l = self.line().await?;
        if l != "DELETED\r\n" {
            bail!("delete: {l:?}");
        }
        Ok(())
    }

    async fn found(&mut self, id: u64) -> anyhow::Result<bool> {
        self.0
            .get_mut()
            .write_all(format!("peek {id}\r\n").as_bytes())
            .await?;
        let l = self.line().await?;
        if let Some(rest) = l.trim().strip_prefix("FOUND ") {
            let n: usize = rest.split(' ').nth(1).context("size")?.parse()?;
            let mut body = vec![0u8; n + 2];
            self.0.read_exact(&mut body).await?;
            return Ok(true);
        }
        Ok(false)
    }
}

#[derive(Debug, serde::Serialize)]
pub(crate) struct Run {
    server: String,
    pub(crate) cycles_per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

/// `conns` clients doing put, reserve, delete in a loop for `secs`.
pub(crate) async fn cycles(name: &str, a: SocketAddr, args: &Args) -> anyhow::Result<Run> {
    let body = vec![b'j'; args.size];
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..args.conns {
        let (stop, body) = (stop.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(a).await?;
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                c.put(&body).await?;
                c.reserve_delete().await?;
                lat.push(t.elapsed().as_micros() as u64);
            }
            anyhow::Ok(lat)
        }));
    }
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for task in tasks {
        lat.extend(task.await??);
    }
    let secs = t.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: usize| lat.get(lat.len() * p / 100).copied().unwrap_or(0) as f64 / 1000.0;
    Ok(Run {
        server: name.to_owned(),
        cycles_per_sec: lat.len() as f64 / secs,
        p50_ms: pct(50),
        p99_ms: pct(99),
    })
}

#[derive(Debug, serde::Serialize)]
struct Crash {
    server: String,
    acknowledged: usize,
    found_after_restart: usize,
    lost: usize,
}

/// Streams up to `total` puts from 8 connections, SIGKILLs the server
/// about half way, restarts it, and peeks every acknowledged id.
async fn crash(
    name: &str,
    a: SocketAddr,
    total: u64,
    mut server: Proc,
    restart: impl FnOnce() -> anyhow::Result<Proc>,
) -> anyhow::Result<Crash> {
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (acked, sent) = (acked.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut c) = Conn::open(a).await else {
                return;
            };
            while sent.fetch_add(1, Ordering::Relaxed) < total {
                match c.put(b"crash-test job").await {
                    Ok(id) => acked.lock().unwrap_or_else(|p| p.into_inner()).push(id),
                    Err(_) => return,
                }
            }
        }));
    }
    while (acked.lock().unwrap_or_else(|p| p.into_inner()).len() as u64) < total / 2 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.0.kill()?;
    server.0.wait()?;
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let _server = restart()?;
    wait_port(a).await?;
    let mut c = Conn::open(a).await?;
    let mut found = 0;
    for id in &acked {
        if c.found(*id).await? {
            found += 1;
        }
    }
    Ok(Crash {
        server: name.to_owned(),
        acknowledged: acked.len(),
        found_after_restart: found,
        lost: acked.len() - found,
    })
}

pub(crate) async fn wait_port(a: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(a).await.is_err() {
        if Instant::now() > deadline {
            bail!("{a} never opened");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub(crate) fn strata(
    bin: &Path,
    data: &Path,
    http: SocketAddr,
    bean: SocketAddr,
    sync_deletes: bool,
) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(bin);
    cmd.args(["queue", "--threads", "1", "--listen", &http.to_string()])
        .args(["--beanstalk-listen", &bean.to_string(), "--data"])
        .arg(data);
    if sync_deletes {
        cmd.arg("--sync-deletes");
    }
    Ok(Proc(
        cmd.env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .context("strata queue")?,
    ))
}

pub(crate) fn beanstalkd(
    data: &Path,
    a: SocketAddr,
    fsync_ms: Option<u64>,
) -> anyhow::Result<Proc> {
    let mut cmd = Command::new("/usr/bin/beanstalkd");
    cmd.args(["-l", "127.0.0.1", "-p", &a.port().to_string(), "-b"])
        .arg(data);
    if let Some(ms) = fsync_ms {
        cmd.args(["-f", &ms.to_string()]);
    }
    Ok(Proc(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("beanstalkd")?,
    ))
}

/// Runs `queue`.
pub fn run(args: Args) -> anyhow::Result<()> {
    peers::ensure_installed(&[("/usr/bin/beanstalkd", "beanstalkd")])?;
    let bin = crate::store_bench::strata_bin()?;
    let _ = std::fs::remove_dir_all(&args.out);
    std::fs::create_dir_all(&args.out)?;
    let out = std::fs::canonicalize(&args.out)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let addr = testkit::free_addr;
    // The contenders: strata's two delete modes and beanstalkd's binlog
    // at its default; beanstalkd `-f 0` (fsync every write) is so much
    // slower that one run is enough to place it.
    const NAMES: [&str; 4] = [
        "strata (puts acknowledged after fsync, deletes ride the next sync)",
        "strata --sync-deletes (puts and deletes acknowledged after fsync)",
        "beanstalkd -b (fsync every 50 ms)",
        "beanstalkd -b -f 0 (fsync every write)",
    ];
    let (runs, crashes) = rt.block_on(async {
        let mut runs: Vec<Vec<Run>> = (0..NAMES.len()).map(|_| Vec::new()).collect();
        // Fresh data directories per server and run.
        let dir = |n: String| -> anyhow::Result<PathBuf> {
            let d = out.join(n);
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d)?;
            Ok(d)
        };
        for round in 0..args.rounds.max(1) {
            for k in 0..3 {
                let c = (k + round) % 3;
                let d = dir(format!("run-{round}-{c}"))?;
                let (h, b) = (addr()?, addr()?);
                let _p = match c {
                    0 | 1 => strata(&bin, &d, h, b, c == 1)?,
                    _ => beanstalkd(&d, b, None)?,
                };
                wait_port(b).await?;
                let r = cycles(NAMES[c], b, &args).await?;
                eprintln!(
                    "round {}: {} {:.0} cycles/s (p50 {:.3} ms, p99 {:.3} ms)",
                    round + 1,
                    NAMES[c],
                    r.cycles_per_sec,
                    r.p50_ms,
                    r.p99_ms
                );
                runs[c].push(r);
            }
        }
        {
            let a = addr()?;
            let _p = beanstalkd(&dir("bs-f0".into())?, a, Some(0))?;
            wait_port(a).await?;
            runs[3].push(cycles(NAMES[3], a, &args).await?);
        }
        let mut crashes = Vec::new();
        {
            let (h, b) = (addr()?, addr()?);
            let d = dir("strata-crash".into())?;
            let p = strata(&bin, &d, h, b, false)?;
            wait_port(b).await?;
            crashes.push(
                crash("strata", b, args.crash_puts, p, || {
                    strata(&bin, &d, h, b, false)
                })
                .await?,
            );
        }
        {
            let a = addr()?;
            let d = dir("bs-crash".into())?;
            let p = beanstalkd(&d, a, None)?;
            wait_port(a).await?;
            crashes.push(
                crash("beanstalkd -b (default)", a, args.crash_puts, p, || {
                    beanstalkd(&d, a, None)
                })
                .await?,
            );
        }
        anyhow::Ok((runs, crashes))
    })?;
    println!();
    println!(
        "queue: {} connections, put + reserve + delete cycles of {}-byte jobs, {} s each, beanstalkd protocol, 1 server thread",
        args.conns, args.size, args.secs
    );
    println!("| server | cycles/s per round | median cycles/s | p50 ms | p99 ms | strata's median ratio to it |");
    println!("|---|---|---|---|---|---|");
    let med = |v: &[Run], f: fn(&Run) -> f64| median(v.iter().map(f).collect());
    for v in &runs {
        // Ratios per round where both ran in that round, else of medians.
        let ratio = if v.len() == runs[0].len() {
            median(
                runs[0]
                    .iter()
                    .zip(v)
                    .map(|(s, r)| s.cycles_per_sec / r.cycles_per_sec)
                    .collect(),
            )
        } else {
            med(&runs[0], |r| r.cycles_per_sec) / med(v, |r| r.cycles_per_sec)
        };
        println!(
            "| {} | {} | {:.0} | {:.3} | {:.3} | {:.2}x |",
            v[0].server,
            v.iter()
                .map(|r| format!("{:.0}", r.cycles_per_sec))
                .collect::<Vec<_>>()
                .join(" / "),
            med(v, |r| r.cycles_per_sec),
            med(v, |r| r.p50_ms),
            med(v, |r| r.p99_ms),
            ratio
        );
    }
    println!();
    println!("crash: kill -9 during a stream of {} puts (8 connections), restart, peek every acknowledged id", args.crash_puts);
    println!("| server | acknowledged | found after restart | lost |");
    println!("|---|---|---|---|");
    for c in &crashes {
        println!(
            "| {} | {} | {} | {} |",
            c.server, c.acknowledged, c.found_after_restart, c.lost
        );
    }
    std::fs::write(
        out.join("queue.json"),
        serde_json::to_string_pretty(&serde_json::json!({"runs": runs, "crash": crashes}))?,
    )?;
    crate::plots_of::after_run(
        &out,
        "queue",
        &serde_json::json!({"runs": runs, "crash": crashes}),
    );
    Ok(())
}
