//! The reverse proxy.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

use crate::health;
use crate::pool::Pool;

/// Error of a body the gateway relays (hyper's, or an upstream that broke
/// off mid-body).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body of requests sent upstream and responses sent downstream.
pub type UpBody = BoxBody<Bytes, BoxError>;

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Connect timeout to a backend.
    pub connect_timeout: Duration,
    /// Time to the response headers.
    pub first_byte_timeout: Duration,
    /// Extra backends tried for an idempotent request after a connect
    /// error or timeout.
    pub retries: usize,
    /// Retries in flight may be at most this percent of the requests in
    /// flight (a retry storm must not double the load on a sick pool).
    pub retry_budget_percent: u64,
    /// Retries always allowed in flight, whatever the percentage says.
    pub min_retry_concurrency: u64,
    /// Per-client-IP token bucket: (requests per second, burst). Over it a
    /// client gets 429 with Retry-After. `None` = no limit.
    pub rate_limit: Option<(f64, f64)>,
    /// Most requests in flight per backend; more wait in a queue. `None` =
    /// no limit.
    pub max_in_flight: Option<usize>,
    /// Most requests waiting per backend; beyond it, 503 at once.
    pub queue: usize,
    /// Longest wait in the queue before 503 with Retry-After.
    pub queue_timeout: Duration,
    /// Hedged GETs: an idempotent request without a body that has no
    /// response after this long is also sent to a second backend; the first
    /// answer wins. `None` = off (the default). Not combined with
    /// `max_in_flight`.
    pub hedge_after: Option<Duration>,
    /// Sticky sessions: the signed cookie that pins a client to a backend.
    /// `None` = off (the default).
    pub sticky: Option<crate::sticky::Sticky>,
}

/// May one more retry start, with `active` requests and `retrying`
/// retries in flight?
pub fn budget_allows(active: u64, retrying: u64, percent: u64, min: u64) -> bool {
    retrying < min.max(active * percent / 100)
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            connect_timeout: Duration::from_secs(1),
            first_byte_timeout: Duration::from_secs(30),
            retries: 2,
            retry_budget_percent: 50,
            min_retry_concurrency: 10,
            rate_limit: None,
            max_in_flight: None,
            queue: 100,
            queue_timeout: Duration::from_secs(1),
            hedge_after: None,
            sticky: None,
        }
    }
}

/// A body that is `Send` but not `Sync` (axum's) as an [`UpBody`]. Polling
/// takes `&mut self`, so the mutex is never contended; it only makes the
/// wrapper `Sync`.
pub fn send_body<B>(body: B) -> UpBody
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    struct SyncBody<B>(std::sync::Mutex<B>);
    impl<B> Body for SyncBody<B>
    where
        B: Body<Data = Bytes> + Send + Unpin,
        B::Error: Into<BoxError>,
    {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let b = self
                .get_mut()
                .0
                .get_mut()
                .unwrap_or_else(|p| p.into_inner());
            Pin::new(b).poll_frame(cx).map_err(Into::into)
        }
        fn is_end_stream(&self) -> bool {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_end_stream()
        }
        fn size_hint(&self) -> SizeHint {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).size_hint()
        }
    }
    SyncBody(std::sync::Mutex::new(body)).boxed()
}

/// Gateway counters.
#[derive(Debug, Default)]
pub struct GatewayMetrics {
    /// Requests received.
    pub requests: AtomicU64,
    /// Requests retried on another backend.
    pub retries: AtomicU64,
    /// 502/504 answered by the gateway itself.
    pub gateway_errors: AtomicU64,
    /// Retries refused by the retry budget.
    pub retries_refused: AtomicU64,
    /// Requests in flight.
    pub active: AtomicU64,
    /// Retries in flight.
    pub retrying: AtomicU64,
    /// Requests refused by the per-client rate limit.
    pub rate_limited: AtomicU64,
    /// Requests refused because a backend's queue was full or too slow.
    pub queue_refused: AtomicU64,
    /// Hedged requests sent (a second backend asked).
    pub hedges: AtomicU64,
    /// Requests sent to the backend their sticky cookie named.
    pub sticky_hits: AtomicU64,
    /// Sticky cookies (re)issued: new clients, and sessions moved off a
    /// backend that was ejected, drained or removed.
    pub sticky_moves: AtomicU64,
}

/// The HTTP client the gateways share: pooled keep-alive connections per
/// backend address.
pub type Upstream = Client<HttpConnector, UpBody>;

