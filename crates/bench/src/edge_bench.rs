//! `edge`: TLS + HTTP/2 at the edge. h2load (`-n 200000 -c 50 -m 10`)
//! against strata's gateway and against nginx configured the same way
//! (TLS with the same ECDSA P-256 certificate, HTTP/2, one worker, access
//! log off, keep-alive to the backend), both in front of the same 1 KiB
//! nginx backend; alternating rounds, medians. Then strata with its access
//! log on (a file, JSON and combined) against the same strata with it off:
//! the logging cost.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::balancer_bench::{wait_port, write};
use crate::dist::median;
use crate::peers::{self, Proc};
use crate::proc_stat::{cpu_ticks, TICKS_PER_SEC};

/// Options of `edge`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Alternating rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Requests per run (h2load -n).
    #[arg(long, default_value_t = 200_000)]
    requests: u64,
    /// Client connections (h2load -c).
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Streams in flight per connection (h2load -m).
    #[arg(long, default_value_t = 10)]
    streams: usize,
    /// Working directory.
    #[arg(long, default_value = "target/bench/edge")]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_pct: f64,
}

/// One h2load run against `port`; latency percentiles from its per-request
/// log (h2load itself prints only min/max/mean).
fn h2load(pid: u32, port: u16, a: &Args, dir: &Path, n: u64) -> anyhow::Result<Run> {
    let log = dir.join("h2load.log");
    let _ = std::fs::remove_file(&log);
    let before = cpu_ticks(pid);
    let t = std::time::Instant::now();
    let out = Command::new("h2load")
        .args([
            "-n",
            &n.to_string(),
            "-c",
            &a.conns.to_string(),
            "-m",
            &a.streams.to_string(),
            "-t",
            "1",
            "--log-file",
        ])
        .arg(&log)
        .arg(format!("https://127.0.0.1:{port}/img"))
        .output()
        .context("running h2load")?;
    let secs = t.elapsed().as_secs_f64();
    let cpu_pct = (cpu_ticks(pid) - before) as f64 / TICKS_PER_SEC / secs * 100.0;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|v| v.trim_end_matches(" req/s").parse::<f64>().ok())
        .with_context(|| format!("h2load output: {text}"))?;
    let ok = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .is_some_and(|l| l.contains(&format!("{n} succeeded")));
    if !ok {
        bail!("not every request succeeded on port {port}:\n{text}");
    }
    if !text.contains("h2") {
        bail!("h2load did not negotiate h2 on port {port}:\n{text}");
    }
    // start (µs) \t status \t duration (µs)
    let mut us: Vec<f64> = std::fs::read_to_string(&log)?
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse::<f64>().ok())
        .collect();
    us.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| us.get(((us.len() as f64 * p) as usize).min(us.len().saturating_sub(1)));
    Ok(Run {
        rps,
        p50_ms: pct(0.50).copied().unwrap_or(0.0) / 1000.0,
        p99_ms: pct(0.99).copied().unwrap_or(0.0) / 1000.0,
        cpu_pct,
    })
}

