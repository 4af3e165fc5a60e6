//! Installing and configuring peer servers (Debian packages).

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A server process for one benchmark run, stopped when dropped (also when
/// the benchmark fails half-way): SIGTERM first, so that a master process
/// (nginx) takes its workers down with it, then SIGKILL after 2 s.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

use anyhow::{bail, Context};

/// Installs Debian packages whose binaries are missing.
pub fn ensure_installed(pkgs: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = pkgs
        .iter()
        .filter(|(bin, _)| !Path::new(bin).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing peers: {}", missing.join(" "));
    let ok = Command::new("apt-get")
        .arg("update")
        .arg("-qq")
        .status()?
        .success();
    if !ok {
        bail!("apt-get update failed");
    }
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?
        .success();
    if !ok {
        bail!("apt-get install {} failed", missing.join(" "));
    }
    Ok(())
}

/// nginx as the classic file-per-image server: `workers` workers, sendfile
/// on, no access log, long keep-alive (fair settings from BENCHMARKING.md);
/// with `file_cache`, `open_file_cache` keeps descriptors of up to 16,000
/// hot files open (the descriptor limit is raised to 19,000: this
/// machine's hard limit is 20,000; past it every open fails with a 500).
pub fn start_nginx_static(
    dir: &Path,
    root: &Path,
    port: u16,
    workers: usize,
    file_cache: bool,
) -> anyhow::Result<Child> {
    std::fs::create_dir_all(dir)?;
    let file_cache = if file_cache {
        "open_file_cache max=16000 inactive=60s;\n    open_file_cache_valid 60s;"
    } else {
        "open_file_cache off;"
    };
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile 19000;
pid {pid};
error_log {err} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    {file_cache}
    keepalive_requests 1000000;
    keepalive_timeout 65;
    types {{ }}
    default_type application/octet-stream;
    client_body_temp_path {tmp};
    proxy_temp_path {tmp};
    fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp};
    scgi_temp_path {tmp};
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
",
            pid = dir.join("nginx.pid").display(),
            err = dir.join("error.log").display(),
            tmp = dir.display(),
            root = root.display(),
        ),
    )?;
    let child = Command::new("/usr/sbin/nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting nginx")?;
    Ok(child)
}

/// An nginx.conf for one worker under `dir` (pid, error log and temp
/// files there, no access log, long keep-alive) whose `http` block holds
/// `http`.
pub fn nginx_conf(dir: &Path, http: &str) -> String {
    format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\nhttp {{ access_log off; keepalive_requests 1000000; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n{http}\n}}\n",
        d = dir.display()
    )
}

/// Starts nginx with `conf`, prefix `dir`.
pub fn spawn_nginx(conf: &Path, dir: &Path) -> anyhow::Result<Proc> {
    Ok(Proc(
        Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(conf)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .context("nginx")?,
    ))
}
