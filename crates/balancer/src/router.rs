//! L7 routes: rules by path prefix, method and header pick the pool a
//! request goes to (for example writes to one pool, `/v1/search` to
//! another), with a default pool. Each pool is a [`Gateway`] of its own
//! (backends, health, limits, upstream connections).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use hyper::header::HeaderName;
use hyper::{Method, Request};

use crate::edge::{Edge, EdgeRules};
use crate::gateway::{Gateway, GatewayOptions, Upstream};
use crate::health::spawn_checks;
use crate::{Algorithm, Backend, Error, HealthOptions, Pool};

/// One rule; all its given conditions must hold.
#[derive(Debug, Clone)]
pub struct Route {
    /// The path starts with this.
    pub prefix: String,
    /// The method is this (any when `None`).
    pub method: Option<Method>,
    /// This header has this value (any when `None`).
    pub header: Option<(HeaderName, String)>,
    /// Index of the pool it sends to.
    pub pool: usize,
    /// Header rules and compression of requests it takes.
    pub rules: Arc<EdgeRules>,
}

impl Route {
    /// Whether a request with `method`, `path` and headers (looked up by
    /// `header`) matches.
    pub fn matches<'a>(
        &self,
        method: &Method,
        path: &str,
        header: impl Fn(&HeaderName) -> Option<&'a str>,
    ) -> bool {
        path.starts_with(&self.prefix)
            && self.method.as_ref().is_none_or(|m| method == m)
            && self
                .header
                .as_ref()
                .is_none_or(|(n, v)| header(n) == Some(v.as_str()))
    }
}

/// Pools and the rules that choose among them; the first matching rule
/// wins, else the default pool (the first).
pub struct Router {
    /// (name, gateway) per pool.
    pub pools: Vec<(Arc<str>, Arc<Gateway>)>,
    /// Rules, in order.
    pub routes: Vec<Route>,
    /// Header rules and compression of requests no route takes.
    pub rules: Arc<EdgeRules>,
}

/// Where a request goes: its pool and the edge rules of its route.
pub struct Choice<'a> {
    /// The pool's gateway.
    pub gw: &'a Arc<Gateway>,
    /// The pool's name.
    pub pool: &'a Arc<str>,
    /// The route's header rules and compression.
    pub rules: &'a Arc<EdgeRules>,
}

impl Router {
    /// The pool for `req`.
    pub fn choose<B>(&self, req: &Request<B>) -> Choice<'_> {
        self.choose_by(req.method(), req.uri().path(), |n| {
            req.headers().get(n).and_then(|v| v.to_str().ok())
        })
    }

    /// The pool for a request with `method`, `path` and headers.
    pub fn choose_by<'a>(
        &self,
        method: &Method,
        path: &str,
        header: impl Fn(&HeaderName) -> Option<&'a str>,
    ) -> Choice<'_> {
        let route = self
            .routes
            .iter()
            .find(|r| r.matches(method, path, &header));
        let i = route.map_or(0, |r| r.pool).min(self.pools.len() - 1);
        let (name, gw) = &self.pools[i];
        Choice {
            gw,
            pool: name,
            rules: route.map_or(&self.rules, |r| &r.rules),
        }
    }

    /// The status page (HTML) of every pool.
    pub(crate) fn status_page(&self) -> String {
        crate::monitor::status_page(&self.pools)
    }
}

/// What a pool is made of; [`build`] turns a list of these into a
/// [`Router`].
#[derive(Debug, Clone)]
pub struct PoolSpec {
    /// Name (routes refer to it).
    pub name: String,
    /// Backends with their weights.
    pub backends: Vec<(SocketAddr, u32)>,
    /// Selection algorithm.
    pub algorithm: Algorithm,
    /// Health and ejection settings.
    pub health: HealthOptions,
    /// Proxy settings (timeouts, limits, stickiness).
    pub options: GatewayOptions,
}

/// Builds a router over `pools` (the first is the default) and `routes`;
/// `default_rules` are the edge rules of requests no route takes.
/// Backends that `previous` already had in a pool of the same name are
/// carried over with their state (health, ejections, requests in flight,
/// draining), so a reload does not forget that a node is sick.
pub fn build(
    pools: Vec<PoolSpec>,
    routes: Vec<Route>,
    default_rules: EdgeRules,
    previous: Option<&Router>,
    client: &Upstream,
) -> Result<Router, Error> {
    if pools.is_empty() {
        return Err(Error::NoBackends);
    }
    let mut built = Vec::with_capacity(pools.len());
    for spec in pools {
        let old = previous
            .and_then(|r| r.pools.iter().find(|(n, _)| **n == *spec.name))
            .map(|(_, g)| g.pool());
        let backends = spec
            .backends
            .iter()
            .map(|&(addr, weight)| {
                old.as_ref()
                    .and_then(|p| {
                        p.backends
                            .iter()
                            .find(|b| b.addr == addr && b.weight == weight)
                    })
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Backend::new(addr, weight)))
            })
            .collect();
        let pool = Pool::shared(backends, spec.algorithm, spec.health)?;
        built.push((
            spec.name.into(),
            Gateway::with_client(Arc::new(pool), spec.options, client.clone()),
        ));
    }
    if let Some(r) = routes.iter().find(|r| r.pool >= built.len()) {
        return Err(Error::Config(format!(
            "route {} names pool #{} of {}",
            r.prefix,
            r.pool,
            built.len()
        )));
    }
    Ok(Router {
        pools: built,
        routes,
        rules: Arc::new(default_rules),
    })
}

