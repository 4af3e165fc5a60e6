//! The strata binary's library half: how roles are started from a cluster
//! file ([`run_role`]) and how `strata serve` puts every role in one process
//! ([`start_serve`]). `main.rs` only parses arguments; the subcommands in
//! the binary's `cmd/` call these, and so does the test kit, to run roles
//! in-process.
//!
//! Beside them: [`gateway`] (a gateway member from the cluster file, its
//! S3 pool and SIGHUP reload), `caching` (cache members and the nodes'
//! tiers), [`sockets`] (listeners, or sockets handed over by whoever
//! started the process), [`http_serve`] (the limits every HTTP listener
//! applies), [`web_console`], and the offline commands [`import`],
//! [`recover`] and [`reindex`].
//!
//! Errors are `anyhow` here (this is the binary's side).

mod caching;
mod direct_reads;
pub mod gateway;
mod gc;
pub mod http_serve;
pub mod import;
pub mod recover;
pub mod reindex;
mod scrub;
mod serve;
pub mod sockets;
pub mod web_console;

pub(crate) use caching::{cache_credential, caching_options};
pub use caching::{cache_member, cache_server, cluster_caching, StoreOrigin};
pub use serve::{start_serve, start_serve_with, ServeHandle, SERVE_NODES};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use cluster::{ClusterConfig, Role};
use index::IndexDb;
use node::search::{SearchTier, ShardHandle, ShardMember};
use node::{IndexHandle, Node, NodeOptions, StoreHandle, StoreMember};
use store::{Store, StoreOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A shutdown signal: resolves when the sender says `true` or is dropped.
pub async fn shutdown_signal(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Broker settings from `[queue]`.
pub fn broker_options(cfg: &ClusterConfig) -> queue::BrokerOptions {
    queue::BrokerOptions {
        max_payload: cfg.queue.max_payload_mb << 20,
        result_ttl_ms: u64::from(cfg.queue.result_ttl_secs) * 1000,
        sync_deletes: cfg.queue.sync_deletes,
        ..queue::BrokerOptions::default()
    }
}

/// Opens the broker in `dir`.
pub fn open_broker(cfg: &ClusterConfig, dir: &Path) -> anyhow::Result<Arc<queue::Broker>> {
    queue::Broker::open(dir, broker_options(cfg), Arc::new(queue::SystemClock))
        .with_context(|| format!("opening the queue in {}", dir.display()))
}

/// Store tunables from the cluster file, for store member `me` (its own
/// `max_bytes`), or for `serve`'s store (none).
pub fn store_options(cfg: &ClusterConfig, me: Option<&cluster::Member>) -> StoreOptions {
    StoreOptions {
        volume_bytes: cfg.store.volume_bytes,
        compact_garbage_ratio: cfg.store.compact_garbage_ratio,
        checkpoint_every: cfg.store.checkpoint_every,
        max_bytes: me.and_then(|m| m.max_bytes).unwrap_or(0),
        ..StoreOptions::default()
    }
}

/// Node settings from the cluster file.
pub fn node_options(cfg: &ClusterConfig) -> NodeOptions {
    NodeOptions {
        replicas: cfg.effective_replicas(),
        max_body_bytes: cfg.limits.max_body_bytes,
        chunk_bytes: (cfg.limits.chunk_mb << 20) as usize,
        write_token: cfg.auth.write_token.clone(),
        collapse: cfg.proxy.collapse.then(|| collapse::CollapseOptions {
            max_age: Duration::from_millis(cfg.proxy.max_age_ms),
            wait_timeout: Duration::from_millis(cfg.proxy.wait_timeout_ms),
            max_waiters: cfg.proxy.max_waiters.max(1),
        }),
        slice_bytes: (cfg.proxy.slice_bytes > 0).then_some(cfg.proxy.slice_bytes),
        batch_window: (cfg.proxy.batch_window_us > 0)
            .then(|| Duration::from_micros(cfg.proxy.batch_window_us)),
        batch_max_bytes: cfg.proxy.batch_max_bytes,
        session_ttl_secs: cfg.cache.session_ttl_secs,
        upload_attempts: cfg.queue.attempts,
        thumbnail_widths: cfg.queue.thumbnail_widths.clone(),
        dead_after: (cfg.store.dead_after_ms > 0)
            .then(|| Duration::from_millis(cfg.store.dead_after_ms)),
        store_hedge: (cfg.store.hedge_after_ms > 0)
            .then(|| Duration::from_millis(cfg.store.hedge_after_ms)),
        ..NodeOptions::default()
    }
}

/// Opens a search shard in `dir` with the `[search]` settings.
pub fn open_shard(cfg: &ClusterConfig, dir: &Path) -> anyhow::Result<Arc<search::Shard>> {
    let opts = search::ShardOptions {
        writer_threads: cfg.search.writer_threads,
        writer_bytes: cfg.search.writer_mb << 20,
        ..search::ShardOptions::default()
    };
    search::Shard::open(dir, opts)
        .with_context(|| format!("opening the search shard in {}", dir.display()))
}

/// Runs member `name` of `cfg` on `listener` until `shutdown` is signalled.
pub async fn run_role(
    cfg: Arc<ClusterConfig>,
    name: &str,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let me = cfg.member(name)?.clone();
    let data = |m: &cluster::Member| -> anyhow::Result<PathBuf> {
        m.data_dir
            .clone()
            .with_context(|| format!("member {} has no data_dir", m.name))
    };
    let limits = http_serve::HttpLimits::from_config(&cfg);
    // Internal roles: the cluster secret on every call, the admin token
    // on their /admin/ paths.
    let internal = |r| {
        let r = http_serve::require_admin(r, cfg.auth.admin_token.as_deref());
        http_serve::require_secret(r, cfg.auth.secret.as_deref())
    };
    match me.role {
        Role::Store => {
            let (store, report) = Store::open(&data(&me)?, store_options(&cfg, Some(&me)))?;
            tracing::info!(name, ?report, blobs = store.len(), "store open");
            let scrubber = Arc::new(scrub::Scrubber::new(&cfg, &me, store.clone()));
            scrubber.clone().spawn(shutdown.clone());
            let collector = Arc::new(gc::Collector::new(cfg.clone(), name, store.clone()));
            collector.clone().spawn(shutdown.clone());
            let api = store::server::router(store.clone())
                .merge(scrubber.router())
                .merge(collector.router());
            crate::sockets::warn_unused();
            http_serve::serve(listener, internal(api), limits, shutdown).await?;
            store.checkpoint().await?;
        }
        Role::Index => {
            let db = IndexDb::open(&data(&me)?)?;
            let api = internal(index::server::router(db));
            crate::sockets::warn_unused();
            http_serve::serve(listener, api, limits, shutdown).await?;
        }
        Role::Node => {
            let node = cluster_node(&cfg, Some(&me)).await?;
            if node.queue().is_some() {
                node::workers::spawn_workers(&node, cfg.queue.workers, shutdown.clone());
            }
            spawn_orphan_sweeper(&cfg, &node, shutdown.clone());
            if let Some(a) = me.s3_addr {
                let l = crate::sockets::bind(a)
                    .await
                    .with_context(|| format!("cannot listen on {a} (S3 API)"))?;
                let creds = s3_credentials_of(&cfg, None)?;
                s3::spawn_sweeper(
                    node.clone(),
                    Duration::from_secs(cfg.s3.abandoned_upload_secs),
                    shutdown.clone(),
                );
                let svc = s3::service(node.clone(), &s3_options(&cfg, creds));
                tokio::spawn(s3::serve(l, svc, shutdown_signal(shutdown.clone())));
            }
            let mut api = node::api::router(node);
            let no_gateway = !cfg.members.iter().any(|m| m.role == Role::Gateway);
            if cfg.console.enabled && no_gateway {
                let title = format!("strata cluster ({name})");
                let c = web_console::start(&cfg, &title, shutdown.clone()).await;
                api = web_console::on_node(api, &c);
            }
            crate::sockets::warn_unused();
            http_serve::serve(listener, api, limits, shutdown).await?;
        }
        Role::Queue => {
            // With PostgreSQL this member is a stateless front: any number
            // of them serve the same jobs.
            let broker: Arc<dyn queue::Queue> = match cfg.queue.backend {
                cluster::QueueBackend::Builtin => open_broker(&cfg, &data(&me)?)?,
                cluster::QueueBackend::Postgres => pg_queue(&cfg).await?,
            };
            if let Some(b) = me.beanstalk_addr {
                let l = crate::sockets::bind(b)
                    .await
                    .with_context(|| format!("cannot listen on {b}"))?;
                tokio::spawn(queue::beanstalk::serve(
                    l,
                    broker.clone(),
                    queue::beanstalk::BeanstalkOptions::default(),
                    shutdown_signal(shutdown.clone()),
                ));
            }
            let api = internal(queue::http::router(broker));
            crate::sockets::warn_unused();
            http_serve::serve(listener, api, limits, shutdown).await?;
        }
        Role::Search => {
            let shard = open_shard(&cfg, &data(&me)?)?;
            let api = internal(search::server::router(shard));
            crate::sockets::warn_unused();
            http_serve::serve(listener, api, limits, shutdown).await?;
        }
        Role::Cache => {
            let server = cache_member(&cfg, None);
            crate::sockets::warn_unused();
            cache::server::serve(listener, server, shutdown_signal(shutdown)).await?;
        }
        Role::Gateway => {
            let s3 = gateway::bind_s3(&me).await?;
            gateway::run_gateway(cfg.clone(), None, listener, s3, shutdown).await?;
        }
    }
    Ok(())
}

/// Queue member `q` over its jobs API, with the cluster secret.
pub(crate) fn queue_client(cfg: &ClusterConfig, q: &cluster::Member) -> queue::client::QueueClient {
    queue::client::QueueClient::new(format!("http://{}", q.addr), Duration::from_secs(10))
        .with_header(cluster::auth::SECRET_HEADER, cfg.auth.secret.as_deref())
}

/// Queue member `q` as a node's queue.
pub(crate) fn queue_handle(cfg: &ClusterConfig, q: &cluster::Member) -> node::jobs::QueueHandle {
    queue::Handle::Remote(queue_client(cfg, q)).into()
}

/// Store member `m` over its internal HTTP API, with the cluster secret.
fn store_handle(cfg: &ClusterConfig, m: &cluster::Member) -> StoreHandle {
    StoreHandle::Remote(
        store::client::StoreClient::new(format!("http://{}", m.addr), Duration::from_secs(5))
            .with_header(cluster::auth::SECRET_HEADER, cfg.auth.secret.as_deref()),
    )
}

/// Node `me` of the cluster: it reaches every store over HTTP and the
/// index over HTTP or in PostgreSQL.
pub async fn cluster_node(
    cfg: &ClusterConfig,
    me: Option<&cluster::Member>,
) -> anyhow::Result<Arc<Node>> {
    cluster_node_with(cfg, me, Arc::new(cache::SystemClock)).await
}

/// The PostgreSQL options of `[index]` or `[queue]`, with the password
/// read from its environment variable or file.
pub fn pg_options(p: cluster::PgSettings<'_>) -> anyhow::Result<pg::PgOptions> {
    let url = p
        .url
        .with_context(|| format!("{}.url: required with backend = \"postgres\"", p.table))?;
    let mut o = pg::PgOptions::new(p.table, url);
    o.password = pg::read_password(p.table, p.password_env, p.password_file)?;
    o.pool_size = p.pool_size;
    o.statement_timeout = Duration::from_millis(p.statement_timeout_ms);
    o.call_timeout = Duration::from_millis(p.call_timeout_ms);
    o.retry_for = Duration::from_millis(p.failover_wait_ms);
    Ok(o)
}

/// The cluster's name index as `[index]` says: the index member over HTTP
/// (redb), or PostgreSQL directly (the schema is created or migrated here).
pub async fn cluster_index(cfg: &ClusterConfig) -> anyhow::Result<IndexHandle> {
    Ok(IndexHandle::new(cluster_index_backend(cfg).await?))
}

/// The backend behind [`cluster_index`].
pub async fn cluster_index_backend(cfg: &ClusterConfig) -> anyhow::Result<Arc<dyn index::Index>> {
    let ix = &cfg.index;
    match ix.backend {
        cluster::IndexBackend::Redb => {
            let member = cfg
                .members_with(Role::Index)
                .next()
                .context("the cluster file has no index member")?;
            let mut client = index::client::IndexClient::new(
                format!("http://{}", member.addr),
                Duration::from_secs(5),
            );
            if let Some(secret) = cfg.auth.secret.as_deref() {
                client = client.with_header(cluster::auth::SECRET_HEADER, secret)?;
            }
            Ok(Arc::new(client))
        }
        cluster::IndexBackend::Postgres => {
            let db = index::pg::PgIndex::connect(pg_options(ix.pg())?)
                .await
                .context("opening the name index in PostgreSQL")?;
            Ok(db)
        }
    }
}

/// The cluster's jobs in PostgreSQL (`queue.backend = "postgres"`); the
/// schema is created or migrated here.
pub async fn pg_queue(cfg: &ClusterConfig) -> anyhow::Result<Arc<dyn queue::Queue>> {
    let q = queue::pg::PgQueue::connect(
        pg_options(cfg.queue.pg())?,
        broker_options(cfg),
        Arc::new(queue::SystemClock),
    )
    .await
    .context("opening the job queue in PostgreSQL")?;
    Ok(q)
}

/// The store and the index of a stopped `strata serve` whose data is in
/// `dir`, for the offline commands (`recover-index`, `reindex`); the index
/// refuses to open while `serve` still holds it.
pub fn open_serve_data(dir: &Path) -> anyhow::Result<(Arc<Store>, Arc<IndexDb>)> {
    let cfg = ClusterConfig::parse("")?;
    let (store, _) = Store::open(&dir.join("store"), store_options(&cfg, None))
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    let db = IndexDb::open(&dir.join("index")).with_context(|| {
        format!(
            "opening the index in {} (is strata serve still running?)",
            dir.display()
        )
    })?;
    Ok((store, db))
}

/// The name `strata serve` gives its one store (replica lists name it).
pub const SERVE_STORE: &str = "store-1";

/// Every store member of the cluster file, over internal HTTP.
pub fn cluster_stores(cfg: &ClusterConfig) -> Vec<StoreMember> {
    cfg.members_with(Role::Store)
        .map(|m| StoreMember {
            name: m.name.clone(),
            handle: store_handle(cfg, m),
        })
        .collect()
}

/// [`cluster_node`] with the clock its local cache uses (tests inject one).
pub async fn cluster_node_with(
    cfg: &ClusterConfig,
    me: Option<&cluster::Member>,
    clock: Arc<dyn cache::Clock>,
) -> anyhow::Result<Arc<Node>> {
    let index = cluster_index(cfg).await?;
    let stores = cluster_stores(cfg);
    if stores.is_empty() {
        bail!("the cluster file has no store member");
    }
    let caching = cluster_caching(cfg, me, clock)?;
    // The index counters live here when the nodes hold the index
    // (PostgreSQL); an index member exports its own.
    let mut extra: Vec<node::MetricsSection> = Vec::new();
    if cfg.index.backend == cluster::IndexBackend::Postgres {
        if let Some(c) = index.backend().metrics_collector() {
            extra.push(Box::new(c));
        }
    }
    let node = Node::new(node_options(cfg), index, stores, extra, caching);
    if cfg.queue.backend == cluster::QueueBackend::Postgres {
        // Workers claim jobs from the database directly.
        node.set_queue(queue::Handle::Local(pg_queue(cfg).await?).into());
    } else if let Some(q) = cfg.members_with(Role::Queue).next() {
        node.set_queue(queue_handle(cfg, q));
    }
    let shards: Vec<ShardMember> = cfg
        .members_with(Role::Search)
        .map(|m| ShardMember {
            name: m.name.clone(),
            handle: ShardHandle::Remote(
                search::client::ShardClient::new(
                    format!("http://{}", m.addr),
                    Duration::from_secs(30),
                )
                .with_header(cluster::auth::SECRET_HEADER, cfg.auth.secret.as_deref()),
            ),
        })
        .collect();
    if !shards.is_empty() {
        let replicas = cfg.search.replicas_among(shards.len());
        node.set_search(SearchTier::new(
            shards,
            Duration::from_millis(cfg.search.timeout_ms),
            replicas,
        ));
    }
    Ok(node)
}

/// Sweeps the chunks and multipart parts nothing names once they are
/// older than `s3.abandoned_upload_secs` ([`node::objects::sweep_orphans`]).
pub(crate) fn spawn_orphan_sweeper(
    cfg: &ClusterConfig,
    node: &Arc<Node>,
    stop: watch::Receiver<bool>,
) {
    node::objects::spawn_orphan_sweeper(
        node,
        vec![node::objects::CHUNKS.into(), s3::names::PARTS.into()],
        Duration::from_secs(cfg.s3.abandoned_upload_secs),
        stop,
    );
}

/// The S3 access keys: the cluster file's, else (in `serve`, which passes
/// its data directory) the pair kept there, made on first start.
pub(crate) fn s3_credentials_of(
    cfg: &ClusterConfig,
    data: Option<&Path>,
) -> anyhow::Result<Vec<s3::Credentials>> {
    if cfg.s3.credentials.is_empty() {
        let Some(data) = data else {
            bail!("the S3 API needs at least one [[s3.credentials]]");
        };
        return Ok(vec![s3::Credentials::load_or_create(data)?]);
    }
    cfg.s3
        .credentials
        .iter()
        .map(|c| {
            Ok(s3::Credentials {
                access_key: c.access_key.clone(),
                secret_key: c.secret()?,
            })
        })
        .collect()
}

/// The S3 endpoint's settings from the cluster file.
pub(crate) fn s3_options(cfg: &ClusterConfig, credentials: Vec<s3::Credentials>) -> s3::Options {
    s3::Options {
        chunk_bytes: (cfg.limits.chunk_mb << 20) as usize,
        credentials,
        domain: cfg.s3.domain.clone(),
        max_object_bytes: cfg.limits.max_body_bytes,
    }
}
