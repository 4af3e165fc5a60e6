//! The full path's forwarding: one request through a [`Gateway`] to a
//! backend of its pool, with the rate limit, admission, stickiness,
//! retries on another backend within the retry budget, and hedged GETs.
//! Requests without a body go through `upstream` on the request's own
//! task; requests with one through hyper's pooled client (it streams
//! uploads); requests for a backend in this process are handed to it as
//! values.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};

use crate::body::{plain, BoxError, UpBody};
use crate::gateway::{budget_allows, Gateway};
use crate::h1::strip_hop_by_hop;
use crate::metrics::Count;
use crate::pool::Pool;

/// Decrements a backend's in-flight count when the response body ends.
struct Guarded {
    inner: UpBody,
    backend: Arc<crate::Backend>,
    /// The backend's admission slot, released when the body ends.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Which backend answered a request and how long its response head took;
/// in the extensions of responses that came from a backend.
#[derive(Debug, Clone, Copy)]
pub struct Upstreamed {
    /// The backend.
    pub addr: SocketAddr,
    /// Request sent to response head received.
    pub took: Duration,
}

/// Forwards one request that came over plain HTTP.
pub async fn handle(
    gw: Arc<Gateway>,
    req: Request<Incoming>,
    client: SocketAddr,
) -> Response<UpBody> {
    handle_as(gw, req, client, "http").await
}

/// Forwards one request that came over `proto` (`http` or `https`, sent
/// upstream as `X-Forwarded-Proto`).
pub async fn handle_as(
    gw: Arc<Gateway>,
    req: Request<Incoming>,
    client: SocketAddr,
    proto: &'static str,
) -> Response<UpBody> {
    gw.metrics.requests.fetch_add(1, Ordering::Relaxed);
    if !gw.admit(client.ip(), Instant::now()) {
        gw.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
        let mut r = plain(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded\n");
        r.headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    let _active = Count::new(&gw.metrics.active);
    // Set while this request is being retried (counts against the budget).
    let mut retrying: Option<Count<'_>> = None;
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // Backends are spoken to in HTTP/1.1 whatever the client spoke (an
    // HTTP/2 request's version would ask the pool for an h2 connection).
    parts.version = hyper::Version::HTTP_11;
    let xff = match parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prev) => format!("{prev}, {}", client.ip()),
        None => client.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        parts.headers.insert("x-forwarded-for", v);
    }
    parts
        .headers
        .insert("x-forwarded-proto", HeaderValue::from_static(proto));
    // Only the path goes upstream: an absolute-form URI or a Host header
    // naming another server never makes this an open proxy.
    let path = parts
        .uri
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    let idempotent = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let has_body = body.size_hint().exact() != Some(0) || !body.is_end_stream();
    let retryable = idempotent && !has_body;
    let mut body = Some(body);
    // One snapshot of the pool for the whole request: backends added or
    // removed meanwhile do not shift the indexes it holds.
    let pool = gw.pool();
    let sticky_id = gw
        .options()
        .sticky
        .as_ref()
        .and_then(|s| s.from_request(&parts.headers));
    let mut pinned = gw.pinned(&pool, sticky_id);
    let mut tried: Vec<usize> = Vec::new();
    loop {
        let now = Instant::now();
        let Some(i) = pinned
            .take()
            .or_else(|| pool.pick(path.as_bytes(), &tried, now))
        else {
            gw.metrics.gateway_errors.fetch_add(1, Ordering::Relaxed);
            return plain(StatusCode::SERVICE_UNAVAILABLE, "no backend available\n");
        };
        tried.push(i);
        let b = &pool.backends[i];
        let up_body: UpBody = match body.take() {
            Some(b) if !retryable => b.map_err(BoxError::from).boxed(),
            _ => Empty::new().map_err(|e| match e {}).boxed(),
        };
        // Admission: at most max_in_flight per backend; a bounded queue
        // waits up to queue_timeout, then 503 with Retry-After.
        let permit = match gw.admit_backend(b).await {
            Ok(p) => p,
            Err(()) => {
                gw.metrics.queue_refused.fetch_add(1, Ordering::Relaxed);
                let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, "backend busy\n");
                r.headers_mut()
                    .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
                return r;
            }
        };
        let hedge = gw
            .options()
            .hedge_after
            .filter(|_| retryable && gw.options().max_in_flight.is_none());
        b.in_flight.fetch_add(1, Ordering::Relaxed);
        b.requests.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        if let Some(svc) = gw.local_backend(b.addr).map(|l| l.service) {
            // In this process: the request itself, origin-form target.
            let Ok(uri) = path.parse::<hyper::Uri>() else {
                b.in_flight.fetch_sub(1, Ordering::Relaxed);
                return plain(StatusCode::BAD_REQUEST, "bad request target\n");
            };
            let mut up = Request::from_parts(parts.clone(), up_body);
            *up.uri_mut() = uri;
            return match tokio::time::timeout(gw.options().first_byte_timeout, svc(up)).await {
                Ok(resp) => answered(&gw, &pool, i, resp, sent, sticky_id, permit),
                Err(_) => {
                    b.in_flight.fetch_sub(1, Ordering::Relaxed);
                    pool.record(i, false, Instant::now());
                    gw.metrics.gateway_errors.fetch_add(1, Ordering::Relaxed);
                    plain(StatusCode::GATEWAY_TIMEOUT, "backend timed out\n")
                }
            };
        }
        if retryable && hedge.is_none() {
            // No body, no hedging: the request's own task does the exchange
            // (crate::upstream).
            let head = crate::upstream::request_head(&parts, &path, b.addr);
            let is_head = parts.method == Method::HEAD;
            match crate::upstream::send(&gw, b, &head, is_head).await {
                Ok(resp) => return answered(&gw, &pool, i, resp, sent, sticky_id, permit),
                Err(f) => {
                    b.in_flight.fetch_sub(1, Ordering::Relaxed);
                    pool.record(i, false, Instant::now());
                    if tried.len() <= gw.options().retries && may_retry(&gw, &mut retrying) {
                        continue;
                    }
                    gw.metrics.gateway_errors.fetch_add(1, Ordering::Relaxed);
                    return match f {
                        crate::upstream::Failed::Timeout => {
                            plain(StatusCode::GATEWAY_TIMEOUT, "backend timed out\n")
                        }
                        crate::upstream::Failed::NoResponse => {
                            plain(StatusCode::BAD_GATEWAY, "backend failed\n")
                        }
                    };
                }
            }
        }
        let uri = match format!("http://{}{}", b.addr, path).parse::<hyper::Uri>() {
            Ok(u) => u,
            Err(_) => {
                b.in_flight.fetch_sub(1, Ordering::Relaxed);
                return plain(StatusCode::BAD_REQUEST, "bad request target\n");
            }
        };
        let mut up = Request::from_parts(parts.clone(), up_body);
        *up.uri_mut() = uri;
        let (res, i) = match hedge {
            Some(after) => hedged(&gw, &pool, up, i, after, &path, &parts, &mut tried).await,
            None => (
                tokio::time::timeout(gw.options().first_byte_timeout, gw.client().request(up))
                    .await
                    .map_err(|_| ()),
                i,
            ),
        };
        let b = &pool.backends[i];
        match res {
            Ok(Ok(resp)) => {
                let resp = resp.map(|rb| rb.map_err(BoxError::from).boxed());
                return answered(&gw, &pool, i, resp, sent, sticky_id, permit);
            }
            Ok(Err(e)) => {
                b.in_flight.fetch_sub(1, Ordering::Relaxed);
                pool.record(i, false, Instant::now());
                // No response arrived (connect error, or a pooled connection
                // the backend closed): for an idempotent request without a
                // body, trying another backend cannot repeat a side effect.
                tracing::debug!(backend = %b.addr, error = %e, "upstream request failed");
                if retryable && tried.len() <= gw.options().retries && may_retry(&gw, &mut retrying)
                {
                    continue;
                }
                gw.metrics.gateway_errors.fetch_add(1, Ordering::Relaxed);
                return plain(StatusCode::BAD_GATEWAY, "backend failed\n");
            }
            Err(_) => {
                b.in_flight.fetch_sub(1, Ordering::Relaxed);
                pool.record(i, false, Instant::now());
                if retryable && tried.len() <= gw.options().retries && may_retry(&gw, &mut retrying)
                {
                    continue;
                }
                gw.metrics.gateway_errors.fetch_add(1, Ordering::Relaxed);
                return plain(StatusCode::GATEWAY_TIMEOUT, "backend timed out\n");
            }
        }
    }
}

