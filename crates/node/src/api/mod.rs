//! The public HTTP API.
//!
//! | method | path | answer |
//! |---|---|---|
//! | PUT | `/v1/blobs/{key}` | 201 `{key, id, size, etag}`; with `Prefer: respond-async`, 202 `{job, state, location}` |
//! | GET, HEAD | `/v1/blobs/{key}` | 200, 206 (one `Range`), 304 (`If-None-Match`), 404, 416 |
//! | GET, HEAD | `/v1/blobs/{key}?w=128` | the thumbnail of that width, once a worker made it |
//! | GET | `/v1/jobs/{id}` | an asynchronous upload's state and result |
//! | DELETE | `/v1/blobs/{key}` | 204, 404 |
//! | GET | `/v1/blobs?prefix=&after=&limit=` or `?tag=` | listing JSON with a `next` cursor |
//! | GET | `/v1/search?q=&book=&limit=&pages=` | `{books: [{book, score, pages: [{page, key, score, snippet}]}], partial, took_ms}` |
//! | GET, PUT, DELETE | `/v1/session` | the `strata_session` cookie's data, kept in the replicated cache tier |
//! | GET | `/healthz`, `/metrics` | liveness, Prometheus text |
//! | GET | `/load` | CPU, memory and blob reads in flight, for load-aware balancing |
//!
//! Every error body is JSON `{error, detail}`. The key is taken from the raw
//! request path and percent-decoded here, so that a bad escape or non-UTF-8
//! key gets our JSON 400 rather than a framework's plain-text one.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use index::MAX_LIST_LIMIT;
use serde::Deserialize;

use crate::keys::validate_key;
use crate::metrics::inc;
pub use crate::reply::error;
use put::put_blob;
pub use put::MAX_INLINE_TEXT_BYTES;

mod put;
use crate::{Error, Node};

/// The node's router.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/v1/blobs", get(list))
        .route("/v1/blobs/", get(list))
        .route("/v1/blobs/{*key}", any(blob))
        .route("/v1/session", any(crate::session::session))
        .route("/v1/jobs/{id}", get(job_status))
        .route("/v1/search", get(search))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/load", get(load))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(node)
}

fn tier_error(e: Error) -> Response {
    match e {
        Error::NotFound => error(StatusCode::NOT_FOUND, "not_found", "no such blob"),
        Error::Rejected { .. } => error(StatusCode::BAD_REQUEST, "rejected", e.to_string()),
        Error::Incomplete(_) => error(StatusCode::BAD_REQUEST, "incomplete_body", e.to_string()),
        Error::NotEnoughStores { .. }
        | Error::Unavailable { .. }
        | Error::Full { .. }
        | Error::Corrupt { .. } => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
    }
}

fn count(node: &Node, r: Response) -> Response {
    if r.status().is_client_error() {
        inc(&node.metrics.client_errors);
    } else if r.status().is_server_error() {
        inc(&node.metrics.server_errors);
    }
    r
}

async fn blob(State(node): State<Arc<Node>>, req: Request) -> Response {
    node.metrics
        .in_flight
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let r = blob_inner(&node, req).await;
    node.metrics
        .in_flight
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    count(&node, r)
}

/// Load report for load-aware balancing: this process's CPU use since the
/// previous report (percent of one core), resident memory and the blob
/// requests in flight.
async fn load(State(node): State<Arc<Node>>) -> Response {
    let cpu = node.cpu_sample();
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096);
    let in_flight = node
        .metrics
        .in_flight
        .load(std::sync::atomic::Ordering::Relaxed);
    axum::Json(serde_json::json!({ "cpu_percent": cpu, "rss_bytes": rss, "in_flight": in_flight }))
        .into_response()
}

async fn blob_inner(node: &Arc<Node>, req: Request) -> Response {
    let key = match crate::direct::blob_key(req.uri().path(), req.uri().query()) {
        Ok(k) => k.into_owned(),
        Err(a) => return answer_response(a),
    };
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        // The body is not shared across the await (it is not Sync).
        let (parts, _) = req.into_parts();
        let h = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let ask = crate::direct::Ask {
            head: parts.method == Method::HEAD,
            if_none_match: h(header::IF_NONE_MATCH),
            range: h(header::RANGE),
            stream: true,
            extent: false,
            mapped: false,
        };
        return answer_response(node.get(&key, &ask).await);
    }
    if let Err(d) = validate_key(&key) {
        return error(StatusCode::BAD_REQUEST, "bad_key", d);
    }
    match req.method().clone() {
        Method::PUT | Method::POST => put_blob(node, key, req).await,
        Method::DELETE => delete_blob(node, &key, req.headers()).await,
        _ => {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use GET, HEAD, PUT, POST or DELETE",
            );
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, PUT, POST, DELETE"),
            );
            r
        }
    }
}