pub use crate::direct::LocalBackend;

/// The whole API of a backend that runs in this process (`strata serve`'s
/// nodes): the gateway hands it each request as a value and takes its
/// response, with no HTTP exchange in between. Its address stays its name
/// in the pool (balancing, stickiness, metrics) and what health checks
/// call.
pub type LocalService = Arc<
    dyn Fn(Request<UpBody>) -> Pin<Box<dyn Future<Output = Response<UpBody>> + Send>> + Send + Sync,
>;

/// An upstream client with `connect_timeout`.
pub fn upstream(connect_timeout: Duration) -> Upstream {
    let mut conn = HttpConnector::new();
    conn.set_connect_timeout(Some(connect_timeout));
    conn.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(conn)
}

/// A gateway in front of one pool.
pub struct Gateway {
    /// Token buckets per client IP: (tokens, last refill).
    buckets: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (f64, Instant)>>,
    /// The pool; replaced whole when backends are added or removed, so a
    /// request works on one consistent snapshot from start to end.
    pool: std::sync::RwLock<Arc<Pool>>,
    client: Upstream,
    /// Backends served in this process, by address.
    local: std::sync::RwLock<Arc<std::collections::HashMap<SocketAddr, LocalBackend>>>,
    /// Whether `local` has any (read per request without the lock).
    any_local: std::sync::atomic::AtomicBool,
    /// The direct reads of one of `local`'s backends (they are all of one
    /// kind): asked whether a read is one they take before any is picked.
    local_reads: std::sync::RwLock<Option<Arc<dyn crate::direct::DirectReads>>>,
    opts: GatewayOptions,
    /// Counters.
    pub metrics: GatewayMetrics,
}

impl Gateway {
    /// A gateway over `pool`.
    pub fn new(pool: Arc<Pool>, opts: GatewayOptions) -> Arc<Gateway> {
        let client = upstream(opts.connect_timeout);
        Gateway::with_client(pool, opts, client)
    }

    /// A gateway over `pool` that shares `client` (and its pooled
    /// connections) with other gateways.
    pub fn with_client(pool: Arc<Pool>, opts: GatewayOptions, client: Upstream) -> Arc<Gateway> {
        Arc::new(Gateway {
            buckets: std::sync::Mutex::new(std::collections::HashMap::new()),
            pool: std::sync::RwLock::new(pool),
            client,
            local: std::sync::RwLock::default(),
            any_local: std::sync::atomic::AtomicBool::new(false),
            local_reads: std::sync::RwLock::new(None),
            opts,
            metrics: GatewayMetrics::default(),
        })
    }

    /// The settings.
    pub fn options(&self) -> &GatewayOptions {
        &self.opts
    }

    /// Serves the backends at these addresses in this process: requests
    /// picked for them are handed over directly (the full path), or
    /// answered by their direct reads (the relay), not sent over HTTP.
    pub fn set_local(&self, backends: std::collections::HashMap<SocketAddr, LocalBackend>) {
        let any = !backends.is_empty();
        *self.local_reads.write().unwrap_or_else(|p| p.into_inner()) =
            backends.values().find_map(|b| b.reads.clone());
        *self.local.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(backends);
        self.any_local.store(any, Ordering::Release);
    }

    /// Whether any backend is served in this process.
    pub fn has_local(&self) -> bool {
        self.any_local.load(Ordering::Acquire)
    }

