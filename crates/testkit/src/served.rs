//! A `strata serve` process as a user starts it: every listener on port 0,
//! the addresses and S3 keys read back from what it prints (no port is
//! picked before the process binds it, so nothing can take it meanwhile).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Where S3 clients go, with the keys they sign with, and the native API
/// beside it: a `serve` process's ([`Served::endpoint`]) or a cluster
/// gateway's.
#[derive(Debug, Clone)]
pub struct S3Endpoint {
    /// The native API (`/v1/blobs`).
    pub http: SocketAddr,
    /// The S3 API.
    pub s3: SocketAddr,
    /// Access key.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
}

impl S3Endpoint {
    /// An `aws` command (awscli) aimed at this S3 endpoint with its keys,
    /// and no user configuration (`home` stands in for `$HOME`).
    pub fn aws(&self, home: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("aws");
        c.args(["--endpoint-url", &self.s3_url()])
            .args(args)
            .env("HOME", home)
            .env("AWS_CONFIG_FILE", home.join("none"))
            .env("AWS_SHARED_CREDENTIALS_FILE", home.join("none"))
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env("AWS_DEFAULT_REGION", "us-east-1");
        c
    }

    /// `http://{s3}`.
    pub fn s3_url(&self) -> String {
        format!("http://{}", self.s3)
    }
}

/// A running `strata serve`; killed when dropped.
pub struct Served {
    child: Child,
    /// The data directory.
    pub data: PathBuf,
    /// The public HTTP API (the gateway).
    pub http: SocketAddr,
    /// The S3 API.
    pub s3: SocketAddr,
    /// The printed access key.
    pub access_key: String,
    /// The printed secret key.
    pub secret_key: String,
    /// Every HTTP listener it printed, by its printed name (`node 1`,
    /// `store`, `index`, `queue`, `search 0`, ...).
    pub listeners: std::collections::BTreeMap<String, SocketAddr>,
}

impl Served {
    /// Starts `bin serve` on `data` with `extra` arguments and waits until
    /// it has printed its addresses.
    pub fn start(bin: &Path, data: &Path, extra: &[&str]) -> anyhow::Result<Served> {
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--s3-listen",
                "127.0.0.1:0",
            ])
            .arg("--data")
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "warn,s3s=off")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (mut http, mut s3, mut ak, mut sk) = (None, None, None, None);
        let mut listeners = std::collections::BTreeMap::new();
        let mut lines = BufReader::new(out).lines();
        loop {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                anyhow::bail!("serve exited before printing its addresses");
            };
            let line = line?;
            if line.starts_with("strata serve: ready") {
                break;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let addr = |w: &str| -> anyhow::Result<SocketAddr> {
                let hostport = w
                    .trim_start_matches("http://")
                    .split('/')
                    .next()
                    .unwrap_or_default();
                Ok(hostport.parse()?)
            };
            if let Some(at) = words.iter().position(|w| w.starts_with("http://")) {
                if at > 0 {
                    listeners.insert(words[..at].join(" "), addr(words[at])?);
                }
            }
            match words.as_slice() {
                ["public", "API", a, ..] => http = Some(addr(a)?),
                ["s3", a, ..] => s3 = Some(addr(a)?),
                ["access", "key", k] => ak = Some(k.to_string()),
                ["secret", "key", k] => sk = Some(k.to_string()),
                _ => {}
            }
        }
        let (Some(_), Some(_), Some(_), Some(_)) = (&http, &s3, &ak, &sk) else {
            let _ = child.kill();
            anyhow::bail!("serve printed no public API, S3 endpoint or key pair");
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Served {
            child,
            data: data.to_owned(),
            http: http.unwrap_or_else(|| unreachable!()),
            s3: s3.unwrap_or_else(|| unreachable!()),
            access_key: ak.unwrap_or_default(),
            secret_key: sk.unwrap_or_default(),
            listeners,
        })
    }

    /// [`Served::start`] with a settings file holding `config` (TOML) in
    /// `dir`, and the data under `dir/data`.
    pub fn start_with_config(bin: &Path, dir: &Path, config: &str) -> anyhow::Result<Served> {
        let cfg = dir.join("strata.toml");
        std::fs::write(&cfg, config)?;
        let cfg = cfg
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("path is not UTF-8"))?;
        Served::start(bin, &dir.join("data"), &["--config", cfg])
    }

    /// Its S3 endpoint, keys and native API.
    pub fn endpoint(&self) -> S3Endpoint {
        S3Endpoint {
            http: self.http,
            s3: self.s3,
            access_key: self.access_key.clone(),
            secret_key: self.secret_key.clone(),
        }
    }

    /// An `aws` command aimed at this S3 endpoint ([`S3Endpoint::aws`]).
    pub fn aws(&self, home: &Path, args: &[&str]) -> Command {
        self.endpoint().aws(home, args)
    }

    /// `http://{s3}`.
    pub fn s3_url(&self) -> String {
        self.endpoint().s3_url()
    }

    /// Stops it (SIGKILL) and waits.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `python3` that can import boto3: the one on `PATH`, else Debian's.
pub fn python_with_boto3() -> anyhow::Result<Command> {
    for p in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(p)
            .args(["-c", "import boto3"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(Command::new(p));
        }
    }
    anyhow::bail!("boto3 is not installed (apt-get install python3-boto3)")
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}
