//! The shard's internal HTTP API.
//!
//! | method | path | meaning |
//! |---|---|---|
//! | POST | `/pages` (JSON list of [`PageOp`]) | apply in order; `{"applied": [...]}` once durable and visible |
//! | GET | `/search?q=&book=&limit=&pages=` | this shard's [`Results`] |
//! | GET | `/stats` | `{"pages": n, "disk_bytes": n}` |
//! | GET | `/healthz`, `/metrics` | liveness, Prometheus text |

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Query as Q, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::model::{PageOp, Query, Results};
use crate::{Error, Shard};

/// Largest `/pages` body, bytes.
pub const MAX_OPS_BYTES: usize = 64 << 20;

/// The router.
pub fn router(shard: Arc<Shard>) -> Router {
    let registry = prom::Registry::new();
    prom::register(&registry, shard.metrics_collector());
    Router::new()
        .route("/pages", post(apply))
        .route("/search", get(search))
        .route("/stats", get(stats))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || std::future::ready(prom::response(&registry))),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_OPS_BYTES))
        .with_state(shard)
}

/// Serves the shard API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    shard: Arc<Shard>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(shard))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A JSON error reply, as every strata API gives them.
pub fn error_response(e: &Error) -> Response {
    let (status, code) = match e {
        Error::BadQuery(_) => (StatusCode::BAD_REQUEST, "bad_query"),
        Error::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
        Error::Closed => (StatusCode::SERVICE_UNAVAILABLE, "closed"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    let body = serde_json::json!({ "error": code, "detail": e.to_string() });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn apply(State(shard): State<Arc<Shard>>, body: axum::body::Bytes) -> Response {
    let ops: Vec<PageOp> = match serde_json::from_slice(&body) {
        Ok(o) => o,
        Err(e) => return error_response(&Error::Invalid(format!("bad page ops: {e}"))),
    };
    match shard.apply(ops).await {
        Ok(a) => Json(serde_json::json!({ "applied": a })).into_response(),
        Err(e) => error_response(&e),
    }
}

/// Runs a query (tantivy's search is synchronous). On a multi-thread
/// runtime it runs on this worker, whose other tasks move to another one
/// meanwhile (`block_in_place`): most queries take well under a
/// millisecond, and a hop to the blocking pool and back costs a good part
/// of that. Elsewhere it goes to the blocking pool.
pub async fn run_query(shard: Arc<Shard>, q: Query) -> crate::Result<Results> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        return tokio::task::block_in_place(|| shard.search(&q));
    }
    tokio::task::spawn_blocking(move || shard.search(&q))
        .await
        .map_err(|e| Error::Invalid(format!("search task failed: {e}")))?
}

async fn search(
    State(shard): State<Arc<Shard>>,
    q: Result<Q<Query>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Q(q)) => q,
        Err(e) => return error_response(&Error::Invalid(e.body_text())),
    };
    match run_query(shard, q).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn stats(State(shard): State<Arc<Shard>>) -> Response {
    Json(serde_json::json!({ "pages": shard.num_pages(), "disk_bytes": shard.disk_bytes() }))
        .into_response()
}

impl Shard {
    /// This shard's counters, and its page count read at each scrape.
    pub fn metrics_collector(self: &Arc<Self>) -> prom::Group {
        let m = &self.metrics;
        let shard = self.clone();
        prom::Group::new()
            .with_counters([&m.queries, &m.applied, &m.stale, &m.commits])
            .with(prom::Section::new(move || {
                vec![pages_family(shard.num_pages())]
            }))
    }
}

/// The page-count gauge: one shard's on its member, the sum of a
/// process's shards on `strata serve`'s node page (two shards under one
/// name would be two series with one label set).
pub fn pages_family(pages: u64) -> prom::Family {
    prom::Family::gauge(
        "strata_search_pages",
        "Pages in this process's search shards.",
    )
    .with(pages as f64)
}
