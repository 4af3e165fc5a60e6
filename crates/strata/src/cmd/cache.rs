//! `strata cache`: a memcached-protocol cache server, standalone or as a
//! cluster member.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use cluster::ClusterConfig;
use tokio::sync::watch;

/// Run a memcached-compatible cache server: standalone with --listen and
/// --memory-mb, or as a cluster member with --config and --name.
#[derive(clap::Args)]
pub struct Cache {
    /// The cluster file (run as the cache member --name).
    #[arg(long, requires = "name", conflicts_with_all = ["memory_mb", "item_max"])]
    pub config: Option<PathBuf>,
    /// This process's member name in the cluster file.
    #[arg(long, requires = "config")]
    pub name: Option<String>,
    /// Address to listen on (standalone).
    #[arg(long, default_value = "127.0.0.1:11211")]
    pub listen: SocketAddr,
    /// Memory limit in MiB, per-item overhead included (memcached's -m).
    #[arg(long, default_value_t = 64)]
    pub memory_mb: usize,
    /// Largest value in bytes (memcached's -I).
    #[arg(long, default_value_t = 1 << 20)]
    pub item_max: usize,
    /// Most simultaneous connections (memcached's -c).
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Runtime worker threads (memcached's -t).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs `strata cache` until `rx` says stop.
pub async fn run(a: Cache, rx: watch::Receiver<bool>) -> anyhow::Result<()> {
    match a {
        Cache {
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
            let listener = strata::sockets::bind(me.listen_addr())
                .await
                .with_context(|| format!("cannot listen on {}", me.listen_addr()))?;
            println!(
                "strata cache: {} (memcached protocol) on {}",
                me.name,
                me.listen_addr()
            );
            let server = strata::cache_member(&cfg, threads);
            strata::sockets::warn_unused();
            cache::server::serve(listener, server, strata::shutdown_signal(rx)).await?;
            Ok(())
        }
        Cache {
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
            let listener = strata::sockets::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!(
                "strata cache: memcached protocol on {} ({memory_mb} MiB)",
                listener.local_addr()?
            );
            strata::sockets::warn_unused();
            cache::server::serve(listener, server, strata::shutdown_signal(rx)).await?;
            Ok(())
        }
    }
}
