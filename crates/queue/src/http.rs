//! The broker's HTTP/JSON API.
//!
//! | method | path | answer |
//! |---|---|---|
//! | POST | `/v1/queues/{q}/jobs?priority=&delay_ms=&ttr_ms=&max_attempts=` (body = payload, optional `Idempotency-Key`) | 201 `{id, created}` once durable (200 for a repeated key) |
//! | POST | `/v1/queues/{q}/reserve?timeout_ms=` | 200 payload with `x-job-id`, `x-job-lease`; 204 when none came |
//! | GET | `/v1/jobs/{id}` | status JSON `{id, queue, state, attempts, result, error, ...}` |
//! | GET | `/v1/jobs/{id}/payload` | the payload |
//! | POST | `/v1/jobs/{id}/{touch,complete,fail,release,bury}?lease=` | 204 (`fail`: 200 `{state}`); body = result or error |
//! | POST | `/v1/jobs/{id}/kick` | 204 |
//! | DELETE | `/v1/jobs/{id}[?lease=]` | 204 |
//! | POST | `/v1/queues/{q}/kick?bound=` | `{kicked}` |
//! | GET | `/v1/queues/{q}/peek?state=ready|delayed|dead` | status JSON |
//! | GET | `/v1/queues/{q}/dead?limit=`, `/v1/queues/{q}/stats`, `/v1/queues` | JSON |
//! | GET | `/healthz`, `/metrics` | liveness, Prometheus text |
//!
//! A worker's lease token is the attempt number it reserved: a worker whose
//! lease expired (and whose job went to another worker) is refused with
//! 409, so two executions can never both complete one job.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, Limited};

use crate::job::{NewJob, State};
use crate::{Error, Queue};

type Q = Query<HashMap<String, String>>;

/// The backend behind the API (the built-in broker or PostgreSQL).
type Db = Arc<dyn Queue>;

/// The API's router.
pub fn router(broker: Db) -> Router {
    Router::new()
        .route("/v1/queues", get(queues))
        .route("/v1/queues/{q}/jobs", post(put))
        .route("/v1/queues/{q}/reserve", post(reserve))
        .route("/v1/queues/{q}/kick", post(kick))
        .route("/v1/queues/{q}/peek", get(peek))
        .route("/v1/queues/{q}/dead", get(dead))
        .route("/v1/queues/{q}/stats", get(stats))
        .route("/v1/jobs/{id}", get(status).delete(delete))
        .route("/v1/jobs/{id}/payload", get(payload))
        .route("/v1/jobs/{id}/{op}", post(op))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(broker)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    broker: Db,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(broker))
        .with_graceful_shutdown(shutdown)
        .await
}

fn json_error(status: StatusCode, code: &str, detail: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": code, "detail": detail.into()});
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn err(e: Error) -> Response {
    match e {
        Error::NotFound(_) => json_error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        Error::NotReserved(_) => json_error(StatusCode::CONFLICT, "not_reserved", e.to_string()),
        Error::Invalid(_) => json_error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
        Error::TooBig { .. } => {
            json_error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
        }
        _ => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
    }
}

fn json(status: StatusCode, v: serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// A numeric query parameter: absent -> `default`, malformed -> 400.
fn num<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    key: &str,
    default: T,
) -> Result<T, Response> {
    match q.get(key) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("`{key}` must be a non-negative integer"),
            )
        }),
    }
}

fn lease(q: &HashMap<String, String>) -> Result<Option<u32>, Response> {
    match q.get("lease") {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "`lease` must be the attempt number from reserve",
            )
        }),
    }
}

async fn body(broker: &dyn Queue, req: Request) -> Result<Bytes, Response> {
    let limit = broker.options().max_payload;
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("payload over {limit} bytes"),
        )),
        Err(_) => Err(json_error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "the body was cut off",
        )),
    }
}

