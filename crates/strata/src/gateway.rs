//! The gateway role: its router built from the cluster file's `[gateway]`
//! table, and reloads on SIGHUP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use balancer::edge::compress::Coding;
use balancer::edge::tls::{CertPair, Tls};
use balancer::edge::{AccessLog, CompressOptions, Edge, EdgeRules, HeaderOps};
use balancer::gateway::{GatewayOptions, Upstream};
use balancer::sticky::Sticky;
use balancer::{HealthOptions, Live, PoolSpec, Route, Router};
use cluster::{ClusterConfig, GatewayConfig, ResolvedPool};
use tokio::net::TcpListener;
use tokio::sync::watch;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Health settings from `[gateway]`.
pub fn health_options(g: &GatewayConfig) -> HealthOptions {
    HealthOptions {
        consecutive_failures: g.consecutive_failures,
        base_ejection: ms(g.base_ejection_ms),
        max_ejection: ms(g.max_ejection_ms.max(g.base_ejection_ms)),
        max_ejection_percent: g.max_ejection_percent,
        panic_threshold_percent: g.panic_threshold_percent,
        check_interval: ms(g.check_interval_ms),
        check_timeout: ms(g.check_timeout_ms),
        fall: g.fall,
        rise: g.rise,
        slow_start: ms(g.slow_start_ms),
        outlier_factor: (g.outlier_factor > 1.0).then_some(g.outlier_factor),
        ..HealthOptions::default()
    }
}