    /// Direct reads of the backends in this process, if they offer them.
    pub(crate) fn local_reads(&self) -> Option<Arc<dyn crate::direct::DirectReads>> {
        if !self.has_local() {
            return None;
        }
        self.local_reads
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The backend at `addr` if it is served in this process.
    pub(crate) fn local_backend(&self, addr: SocketAddr) -> Option<LocalBackend> {
        if !self.has_local() {
            return None;
        }
        self.local
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
            .cloned()
    }

    /// Replaces the pool's backends (same algorithm and health settings).
    /// Backends kept from the old set keep their state; requests in flight
    /// finish on the snapshot they started with.
    pub fn set_backends(&self, backends: Vec<Arc<crate::Backend>>) -> Result<(), crate::Error> {
        let old = self.pool();
        let new = Pool::shared(backends, old.algorithm, old.health.clone())?;
        *self.pool.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        Ok(())
    }

    /// Requests waiting in backend `i`'s queue.
    pub fn queued(&self, i: usize) -> u64 {
        self.pool().backends[i].waiting.load(Ordering::Relaxed)
    }

    /// Waits for an admission slot on backend `b` (if limits are set).
    pub(crate) async fn admit_backend(
        &self,
        b: &crate::Backend,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ()> {
        let Some(max) = self.opts.max_in_flight else {
            return Ok(None);
        };
        let sem = b
            .admission
            .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(max)));
        let waiting = &b.waiting;
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Ok(Some(p));
        }
        if waiting.fetch_add(1, Ordering::Relaxed) as usize >= self.opts.queue {
            waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(());
        }
        let got = tokio::time::timeout(self.opts.queue_timeout, sem.clone().acquire_owned()).await;
        waiting.fetch_sub(1, Ordering::Relaxed);
        match got {
            Ok(Ok(p)) => Ok(Some(p)),
            _ => Err(()),
        }
    }

    /// Takes a token from `ip`'s bucket; false when it is empty.
    pub(crate) fn admit(&self, ip: std::net::IpAddr, now: Instant) -> bool {
        let Some((rate, burst)) = self.opts.rate_limit else {
            return true;
        };
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() > 100_000 {
            // Forget idle clients rather than grow without bound.
            b.retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(60));
        }
        let (tokens, last) = b.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The backend of `pool` that a verified sticky cookie (`sticky_id`)
    /// names, if it can take a request now (not ejected, down or
    /// draining); otherwise the request is balanced as usual.
    pub(crate) fn pinned(&self, pool: &Pool, sticky_id: Option<u64>) -> Option<usize> {
        sticky_id
            .and_then(|id| pool.backends.iter().position(|b| b.sticky_id() == id))
            .filter(|&i| pool.can_take(i, Instant::now()))
    }

    /// For an answer from `b`: the `Set-Cookie` that pins the client to it
    /// when its cookie named another backend or none (a new client, or a
    /// session moved off a backend that could not take it). Counts a
    /// sticky hit or move; `None` with stickiness off or already pinned.
    pub(crate) fn sticky_answer(
        &self,
        b: &crate::Backend,
        sticky_id: Option<u64>,
    ) -> Option<HeaderValue> {
        let st = self.opts.sticky.as_ref()?;
        let id = b.sticky_id();
        if sticky_id == Some(id) {
            self.metrics.sticky_hits.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.metrics.sticky_moves.fetch_add(1, Ordering::Relaxed);
        Some(st.set_cookie(id))
    }

    /// The pool as it is now.
    pub fn pool(&self) -> Arc<Pool> {
        self.pool.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Headers that describe one hop, never forwarded (RFC 9110 7.6.1).
pub(crate) const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the (few) headers present instead of a hash lookup per
    // hop-by-hop name: most requests and responses carry none of them.
    let found: Vec<HeaderName> = h
        .keys()
        .filter(|k| HOP_BY_HOP.contains(&k.as_str()))
        .cloned()
        .collect();
    if found.is_empty() {
        return;
    }
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = h
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.into_iter().chain(found) {
        h.remove(n);
    }
}

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

/// A plain-text response.
pub(crate) fn plain(status: StatusCode, msg: &str) -> Response<UpBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg.to_owned()))
            .map_err(|e| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
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
        .opts
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
            .opts
            .hedge_after
            .filter(|_| retryable && gw.opts.max_in_flight.is_none());
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
            return match tokio::time::timeout(gw.opts.first_byte_timeout, svc(up)).await {
                Ok(resp) => answered(&gw, &pool, i, resp, sent, sticky_id, permit),
                Err(_) => {
                    b.in_flight.fetch_sub(1, Ordering::Relaxed);
                    health::record(&pool, i, false, Instant::now());
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
                    health::record(&pool, i, false, Instant::now());
                    if tried.len() <= gw.opts.retries && may_retry(&gw, &mut retrying) {
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
                tokio::time::timeout(gw.opts.first_byte_timeout, gw.client.request(up))
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
                health::record(&pool, i, false, Instant::now());
                // No response arrived (connect error, or a pooled connection
                // the backend closed): for an idempotent request without a
                // body, trying another backend cannot repeat a side effect.
                tracing::debug!(backend = %b.addr, error = %e, "upstream request failed");
                if retryable && tried.len() <= gw.opts.retries && may_retry(&gw, &mut retrying) {
                    continue;
                }
                gw.metrics.gateway_errors.fetch_add(1, Ordering::Relaxed);
                return plain(StatusCode::BAD_GATEWAY, "backend failed\n");
            }
            Err(_) => {
                b.in_flight.fetch_sub(1, Ordering::Relaxed);
                health::record(&pool, i, false, Instant::now());
                if retryable && tried.len() <= gw.opts.retries && may_retry(&gw, &mut retrying) {
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
    health::record(pool, i, resp.status().as_u16() < 500, now);
    health::record_latency(pool, i, now.duration_since(sent), now);
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
    let deadline = tokio::time::sleep(gw.opts.first_byte_timeout);
    let first = gw.client.request(up);
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
    let second = gw.client.request(second);
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
                Err(_) => { first_done = true; health::record(pool, i, false, Instant::now()); }
            },
            r = &mut second, if !second_done => match r {
                Ok(resp) => { settle(i); return (Ok(Ok(resp)), j); }
                Err(e) if first_done => { settle(i); return (Ok(Err(e)), j); }
                Err(_) => { second_done = true; health::record(pool, j, false, Instant::now()); }
            },
            _ = &mut deadline => { settle(j); return (Err(()), i); }
        }
    }
}

/// Counts one unit on a gauge for as long as it lives.
pub(crate) struct Count<'a>(&'a AtomicU64);

