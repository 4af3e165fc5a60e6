//! The cache tier as roles and nodes use it: a cache member (plain, or
//! reading through from the stores), its memcached server, the node's
//! cache tiers (local memory, disk, the distributed members) and the
//! credential both sides use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use cluster::{ClusterConfig, Role};
use node::StoreMember;

use crate::cluster_stores;

/// A cache member of `cfg`: read-through from the stores in `through`
/// mode, plain otherwise.
pub fn cache_member(
    cfg: &ClusterConfig,
    threads: Option<usize>,
) -> Arc<cache::server::CacheServer> {
    let plain = cache_server(cfg, threads);
    if cfg.cache.mode != cluster::CacheMode::Through {
        return plain;
    }
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    cache::server::CacheServer::with_read_through(
        plain.cache.clone(),
        cache::server::ServerOptions {
            max_connections: 10_000,
            threads,
            auth: cache_credential(cfg),
        },
        cache::through::ReadThrough::with_collapsing(
            Arc::new(StoreOrigin::from_cluster(cfg)),
            cfg.proxy.cache_collapse,
        ),
    )
}

/// A memcached-protocol cache server sized by `[cache]`.
pub fn cache_server(
    cfg: &ClusterConfig,
    threads: Option<usize>,
) -> Arc<cache::server::CacheServer> {
    let engine = Arc::new(cache::Cache::new(
        cache::CacheConfig {
            max_bytes: cfg.cache.memory_mb << 20,
            item_max: cfg.cache.item_max,
            policy: cache::Policy::S3Fifo,
        },
        Arc::new(cache::SystemClock),
    ));
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    cache::server::CacheServer::new(
        engine,
        cache::server::ServerOptions {
            max_connections: 10_000,
            threads,
            auth: cache_credential(cfg),
        },
    )
}

pub(crate) fn caching_options(cfg: &ClusterConfig) -> node::CachingOptions {
    node::CachingOptions {
        meta_ttl_secs: cfg.cache.meta_ttl_secs,
        hot_threshold: cfg.cache.hot_threshold,
        item_max: cfg.cache.item_max,
        through: cfg.cache.mode == cluster::CacheMode::Through,
    }
}

/// The origin of a read-through cache member: blob bytes (`d:<id>`) from
/// the stores, tried in the blob's rendezvous order (where its copies were
/// written unless a store was down at the time, then the rest).
pub struct StoreOrigin {
    stores: Vec<StoreMember>,
}

impl StoreOrigin {
    /// Every store of the cluster file, over HTTP.
    pub fn from_cluster(cfg: &ClusterConfig) -> StoreOrigin {
        StoreOrigin {
            stores: cluster_stores(cfg),
        }
    }
}

impl cache::through::Origin for StoreOrigin {
    fn fetch<'a>(
        &'a self,
        key: &'a [u8],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<bytes::Bytes>> + Send + 'a>>
    {
        Box::pin(async move {
            let id: u64 = std::str::from_utf8(key.strip_prefix(b"d:")?)
                .ok()?
                .parse()
                .ok()?;
            let names: Vec<&str> = self.stores.iter().map(|s| s.name.as_str()).collect();
            for name in cluster::rendezvous(&names, id) {
                let m = self.stores.iter().find(|s| s.name == name)?;
                if let Ok(b) = m.handle.get(&m.name, id, None).await {
                    return Some(b);
                }
            }
            None
        })
    }
}

/// The node's cache tiers for a cluster: a local cache when
/// `cache.local_memory_mb` > 0, and the cache members as the distributed
/// cache.
pub fn cluster_caching(
    cfg: &ClusterConfig,
    me: Option<&cluster::Member>,
    clock: Arc<dyn cache::Clock>,
) -> anyhow::Result<Option<node::Caching>> {
    if !cfg.cache.enabled {
        return Ok(None);
    }
    let members: Vec<(String, SocketAddr)> = cfg
        .members_with(Role::Cache)
        .map(|m| (m.name.clone(), m.addr))
        .collect();
    let ready_clock = clock.clone();
    let local = (cfg.cache.local_memory_mb > 0).then(|| {
        Arc::new(cache::Cache::new(
            cache::CacheConfig {
                max_bytes: cfg.cache.local_memory_mb << 20,
                item_max: cfg.cache.item_max,
                policy: cache::Policy::S3Fifo,
            },
            clock,
        ))
    });
    let global = if members.is_empty() {
        node::GlobalCache::None
    } else {
        node::GlobalCache::Remote(cache::client::CacheClient::new(
            &members,
            cache::client::ClientOptions {
                timeout: Duration::from_millis(cfg.cache.timeout_ms),
                down_after: cfg.cache.down_after,
                retry_after: Duration::from_millis(cfg.cache.retry_after_ms),
                hot_replicas: cfg.cache.hot_replicas,
                pool: 16,
                bounded_load: (cfg.cache.bounded_load > 1.0).then_some(cfg.cache.bounded_load),
                auth: cache_credential(cfg),
            },
        ))
    };
    let disk = match (
        cfg.cache.local_disk_mb,
        me.and_then(|m| m.data_dir.as_ref()),
    ) {
        (0, _) => None,
        (mb, Some(dir)) => Some(
            cache::disk::DiskTier::open(&dir.join("cache"), mb << 20)
                .with_context(|| format!("opening the disk cache under {}", dir.display()))?,
        ),
        (_, None) => bail!("cache.local_disk_mb needs a data_dir on the node member"),
    };
    if local.is_none() && members.is_empty() && disk.is_none() {
        return Ok(None);
    }
    // With a local tier, its keys' metadata is also kept ready to answer
    // with, trusted as long as a local metadata copy (`meta_ttl_secs`).
    let ready = (cfg.cache.local_memory_mb > 0 && cfg.cache.ready_entries > 0).then(|| {
        Arc::new(node::ready::ReadySet::new(
            cfg.cache.ready_entries,
            Some((cfg.cache.meta_ttl_secs, ready_clock)),
        ))
    });
    let mut caching = node::Caching::new(local, global, caching_options(cfg));
    if let Some(r) = ready {
        caching = caching.with_ready(r);
    }
    Ok(Some(match disk {
        Some(d) => caching.with_disk(d),
        None => caching,
    }))
}

/// What cache clients send, and cache members expect, as memcached ASCII
/// authentication: `strata <cluster secret>`, when a secret is set.
pub(crate) fn cache_credential(cfg: &ClusterConfig) -> Option<Vec<u8>> {
    cfg.auth
        .secret
        .as_ref()
        .map(|s| format!("{} {s}", cache::server::AUTH_USER).into_bytes())
}