/// A backend's response on its way to the client: health and latency
/// recorded, hop-by-hop headers removed, the sticky cookie added, and the
/// backend's in-flight count and admission slot held until the body ends.
fn answered(
    gw: &Gateway,
    pool: &Pool,
    i: usize,
    resp: Response<UpBody>,
    sent: Instant,
    sticky_id: Option<u64>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Response<UpBody> {
    let b = &pool.backends[i];
    let now = Instant::now();
    pool.record(i, resp.status().as_u16() < 500, now);
    pool.record_latency(i, now.duration_since(sent), now);
    let (mut rp, rb) = resp.into_parts();
    strip_hop_by_hop(&mut rp.headers);
    rp.extensions.insert(Upstreamed {
        addr: b.addr,
        took: now.duration_since(sent),
    });
    if let Some(c) = gw.sticky_answer(b, sticky_id) {
        rp.headers.append(hyper::header::SET_COOKIE, c);
    }
    let guarded = Guarded {
        inner: rb,
        backend: b.clone(),
        _permit: permit,
    };
    Response::from_parts(rp, guarded.boxed())
}

type Sent = Result<Result<Response<Incoming>, hyper_util::client::legacy::Error>, ()>;

/// Sends `up` to backend `i`; if no response has come after `after`, sends
/// a copy to another backend too and returns the first response (and whose
/// it is). Every backend but the returned one has its in-flight count
/// settled here.
#[allow(clippy::too_many_arguments)]
async fn hedged(
    gw: &Arc<Gateway>,
    pool: &Pool,
    up: Request<UpBody>,
    i: usize,
    after: Duration,
    path: &str,
    parts: &hyper::http::request::Parts,
    tried: &mut Vec<usize>,
) -> (Sent, usize) {
    let deadline = tokio::time::sleep(gw.options().first_byte_timeout);
    let first = gw.client().request(up);
    tokio::pin!(deadline, first);
    tokio::select! {
        r = &mut first => return (Ok(r), i),
        _ = &mut deadline => return (Err(()), i),
        _ = tokio::time::sleep(after) => {}
    }
    let Some(j) = pool.pick(path.as_bytes(), tried, Instant::now()) else {
        // Nobody else to ask: keep waiting for the first.
        tokio::select! {
            r = &mut first => return (Ok(r), i),
            _ = &mut deadline => return (Err(()), i),
        }
    };
    tried.push(j);
    gw.metrics.hedges.fetch_add(1, Ordering::Relaxed);
    let bj = &pool.backends[j];
    let Ok(uri) = format!("http://{}{}", bj.addr, path).parse::<hyper::Uri>() else {
        return (Err(()), i);
    };
    let mut second =
        Request::from_parts(parts.clone(), Empty::new().map_err(|e| match e {}).boxed());
    *second.uri_mut() = uri;
    bj.in_flight.fetch_add(1, Ordering::Relaxed);
    bj.requests.fetch_add(1, Ordering::Relaxed);
    let second = gw.client().request(second);
    tokio::pin!(second);
    let settle = |loser: usize| {
        pool.backends[loser]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    };
    let (mut first_done, mut second_done) = (false, false);
    loop {
        tokio::select! {
            r = &mut first, if !first_done => match r {
                Ok(resp) => { settle(j); return (Ok(Ok(resp)), i); }
                Err(e) if second_done => { settle(j); return (Ok(Err(e)), i); }
                Err(_) => { first_done = true; pool.record(i, false, Instant::now()); }
            },
            r = &mut second, if !second_done => match r {
                Ok(resp) => { settle(i); return (Ok(Ok(resp)), j); }
                Err(e) if first_done => { settle(i); return (Ok(Err(e)), j); }
                Err(_) => { second_done = true; pool.record(j, false, Instant::now()); }
            },
            _ = &mut deadline => { settle(j); return (Err(()), i); }
        }
    }
}

/// Takes a place in the retry budget for this request (once), or refuses.
pub(crate) fn may_retry<'a>(gw: &'a Gateway, slot: &mut Option<Count<'a>>) -> bool {
    if slot.is_none() {
        let m = &gw.metrics;
        let (active, retrying) = (
            m.active.load(Ordering::Relaxed),
            m.retrying.load(Ordering::Relaxed),
        );
        if !budget_allows(
            active,
            retrying,
            gw.options().retry_budget_percent,
            gw.options().min_retry_concurrency,
        ) {
            m.retries_refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        *slot = Some(Count::new(&m.retrying));
    }
    gw.metrics.retries.fetch_add(1, Ordering::Relaxed);
    true
}
