//! `strata`: one binary, one role per process (or all of them with `serve`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cluster::ClusterConfig;
use tokio::sync::watch;

/// strata — a horizontally scalable data-access tier for image hosting.
#[derive(Parser)]
#[command(name = "strata", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run every role in one process on loopback: the embedded default.
    Serve {
        /// Data directory (volumes under store/, the index under index/).
        #[arg(long, default_value = "./strata-data")]
        data: PathBuf,
        /// Address of the public HTTP API (the gateway).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Request nodes behind the gateway; with 1, the node serves
        /// --listen itself and there is no gateway.
        #[arg(long, default_value_t = strata::SERVE_NODES)]
        nodes: usize,
        /// Optional settings file: the cluster-file format without
        /// [[member]] and [[gateway.pool]] tables.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Runtime worker threads (default: TOKIO_WORKER_THREADS or cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Address of the S3-compatible API, or `off`.
        #[arg(long, default_value = "127.0.0.1:9000")]
        s3_listen: String,
    },
    /// Run a memcached-compatible cache server: standalone with --listen and
    /// --memory-mb, or as a cluster member with --config and --name.
    Cache {
        /// The cluster file (run as the cache member --name).
        #[arg(long, requires = "name", conflicts_with_all = ["memory_mb", "item_max"])]
        config: Option<PathBuf>,
        /// This process's member name in the cluster file.
        #[arg(long, requires = "config")]
        name: Option<String>,
        /// Address to listen on (standalone).
        #[arg(long, default_value = "127.0.0.1:11211")]
        listen: SocketAddr,
        /// Memory limit in MiB, per-item overhead included (memcached's -m).
        #[arg(long, default_value_t = 64)]
        memory_mb: usize,
        /// Largest value in bytes (memcached's -I).
        #[arg(long, default_value_t = 1 << 20)]
        item_max: usize,
        /// Most simultaneous connections (memcached's -c).
        #[arg(long, default_value_t = 10_000)]
        max_connections: usize,
        /// Runtime worker threads (memcached's -t).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Run the gateway (load balancer and reverse proxy): standalone in
    /// front of the given backends, or as the gateway member --name of a
    /// cluster file (pools and routes from its [gateway] table; SIGHUP
    /// reloads the file).
    Gateway {
        /// The cluster file (run as the gateway member --name).
        #[arg(long, requires = "name", conflicts_with_all = ["backends", "pools", "routes"])]
        config: Option<PathBuf>,
        /// This process's member name in the cluster file.
        #[arg(long, requires = "config")]
        name: Option<String>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
        /// A backend address of the default pool (repeat for each).
        #[arg(long = "backend")]
        backends: Vec<SocketAddr>,
        /// A named pool, `NAME=ADDR,ADDR,...` (repeat for each); the first
        /// pool (or the --backend pool) is the default.
        #[arg(long = "pool")]
        pools: Vec<String>,
        /// A rule, `[METHOD ]PREFIX[ if NAME: VALUE]=POOL`, e.g.
        /// `PUT /v1/=writes`, `/v1/search=search` or
        /// `/ if X-Tenant: big=big` (repeat; the first match wins).
        #[arg(long = "route")]
        routes: Vec<String>,
        /// random, round-robin, least-conn, p2c, p2c-latency, load or hash.
        #[arg(long, default_value = "p2c")]
        algorithm: String,
        /// Per-client-IP limit, requests per second (429 above it); off by
        /// default.
        #[arg(long)]
        rate_limit: Option<f64>,
        /// Burst allowed above the rate (default: one second's worth).
        #[arg(long)]
        burst: Option<f64>,
        /// Most requests in flight per backend; more wait in a queue (off
        /// by default).
        #[arg(long)]
        max_in_flight: Option<usize>,
        /// Most requests waiting per backend before 503.
        #[arg(long, default_value_t = 100)]
        queue: usize,
        /// Longest wait in a backend's queue before 503, ms.
        #[arg(long, default_value_t = 1000)]
        queue_timeout_ms: u64,
        /// Hedged GETs: also ask a second backend after this many ms
        /// without an answer (off by default).
        #[arg(long)]
        hedge_after_ms: Option<u64>,
        /// Sticky sessions: a signed cookie pins each client to a backend.
        #[arg(long)]
        sticky: bool,
        /// Secret that signs sticky cookies (default: a random one per
        /// process, so cookies do not outlive it).
        #[arg(long)]
        secret: Option<String>,
        /// Bearer token that enables the admin API (add, remove, drain).
        #[arg(long)]
        admin_token: Option<String>,
        /// Also serve TLS (HTTP/2 by ALPN) on this address; needs --cert
        /// and --key.
        #[arg(long, requires_all = ["certs", "keys"])]
        tls_listen: Option<SocketAddr>,
        /// A PEM certificate chain (repeat with --key for more names; the
        /// first is the default).
        #[arg(long = "cert")]
        certs: Vec<PathBuf>,
        /// The PEM private key of the --cert at the same position.
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
        /// Answer plain HTTP with a redirect to HTTPS.
        #[arg(long, requires = "tls_listen")]
        redirect_http: bool,
        /// Access log: a file, or `-` for stdout.
        #[arg(long)]
        access_log: Option<String>,
        /// Access log format: combined or json.
        #[arg(long, default_value = "combined")]
        access_log_format: String,
        /// Compress text responses (gzip, brotli) for clients that accept it.
        #[arg(long)]
        compress: bool,
        /// Give each request an X-Request-Id (kept when the client sent one).
        #[arg(long)]
        request_id: bool,
        /// Runtime worker threads (default: TOKIO_WORKER_THREADS or cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Run the durable job queue: standalone with --listen and --data, or as
    /// the queue member --name of a cluster file.
    Queue {
        /// The cluster file (run as the queue member --name).
        #[arg(long, requires = "name", conflicts_with_all = ["data", "beanstalk_listen"])]
        config: Option<PathBuf>,
        /// This process's member name in the cluster file.
        #[arg(long, requires = "config")]
        name: Option<String>,
        /// Address of the HTTP/JSON API.
        #[arg(long, default_value = "127.0.0.1:7700")]
        listen: SocketAddr,
        /// Directory of the job log.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Also speak the beanstalkd protocol on this address.
        #[arg(long)]
        beanstalk_listen: Option<SocketAddr>,
        /// Answer a delete only once it is synced (`queue.sync_deletes`).
        #[arg(long, conflicts_with = "config")]
        sync_deletes: bool,
        /// Runtime worker threads (default: TOKIO_WORKER_THREADS or cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Run a blob store (volumes + needle map) from a cluster file.
    Store(RoleArgs),
    /// Run the name index from a cluster file.
    Index(RoleArgs),
    /// Run a request node (the public API) from a cluster file.
    Node(RoleArgs),
    /// Run a search shard (book pages) from a cluster file.
    Search(RoleArgs),
    /// Bulk-load a directory of books: DIR/<book>/<page>.png (or .jpg, ...)
    /// with DIR/<book>/<page>.txt; returns once every page is searchable.
    Import {
        /// The directory of books.
        dir: PathBuf,
        /// The public API to upload through (gateway or node).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Bearer token for writes (auth.write_token).
        #[arg(long)]
        token: Option<String>,
        /// Uploads in flight.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Rebuild the name index from the stores' needles (after the index
    /// was lost): every key with its record, deleted keys staying deleted.
    RecoverIndex {
        /// A cluster file: its stores are read (while they serve) and its
        /// `[index]` backend is written.
        #[arg(long, conflicts_with = "data", required_unless_present = "data")]
        config: Option<PathBuf>,
        /// The data directory of `strata serve` (stop it first).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Write over an index that already holds keys (and remove keys no
        /// store names).
        #[arg(long)]
        replace: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Rebuild search shards from the index and the stored page texts
    /// (after a search member lost its data, or missed changes for longer
    /// than its catch-up jobs waited).
    Reindex {
        /// A cluster file: pages go to its search members while they serve.
        #[arg(long, conflicts_with = "data", required_unless_present = "data")]
        config: Option<PathBuf>,
        /// The data directory of `strata serve` (stop it first).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Only this search member (default: every one).
        #[arg(long)]
        member: Option<String>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(clap::Args)]
struct RoleArgs {
    /// The cluster file (TOML) listing every member.
    #[arg(long)]
    config: PathBuf,
    /// This process's member name in the cluster file.
    #[arg(long)]
    name: String,
    /// Runtime worker threads (default: TOKIO_WORKER_THREADS or cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            // s3s logs every refused S3 request (a 404, a bad signature)
            // as an error; the client got S3's error body already.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,s3s=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let threads = match &cli.cmd {
        Cmd::Serve { threads, .. }
        | Cmd::Cache { threads, .. }
        | Cmd::Gateway { threads, .. }
        | Cmd::Queue { threads, .. } => *threads,
        Cmd::Store(a) | Cmd::Index(a) | Cmd::Node(a) | Cmd::Search(a) => a.threads,
        Cmd::Import { .. } | Cmd::RecoverIndex { .. } | Cmd::Reindex { .. } => None,
    };
    // One thread: a current-thread runtime, where a woken task runs on the
    // thread that woke it with no cross-thread handoff (the gateway's
    // proxied request wakes several tasks per request).
    let mut rt = if threads == Some(1) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    rt.enable_all();
    if let Some(n) = threads.filter(|&n| n > 1) {
        rt.worker_threads(n);
    }
    rt.build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (stop, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop.send(true);
    });
    match cli.cmd {
        Cmd::Serve {
            data,
            listen,
            nodes,
            config,
            s3_listen,
            ..
        } => {
            let cfg = match config {
                Some(p) => ClusterConfig::load(&p)?,
                None => ClusterConfig::parse("")?,
            };
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let s3 = match s3_listen.as_str() {
                "off" => None,
                a => {
                    let a: SocketAddr = a.parse().with_context(|| {
                        format!("--s3-listen: `{a}` is not an address or `off`")
                    })?;
                    Some(tokio::net::TcpListener::bind(a).await.with_context(|| {
                        format!("cannot listen on {a} (S3 API; --s3-listen off to go without)")
                    })?)
                }
            };
            let h = strata::start_serve_with(&cfg, &data, listener, s3, nodes).await?;
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
        Cmd::Gateway {
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
            let listener = tokio::net::TcpListener::bind(me.listen_addr())
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
        Cmd::Gateway {
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
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!(
                "strata gateway: http://{listen} -> {} pool(s), {} route(s) ({algorithm}); status at /_strata/status",
                named.len(),
                routes.len()
            );
            strata::gateway::run_gateway(Arc::new(cfg), None, listener, None, rx).await
        }
        Cmd::Cache {
            config: Some(config),
            name: Some(name),
            threads,
            ..
        } => {
            let cfg = Arc::new(ClusterConfig::load(&config)?);
            let me = cfg.member(&name)?.clone();
            if me.role != cluster::Role::Cache {
                anyhow::bail!(
                    "member `{name}` has role `{}`, not `cache`",
                    me.role.as_str()
                );
            }
            let listener = tokio::net::TcpListener::bind(me.listen_addr())
                .await
                .with_context(|| format!("cannot listen on {}", me.listen_addr()))?;
            println!(
                "strata cache: {} (memcached protocol) on {}",
                me.name,
                me.listen_addr()
            );
            let server = strata::cache_member(&cfg, threads);
            cache::server::serve(listener, server, strata::shutdown_signal(rx)).await?;
            Ok(())
        }
        Cmd::Cache {
            listen,
            memory_mb,
            item_max,
            max_connections,
            threads,
            ..
        } => {
            if memory_mb == 0 || item_max == 0 || item_max > memory_mb << 20 {
                anyhow::bail!("--memory-mb and --item-max must be positive, and --item-max at most the memory");
            }
            let cache = std::sync::Arc::new(cache::Cache::new(
                cache::CacheConfig {
                    max_bytes: memory_mb << 20,
                    item_max,
                    policy: cache::Policy::S3Fifo,
                },
                std::sync::Arc::new(cache::SystemClock),
            ));
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let server = cache::server::CacheServer::new(
                cache,
                cache::server::ServerOptions {
                    max_connections,
                    threads,
                    // Standalone, like memcached without -Y: no login.
                    auth: None,
                },
            );
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!(
                "strata cache: memcached protocol on {} ({memory_mb} MiB)",
                listener.local_addr()?
            );
            cache::server::serve(listener, server, strata::shutdown_signal(rx)).await?;
            Ok(())
        }
        Cmd::Queue {
            config: Some(config),
            name: Some(name),
            ..
        } => {
            let cfg = Arc::new(ClusterConfig::load(&config)?);
            let me = cfg.member(&name)?.clone();
            if me.role != cluster::Role::Queue {
                anyhow::bail!(
                    "member `{name}` has role `{}`, not `queue`",
                    me.role.as_str()
                );
            }
            let listener = tokio::net::TcpListener::bind(me.listen_addr())
                .await
                .with_context(|| format!("cannot listen on {}", me.listen_addr()))?;
            println!("strata queue: {} on http://{}", me.name, me.listen_addr());
            strata::run_role(cfg, &name, listener, rx).await
        }
        Cmd::Queue {
            listen,
            data,
            beanstalk_listen,
            sync_deletes,
            ..
        } => {
            let data = data.context("give --data DIR (or --config and --name)")?;
            let mut cfg = ClusterConfig::parse("")?;
            cfg.queue.sync_deletes = sync_deletes;
            let broker = strata::open_broker(&cfg, &data)?;
            if let Some(b) = beanstalk_listen {
                let l = tokio::net::TcpListener::bind(b)
                    .await
                    .with_context(|| format!("cannot listen on {b}"))?;
                println!("strata queue: beanstalkd protocol on {}", l.local_addr()?);
                tokio::spawn(queue::beanstalk::serve(
                    l,
                    broker.clone(),
                    queue::beanstalk::BeanstalkOptions::default(),
                    strata::shutdown_signal(rx.clone()),
                ));
            }
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!(
                "strata queue: jobs API on http://{}",
                listener.local_addr()?
            );
            queue::http::serve(listener, broker, strata::shutdown_signal(rx)).await?;
            Ok(())
        }
        Cmd::RecoverIndex {
            config,
            data,
            replace,
            quiet,
        } => {
            let (stores, index): (Vec<node::StoreMember>, Arc<dyn index::Index>) =
                match (config, data) {
                    (Some(path), _) => {
                        let cfg = ClusterConfig::load(&path)?;
                        let stores = strata::cluster_stores(&cfg);
                        if stores.is_empty() {
                            anyhow::bail!("{} names no store", path.display());
                        }
                        (stores, strata::cluster_index_backend(&cfg).await?)
                    }
                    (None, Some(dir)) => {
                        let (store, _) =
                            store::Store::open(&dir.join("store"), store::StoreOptions::default())
                                .with_context(|| {
                                    format!("opening the store in {}", dir.display())
                                })?;
                        let db = index::IndexDb::open(&dir.join("index")).with_context(|| {
                            format!(
                                "opening the index in {} (is strata serve still running?)",
                                dir.display()
                            )
                        })?;
                        let local = node::StoreMember {
                            name: strata::SERVE_STORE.into(),
                            handle: node::StoreHandle::Local(store),
                        };
                        (vec![local], db)
                    }
                    (None, None) => anyhow::bail!("pass --config or --data"),
                };
            let s = strata::recover::run(&stores, index, replace, quiet).await?;
            println!(
                "recovered {} keys ({} replicas) from {} needles in {:.1} s: {} conflicts resolved, {} deleted keys kept deleted, {} keys no store names removed, {} needles without a key (volume format 1)",
                s.keys, s.replicas, s.needles, s.secs, s.conflicts, s.deleted, s.removed, s.unnamed
            );
            Ok(())
        }
        Cmd::Reindex {
            config,
            data,
            member,
            quiet,
        } => {
            let r = match (config, data) {
                (Some(path), _) => {
                    let cfg = ClusterConfig::load(&path)?;
                    strata::reindex::run_cluster(&cfg, member.as_deref(), quiet).await?
                }
                (None, Some(dir)) => {
                    strata::reindex::run_serve(&dir, member.as_deref(), quiet).await?
                }
                (None, None) => anyhow::bail!("pass --config or --data"),
            };
            println!(
                "reindexed {} pages of {} keys in {:.1} s: {} page copies applied, {} already current, {} without stored text (uploaded before text was kept), {} with unreadable text (their blobs are gone or no store answered: see the log; a second run retries them)",
                r.pages, r.keys, r.secs, r.applied, r.stale, r.without_text, r.unreadable
            );
            Ok(())
        }
        Cmd::Import {
            dir,
            url,
            token,
            concurrency,
            quiet,
        } => {
            let t0 = std::time::Instant::now();
            let r = strata::import::run(&dir, &url, token.as_deref(), concurrency, quiet).await?;
            println!(
                "imported {} pages ({} bytes) in {:.1} s; {} indexing jobs failed",
                r.pages,
                r.bytes,
                t0.elapsed().as_secs_f64(),
                r.failed_jobs
            );
            if r.failed_jobs > 0 {
                anyhow::bail!(
                    "{} pages are not searchable (dead indexing jobs)",
                    r.failed_jobs
                );
            }
            Ok(())
        }
        Cmd::Store(a) | Cmd::Index(a) | Cmd::Node(a) | Cmd::Search(a) => {
            let cfg = Arc::new(ClusterConfig::load(&a.config)?);
            let me = cfg.member(&a.name)?.clone();
            let listener = tokio::net::TcpListener::bind(me.listen_addr())
                .await
                .with_context(|| format!("cannot listen on {}", me.listen_addr()))?;
            println!(
                "strata {}: {} listening on http://{}",
                me.role.as_str(),
                me.name,
                me.listen_addr()
            );
            strata::run_role(cfg, &a.name, listener, rx).await
        }
    }
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