async fn put(
    AxState(b): AxState<Db>,
    Path(queue): Path<String>,
    Query(q): Q,
    req: Request,
) -> Response {
    let run = async {
        let key = req
            .headers()
            .get("idempotency-key")
            .map(|v| v.to_str().map(str::to_owned))
            .transpose()
            .map_err(|_| {
                json_error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "Idempotency-Key must be visible ASCII",
                )
            })?;
        let mut job = NewJob::new(&queue, Bytes::new());
        job.priority = num(&q, "priority", job.priority)?;
        job.delay_ms = num(&q, "delay_ms", 0)?;
        job.ttr_ms = num(&q, "ttr_ms", job.ttr_ms)?;
        job.max_attempts = num(&q, "max_attempts", job.max_attempts)?;
        job.idempotency_key = key;
        job.payload = body(b.as_ref(), req).await?;
        let (id, created) = b.put(job).await.map_err(err)?;
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        let mut r = json(status, serde_json::json!({"id": id, "created": created}));
        if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{id}")) {
            r.headers_mut().insert("location", v);
        }
        Ok::<_, Response>(r)
    };
    run.await.unwrap_or_else(|r| r)
}

async fn reserve(AxState(b): AxState<Db>, Path(queue): Path<String>, Query(q): Q) -> Response {
    let timeout = match num(&q, "timeout_ms", 0u64) {
        Ok(t) => Duration::from_millis(t.min(60_000)),
        Err(r) => return r,
    };
    match b.reserve(&[queue], Some(timeout), 0).await {
        Ok(Some(j)) => {
            let mut r = Response::new(Body::from(j.payload.clone()));
            let h = r.headers_mut();
            for (k, v) in [
                ("x-job-id", j.id.to_string()),
                ("x-job-lease", j.attempts.to_string()),
                ("x-job-attempts", j.attempts.to_string()),
                ("x-job-ttr-ms", j.ttr_ms.to_string()),
            ] {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.insert(k, v);
                }
            }
            r
        }
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(e),
    }
}

async fn status(AxState(b): AxState<Db>, Path(id): Path<u64>) -> Response {
    match b.status(id).await {
        Ok(Some(s)) => json(StatusCode::OK, serde_json::to_value(s).unwrap_or_default()),
        Ok(None) => err(Error::NotFound(id)),
        Err(e) => err(e),
    }
}

async fn payload(AxState(b): AxState<Db>, Path(id): Path<u64>) -> Response {
    match b.get(id).await {
        Ok(Some(j)) => j.payload.into_response(),
        Ok(None) => err(Error::NotFound(id)),
        Err(e) => err(e),
    }
}

async fn delete(AxState(b): AxState<Db>, Path(id): Path<u64>, Query(q): Q) -> Response {
    let l = match lease(&q) {
        Ok(l) => l,
        Err(r) => return r,
    };
    match b.delete(id, 0, l).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(e),
    }
}

async fn op(
    AxState(b): AxState<Db>,
    Path((id, op)): Path<(u64, String)>,
    Query(q): Q,
    req: Request,
) -> Response {
    let run = async {
        let l = lease(&q)?;
        let needs_lease = matches!(
            op.as_str(),
            "touch" | "complete" | "fail" | "release" | "bury"
        );
        if needs_lease && l.is_none() {
            return Err(json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "`lease` is required",
            ));
        }
        let done = StatusCode::NO_CONTENT.into_response();
        match op.as_str() {
            "touch" => b.touch(id, 0, l).await.map(|_| done).map_err(err),
            "complete" => {
                let result = body(b.as_ref(), req).await?;
                b.complete(id, 0, l, result)
                    .await
                    .map(|_| done)
                    .map_err(err)
            }
            "fail" => {
                let e = body(b.as_ref(), req).await?;
                let msg = String::from_utf8_lossy(&e).into_owned();
                b.fail(id, 0, l, &msg)
                    .await
                    .map(|s| json(StatusCode::OK, serde_json::json!({"state": s})))
                    .map_err(err)
            }
            "release" => {
                let pri = num(&q, "priority", current_priority(b.as_ref(), id).await)?;
                let delay = num(&q, "delay_ms", 0)?;
                b.release(id, 0, l, pri, delay)
                    .await
                    .map(|_| done)
                    .map_err(err)
            }
            "bury" => {
                let pri = num(&q, "priority", current_priority(b.as_ref(), id).await)?;
                b.bury(id, 0, l, pri).await.map(|_| done).map_err(err)
            }
            "kick" => b.kick_job(id).await.map(|_| done).map_err(err),
            _ => Err(json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such job operation",
            )),
        }
    };
    run.await.unwrap_or_else(|r| r)
}

