//! The store's internal HTTP API.
//!
//! | method | path | meaning |
//! |---|---|---|
//! | PUT | `/blobs/{id}` | append a blob (201 once fsynced); with `X-Strata-Meta-Len: N` the body's first N bytes are its metadata |
//! | GET, HEAD | `/blobs/{id}` | read it; one `Range` -> 206, outside -> 416 |
//! | DELETE | `/blobs/{id}` | append a tombstone carrying the body as its metadata (204, or 404) |
//! | GET | `/meta/{id}` | the blob's needle metadata (raw bytes) |
//! | GET | `/volumes` | JSON: `[{volume, generation}]` |
//! | GET | `/heads?volume=V&from=OFFSET&generation=G&limit=N` | the needle heads of a volume ([`crate::heads`]); 409 when the volume was compacted since `generation` |
//! | POST | `/admin/compact` | compact sealed volumes over the threshold now |
//! | GET | `/stats` | JSON: blobs, needle-map bytes, volumes |
//! | GET | `/healthz`, `/metrics` | liveness, Prometheus text |

use std::future::Future;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::range::{parse_range, RangeAsk};
use crate::{needle, Error, Store};

/// The router, for embedding in tests or other servers.
pub fn router(store: Arc<Store>) -> Router {
    let registry = prom::Registry::new();
    prom::register(&registry, store.metrics_collector());
    Router::new()
        .route(
            "/blobs/{id}",
            get(get_blob)
                .head(get_blob)
                .put(put_blob)
                .delete(delete_blob),
        )
        .route("/mget", post(mget))
        .route("/meta/{id}", get(get_meta))
        .route("/volumes", get(volumes))
        .route("/heads", get(heads))
        .route("/admin/compact", post(compact))
        .route("/stats", get(stats))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || std::future::ready(prom::response(&registry))),
        )
        .layer(DefaultBodyLimit::max(needle::MAX_DATA as usize))
        .with_state(store)
}

/// Serves the store API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    store: Arc<Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(store))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A JSON error body `{error, detail}` with a status.
pub fn error_response(status: StatusCode, error: &str, detail: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": error, "detail": detail.into() });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn store_error(e: Error) -> Response {
    match e {
        Error::NotFound(_) => error_response(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        Error::TooLarge(_) | Error::MetaTooLarge(_) => {
            error_response(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
        }
        Error::BadRange { size, .. } => {
            let mut r = error_response(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "bad_range",
                e.to_string(),
            );
            if let Ok(v) = format!("bytes */{size}").parse() {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            r
        }
        Error::Corrupt { .. } => {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "corrupt", e.to_string())
        }
        Error::Full { .. } => {
            error_response(StatusCode::INSUFFICIENT_STORAGE, "full", e.to_string())
        }
        Error::Closed => error_response(StatusCode::SERVICE_UNAVAILABLE, "closed", e.to_string()),
        _ => error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

fn parse_id(raw: &str) -> Result<u64, Response> {
    raw.parse::<u64>().map_err(|_| {
        error_response(
            StatusCode::BAD_REQUEST,
            "bad_id",
            format!("blob id `{raw}` is not a u64"),
        )
    })
}

async fn get_blob(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let size = match store.size(id) {
        Ok(s) => s,
        Err(e) => return store_error(e),
    };
    let ask = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        size,
    );
    let (status, start, end) = match ask {
        RangeAsk::Full => (StatusCode::OK, 0, size),
        RangeAsk::Part(s, e) => (StatusCode::PARTIAL_CONTENT, s, e),
        RangeAsk::Unsatisfiable => {
            return store_error(Error::BadRange {
                start: size,
                end: size,
                size,
            })
        }
    };
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    if method == Method::HEAD {
        return b
            .body(Body::empty())
            .unwrap_or_else(|e| internal(e.to_string()));
    }
    let data = if status == StatusCode::OK {
        store.get(id)
    } else {
        store.get_range(id, start, end)
    };
    match data {
        Ok(d) => b
            .body(Body::from(d))
            .unwrap_or_else(|e| internal(e.to_string())),
        Err(e) => store_error(e),
    }
}

fn internal(detail: String) -> Response {
    error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
}

async fn put_blob(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    mut body: Bytes,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let meta_len = match headers
        .get(META_LEN)
        .map(|v| v.to_str().ok()?.parse::<usize>().ok())
    {
        None => 0,
        Some(Some(n)) if n <= body.len() => n,
        Some(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_meta_len",
                format!("{META_LEN} must be a byte count no larger than the body"),
            )
        }
    };
    let meta = body.split_to(meta_len);
    let size = body.len();
    match store.put(id, meta, body).await {
        Ok(()) => (
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "id": id, "size": size }).to_string(),
        )
            .into_response(),
        Err(e) => store_error(e),
    }
}