impl<'a> Count<'a> {
    pub(crate) fn new(c: &'a AtomicU64) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        Count(c)
    }
}

impl Drop for Count<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
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
            gw.opts.retry_budget_percent,
            gw.opts.min_retry_concurrency,
        ) {
            m.retries_refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        *slot = Some(Count::new(&m.retrying));
    }
    gw.metrics.retries.fetch_add(1, Ordering::Relaxed);
    true
}

/// Reads backend `i`'s `GET /load` report into its reported load.
async fn poll_load(gw: &Gateway, b: &crate::Backend, timeout: Duration) {
    let Ok(uri) = format!("http://{}/load", b.addr).parse::<hyper::Uri>() else {
        return;
    };
    let Ok(req) = Request::get(uri).body(Empty::new().map_err(|e| match e {}).boxed()) else {
        return;
    };
    let Ok(Ok(resp)) = tokio::time::timeout(timeout, gw.client.request(req)).await else {
        return;
    };
    let Ok(Ok(body)) = tokio::time::timeout(timeout, resp.into_body().collect()).await else {
        return;
    };
    let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
    // A tiny reader for {"cpu_percent": x, "in_flight": n, ...}: no JSON
    // crate in the gateway for two numbers.
    let field = |name: &str| -> f64 {
        text.split_once(&format!("\"{name}\":"))
            .and_then(|(_, rest)| rest.trim_start().split([',', '}']).next())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let score = (field("cpu_percent") + field("in_flight")) * 100.0;
    b.reported_load
        .store(score.max(0.0) as u64, Ordering::Relaxed);
}

/// Active health checks: `GET` of the pool's check path (`/healthz`) on
/// every backend each interval.
pub fn spawn_checks(gw: &Arc<Gateway>) {
    let interval = gw.pool().health.check_interval;
    if interval.is_zero() {
        return;
    }
    let weak = Arc::downgrade(gw);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let Some(gw) = weak.upgrade() else { return };
            let pool = gw.pool();
            for (i, b) in pool.backends.iter().enumerate() {
                let uri = format!("http://{}{}", b.addr, pool.health.check_path);
                let Ok(uri) = uri.parse::<hyper::Uri>() else {
                    continue;
                };
                let req = Request::get(uri).body(Empty::new().map_err(|e| match e {}).boxed());
                let Ok(req) = req else { continue };
                let passed = matches!(
                    tokio::time::timeout(pool.health.check_timeout, gw.client.request(req)).await,
                    Ok(Ok(r)) if r.status().is_success()
                );
                health::record_check(&pool, i, passed);
                if passed && pool.algorithm == crate::Algorithm::Load {
                    poll_load(&gw, b, pool.health.check_timeout).await;
                }
            }
        }
    });
}

/// Serves the gateway on `listener` until `shutdown` resolves: a router
/// with this one pool and no rules. `/_strata/metrics` and
/// `/_strata/status` are answered by the gateway itself.
pub async fn serve(
    listener: TcpListener,
    gw: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = crate::Router {
        pools: vec![("default".into(), gw)],
        routes: Vec::new(),
        rules: Default::default(),
    };
    crate::router::serve_routed(listener, crate::router::Live::new(router, None), shutdown).await
}