async fn kick(AxState(b): AxState<Db>, Path(queue): Path<String>, Query(q): Q) -> Response {
    let bound = match num(&q, "bound", 1usize) {
        Ok(n) => n,
        Err(r) => return r,
    };
    match b.kick(&queue, bound).await {
        Ok(n) => json(StatusCode::OK, serde_json::json!({"kicked": n})),
        Err(e) => err(e),
    }
}

async fn peek(AxState(b): AxState<Db>, Path(queue): Path<String>, Query(q): Q) -> Response {
    let state = match q.get("state").map(String::as_str).unwrap_or("ready") {
        "ready" => State::Ready,
        "delayed" => State::Delayed,
        "dead" | "buried" => State::Dead,
        _ => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "state is ready, delayed or dead",
            )
        }
    };
    match b.peek(&queue, state).await {
        Ok(Some(j)) => json(
            StatusCode::OK,
            serde_json::to_value(j.status()).unwrap_or_default(),
        ),
        Ok(None) => json_error(StatusCode::NOT_FOUND, "not_found", "no such job"),
        Err(e) => err(e),
    }
}

async fn dead(AxState(b): AxState<Db>, Path(queue): Path<String>, Query(q): Q) -> Response {
    let limit = match num(&q, "limit", 100usize) {
        Ok(n) => n.min(10_000),
        Err(r) => return r,
    };
    match b.dead(&queue, limit).await {
        Ok(jobs) => json(StatusCode::OK, serde_json::json!({ "jobs": jobs })),
        Err(e) => err(e),
    }
}

async fn stats(AxState(b): AxState<Db>, Path(queue): Path<String>) -> Response {
    match b.queue_stats(&queue).await {
        Ok(Some(s)) => json(StatusCode::OK, serde_json::to_value(s).unwrap_or_default()),
        Ok(None) => json_error(StatusCode::NOT_FOUND, "not_found", "no such queue"),
        Err(e) => err(e),
    }
}

async fn queues(AxState(b): AxState<Db>) -> Response {
    match all_stats(b.as_ref()).await {
        Ok(all) => json(StatusCode::OK, serde_json::json!({ "queues": all })),
        Err(e) => err(e),
    }
}

async fn metrics(AxState(b): AxState<Db>, _h: HeaderMap) -> Response {
    // The counts come from the backend asynchronously (PostgreSQL for a
    // cluster), so they are gathered here and encoded without a registry.
    let all = match all_stats(b.as_ref()).await {
        Ok(all) => all,
        Err(e) => return err(e),
    };
    let mut jobs = prom::Family::gauge("strata_queue_jobs", "Jobs by queue and state.");
    let mut total = prom::Family::counter("strata_queue_jobs_total", "Jobs ever put on a queue.");
    for s in &all {
        let q = s.name.as_str();
        for (state, n) in [
            ("ready", s.ready),
            ("reserved", s.reserved),
            ("delayed", s.delayed),
            ("dead", s.dead),
            ("succeeded", s.succeeded),
        ] {
            jobs.add(&[("queue", q), ("state", state)], n as f64);
        }
        total.add(&[("queue", q)], s.total as f64);
    }
    (
        [("content-type", prom::CONTENT_TYPE)],
        prom::render_families([jobs, total]),
    )
        .into_response()
}

/// Every queue's counts.
async fn all_stats(b: &dyn Queue) -> crate::Result<Vec<crate::QueueStats>> {
    let mut all = Vec::new();
    for q in b.queues().await? {
        if let Some(s) = b.queue_stats(&q).await? {
            all.push(s);
        }
    }
    Ok(all)
}

/// A job's priority now (the default for release and bury).
async fn current_priority(b: &dyn Queue, id: u64) -> u32 {
    b.get(id).await.ok().flatten().map_or(1024, |j| j.priority)
}