/// The router in service, swapped whole by a reload, plus the admin API's
/// token. Each request reads the router once, so a swap never splits a
/// request between two configurations, and requests in flight finish on
/// the gateway they started on.
pub struct Live {
    router: RwLock<Arc<Router>>,
    /// Bearer token of the admin API; `None` disables it.
    pub admin_token: Option<String>,
    /// A client connection that sends no complete request head for this
    /// long is closed (idle keep-alive connections, and slow heads).
    pub idle_timeout: std::time::Duration,
    /// A request head must arrive whole within this time (slowloris).
    pub header_timeout: std::time::Duration,
    /// Largest request head (431 above).
    pub max_header_bytes: usize,
    /// Most request headers (431 above).
    pub max_headers: usize,
    /// Client connections open at once; more wait in the listen backlog.
    pub(crate) conn_slots: Arc<tokio::sync::Semaphore>,
    /// Serialises runtime changes (admin calls and reloads), which read,
    /// modify and write the backend sets.
    pub(crate) changes: tokio::sync::Mutex<()>,
    /// Access log, HTTPS redirect, edge counters.
    pub edge: Edge,
    /// The gateway's metrics registry: the pools in service (read through
    /// the router at each scrape, so a reload shows at once) and the edge.
    pub registry: prom::Registry,
    checks_started: std::sync::atomic::AtomicBool,
}

impl Live {
    /// Serves `router`; `admin_token` enables the admin API.
    pub fn new(router: Router, admin_token: Option<String>) -> Arc<Live> {
        Live::with_idle_timeout(router, admin_token, std::time::Duration::from_secs(60))
    }

    /// [`Live::new`] with a client idle timeout.
    pub fn with_idle_timeout(
        router: Router,
        admin_token: Option<String>,
        idle_timeout: std::time::Duration,
    ) -> Arc<Live> {
        Live::with_limits(
            router,
            admin_token,
            ClientLimits {
                idle_timeout,
                ..ClientLimits::default()
            },
        )
    }

    /// [`Live::new`] with limits on client connections.
    pub fn with_limits(
        router: Router,
        admin_token: Option<String>,
        limits: ClientLimits,
    ) -> Arc<Live> {
        Live::with_edge(router, admin_token, limits, Edge::default())
    }

    /// [`Live::with_limits`] with the listener's edge settings.
    pub fn with_edge(
        router: Router,
        admin_token: Option<String>,
        limits: ClientLimits,
        edge: Edge,
    ) -> Arc<Live> {
        let live = Arc::new(Live {
            edge,
            registry: prom::Registry::new(),
            checks_started: std::sync::atomic::AtomicBool::new(false),
            router: RwLock::new(Arc::new(router)),
            admin_token,
            idle_timeout: limits.idle_timeout,
            header_timeout: limits.header_timeout,
            max_header_bytes: limits.max_header_bytes,
            max_headers: limits.max_headers,
            conn_slots: Arc::new(tokio::sync::Semaphore::new(limits.max_connections)),
            changes: tokio::sync::Mutex::new(()),
        });
        // Weakly: the registry lives in `live`.
        let weak = Arc::downgrade(&live);
        prom::register(
            &live.registry,
            prom::Section::new(move || {
                weak.upgrade().map_or_else(Vec::new, |l| {
                    let mut f = crate::monitor::families(&l.router().pools);
                    f.extend(l.edge.families());
                    f
                })
            }),
        );
        live
    }

    /// Starts the health checks of the pools in service, once however
    /// many listeners serve them.
    pub(crate) fn start_checks(&self) {
        if !self
            .checks_started
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            for (_, gw) in &self.router().pools {
                spawn_checks(gw);
            }
        }
    }

    /// The router in service.
    pub fn router(&self) -> Arc<Router> {
        self.router
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `router` in service (a reload). Health checks start for its
    /// pools; those of the old router stop once its last request is done.
    pub async fn swap(&self, router: Router) {
        let _g = self.changes.lock().await;
        for (_, gw) in &router.pools {
            spawn_checks(gw);
        }
        *self.router.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(router);
    }
}

/// Limits on the gateway's client side.
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// A connection with no request for this long is closed.
    pub idle_timeout: std::time::Duration,
    /// A request head must arrive whole within this time.
    pub header_timeout: std::time::Duration,
    /// Client connections open at once.
    pub max_connections: usize,
    /// Largest request head, bytes.
    pub max_header_bytes: usize,
    /// Most request headers.
    pub max_headers: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            idle_timeout: std::time::Duration::from_secs(60),
            header_timeout: std::time::Duration::from_secs(20),
            max_connections: 10_000,
            max_header_bytes: 64 << 10,
            max_headers: 100,
        }
    }
}