async fn delete_blob(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
    meta: Bytes,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match store.delete(id, meta).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(e),
    }
}

/// Multi-get: the body is blob ids (u64 little-endian, back to back); the
/// answer is, per id in order, `u64 id | u8 status (0 found, 1 missing,
/// 2 error) | u32 length | data`. Used by nodes that batch small reads.
async fn mget(State(store): State<Arc<Store>>, body: Bytes) -> Response {
    if body.len() % 8 != 0 || body.len() > 8 * 4096 {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_mget",
            "body must be 1..=4096 u64 ids",
        );
    }
    store.metrics.mgets.inc();
    let mut out = Vec::new();
    for raw in body.chunks_exact(8) {
        let mut b = [0u8; 8];
        b.copy_from_slice(raw);
        let id = u64::from_le_bytes(b);
        let (status, data) = match store.get(id) {
            Ok(d) => (0u8, d),
            Err(Error::NotFound(_)) => (1, Bytes::new()),
            Err(_) => (2, Bytes::new()),
        };
        out.extend_from_slice(&id.to_le_bytes());
        out.push(status);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
    }
    ([(header::CONTENT_TYPE, "application/octet-stream")], out).into_response()
}

async fn get_meta(State(store): State<Arc<Store>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match store.meta(id) {
        Ok(m) => ([(header::CONTENT_TYPE, "application/octet-stream")], m).into_response(),
        Err(e) => store_error(e),
    }
}

async fn volumes(State(store): State<Arc<Store>>) -> Response {
    let list: Vec<_> = store
        .volumes()
        .into_iter()
        .map(|(volume, generation)| serde_json::json!({ "volume": volume, "generation": generation }))
        .collect();
    axum::Json(list).into_response()
}

#[derive(serde::Deserialize)]
struct HeadsQuery {
    volume: u16,
    #[serde(default)]
    from: u64,
    generation: Option<u64>,
    limit: Option<usize>,
}

async fn heads(
    State(store): State<Arc<Store>>,
    axum::extract::Query(q): axum::extract::Query<HeadsQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(4096).clamp(1, 65_536);
    let page =
        tokio::task::spawn_blocking(move || store.heads(q.volume, q.from, q.generation, limit))
            .await;
    match page {
        Ok(Ok(p)) => {
            let mut r = (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                crate::heads::encode(&p.heads),
            )
                .into_response();
            let h = r.headers_mut();
            h.insert(GENERATION, p.generation.into());
            if let Some(n) = p.next {
                h.insert(NEXT, n.into());
            }
            r
        }
        Ok(Err(Error::Moved { .. })) => error_response(
            StatusCode::CONFLICT,
            "compacted",
            "the volume was compacted: list it again from the start",
        ),
        Ok(Err(e)) => store_error(e),
        Err(e) => internal(e.to_string()),
    }
}

/// Header of a PUT: how many leading body bytes are the blob's metadata.
pub const META_LEN: &str = "x-strata-meta-len";
/// Header of a `/heads` answer: the volume's generation.
pub const GENERATION: &str = "x-strata-generation";
/// Header of a `/heads` answer: the `from` of the next page (absent at the
/// volume's end).
pub const NEXT: &str = "x-strata-next";

async fn compact(State(store): State<Arc<Store>>) -> Response {
    match tokio::task::spawn_blocking(move || store.compact_due()).await {
        Ok(Ok(reports)) => axum::Json(reports).into_response(),
        Ok(Err(e)) => store_error(e),
        Err(e) => internal(e.to_string()),
    }
}

async fn stats(State(store): State<Arc<Store>>) -> Response {
    let vols: Vec<_> = store
        .volume_stats()
        .into_iter()
        .map(|(v, s)| serde_json::json!({ "volume": v, "total": s.total, "live": s.live, "tombstones": s.tombstones }))
        .collect();
    let blobs = store.len();
    let map = store.needle_map_bytes();
    axum::Json(serde_json::json!({
        "blobs": blobs,
        "needle_map_bytes": map,
        "needle_map_bytes_per_blob": if blobs == 0 { 0.0 } else { map as f64 / blobs as f64 },
        "volumes": vols,
    }))
    .into_response()
}
