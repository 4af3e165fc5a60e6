//! Serves a role's HTTP API with the cluster's connection and request-head
//! limits and, for internal roles, the cluster secret.
//!
//! Why not `axum::serve`: it has no connection limit and no way to set
//! hyper's head-size, header-count and head-timeout limits, which are what
//! keep a slowloris client or a flood of idle sockets from exhausting a
//! role.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use cluster::ClusterConfig;
use hyper::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Limits of one HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Open connections; more wait in the listen backlog.
    pub max_connections: usize,
    /// Time for a whole request head to arrive.
    pub header_timeout: Duration,
    /// Largest request head, bytes (431 above).
    pub max_header_bytes: usize,
    /// Most request headers (431 above).
    pub max_headers: usize,
}

impl HttpLimits {
    /// The `[limits]` of a cluster file.
    pub fn from_config(cfg: &ClusterConfig) -> HttpLimits {
        let l = &cfg.limits;
        HttpLimits {
            max_connections: l.max_connections,
            header_timeout: Duration::from_millis(l.header_timeout_ms),
            max_header_bytes: l.max_header_bytes,
            max_headers: l.max_headers,
        }
    }
}

/// Paths an internal role answers without the secret: health checks and
/// metrics scrapers carry no credentials, and neither reveals data.
const OPEN_PATHS: [&str; 2] = ["/healthz", "/metrics"];

/// Wraps an internal role's router so that every call but `OPEN_PATHS`
/// must carry `secret` in [`cluster::auth::SECRET_HEADER`]; 401 otherwise.
pub fn require_secret(router: Router, secret: Option<&str>) -> Router {
    let Some(secret) = secret else {
        return router;
    };
    let secret: Arc<[u8]> = secret.as_bytes().into();
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let secret = secret.clone();
            async move {
                let given = req
                    .headers()
                    .get(cluster::auth::SECRET_HEADER)
                    .map(|v| v.as_bytes());
                let open = OPEN_PATHS.contains(&req.uri().path());
                if open || given.is_some_and(|g| cluster::auth::ct_eq(g, &secret)) {
                    return next.run(req).await;
                }
                unauthorized()
            }
        },
    ))
}

/// Guards `/admin/` paths with `Authorization: Bearer <token>`, compared
/// in constant time; with no token configured the admin API is off (403).
pub fn require_admin(router: Router, token: Option<&str>) -> Router {
    let token: Option<Arc<[u8]>> = token.map(|t| t.as_bytes().into());
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let token = token.clone();
            async move {
                if !req.uri().path().starts_with("/admin/") {
                    return next.run(req).await;
                }
                let Some(token) = token else {
                    return refuse(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        "the admin API is off: set auth.admin_token",
                    );
                };
                let given = req
                    .headers()
                    .get(hyper::header::AUTHORIZATION)
                    .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
                if given.is_some_and(|g| cluster::auth::ct_eq(g, &token)) {
                    return next.run(req).await;
                }
                refuse(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "admin API: send Authorization: Bearer <admin token>",
                )
            }
        },
    ))
}

fn refuse(status: StatusCode, error: &str, detail: &str) -> Response {
    let body = serde_json::json!({ "error": error, "detail": detail });
    (
        status,
        [(hyper::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn unauthorized() -> Response {
    refuse(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        &format!(
            "internal API: send the cluster secret in {}",
            cluster::auth::SECRET_HEADER
        ),
    )
}

/// Serves `router` on `listener` until `shutdown` flips, then lets open
/// requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        // A slot first: at the limit, new connections wait in the kernel's
        // backlog instead of being accepted and starved.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.map_err(std::io::Error::other)?,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (stream, _) = tokio::select! {
            acc = listener.accept() => match acc {
                Ok(a) => a,
                // Out of file descriptors and the like: try again.
                Err(_) => continue,
            },
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(router.clone());
        let limits = limits.clone();
        let mut stop = shutdown.clone();
        conns.spawn(async move {
            let _slot = slot;
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                // The head limit alone: hyper's read and write buffers keep
                // their default size (a smaller one costs throughput).
                .max_header_size(limits.max_header_bytes);
            if limits.max_headers != 100 {
                // Off the default, hyper allocates header slots per request.
                b.max_headers(limits.max_headers);
            }
            let conn = b.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// [`serve`] with a future as the shutdown signal.
pub async fn serve_until(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    serve(listener, router, limits, rx).await
}
