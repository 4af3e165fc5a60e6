//! A gateway in front of one pool: its settings, its counters, and the
//! state every request through it shares (the pool snapshot, per-client
//! token buckets, per-backend admission, stickiness, and the backends
//! served in this process). How a request is forwarded is
//! [`crate::proxy`]; the fast path is the relay.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::HeaderValue;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::body::UpBody;
use crate::direct::{DirectReads, LocalBackend};
use crate::pool::Pool;

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
    local_reads: std::sync::RwLock<Option<Arc<dyn DirectReads>>>,
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

    /// The shared upstream client (hedged and bodied requests, checks).
    pub(crate) fn client(&self) -> &Upstream {
        &self.client
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
    pub(crate) fn local_reads(&self) -> Option<Arc<dyn DirectReads>> {
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
