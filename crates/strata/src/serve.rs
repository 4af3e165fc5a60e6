//! `strata serve`: every role in one process on loopback — a store, the
//! index, the cache node, the queue with its beanstalkd listener, search
//! shards, request nodes and the gateway in front of them (handing
//! requests to the nodes directly), and the S3 listener.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use cluster::ClusterConfig;
use index::IndexDb;
use node::search::{SearchTier, ShardHandle, ShardMember};
use node::{IndexHandle, Node, StoreHandle, StoreMember};
use store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::{
    cache_server, caching_options, direct_reads, gateway, http_serve, node_options, open_broker,
    open_shard, s3_credentials_of, s3_options, shutdown_signal, spawn_orphan_sweeper,
    store_options, SERVE_STORE,
};

/// What `strata serve` is running.
pub struct ServeHandle {
    /// Public address: the gateway in front of the nodes.
    pub addr: SocketAddr,
    /// The request nodes behind the gateway (each serves the public API
    /// too).
    pub node_addrs: Vec<SocketAddr>,
    /// Internal store API address.
    pub store_addr: SocketAddr,
    /// Internal index API address.
    pub index_addr: SocketAddr,
    /// The cache node's memcached address (`None` with `cache.enabled = false`).
    pub cache_addr: Option<SocketAddr>,
    /// The queue's HTTP API.
    pub queue_addr: SocketAddr,
    /// The queue's beanstalkd-protocol address.
    pub beanstalk_addr: SocketAddr,
    /// The in-process broker.
    pub broker: Arc<queue::Broker>,
    /// The search shards' internal APIs.
    pub search_addrs: Vec<SocketAddr>,
    /// The S3-compatible API, if it listens.
    pub s3_addr: Option<SocketAddr>,
    /// The first access key it accepts.
    pub s3_credentials: Option<s3::Credentials>,
    /// The in-process store.
    pub store: Arc<Store>,
    tasks: Tasks,
    /// The gateway's pools, whose in-process backends hold the nodes.
    gateways: Vec<Arc<balancer::Gateway>>,
    stop: watch::Sender<bool>,
}

impl ServeHandle {
    /// Stops every role, waits for them, and checkpoints the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.await??;
        }
        // Client connections still open hold the gateway, and through its
        // in-process backends the nodes and the databases: let go of them,
        // so that the data directory is free once this returns.
        for gw in &self.gateways {
            gw.set_local(std::collections::HashMap::new());
        }
        self.store.checkpoint().await?;
        Ok(())
    }
}

/// Request nodes `strata serve` runs behind its gateway by default.
pub const SERVE_NODES: usize = 2;

/// Starts every role in this process: a store and an index under `data`
/// (`store/` and `index/`), a cache node, two request nodes, their
/// internal APIs on ephemeral loopback ports, and the gateway on
/// `listener` in front of the nodes. The nodes call the in-process store,
/// index and cache directly (no HTTP hop). With `nodes` = 1 the one node
/// serves `listener` itself, without a gateway.
pub async fn start_serve(
    cfg: &ClusterConfig,
    data: &Path,
    listener: TcpListener,
) -> anyhow::Result<ServeHandle> {
    let s3 = TcpListener::bind("127.0.0.1:0").await?;
    start_serve_with(cfg, data, listener, Some(s3), SERVE_NODES).await
}

