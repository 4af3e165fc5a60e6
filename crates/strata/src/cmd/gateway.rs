//! `strata gateway`: the load balancer, standalone from command-line
//! pools and routes, or as a cluster's gateway member.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use cluster::ClusterConfig;
use tokio::sync::watch;

/// Run the gateway (load balancer and reverse proxy): standalone in
/// front of the given backends, or as the gateway member --name of a
/// cluster file (pools and routes from its [gateway] table; SIGHUP
/// reloads the file).
#[derive(clap::Args)]
pub struct Gateway {
    /// The cluster file (run as the gateway member --name).
    #[arg(long, requires = "name", conflicts_with_all = ["backends", "pools", "routes"])]
    pub config: Option<PathBuf>,
    /// This process's member name in the cluster file.
    #[arg(long, requires = "config")]
    pub name: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// A backend address of the default pool (repeat for each).
    #[arg(long = "backend")]
    pub backends: Vec<SocketAddr>,
    /// A named pool, `NAME=ADDR,ADDR,...` (repeat for each); the first
    /// pool (or the --backend pool) is the default.
    #[arg(long = "pool")]
    pub pools: Vec<String>,
    /// A rule, `[METHOD ]PREFIX[ if NAME: VALUE]=POOL`, e.g.
    /// `PUT /v1/=writes`, `/v1/search=search` or
    /// `/ if X-Tenant: big=big` (repeat; the first match wins).
    #[arg(long = "route")]
    pub routes: Vec<String>,
    /// random, round-robin, least-conn, p2c, p2c-latency, load or hash.
    #[arg(long, default_value = "p2c")]
    pub algorithm: String,
    /// Per-client-IP limit, requests per second (429 above it); off by
    /// default.
    #[arg(long)]
    pub rate_limit: Option<f64>,
    /// Burst allowed above the rate (default: one second's worth).
    #[arg(long)]
    pub burst: Option<f64>,
    /// Most requests in flight per backend; more wait in a queue (off
    /// by default).
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Most requests waiting per backend before 503.
    #[arg(long, default_value_t = 100)]
    pub queue: usize,
    /// Longest wait in a backend's queue before 503, ms.
    #[arg(long, default_value_t = 1000)]
    pub queue_timeout_ms: u64,
    /// Hedged GETs: also ask a second backend after this many ms
    /// without an answer (off by default).
    #[arg(long)]
    pub hedge_after_ms: Option<u64>,
    /// Sticky sessions: a signed cookie pins each client to a backend.
    #[arg(long)]
    pub sticky: bool,
    /// Secret that signs sticky cookies (default: a random one per
    /// process, so cookies do not outlive it).
    #[arg(long)]
    pub secret: Option<String>,
    /// Bearer token that enables the admin API (add, remove, drain).
    #[arg(long)]
    pub admin_token: Option<String>,
    /// Also serve TLS (HTTP/2 by ALPN) on this address; needs --cert
    /// and --key.
    #[arg(long, requires_all = ["certs", "keys"])]
    pub tls_listen: Option<SocketAddr>,
    /// A PEM certificate chain (repeat with --key for more names; the
    /// first is the default).
    #[arg(long = "cert")]
    pub certs: Vec<PathBuf>,
    /// The PEM private key of the --cert at the same position.
    #[arg(long = "key")]
    pub keys: Vec<PathBuf>,
    /// Answer plain HTTP with a redirect to HTTPS.
    #[arg(long, requires = "tls_listen")]
    pub redirect_http: bool,
    /// Access log: a file, or `-` for stdout.
    #[arg(long)]
    pub access_log: Option<String>,
    /// Access log format: combined or json.
    #[arg(long, default_value = "combined")]
    pub access_log_format: String,
    /// Compress text responses (gzip, brotli) for clients that accept it.
    #[arg(long)]
    pub compress: bool,
    /// Give each request an X-Request-Id (kept when the client sent one).
    #[arg(long)]
    pub request_id: bool,
    /// Runtime worker threads (default: TOKIO_WORKER_THREADS or cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs `strata gateway` until `rx` says stop.
pub async fn run(a: Gateway, rx: watch::Receiver<bool>) -> anyhow::Result<()> {
    match a {
        Gateway {
            config: Some(path),
            name: Some(name),
            ..
        } => {
            let cfg = Arc::new(ClusterConfig::load(&path)?);
            let me = cfg.member(&name)?.clone();
            if me.role != cluster::Role::Gateway {
                anyhow::bail!(
                    "member `{name}` has role `{}`, not `gateway`",
                    me.role.as_str()
                );
            }
            let listener = strata::sockets::bind(me.listen_addr())
                .await
                .with_context(|| format!("cannot listen on {}", me.listen_addr()))?;
            let s3 = strata::gateway::bind_s3(&me).await?;
            println!(
                "strata gateway: {} on http://{}; status at /_strata/status; SIGHUP reloads {}",
                me.name,
                me.listen_addr(),
                path.display()
            );
            if let Some(a) = me.s3_addr {
                println!("  s3 on http://{a}, balanced across the nodes' S3 listeners");
            }
            strata::gateway::run_gateway(cfg, Some(path), listener, s3, rx).await
        }
        Gateway {
            listen,
            backends,
            pools,
            routes,
            algorithm,
            rate_limit,
            burst,
            max_in_flight,
            queue,
            queue_timeout_ms,
            hedge_after_ms,
            sticky,
            secret,
            admin_token,
            tls_listen,
            certs,
            keys,
            redirect_http,
            access_log,
            access_log_format,
            compress,
            request_id,
            ..
        } => {
            let mut named: Vec<(String, Vec<SocketAddr>)> = Vec::new();
            if !backends.is_empty() {
                named.push(("default".into(), backends));
            }
            for p in &pools {
                let (name, addrs) = p
                    .split_once('=')
                    .with_context(|| format!("--pool `{p}`: expected NAME=ADDR,ADDR"))?;
                let addrs = addrs
                    .split(',')
                    .map(|a| {
                        a.trim()
                            .parse::<SocketAddr>()
                            .with_context(|| format!("--pool `{p}`: bad address `{a}`"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                named.push((name.trim().to_owned(), addrs));
            }
            if named.is_empty() {
                anyhow::bail!("give at least one --backend or --pool (or --config and --name)");
            }
            let mut g = strata::gateway::standalone_config(&named, &routes)?;
            g.algorithm = algorithm.clone();
            g.rate_limit = rate_limit.unwrap_or(0.0);
            g.burst = burst.unwrap_or(0.0);
            g.max_in_flight = max_in_flight.unwrap_or(0);
            g.queue = queue;
            g.queue_timeout_ms = queue_timeout_ms;
            g.hedge_after_ms = hedge_after_ms.unwrap_or(0);
            g.sticky = sticky;
            g.compression.enabled = compress;
            g.request_id = request_id;
            g.access_log =
                access_log.map(|path| cluster::AccessLogConfig::new(path, access_log_format));
            if certs.len() != keys.len() {
                anyhow::bail!("give one --key per --cert");
            }
            g.tls = tls_listen.map(|listen| cluster::TlsConfig {
                listen,
                redirect_http,
                certs: certs
                    .into_iter()
                    .zip(keys)
                    .map(|(cert, key)| cluster::CertConfig { cert, key })
                    .collect(),
            });
            let mut cfg = ClusterConfig {
                gateway: g,
                ..ClusterConfig::parse("")?
            };
            cfg.auth.admin_token = admin_token;
            cfg.auth.secret = match (secret, sticky) {
                (Some(s), _) => Some(s),
                (None, true) => {
                    Some(node::session::random_hex(32).context("the OS's random source")?)
                }
                (None, false) => None,
            };
            cfg.validate()?;
            let listener = strata::sockets::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!(
                "strata gateway: http://{listen} -> {} pool(s), {} route(s) ({algorithm}); status at /_strata/status",
                named.len(),
                routes.len()
            );
            strata::gateway::run_gateway(Arc::new(cfg), None, listener, None, rx).await
        }
    }
}