/// 401 without credentials, 403 with wrong ones, `None` when allowed.
fn check_auth(node: &Node, headers: &HeaderMap) -> Option<Response> {
    let want = node.opts.write_token.as_deref()?;
    let Some(given) = headers.get(header::AUTHORIZATION) else {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "writes need Authorization: Bearer <token>",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Some(r);
    };
    let token = given
        .as_bytes()
        .strip_prefix(b"Bearer ")
        .unwrap_or_default();
    if !cluster::auth::ct_eq(token, want.as_bytes()) {
        return Some(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "wrong write token",
        ));
    }
    None
}

/// `GET /v1/search`: books whose pages hold the query's words.
async fn search(
    State(node): State<Arc<Node>>,
    q: Result<Query<search::Query>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_query", e.body_text()),
    };
    let Some(tier) = node.search() else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this node has no search shards",
        );
    };
    let r = match tier.search(q).await {
        Ok(res) => axum::Json(res).into_response(),
        Err(Error::Rejected { detail, .. }) => error(StatusCode::BAD_REQUEST, "bad_query", detail),
        Err(e) => tier_error(e),
    };
    count(&node, r)
}

/// `GET /v1/jobs/{id}`: an asynchronous upload's state and result.
async fn job_status(
    State(node): State<Arc<Node>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(q) = node.queue() else {
        return error(StatusCode::NOT_FOUND, "not_found", "this node has no queue");
    };
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_job_id",
            "job ids are integers",
        );
    };
    match q.status(id).await {
        Ok(Some(mut v)) => {
            // The result is the blob's metadata (JSON text in the queue).
            if let Some(r) = v["result"]
                .as_str()
                .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
            {
                v["result"] = r;
            }
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                v.to_string(),
            )
                .into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", "no such job"),
        Err(e) => tier_error(e),
    }
}

/// An [`Answer`](crate::direct::Answer) as an axum response: its header
/// lines are the ones the gateway's direct path writes as they are.
fn answer_response(a: crate::direct::Answer) -> Response {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(a.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    let lines = a.lines();
    let mut at = 0;
    while let Some(n) = lines[at..].windows(2).position(|w| w == b"\r\n") {
        let line = lines.slice(at..at + n);
        at += n + 2;
        if let Some(colon) = line.iter().position(|&c| c == b':') {
            let value = line.slice(colon + 1..);
            let skip = value.iter().take_while(|c| **c == b' ').count();
            if let Ok(v) = HeaderValue::from_maybe_shared(value.slice(skip..)) {
                b = b.header(&line[..colon], v);
            }
        }
    }
    if let Some(r) = a.content_range() {
        b = b.header(header::CONTENT_RANGE, r);
    }
    if let Some(n) = a.length() {
        b = b.header(header::CONTENT_LENGTH, n);
    }
    let body = match a {
        crate::direct::Answer::Stream { body, .. } => Body::new(body),
        a => Body::from(a.body()),
    };
    b.body(body)
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

async fn delete_blob(node: &Arc<Node>, key: &str, headers: &HeaderMap) -> Response {
    inc(&node.metrics.deletes);
    if let Some(r) = check_auth(node, headers) {
        return r;
    }
    match node.delete_blob(key).await {
        Ok(Some(_)) => StatusCode::NO_CONTENT.into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no blob {key:?}"),
        ),
        Err(e) => tier_error(e),
    }
}

#[derive(Deserialize)]
struct ListQ {
    #[serde(default)]
    prefix: String,
    tag: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

async fn list(
    State(node): State<Arc<Node>>,
    q: Result<Query<ListQ>, axum::extract::rejection::QueryRejection>,
) -> Response {
    inc(&node.metrics.lists);
    let r = match q {
        Ok(Query(q)) => list_inner(&node, q).await,
        Err(e) => error(StatusCode::BAD_REQUEST, "bad_query", e.body_text()),
    };
    count(&node, r)
}

async fn list_inner(node: &Node, q: ListQ) -> Response {
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_limit",
                format!("limit must be 1..={MAX_LIST_LIMIT}"),
            )
        }
    };
    match node
        .index
        .list(&q.prefix, q.tag.as_deref(), q.after.as_deref(), limit)
        .await
    {
        Ok(l) => axum::Json(l).into_response(),
        Err(e) => tier_error(e),
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    prom::response(&node.registry).into_response()
}

/// Serves the public API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Arc<Node>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(node))
        .with_graceful_shutdown(shutdown)
        .await
}