/// [`start_serve`] with `nodes` request nodes.
pub async fn start_serve_with(
    cfg: &ClusterConfig,
    data: &Path,
    listener: TcpListener,
    s3_listener: Option<TcpListener>,
    nodes: usize,
) -> anyhow::Result<ServeHandle> {
    check_serve_config(cfg, nodes)?;
    let opened = open_all(cfg, data)?;
    let (stop, rx) = watch::channel(false);
    let mut tasks = Tasks::new();
    let inner = start_internal(cfg, &opened, &rx, &mut tasks).await?;
    let addr = listener.local_addr()?;
    // One ready set for every node of the process: a write through either
    // drops the key for both, so its entries need no expiry.
    let ready = (cfg.cache.enabled && cfg.cache.ready_entries > 0)
        .then(|| Arc::new(node::ready::ReadySet::new(cfg.cache.ready_entries, None)));
    // The console's members are known once every role listens; it exists
    // before, for a lone node to mount it.
    let console = cfg.console.enabled.then(|| {
        webconsole::Console::new(
            Vec::new(),
            crate::web_console::options(cfg, "strata serve"),
            Some(queue::Handle::Local(opened.broker.clone())),
        )
    });
    let mut node_addrs = Vec::new();
    let mut first_node: Option<Arc<Node>> = None;
    let mut local = std::collections::HashMap::new();
    let mut listener = Some(listener);
    for _ in 0..nodes {
        let node = serve_node(cfg, &opened, inner.cache_engine.as_ref(), ready.as_ref());
        node::workers::spawn_workers(&node, cfg.queue.workers, rx.clone());
        if first_node.is_none() {
            // One sweeper per process: the nodes share the index.
            spawn_orphan_sweeper(cfg, &node, rx.clone());
        }
        first_node.get_or_insert_with(|| node.clone());
        // With one node there is no gateway: the node takes the public
        // port and mounts the console.
        let l = match (nodes == 1).then(|| listener.take()).flatten() {
            Some(l) => l,
            None => TcpListener::bind("127.0.0.1:0").await?,
        };
        let l_addr = l.local_addr()?;
        node_addrs.push(l_addr);
        let node_ref = node.clone();
        let mut api = node::api::router(node);
        if let (true, Some(c)) = (nodes == 1, &console) {
            api = crate::web_console::on_node(api, c);
        }
        local.insert(l_addr, direct_reads::local_backend(node_ref, api.clone()));
        // The public API: the cluster's limits apply here too. The node
        // listens also behind the gateway: its health checks call it, and
        // so may anyone who wants one node.
        let (limits, rx) = (http_serve::HttpLimits::from_config(cfg), rx.clone());
        tasks.push(tokio::spawn(async move {
            Ok(http_serve::serve(l, api, limits, rx).await?)
        }));
    }
    let (s3_addr, s3_credentials) = match (s3_listener, first_node) {
        (Some(l), Some(node)) => start_s3(cfg, data, l, node, &rx, &mut tasks)?,
        _ => (None, None),
    };
    if let Some(c) = &console {
        c.set_members(serve_members(
            (nodes > 1).then_some(addr),
            &node_addrs,
            &inner,
        ));
        c.spawn_sampler(rx.clone());
    }
    let mut gateways = Vec::new();
    if let Some(listener) = listener {
        let pages = console.as_ref().map(crate::web_console::pages);
        let (task, gws) = start_serve_gateway(cfg, listener, &node_addrs, local, pages, rx)?;
        tasks.push(task);
        gateways = gws;
    }
    Ok(ServeHandle {
        addr,
        node_addrs,
        store_addr: inner.store_addr,
        index_addr: inner.index_addr,
        cache_addr: inner.cache_addr,
        queue_addr: inner.queue_addr,
        beanstalk_addr: inner.beanstalk_addr,
        broker: opened.broker,
        search_addrs: inner.search_addrs,
        s3_addr,
        s3_credentials,
        store: opened.store,
        tasks,
        gateways,
        stop,
    })
}

/// A role running in `serve`'s process; it ends when `serve` stops, with
/// its error if any.
type RoleTask = tokio::task::JoinHandle<anyhow::Result<()>>;

/// Every role's task.
type Tasks = Vec<RoleTask>;

/// What `serve` runs is its own: a config that names members or pools is
/// refused rather than half obeyed.
fn check_serve_config(cfg: &ClusterConfig, nodes: usize) -> anyhow::Result<()> {
    if nodes == 0 {
        bail!("`serve` needs at least one node");
    }
    if !cfg.members.is_empty() {
        bail!("`serve` runs its own roles; remove the [[member]] tables from its config");
    }
    if !cfg.gateway.pools.is_empty() {
        bail!("`serve` puts its own nodes in the gateway's pool; remove the [[gateway.pool]] tables from its config");
    }
    Ok(())
}

/// What `serve` keeps under its data directory, opened.
struct Opened {
    store: Arc<Store>,
    db: Arc<IndexDb>,
    broker: Arc<queue::Broker>,
    shards: Vec<Arc<search::Shard>>,
}

