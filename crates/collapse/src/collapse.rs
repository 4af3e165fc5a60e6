//! The single-flight table.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Settings.
#[derive(Debug, Clone)]
pub struct CollapseOptions {
    /// Followers join a flight only while it is younger than this.
    pub max_age: Duration,
    /// A follower waiting longer than this fetches by itself.
    pub wait_timeout: Duration,
    /// Most followers of one flight; more fetch directly.
    pub max_waiters: usize,
}

impl Default for CollapseOptions {
    fn default() -> Self {
        CollapseOptions {
            max_age: Duration::from_secs(5),
            wait_timeout: Duration::from_secs(5),
            max_waiters: 10_000,
        }
    }
}

/// Why a collapsed read failed.
#[derive(Debug, thiserror::Error, Clone)]
#[non_exhaustive]
pub enum Error<E> {
    /// The origin fetch failed; every request of the flight sees this.
    #[error("origin: {0}")]
    Origin(E),
    /// The fetch task ended without an answer (it panicked or the runtime
    /// shut down).
    #[error("the origin fetch was aborted")]
    Aborted,
}

/// Upper bounds of the followers-per-leader histogram buckets.
pub const FOLLOWER_BUCKETS: [u64; 7] = [0, 1, 4, 16, 64, 256, u64::MAX];

/// Counters.
#[derive(Debug, Default)]
pub struct CollapseMetrics {
    /// Requests answered by another request's fetch.
    pub collapsed: AtomicU64,
    /// Fetches sent to the origin (leaders and direct fetches).
    pub origin_fetches: AtomicU64,
    /// Followers that gave up waiting and fetched by themselves.
    pub wait_timeouts: AtomicU64,
    /// Requests that found a full flight and fetched directly.
    pub overflow: AtomicU64,
    /// Flights finished with a follower count in each bucket of
    /// `FOLLOWER_BUCKETS` (cumulative counts are worked out at a scrape).
    pub followers: [AtomicU64; 7],
    /// Followers of every finished flight, summed.
    pub followers_sum: AtomicU64,
}

impl CollapseMetrics {
    fn observe_followers(&self, n: u64) {
        let i = FOLLOWER_BUCKETS
            .iter()
            .position(|&b| n <= b)
            .unwrap_or(FOLLOWER_BUCKETS.len() - 1);
        self.followers[i].fetch_add(1, Ordering::Relaxed);
        self.followers_sum.fetch_add(n, Ordering::Relaxed);
    }

    /// The families, named with `prefix` (e.g. `strata_proxy`), for the
    /// owner's registry section.
    pub fn families(&self, prefix: &str) -> Vec<prom::Family> {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let mut out: Vec<prom::Family> = [
            (
                "collapsed_total",
                "Requests that joined a fetch already in flight.",
                &self.collapsed,
            ),
            (
                "origin_fetches_total",
                "Fetches that went to the origin.",
                &self.origin_fetches,
            ),
            (
                "wait_timeouts_total",
                "Followers that stopped waiting and fetched on their own.",
                &self.wait_timeouts,
            ),
            (
                "overflow_total",
                "Requests that found a flight full of waiters and fetched on their own.",
                &self.overflow,
            ),
        ]
        .into_iter()
        .map(|(name, help, v)| prom::Family::counter(&format!("{prefix}_{name}"), help).with(l(v)))
        .collect();
        let mut followers = prom::Family::histogram(
            &format!("{prefix}_followers_per_leader"),
            "Requests that joined each finished fetch.",
        );
        followers.add_histogram(
            &[],
            FOLLOWER_BUCKETS.iter().zip(&self.followers).map(|(&b, n)| {
                let le = if b == u64::MAX {
                    f64::INFINITY
                } else {
                    b as f64
                };
                (le, n.load(Ordering::Relaxed))
            }),
            l(&self.followers_sum),
        );
        out.push(followers);
        out
    }
}

type Answer<V, E> = Option<Result<V, Error<E>>>;

struct Flight<V, E> {
    started: Instant,
    followers: AtomicU64,
    rx: watch::Receiver<Answer<V, E>>,
}

/// Collapses concurrent fetches of one key into one.
pub struct Collapser<K, V, E> {
    flights: Mutex<HashMap<K, Arc<Flight<V, E>>>>,
    opts: CollapseOptions,
    /// Counters.
    pub metrics: Arc<CollapseMetrics>,
}