/// Runs `edge`.
pub fn run(a: Args) -> anyhow::Result<()> {
    peers::ensure_installed(&[
        ("/usr/sbin/nginx", "nginx"),
        ("/usr/bin/h2load", "nghttp2-client"),
    ])?;
    let bin = crate::store_bench::strata_bin()?;
    let _ = std::fs::remove_dir_all(&a.out);
    for d in ["nginx-b", "nginx-p", "nginx-l", "logs"] {
        std::fs::create_dir_all(a.out.join(d))?;
    }
    let out = std::fs::canonicalize(&a.out)?;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let (crt, key) = (out.join("edge.pem"), out.join("edge.key"));
    std::fs::write(&crt, cert.cert.pem())?;
    std::fs::write(&key, cert.signing_key.serialize_pem())?;
    // Every port at once, the probe sockets held together: ports probed
    // one by one can come back twice.
    let probes = (0..9)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut ports = probes
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()?;
    drop(probes);
    let mut port = move || ports.pop().context("out of probed ports");
    let (b1, np, nl) = (port()?, port()?, port()?);
    let kib = "x".repeat(1024);
    let bdir = out.join("nginx-b");
    let backend = write(
        &bdir.join("nginx.conf"),
        &peers::nginx_conf(
            &bdir,
            &format!("server {{ listen 127.0.0.1:{b1}; location / {{ return 200 '{kib}'; }} }}"),
        ),
    )?;
    let pdir = out.join("nginx-p");
    // nginx 1.22: `http2` on the listen line; the same certificate, TLS
    // defaults, session cache off on both sides (h2load opens each
    // connection once).
    // The same nginx with its access log on (combined, written per
    // request, nginx's default), for the logging cost side by side.
    let proxy_conf = |dir: &Path, port: u16, log: &str| -> anyhow::Result<PathBuf> {
        write(
            &dir.join("nginx.conf"),
            &peers::nginx_conf(
                dir,
                &format!(
                    "http2_max_concurrent_streams 128;\n  upstream b {{ server 127.0.0.1:{b1}; keepalive 64; keepalive_requests 1000000; }}\n  server {{ listen 127.0.0.1:{port} ssl http2; ssl_certificate {crt}; ssl_certificate_key {key}; {log} location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}",
                    crt = crt.display(),
                    key = key.display(),
                ),
            ),
        )
    };
    let ldir = out.join("nginx-l");
    let nginx_log = out.join("logs/nginx-access.log");
    let nginx_conf = proxy_conf(&pdir, np, "")?;
    let nginx_logged_conf = proxy_conf(
        &ldir,
        nl,
        &format!("access_log {} combined;", nginx_log.display()),
    )?;
    let _backend = peers::spawn_nginx(&backend, &bdir)?;
    let nginx = peers::spawn_nginx(&nginx_conf, &pdir)?;
    let nginx_logged = peers::spawn_nginx(&nginx_logged_conf, &ldir)?;
    // strata: the same certificate; one runtime thread like nginx's one
    // worker; plain listener unused.
    let mut strata = |log: Option<(&str, &str)>| -> anyhow::Result<(Proc, u16)> {
        let tp = port()?;
        let mut cmd = Command::new(&bin);
        cmd.args(["gateway", "--listen", &format!("127.0.0.1:{}", port()?)])
            .args(["--backend", &format!("127.0.0.1:{b1}")])
            .args(["--algorithm", "round-robin", "--threads", "1"])
            .args(["--tls-listen", &format!("127.0.0.1:{tp}")])
            .arg("--cert")
            .arg(&crt)
            .arg("--key")
            .arg(&key);
        if let Some((file, format)) = log {
            cmd.args(["--access-log", file, "--access-log-format", format]);
        }
        let p = cmd
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("strata gateway")?;
        Ok((Proc(p), tp))
    };
    let (plain, sp) = strata(None)?;
    let json_log = out.join("logs/access.json");
    let clf_log = out.join("logs/access.log");
    let (logged_json, lj) = strata(Some((&json_log.to_string_lossy(), "json")))?;
    let (logged_clf, lc) = strata(Some((&clf_log.to_string_lossy(), "combined")))?;
    for p in [b1, np, nl, sp, lj, lc] {
        wait_port(p)?;
    }
    let servers: [(&str, u32, u16); 5] = [
        ("strata", plain.0.id(), sp),
        ("nginx", nginx.0.id(), np),
        ("strata + access log (JSON)", logged_json.0.id(), lj),
        ("strata + access log (combined)", logged_clf.0.id(), lc),
        ("nginx + access log (combined)", nginx_logged.0.id(), nl),
    ];
    for (_, pid, p) in servers {
        h2load(pid, p, &a, &out, a.requests / 10)?;
    }
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); servers.len()];
    for r in 0..a.rounds {
        // The order rotates each round, so that no server always runs
        // first or last (page cache, clock speed).
        for j in 0..servers.len() {
            let k = (j + r) % servers.len();
            let (name, pid, p) = &servers[k];
            let m = h2load(*pid, *p, &a, &out, a.requests)?;
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
    println!();
    println!(
        "edge: h2load -n {} -c {} -m {} over TLS (ECDSA P-256) + HTTP/2, 1 KiB responses from one nginx backend, 1 thread/worker each, 2 cores, median of {} rounds (order rotating)",
        a.requests, a.conns, a.streams, a.rounds
    );
    println!("| server | req/s | p50 ms | p99 ms | CPU % | ratio vs nginx |");
    println!("|---|---|---|---|---|---|");
    let nginx_rps = med(&runs[1], |r| r.rps);
    let mut json = Vec::new();
    for (k, (name, _, _)) in servers.iter().enumerate() {
        let rps = med(&runs[k], |r| r.rps);
        println!(
            "| {name} | {rps:.0} | {:.3} | {:.3} | {:.0} | {:.2}x |",
            med(&runs[k], |r| r.p50_ms),
            med(&runs[k], |r| r.p99_ms),
            med(&runs[k], |r| r.cpu_pct),
            rps / nginx_rps
        );
        json.push(serde_json::json!({"server": name, "runs": runs[k]}));
    }
    for (k, base, name) in [
        (2, 0, "strata, JSON"),
        (3, 0, "strata, combined"),
        (4, 1, "nginx, combined"),
    ] {
        // Paired by round (runs a minute apart), then the median.
        let ratios: Vec<f64> = runs[k]
            .iter()
            .zip(&runs[base])
            .map(|(l, s)| l.rps / s.rps)
            .collect();
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "access log ({name}) cost: {:.1}% of throughput (logged/unlogged per round: {})",
            (1.0 - median(ratios)) * 100.0,
            shown.join(" ")
        );
    }
    // The writer flushes within 100 ms.
    std::thread::sleep(std::time::Duration::from_millis(500));
    for (name, p) in [("JSON", &json_log), ("combined", &clf_log)] {
        let n = std::fs::read_to_string(p).map_or(0, |t| t.lines().count()) as u64;
        let want = a.requests / 10 + a.requests * a.rounds as u64;
        if n != want {
            bail!("{name} access log has {n} lines, expected {want} (a line dropped, or a server mixed up)");
        }
    }
    let lines = |p: &Path| std::fs::read_to_string(p).map_or(0, |t| t.lines().count());
    println!(
        "access log lines written: {} JSON, {} combined",
        lines(&json_log),
        lines(&clf_log)
    );
    std::fs::write(out.join("edge.json"), serde_json::to_string_pretty(&json)?)?;
    crate::plots_of::after_run(&out, "edge", &serde_json::to_value(&json)?);
    Ok(())
}
