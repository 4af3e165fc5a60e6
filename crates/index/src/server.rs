//! The index's internal HTTP API. Keys travel in the query string (never in
//! the path), so any UTF-8 key round-trips without path-escaping rules.
//!
//! | method | path | meaning |
//! |---|---|---|
//! | GET | `/key?key=K` | the key's [`BlobMeta`], or 404 |
//! | PUT | `/key?key=K` (JSON [`BlobMeta`]; its `version` is the commit number, 0 for the next) | commit; `{"version": n, "previous": ...}` |
//! | DELETE | `/key?key=K` | remove; `{"version": n, "previous": ...}`, or 404 |
//! | GET | `/list?prefix=&after=&limit=` | a [`Listing`](crate::Listing) by prefix |
//! | GET | `/tag?tag=&after=&limit=` | a [`Listing`](crate::Listing) by tag |
//! | POST | `/ids?count=N` | `{"start": first}` of N fresh blob ids |
//! | POST | `/version` | `{"version": n}`: a commit number for a put about to be written |
//! | GET | `/healthz`, `/metrics` | liveness, Prometheus text |

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::{BlobMeta, Error, Index};

/// The backend behind the API (redb in an index member).
type Db = Arc<dyn Index>;

/// The router.
pub fn router(db: Db) -> Router {
    let registry = prom::Registry::new();
    if let Some(c) = db.metrics_collector() {
        prom::register(&registry, c);
    }
    Router::new()
        .route("/key", get(get_key).put(put_key).delete(delete_key))
        .route("/list", get(list))
        .route("/tag", get(list_tag))
        .route("/ids", post(alloc))
        .route("/version", post(next_version))
        .route("/replicas", post(set_replicas))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || std::future::ready(prom::response(&registry))),
        )
        .with_state(db)
}

/// Serves the index API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    db: Db,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(db))
        .with_graceful_shutdown(shutdown)
        .await
}

fn err(status: StatusCode, error: &str, detail: String) -> Response {
    let body = serde_json::json!({ "error": error, "detail": detail });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn index_error(e: Error) -> Response {
    match e {
        Error::Invalid(d) => err(StatusCode::BAD_REQUEST, "invalid", d),
        Error::Closed | Error::Unavailable(_) | Error::Pg(pg::Error::Unavailable(_)) => err(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
        _ => err(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

#[derive(Deserialize)]
struct KeyQ {
    key: String,
}

#[derive(Deserialize)]
struct ListQ {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
struct TagQ {
    tag: String,
    after: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
struct IdsQ {
    count: u64,
}

async fn get_key(State(db): State<Db>, Query(q): Query<KeyQ>) -> Response {
    match db.get(&q.key).await {
        Ok(Some(m)) => Json(m).into_response(),
        Ok(None) => err(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no key {:?}", q.key),
        ),
        Err(e) => index_error(e),
    }
}

async fn put_key(
    State(db): State<Db>,
    Query(q): Query<KeyQ>,
    Json(meta): Json<BlobMeta>,
) -> Response {
    match db.put(&q.key, &meta).await {
        Ok(c) => Json(c).into_response(),
        Err(e) => index_error(e),
    }
}

/// Body of `POST /replicas?key=K`.
#[derive(Deserialize)]
struct SetReplicas {
    id: u64,
    replicas: Vec<String>,
}

/// `POST /replicas?key=K` `{id, replicas}`: a compare-and-set of the
/// replica list (re-replication); `{"updated": false}` when the key no
/// longer names blob `id`.
async fn set_replicas(
    State(db): State<Db>,
    Query(q): Query<KeyQ>,
    Json(body): Json<SetReplicas>,
) -> Response {
    match db.set_replicas(&q.key, body.id, &body.replicas).await {
        Ok(updated) => Json(serde_json::json!({ "updated": updated })).into_response(),
        Err(e) => index_error(e),
    }
}

async fn delete_key(State(db): State<Db>, Query(q): Query<KeyQ>) -> Response {
    let key = q.key;
    match db.delete(&key).await {
        Ok(c) if c.previous.is_some() => Json(c).into_response(),
        Ok(_) => err(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no key {key:?}"),
        ),
        Err(e) => index_error(e),
    }
}

async fn list(State(db): State<Db>, Query(q): Query<ListQ>) -> Response {
    match db
        .list(&q.prefix, q.after.as_deref(), q.limit.unwrap_or(100))
        .await
    {
        Ok(l) => Json(l).into_response(),
        Err(e) => index_error(e),
    }
}

async fn list_tag(State(db): State<Db>, Query(q): Query<TagQ>) -> Response {
    match db
        .list_tag(&q.tag, q.after.as_deref(), q.limit.unwrap_or(100))
        .await
    {
        Ok(l) => Json(l).into_response(),
        Err(e) => index_error(e),
    }
}

async fn alloc(State(db): State<Db>, Query(q): Query<IdsQ>) -> Response {
    match db.alloc_ids(q.count).await {
        Ok(start) => Json(serde_json::json!({ "start": start, "count": q.count })).into_response(),
        Err(e) => index_error(e),
    }
}

async fn next_version(State(db): State<Db>) -> Response {
    match db.next_version().await {
        Ok(version) => Json(serde_json::json!({ "version": version })).into_response(),
        Err(e) => index_error(e),
    }
}