enum Role<V, E> {
    Leader(Arc<Flight<V, E>>, watch::Sender<Answer<V, E>>),
    Follower(watch::Receiver<Answer<V, E>>),
    Direct,
}

impl<K, V, E> Collapser<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// An empty table.
    pub fn new(opts: CollapseOptions) -> Arc<Self> {
        Arc::new(Collapser {
            flights: Mutex::new(HashMap::new()),
            opts,
            metrics: Arc::default(),
        })
    }

    /// Requests following the fetch of `key` in flight now (0 when none
    /// is): how many answers one origin read will make.
    pub fn followers(&self, key: &K) -> u64 {
        let t = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        t.get(key)
            .map_or(0, |f| f.followers.load(Ordering::Relaxed))
    }

    /// Fetches `key` with `fetch`, unless a fetch of it is already in
    /// flight, in which case this waits for that one's answer.
    pub async fn get<F, Fut>(self: &Arc<Self>, key: K, fetch: F) -> Result<V, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let role = self.join(&key);
        match role {
            Role::Direct => {
                self.metrics.overflow.fetch_add(1, Ordering::Relaxed);
                self.metrics.origin_fetches.fetch_add(1, Ordering::Relaxed);
                fetch().await.map_err(Error::Origin)
            }
            Role::Leader(flight, tx) => {
                let rx = flight.rx.clone();
                self.lead(key, flight, tx, fetch());
                wait(rx).await
            }
            Role::Follower(rx) => {
                match tokio::time::timeout(self.opts.wait_timeout, wait(rx)).await {
                    Ok(answer) => {
                        self.metrics.collapsed.fetch_add(1, Ordering::Relaxed);
                        answer
                    }
                    Err(_) => {
                        self.metrics.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                        self.metrics.origin_fetches.fetch_add(1, Ordering::Relaxed);
                        fetch().await.map_err(Error::Origin)
                    }
                }
            }
        }
    }

    /// Followers currently waiting on `key`'s flight (0 when none).
    pub fn waiting(&self, key: &K) -> u64 {
        let t = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        t.get(key)
            .map_or(0, |f| f.followers.load(Ordering::Relaxed))
    }

    /// Decides this request's role under the table lock.
    fn join(&self, key: &K) -> Role<V, E> {
        let mut t = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = t.get(key) {
            // A flight whose fetch task died (sender dropped) or that is too
            // old gets no new followers.
            if f.started.elapsed() < self.opts.max_age && f.rx.has_changed().is_ok() {
                if f.followers.load(Ordering::Relaxed) as usize >= self.opts.max_waiters {
                    return Role::Direct;
                }
                f.followers.fetch_add(1, Ordering::Relaxed);
                return Role::Follower(f.rx.clone());
            }
            // Too old to join: fall through and lead a new flight; the old
            // one still answers its own followers.
        }
        let (tx, rx) = watch::channel(None);
        let flight = Arc::new(Flight {
            started: Instant::now(),
            followers: AtomicU64::new(0),
            rx,
        });
        t.insert(key.clone(), flight.clone());
        Role::Leader(flight, tx)
    }

    /// Runs the fetch in its own task: the leader's caller may go away, the
    /// followers still get the answer.
    fn lead<Fut>(
        self: &Arc<Self>,
        key: K,
        flight: Arc<Flight<V, E>>,
        tx: watch::Sender<Answer<V, E>>,
        fut: Fut,
    ) where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let me = self.clone();
        self.metrics.origin_fetches.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let res = fut.await.map_err(Error::Origin);
            // Retire the flight before answering, so a request arriving
            // after the answer starts afresh (errors are not cached).
            {
                let mut t = me.flights.lock().unwrap_or_else(|p| p.into_inner());
                // A newer flight may have replaced ours (max_age): leave it.
                if t.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                    t.remove(&key);
                }
            }
            me.metrics
                .observe_followers(flight.followers.load(Ordering::Relaxed));
            let _ = tx.send(Some(res));
        });
    }
}

/// Waits for a flight's answer; a sender dropped without one is `Aborted`.
async fn wait<V: Clone, E: Clone>(mut rx: watch::Receiver<Answer<V, E>>) -> Result<V, Error<E>> {
    loop {
        if let Some(a) = rx.borrow_and_update().as_ref() {
            return a.clone();
        }
        if rx.changed().await.is_err() {
            return rx.borrow().clone().unwrap_or(Err(Error::Aborted));
        }
    }
}
