//! `strata serve`: every role in one process on loopback (the embedded
//! default), and what it prints: the addresses, the S3 keys it made, a
//! ready line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use cluster::ClusterConfig;
use tokio::sync::watch;

/// Run every role in one process on loopback: the embedded default.
#[derive(clap::Args)]
pub struct Serve {
    /// Data directory (volumes under store/, the index under index/).
    #[arg(long, default_value = "./strata-data")]
    pub data: PathBuf,
    /// Address of the public HTTP API (the gateway).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Request nodes behind the gateway; with 1, the node serves
    /// --listen itself and there is no gateway.
    #[arg(long, default_value_t = strata::SERVE_NODES)]
    pub nodes: usize,
    /// Optional settings file: the cluster-file format without
    /// [[member]] and [[gateway.pool]] tables.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Runtime worker threads (default: TOKIO_WORKER_THREADS or cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Address of the S3-compatible API, or `off`.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub s3_listen: String,
}

/// Runs `strata serve` until `rx` says stop.
pub async fn run(a: Serve, rx: watch::Receiver<bool>) -> anyhow::Result<()> {
    let Serve {
        data,
        listen,
        nodes,
        config,
        s3_listen,
        ..
    } = a;
    let cfg = match config {
        Some(p) => ClusterConfig::load(&p)?,
        None => ClusterConfig::parse("")?,
    };
    let listener = strata::sockets::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let s3 = match s3_listen.as_str() {
        "off" => None,
        a => {
            let a: SocketAddr = a
                .parse()
                .with_context(|| format!("--s3-listen: `{a}` is not an address or `off`"))?;
            Some(strata::sockets::bind(a).await.with_context(|| {
                format!("cannot listen on {a} (S3 API; --s3-listen off to go without)")
            })?)
        }
    };
    let h = strata::start_serve_with(&cfg, &data, listener, s3, nodes).await?;
    strata::sockets::warn_unused();
    println!("strata serve: data in {}", data.display());
    println!("  public API   http://{}/v1/blobs/ (gateway)", h.addr);
    println!("  status       http://{}/_strata/status", h.addr);
    for (i, a) in h.node_addrs.iter().enumerate() {
        println!(
            "  node {}       http://{a} (health /healthz, metrics /metrics)",
            i + 1
        );
    }
    println!("  store        http://{} (internal)", h.store_addr);
    println!("  index        http://{} (internal)", h.index_addr);
    if let Some(a) = h.cache_addr {
        println!("  cache        {a} (memcached protocol)");
    }
    println!("  queue        http://{} (jobs API)", h.queue_addr);
    println!("  beanstalkd   {} (beanstalkd protocol)", h.beanstalk_addr);
    if let (Some(a), Some(c)) = (h.s3_addr, &h.s3_credentials) {
        println!("  s3           http://{a} (S3 API, path style, region us-east-1)");
        println!("    access key {}", c.access_key);
        if cfg.s3.credentials.is_empty() {
            // serve's own pair, kept in the data directory.
            println!("    secret key {}", c.secret_key);
        }
    }
    for (i, a) in h.search_addrs.iter().enumerate() {
        println!("  search {i}     http://{a} (internal shard)");
    }
    println!("strata serve: ready (Ctrl-C stops it)");
    strata::shutdown_signal(rx).await;
    h.shutdown().await
}