fn open_all(cfg: &ClusterConfig, data: &Path) -> anyhow::Result<Opened> {
    let (store, report) =
        Store::open(&data.join("store"), store_options(cfg, None)).context("opening the store")?;
    tracing::info!(?report, blobs = store.len(), "store open");
    let db = IndexDb::open(&data.join("index")).context("opening the index")?;
    let broker = open_broker(cfg, &data.join("queue"))?;
    let shards = (0..cfg.search.serve_shards)
        .map(|i| open_shard(cfg, &data.join("search").join(i.to_string())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Opened {
        store,
        db,
        broker,
        shards,
    })
}

/// Where the internal roles listen, and the cache engine the nodes share
/// with the cache node.
struct Internal {
    store_addr: SocketAddr,
    index_addr: SocketAddr,
    cache_addr: Option<SocketAddr>,
    cache_engine: Option<Arc<cache::Cache>>,
    queue_addr: SocketAddr,
    beanstalk_addr: SocketAddr,
    search_addrs: Vec<SocketAddr>,
}

/// Starts the internal roles' APIs on ephemeral loopback ports: the store,
/// the index, the cache node, the queue (HTTP and beanstalkd) and the
/// search shards. The nodes call them directly; the APIs are for other
/// processes and tools.
async fn start_internal(
    cfg: &ClusterConfig,
    o: &Opened,
    rx: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> anyhow::Result<Internal> {
    let bind = || TcpListener::bind("127.0.0.1:0");
    let (store_l, index_l, queue_l, bean_l) =
        (bind().await?, bind().await?, bind().await?, bind().await?);
    let mut inner = Internal {
        store_addr: store_l.local_addr()?,
        index_addr: index_l.local_addr()?,
        cache_addr: None,
        cache_engine: None,
        queue_addr: queue_l.local_addr()?,
        beanstalk_addr: bean_l.local_addr()?,
        search_addrs: Vec::new(),
    };
    let (store, db, b1, b2) = (
        o.store.clone(),
        o.db.clone(),
        o.broker.clone(),
        o.broker.clone(),
    );
    let r = || shutdown_signal(rx.clone());
    let (r1, r2, r3, r4) = (r(), r(), r(), r());
    tasks.extend([
        tokio::spawn(async move { Ok(store::server::serve(store_l, store, r1).await?) }),
        tokio::spawn(async move { Ok(index::server::serve(index_l, db, r2).await?) }),
        tokio::spawn(async move { Ok(queue::http::serve(queue_l, b1, r3).await?) }),
        tokio::spawn(async move {
            let opts = queue::beanstalk::BeanstalkOptions::default();
            Ok(queue::beanstalk::serve(bean_l, b2, opts, r4).await?)
        }),
    ]);
    // One cache node: its memcached server and the nodes share the engine,
    // so the nodes' global tier is a direct call.
    if cfg.cache.enabled {
        let cache_l = bind().await?;
        inner.cache_addr = Some(cache_l.local_addr()?);
        let cache_srv = cache_server(cfg, None);
        inner.cache_engine = Some(cache_srv.cache.clone());
        let stop = r();
        tasks.push(tokio::spawn(async move {
            Ok(cache::server::serve(cache_l, cache_srv, stop).await?)
        }));
    }
    for shard in &o.shards {
        let l = bind().await?;
        inner.search_addrs.push(l.local_addr()?);
        let (shard, stop) = (shard.clone(), r());
        tasks.push(tokio::spawn(async move {
            Ok(search::server::serve(l, shard, stop).await?)
        }));
    }
    Ok(inner)
}

/// The S3 API on `l` over `node`, with the sweeper of abandoned uploads:
/// its address and the first access key it accepts.
fn start_s3(
    cfg: &ClusterConfig,
    data: &Path,
    l: TcpListener,
    node: Arc<Node>,
    rx: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> anyhow::Result<(Option<SocketAddr>, Option<s3::Credentials>)> {
    let creds = s3_credentials_of(cfg, Some(data))?;
    let (addr, first) = (l.local_addr()?, creds.first().cloned());
    s3::spawn_sweeper(
        node.clone(),
        Duration::from_secs(cfg.s3.abandoned_upload_secs),
        rx.clone(),
    );
    let svc = s3::service(node, &s3_options(cfg, creds));
    let stop = shutdown_signal(rx.clone());
    tasks.push(tokio::spawn(
        async move { Ok(s3::serve(l, svc, stop).await?) },
    ));
    Ok((Some(addr), first))
}

/// One request node over the process's store, index, queue, search shards
/// and cache engine (every call direct, no HTTP hop).
fn serve_node(
    cfg: &ClusterConfig,
    o: &Opened,
    cache_engine: Option<&Arc<cache::Cache>>,
    ready: Option<&Arc<node::ready::ReadySet>>,
) -> Arc<Node> {
    let mut opts = node_options(cfg);
    opts.replicas = 1;
    let sh = o.shards.clone();
    let extra: Vec<node::MetricsSection> = vec![
        Box::new(o.store.metrics_collector()),
        Box::new(o.db.metrics.collector()),
        // Both shards under one name would be two series with one
        // label set; their sum is what one node's page can say.
        Box::new(prom::Section::new(move || {
            let pages: u64 = sh.iter().map(|s| s.num_pages()).sum();
            vec![search::server::pages_family(pages)]
        })),
    ];
    let caching = cache_engine.map(|engine| {
        let c = node::Caching::new(
            None,
            node::GlobalCache::Local(engine.clone()),
            caching_options(cfg),
        );
        match ready {
            Some(r) => c.with_ready(r.clone()),
            None => c,
        }
    });
    let node = Node::new(
        opts,
        IndexHandle::new(o.db.clone()),
        vec![StoreMember {
            name: SERVE_STORE.into(),
            handle: StoreHandle::Local(o.store.clone()),
        }],
        extra,
        caching,
    );
    node.set_queue(queue::Handle::Local(o.broker.clone()).into());
    node.set_search(SearchTier::new(
        o.shards
            .iter()
            .enumerate()
            .map(|(i, s)| ShardMember {
                name: format!("search-{i}"),
                handle: ShardHandle::Local(s.clone()),
            })
            .collect(),
        Duration::from_millis(cfg.search.timeout_ms),
        // One machine: a second copy would not outlive the first.
        1,
    ));
    node
}

/// `serve`'s roles as the console lists them.
fn serve_members(
    gateway: Option<SocketAddr>,
    nodes: &[SocketAddr],
    inner: &Internal,
) -> Vec<webconsole::Member> {
    use webconsole::{Member, Role};
    let m = |name: String, role, addr: SocketAddr| Member {
        name,
        role,
        addr: addr.to_string(),
    };
    let mut out: Vec<Member> = gateway
        .map(|a| m("gateway".into(), Role::Gateway, a))
        .into_iter()
        .collect();
    out.extend(
        nodes
            .iter()
            .enumerate()
            .map(|(i, a)| m(format!("node-{}", i + 1), Role::Node, *a)),
    );
    out.extend(inner.cache_addr.map(|a| m("cache".into(), Role::Cache, a)));
    out.push(m(SERVE_STORE.into(), Role::Store, inner.store_addr));
    out.push(m("index".into(), Role::Index, inner.index_addr));
    out.push(m("queue".into(), Role::Queue, inner.queue_addr));
    out.extend(
        inner
            .search_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| m(format!("search-{i}"), Role::Search, *a)),
    );
    out
}

/// The gateway of `serve` on `listener` in front of `nodes`, which run in
/// this process (`local`: their APIs by address): requests are handed to
/// them directly, with no HTTP exchange on loopback.
fn start_serve_gateway(
    cfg: &ClusterConfig,
    listener: TcpListener,
    nodes: &[SocketAddr],
    local: std::collections::HashMap<SocketAddr, balancer::direct::LocalBackend>,
    pages: Option<balancer::edge::Pages>,
    rx: watch::Receiver<bool>,
) -> anyhow::Result<(RoleTask, Vec<Arc<balancer::Gateway>>)> {
    let node_addrs = nodes;
    let pools = vec![cluster::ResolvedPool {
        name: "nodes".into(),
        backends: node_addrs.iter().map(|a| (*a, 1)).collect(),
        algorithm: cfg.gateway.algorithm.clone(),
        sticky: cfg.gateway.sticky,
    }];
    let client = balancer::gateway::upstream(Duration::from_millis(cfg.gateway.connect_timeout_ms));
    let router = gateway::build_router(cfg, pools, None, &client)?;
    for (_, gw) in &router.pools {
        gw.set_local(local.clone());
    }
    let gateways = router.pools.iter().map(|(_, gw)| gw.clone()).collect();
    let live = balancer::Live::with_edge(
        router,
        cfg.auth.admin_token.clone(),
        gateway::client_limits(cfg),
        balancer::edge::Edge {
            pages,
            ..balancer::edge::Edge::default()
        },
    );
    let task = tokio::spawn(async move {
        Ok(balancer::serve_routed(listener, live, shutdown_signal(rx)).await?)
    });
    Ok((task, gateways))
}