/// Proxy settings of one pool from `[gateway]` and `[auth]`.
pub fn gateway_options(cfg: &ClusterConfig, pool: &ResolvedPool) -> GatewayOptions {
    let g = &cfg.gateway;
    // One cookie per pool, so that pools pin independently.
    let cookie: String = format!("strata_node_{}", pool.name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    GatewayOptions {
        connect_timeout: ms(g.connect_timeout_ms),
        first_byte_timeout: ms(g.first_byte_timeout_ms),
        retries: g.retries,
        retry_budget_percent: g.retry_budget_percent,
        rate_limit: (g.rate_limit > 0.0).then(|| {
            let burst = if g.burst > 0.0 { g.burst } else { g.rate_limit };
            (g.rate_limit, burst.max(1.0))
        }),
        max_in_flight: (g.max_in_flight > 0).then_some(g.max_in_flight),
        queue: g.queue,
        queue_timeout: ms(g.queue_timeout_ms),
        hedge_after: (g.hedge_after_ms > 0).then(|| ms(g.hedge_after_ms)),
        sticky: match (&cfg.auth.secret, pool.sticky) {
            (Some(secret), true) => Some(Sticky::new(&cookie, secret.as_bytes())),
            _ => None,
        },
        ..GatewayOptions::default()
    }
}

/// The routes of `[gateway]`, pointing at indexes of `pools`.
/// `base` is the gateway-wide edge rules ([`gateway_rules`]) each route
/// builds on.
pub fn routes(
    g: &GatewayConfig,
    pools: &[ResolvedPool],
    base: &EdgeRules,
) -> anyhow::Result<Vec<Route>> {
    g.routes
        .iter()
        .map(|r| {
            let pool = pools
                .iter()
                .position(|p| p.name == r.pool)
                .with_context(|| format!("route names unknown pool `{}`", r.pool))?;
            let method = match &r.method {
                Some(m) => Some(
                    m.parse::<balancer::Method>()
                        .with_context(|| format!("route method `{m}`"))?,
                ),
                None => None,
            };
            let header = match &r.header {
                Some(h) => {
                    let (n, v) = h.split_once(':').context("route header: `Name: value`")?;
                    Some((
                        n.trim()
                            .parse::<balancer::HeaderName>()
                            .with_context(|| format!("route header name `{n}`"))?,
                        v.trim().to_owned(),
                    ))
                }
                None => None,
            };
            Ok(Route {
                prefix: r.prefix.clone(),
                method,
                header,
                pool,
                rules: Arc::new(route_rules(base, g, r)?),
            })
        })
        .collect()
}

/// The gateway-wide edge rules: those of requests no route takes, and the
/// base of every route's.
pub fn gateway_rules(g: &GatewayConfig) -> anyhow::Result<EdgeRules> {
    let ops =
        |what: &str, r: &cluster::HeaderRules| HeaderOps::parse(what, &r.set, &r.add, &r.remove);
    Ok(EdgeRules {
        request: ops("gateway.request_headers", &g.request_headers)?,
        response: ops("gateway.response_headers", &g.response_headers)?,
        request_id: g.request_id,
        compress: g
            .compression
            .enabled
            .then(|| Arc::new(compress_options(&g.compression))),
    })
}

/// A route's edge rules: `base`'s header rules, then the route's own;
/// compression and the request id as the route says, else as `base` has
/// them (a route that turns compression on gets `[gateway.compression]`'s
/// settings even when it is off gateway-wide).
pub fn route_rules(
    base: &EdgeRules,
    g: &GatewayConfig,
    r: &cluster::RouteConfig,
) -> anyhow::Result<EdgeRules> {
    let what = format!("route {}", r.prefix);
    let ops = |h: &cluster::HeaderRules| HeaderOps::parse(&what, &h.set, &h.add, &h.remove);
    Ok(EdgeRules {
        request: base.request.then(&ops(&r.request_headers)?),
        response: base.response.then(&ops(&r.response_headers)?),
        request_id: r.request_id.unwrap_or(base.request_id),
        compress: match r.compress {
            None => base.compress.clone(),
            Some(false) => None,
            Some(true) => base
                .compress
                .clone()
                .or_else(|| Some(Arc::new(compress_options(&g.compression)))),
        },
    })
}

/// Compression settings from `[gateway.compression]`.
pub fn compress_options(c: &cluster::CompressionConfig) -> CompressOptions {
    let d = CompressOptions::default();
    CompressOptions {
        min_size: c.min_size,
        types: c.types.clone().unwrap_or(d.types),
        codings: c
            .codings
            .iter()
            .map(|t| {
                if t == "br" {
                    Coding::Brotli
                } else {
                    Coding::Gzip
                }
            })
            .collect(),
        gzip_level: c.gzip_level,
        brotli_quality: c.brotli_quality,
    }
}

/// The router `pools` and `cfg`'s routes describe, keeping the state of
/// backends that `previous` already had.
pub fn build_router(
    cfg: &ClusterConfig,
    pools: Vec<ResolvedPool>,
    previous: Option<&Router>,
    client: &Upstream,
) -> anyhow::Result<Router> {
    let base = gateway_rules(&cfg.gateway)?;
    let rules = routes(&cfg.gateway, &pools, &base)?;
    let specs = pools
        .iter()
        .map(|p| {
            Ok(PoolSpec {
                name: p.name.clone(),
                backends: p.backends.clone(),
                algorithm: p.algorithm.parse()?,
                health: health_options(&cfg.gateway),
                options: gateway_options(cfg, p),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if specs.iter().any(|s| s.backends.is_empty()) {
        anyhow::bail!("a gateway pool has no backends (the cluster file has no node members?)");
    }
    Ok(balancer::router::build(
        specs, rules, base, previous, client,
    )?)
}

/// The router of the gateway's S3 listener: one pool `s3` of every node
/// member's `s3_addr`, health-checked on [`s3::HEALTH_PATH`], no routes
/// and no edge rules (a rewritten header could break a signature; S3
/// clients check ETags and lengths of the bytes they asked for, so no
/// compression either). Requests pass with their `Host` header, so SigV4
/// signatures made for the gateway's address verify on the node. No
/// sticky sessions: any node serves any object. `load` balances as
/// `p2c`, since nodes report load on their native port.
pub fn s3_router(
    cfg: &ClusterConfig,
    previous: Option<&Router>,
    client: &Upstream,
) -> anyhow::Result<Router> {
    let backends: Vec<(SocketAddr, u32)> = cfg
        .members_with(cluster::Role::Node)
        .filter_map(|m| m.s3_addr.map(|a| (a, 1)))
        .collect();
    let algorithm = match cfg.gateway.algorithm.as_str() {
        "load" => "p2c",
        a => a,
    };
    let pool = ResolvedPool {
        name: "s3".into(),
        backends: backends.clone(),
        algorithm: algorithm.into(),
        sticky: false,
    };
    let spec = PoolSpec {
        name: pool.name.clone(),
        backends,
        algorithm: algorithm.parse()?,
        health: HealthOptions {
            check_path: s3::HEALTH_PATH.into(),
            ..health_options(&cfg.gateway)
        },
        options: gateway_options(cfg, &pool),
    };
    Ok(balancer::router::build(
        vec![spec],
        Vec::new(),
        EdgeRules::default(),
        previous,
        client,
    )?)
}

/// The S3 listener of gateway member `me`, when it has an `s3_addr`.
pub async fn bind_s3(me: &cluster::Member) -> anyhow::Result<Option<TcpListener>> {
    match me.s3_addr {
        Some(a) => Ok(Some(crate::sockets::bind(a).await.with_context(|| {
            format!("cannot listen on {a} (member.{}.s3_addr)", me.name)
        })?)),
        None => Ok(None),
    }
}

/// Runs a gateway from `cfg` on `listener` until `shutdown`. With `path`,
/// SIGHUP re-reads that file and swaps in its pools and routes; a file
/// that does not parse or validate is refused with a log line and the
/// running configuration stays. With `s3`, that listener balances S3
/// requests across the nodes' S3 listeners ([`s3_router`]).
pub async fn run_gateway(
    cfg: Arc<ClusterConfig>,
    path: Option<PathBuf>,
    listener: TcpListener,
    s3: Option<TcpListener>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let client = balancer::gateway::upstream(ms(cfg.gateway.connect_timeout_ms));
    let pools = cfg.gateway.resolve(&cfg)?;
    let router = build_router(&cfg, pools, None, &client)?;
    let g = &cfg.gateway;
    let access_log = match &g.access_log {
        Some(a) => Some(Arc::new(AccessLog::open(
            balancer::edge::access_log::Sink::parse(&a.path),
            a.format.parse()?,
            a.buffer_bytes,
        )?)),
        None => None,
    };
    let tls = match &g.tls {
        Some(t) => {
            let tls = Tls::new(cert_pairs(t)).context("gateway.tls")?;
            let l = crate::sockets::bind(t.listen)
                .await
                .with_context(|| format!("cannot listen on {} (gateway.tls.listen)", t.listen))?;
            Some((tls, l))
        }
        None => None,
    };
    crate::sockets::warn_unused();
    let pages = match cfg.console.enabled {
        true => Some(crate::web_console::pages(
            &crate::web_console::start(&cfg, "strata cluster", shutdown.clone()).await,
        )),
        false => None,
    };
    let edge = Edge {
        pages,
        access_log,
        redirect_https: g
            .tls
            .as_ref()
            .filter(|t| t.redirect_http)
            .map(|t| t.listen.port()),
        ..Edge::default()
    };
    let s3_live = match s3 {
        Some(l) => {
            let edge = Edge {
                access_log: edge.access_log.clone(),
                ..Edge::default()
            };
            // No admin API on the S3 listener: it is the public one.
            let live = Live::with_edge(
                s3_router(&cfg, None, &client)?,
                None,
                client_limits(&cfg),
                edge,
            );
            let (live2, rx) = (live.clone(), shutdown.clone());
            tokio::spawn(async move {
                if let Err(e) = balancer::serve_routed(l, live2, crate::shutdown_signal(rx)).await {
                    tracing::error!(error = %e, "S3 listener failed");
                }
            });
            Some(live)
        }
        None => None,
    };
    let live = Live::with_edge(
        router,
        cfg.auth.admin_token.clone(),
        client_limits(&cfg),
        edge,
    );
    let tls_state = tls.as_ref().map(|(t, _)| t.clone());
    if let Some((tls, l)) = tls {
        let (live, rx) = (live.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = balancer::serve_tls(l, live, tls, crate::shutdown_signal(rx)).await {
                tracing::error!(error = %e, "TLS listener failed");
            }
        });
    }
    if let Some(path) = path {
        let (live, s3_live, client) = (live.clone(), s3_live.clone(), client.clone());
        tokio::spawn(reload_on_hangup(path, live, s3_live, client, tls_state));
    }
    balancer::serve_routed(listener, live.clone(), crate::shutdown_signal(shutdown)).await?;
    if let Some(log) = &live.edge.access_log {
        log.flush();
    }
    Ok(())
}

fn cert_pairs(t: &cluster::TlsConfig) -> Vec<CertPair> {
    t.certs
        .iter()
        .map(|c| CertPair {
            cert: c.cert.clone(),
            key: c.key.clone(),
        })
        .collect()
}

/// The gateway's client-side limits: `[gateway] idle_timeout_ms` and
/// the cluster's `[limits]`.
pub fn client_limits(cfg: &ClusterConfig) -> balancer::router::ClientLimits {
    balancer::router::ClientLimits {
        idle_timeout: ms(cfg.gateway.idle_timeout_ms),
        header_timeout: ms(cfg.limits.header_timeout_ms),
        max_connections: cfg.limits.max_connections,
        max_header_bytes: cfg.limits.max_header_bytes,
        max_headers: cfg.limits.max_headers,
    }
}

async fn reload_on_hangup(
    path: PathBuf,
    live: Arc<Live>,
    s3_live: Option<Arc<Live>>,
    client: Upstream,
    tls: Option<Arc<Tls>>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reloads are off");
        return;
    };
    while hup.recv().await.is_some() {
        // Log rotation: the old file was renamed; write to a new one.
        if let Some(log) = &live.edge.access_log {
            log.reopen();
        }
        match reload(&path, &live, s3_live.as_deref(), &client, tls.as_deref()).await {
            Ok(n) => tracing::info!(path = %path.display(), pools = n, "gateway config reloaded"),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %format!("{e:#}"), "reload refused; the running config stays")
            }
        }
    }
}

/// Re-reads `path` and puts its pools and routes in service.
/// Certificates are re-read too (the TLS listener's address and the access
/// log's path stay as they were at start): new handshakes use the new ones,
/// open connections keep theirs; `s3` (the S3 listener's) takes the
/// nodes' new `s3_addr`s. Nothing changes unless the whole file and every
/// certificate load.
pub async fn reload(
    path: &std::path::Path,
    live: &Live,
    s3: Option<&Live>,
    client: &Upstream,
    tls: Option<&Tls>,
) -> anyhow::Result<usize> {
    let cfg = ClusterConfig::load(path)?;
    let pools = cfg.gateway.resolve(&cfg)?;
    let n = pools.len();
    let router = build_router(&cfg, pools, Some(&live.router()), client)?;
    let s3_router = match s3 {
        Some(l) => Some(s3_router(&cfg, Some(&l.router()), client)?),
        None => None,
    };
    let certs = match (tls, &cfg.gateway.tls) {
        (Some(_), Some(t)) => Some(cert_pairs(t)),
        _ => None,
    };
    if let (Some(tls), Some(pairs)) = (tls, certs) {
        tls.reload(Some(pairs)).context("gateway.tls")?;
    }
    live.swap(router).await;
    if let (Some(l), Some(r)) = (s3, s3_router) {
        l.swap(r).await;
    }
    Ok(n)
}

/// `[gateway]` for a standalone gateway from command-line pools
/// (`NAME=ADDR,...`) and routes (`[METHOD ]PREFIX[ if NAME: VALUE]=POOL`).
pub fn standalone_config(
    pools: &[(String, Vec<SocketAddr>)],
    routes: &[String],
) -> anyhow::Result<GatewayConfig> {
    let mut g = GatewayConfig::default();
    for (name, addrs) in pools {
        g.pools.push(cluster::PoolConfig {
            name: name.clone(),
            backends: addrs.iter().map(|a| a.to_string()).collect(),
            weights: Vec::new(),
            algorithm: None,
            sticky: None,
        });
    }
    for r in routes {
        let (cond, pool) = r.rsplit_once('=').with_context(|| {
            format!("--route `{r}`: expected [METHOD ]PREFIX[ if NAME: VALUE]=POOL")
        })?;
        let (cond, header) = match cond.split_once(" if ") {
            Some((c, h)) => (c, Some(h.trim().to_owned())),
            None => (cond, None),
        };
        let (method, prefix) = match cond.trim().split_once(' ') {
            Some((m, p)) => (Some(m.to_owned()), p.trim()),
            None => (None, cond.trim()),
        };
        g.routes.push(cluster::RouteConfig {
            prefix: prefix.to_owned(),
            method,
            header,
            pool: pool.trim().to_owned(),
            request_headers: Default::default(),
            response_headers: Default::default(),
            compress: None,
            request_id: None,
        });
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(text: &str) -> GatewayConfig {
        ClusterConfig::parse(text).expect("parse").gateway
    }

    #[test]
    fn routes_build_on_the_gateway_wide_edge_rules() {
        let g = gateway(
            r#"
[gateway]
request_id = true
response_headers = { remove = ["Server"] }
[gateway.compression]
min_size = 333
[[gateway.route]]
prefix = "/text/"
pool = "nodes"
compress = true
request_id = false
response_headers = { set = ["Cache-Control: no-cache"] }
[[gateway.route]]
prefix = "/img/"
pool = "nodes"
"#,
        );
        let base = gateway_rules(&g).expect("base");
        assert!(base.request_id && base.compress.is_none());
        let text = route_rules(&base, &g, &g.routes[0]).expect("text");
        // Compression on for the route with the configured settings, the
        // request id off, the gateway's header rule first.
        assert_eq!(text.compress.as_ref().map(|c| c.min_size), Some(333));
        assert!(!text.request_id);
        assert_eq!(text.response.0.len(), 2);
        let mut h = hyper::HeaderMap::new();
        h.insert("server", "x".parse().expect("v"));
        text.response.apply(&mut h);
        assert!(h.get("server").is_none());
        assert_eq!(h["cache-control"], "no-cache");
        // A route that says nothing inherits everything.
        let img = route_rules(&base, &g, &g.routes[1]).expect("img");
        assert!(img.request_id && img.compress.is_none());
        assert_eq!(img.response, base.response);
        // Compression on gateway-wide: a route can turn it off.
        let on = gateway(
            "[gateway.compression]\nenabled = true\n[[gateway.route]]\nprefix = \"/x/\"\npool = \"nodes\"\ncompress = false\n",
        );
        let base = gateway_rules(&on).expect("base");
        assert!(base.compress.is_some());
        assert!(route_rules(&base, &on, &on.routes[0])
            .expect("x")
            .compress
            .is_none());
    }
}
