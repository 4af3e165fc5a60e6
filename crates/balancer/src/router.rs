//! L7 routes: rules by path prefix, method and header pick the pool a
//! request goes to (for example writes to one pool, `/v1/search` to
//! another), with a default pool. Each pool is a [`Gateway`] of its own
//! (backends, health, limits, upstream connections).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::proxy::{handle, spawn_checks, Gateway, GatewayOptions, UpBody, Upstream};
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
    pub pools: Vec<(String, Arc<Gateway>)>,
    /// Rules, in order.
    pub routes: Vec<Route>,
}

impl Router {
    /// The pool for `req`.
    pub fn choose(&self, req: &Request<Incoming>) -> &Arc<Gateway> {
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
    ) -> &Arc<Gateway> {
        let i = if self.routes.is_empty() {
            0
        } else {
            self.routes
                .iter()
                .find(|r| r.matches(method, path, &header))
                .map_or(0, |r| r.pool)
        };
        &self.pools[i.min(self.pools.len() - 1)].1
    }

    fn render(&self, status: bool) -> String {
        if status {
            return crate::monitor::status_page(&self.pools);
        }
        let mut out = String::new();
        for (name, gw) in &self.pools {
            crate::monitor::render_metrics(gw, name, &mut out);
        }
        out
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

/// Builds a router over `pools` (the first is the default) and `routes`.
/// Backends that `previous` already had in a pool of the same name are
/// carried over with their state (health, ejections, requests in flight,
/// draining), so a reload does not forget that a node is sick.
pub fn build(
    pools: Vec<PoolSpec>,
    routes: Vec<Route>,
    previous: Option<&Router>,
    client: &Upstream,
) -> Result<Router, Error> {
    if pools.is_empty() {
        return Err(Error::NoBackends);
    }
    let mut built = Vec::with_capacity(pools.len());
    for spec in pools {
        let old = previous
            .and_then(|r| r.pools.iter().find(|(n, _)| *n == spec.name))
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
            spec.name,
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
        Arc::new(Live {
            router: RwLock::new(Arc::new(router)),
            admin_token,
            idle_timeout: limits.idle_timeout,
            header_timeout: limits.header_timeout,
            max_header_bytes: limits.max_header_bytes,
            max_headers: limits.max_headers,
            conn_slots: Arc::new(tokio::sync::Semaphore::new(limits.max_connections)),
            changes: tokio::sync::Mutex::new(()),
        })
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

/// Serves the routed pools on `listener` until `shutdown` resolves.
pub async fn serve_routed(
    listener: TcpListener,
    live: Arc<Live>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    for (_, gw) in &live.router().pools {
        spawn_checks(gw);
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            // A slot first: at the limit, new clients wait in the kernel's
            // backlog instead of being accepted and starved.
            slot = live.conn_slots.clone().acquire_owned() => {
                let Ok(slot) = slot else { return Ok(()) };
                let (stream, peer) = tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    acc = listener.accept() => match acc {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                let _ = stream.set_nodelay(true);
                let live = live.clone();
                tokio::spawn(async move {
                    crate::relay::serve_conn(live, stream, peer).await;
                    drop(slot);
                });
            }
        }
    }
}

/// Serves a client connection with hyper: the full path, for what the
/// fast path (`relay`) hands over.
pub(crate) async fn serve_hyper<I>(live: Arc<Live>, io: I, peer: SocketAddr)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (head_timeout, head_max, headers_max) =
        (live.header_timeout, live.max_header_bytes, live.max_headers);
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let live = live.clone();
        async move { Ok::<_, Infallible>(dispatch(&live, req, peer).await) }
    });
    let mut b = hyper::server::conn::http1::Builder::new();
    if headers_max != 100 {
        // Off hyper's default it allocates header slots per request.
        b.max_headers(headers_max);
    }
    let _ = b
        .keep_alive(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_header_size(head_max)
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

/// One request: the gateway's own pages, the admin API, or a pool.
async fn dispatch(live: &Live, req: Request<Incoming>, peer: SocketAddr) -> Response<UpBody> {
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/_strata/") {
        match rest {
            "status" | "metrics" => {
                let html = rest == "status";
                let mut r = crate::proxy::plain(StatusCode::OK, &live.router().render(html));
                if html {
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        HeaderValue::from_static("text/html; charset=utf-8"),
                    );
                }
                return r;
            }
            _ if rest.starts_with("admin/") => return crate::admin::handle(live, req).await,
            _ => {}
        }
    }
    let gw = live.router().choose(&req).clone();
    handle(gw, req, peer).await
}
