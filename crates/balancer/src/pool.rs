//! Backends and the selection algorithms.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::backend::Backend;
use crate::outlier::{self, Eligibility, HealthOptions};
use crate::Error;

/// How a pool picks a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Uniformly at random.
    Random,
    /// Smooth weighted round robin (nginx's algorithm: no bursts to the
    /// heaviest backend).
    RoundRobin,
    /// Fewest requests in flight (ties: first).
    LeastConn,
    /// Power of two choices: two random backends, the one with fewer
    /// requests in flight.
    P2c,
    /// Power of two choices on the latency EWMA (time to first byte).
    P2cLatency,
    /// Load-aware: power of two choices on the load each backend reports on
    /// `GET /load` (CPU percent, plus requests in flight).
    Load,
    /// Consistent hash of the request key with bounded load (1.25x the
    /// average in flight), so a key keeps the same backend.
    Hash,
}

impl FromStr for Algorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "random" => Algorithm::Random,
            "round-robin" | "rr" => Algorithm::RoundRobin,
            "least-conn" => Algorithm::LeastConn,
            "p2c" => Algorithm::P2c,
            "p2c-latency" => Algorithm::P2cLatency,
            "load" => Algorithm::Load,
            "hash" => Algorithm::Hash,
            other => return Err(Error::Algorithm(other.to_owned())),
        })
    }
}

/// The backends of one pool and how to choose among them.
pub struct Pool {
    /// The backends, in configuration order. Shared with the pools that
    /// replace this one on a runtime change, so that health, counters and
    /// requests in flight carry over.
    pub backends: Vec<Arc<Backend>>,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Health and ejection settings.
    pub health: HealthOptions,
    rr: Mutex<Vec<i64>>,
    rng: AtomicU64,
    ring: cluster::Ring,
}

impl Pool {
    /// A pool over `backends`.
    pub fn new(
        backends: Vec<Backend>,
        algorithm: Algorithm,
        health: HealthOptions,
    ) -> Result<Pool, Error> {
        Pool::shared(
            backends.into_iter().map(Arc::new).collect(),
            algorithm,
            health,
        )
    }

    /// A pool over backends that may also be in other pools (the one it
    /// replaces).
    pub fn shared(
        backends: Vec<Arc<Backend>>,
        algorithm: Algorithm,
        health: HealthOptions,
    ) -> Result<Pool, Error> {
        if backends.is_empty() {
            return Err(Error::NoBackends);
        }
        let names: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
        Ok(Pool {
            rr: Mutex::new(vec![0; backends.len()]),
            ring: cluster::Ring::new(&names, cluster::DEFAULT_POINTS),
            backends,
            algorithm,
            health,
            rng: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
        })
    }

    fn random(&self) -> u64 {
        // xorshift on one shared word: spreading, not cryptography.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        x
    }

    /// Picks a backend for a request with `key` (the path, for `Hash`),
    /// skipping backends in `exclude` (already tried). `None` when nothing
    /// is eligible.
    pub fn pick(&self, key: &[u8], exclude: &[usize], now: Instant) -> Option<usize> {
        let (elig, ramp) = outlier::snapshot(&self.set(), now);
        let ok =
            |i: usize| !exclude.contains(&i) && elig.allows(i) && !self.backends[i].is_draining();
        let candidates: Vec<usize> = (0..self.backends.len()).filter(|&i| ok(i)).collect();
        if candidates.is_empty() {
            return None;
        }
        // In-flight count as the load-based algorithms see it: a backend in
        // slow start looks busier than it is, so it gets a smaller share.
        let load = |i: usize| self.backends[i].in_flight.load(Ordering::Relaxed) as f64 / ramp[i];
        Some(match self.algorithm {
            Algorithm::Random => {
                // Weighted by the slow-start ramp (1.0 for everyone else).
                let total: f64 = candidates.iter().map(|&i| ramp[i]).sum();
                let mut x = (self.random() >> 11) as f64 / (1u64 << 53) as f64 * total;
                let mut chosen = candidates[candidates.len() - 1];
                for &i in &candidates {
                    if x < ramp[i] {
                        chosen = i;
                        break;
                    }
                    x -= ramp[i];
                }
                chosen
            }
            Algorithm::LeastConn => *candidates
                .iter()
                .min_by(|&&a, &&b| load(a).total_cmp(&load(b)))
                .unwrap_or(&candidates[0]),
            Algorithm::P2c => {
                let a = candidates[(self.random() % candidates.len() as u64) as usize];
                let b = candidates[(self.random() % candidates.len() as u64) as usize];
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
            Algorithm::P2cLatency => {
                // Cost = latency EWMA x (in flight + 1): a fast backend that
                // is already busy is not automatically preferred.
                let cost = |i: usize| {
                    let e = self.backends[i].ewma_us.load(Ordering::Relaxed).max(1) as f64;
                    e * (load(i) + 1.0)
                };
                let a = candidates[(self.random() % candidates.len() as u64) as usize];
                let b = candidates[(self.random() % candidates.len() as u64) as usize];
                if cost(b) < cost(a) {
                    b
                } else {
                    a
                }
            }
            Algorithm::Load => {
                // The reported load, plus what this gateway sent since.
                let cost = |i: usize| {
                    self.backends[i].reported_load.load(Ordering::Relaxed) as f64 / 100.0 + load(i)
                };
                let a = candidates[(self.random() % candidates.len() as u64) as usize];
                let b = candidates[(self.random() % candidates.len() as u64) as usize];
                if cost(b) < cost(a) {
                    b
                } else {
                    a
                }
            }
            Algorithm::RoundRobin => {
                // Smooth weighted round robin: every candidate gains its
                // weight, the largest is chosen and pays the total.
                let mut cur = self.rr.lock().unwrap_or_else(|p| p.into_inner());
                // Weights in hundredths so that slow start can scale them.
                let w = |i: usize| {
                    ((f64::from(self.backends[i].weight) * 100.0 * ramp[i]) as i64).max(1)
                };
                let total: i64 = candidates.iter().map(|&i| w(i)).sum();
                let mut best = candidates[0];
                for &i in &candidates {
                    cur[i] += w(i);
                    if cur[i] > cur[best] {
                        best = i;
                    }
                }
                cur[best] -= total;
                best
            }
            Algorithm::Hash => {
                let loads: Vec<u64> = (0..self.backends.len())
                    .map(|i| {
                        if ok(i) {
                            self.backends[i].in_flight.load(Ordering::Relaxed)
                        } else {
                            u64::MAX / 4
                        }
                    })
                    .collect();
                match self.ring.owner_bounded(key, &loads, 1.25) {
                    Some(i) if ok(i) => i,
                    _ => candidates[0],
                }
            }
        })
    }

    fn set(&self) -> outlier::Set<'_> {
        outlier::Set {
            backends: &self.backends,
            health: &self.health,
        }
    }

    /// Counts a response from backend `i`: `ok` false for a 5xx or a failed
    /// exchange. Ejects it after enough consecutive failures, unless the
    /// pool already has its maximum share ejected.
    pub fn record(&self, i: usize, ok: bool, now: Instant) {
        outlier::record(&self.set(), i, ok, now);
    }

    /// Counts backend `i`'s time to first byte in its latency average and
    /// histogram; ejects it if that makes it a latency outlier.
    pub fn record_latency(&self, i: usize, ttfb: Duration, now: Instant) {
        outlier::record_latency(&self.set(), i, ttfb, now);
    }

    /// Counts an active check of backend `i` (rise/fall hysteresis).
    pub fn record_check(&self, i: usize, passed: bool) {
        outlier::record_check(&self.set(), i, passed);
    }

    /// Which backends may take traffic at `now`, with the panic threshold
    /// applied.
    pub fn eligible(&self, now: Instant) -> Eligibility {
        outlier::eligible(&self.set(), now)
    }

    /// Index of the backend at `addr`.
    pub fn position(&self, addr: SocketAddr) -> Option<usize> {
        self.backends.iter().position(|b| b.addr == addr)
    }

    /// May backend `i` take a new request at `now` (eligible by health or
    /// panic mode, and not draining)? Used for a sticky cookie's backend.
    pub fn can_take(&self, i: usize, now: Instant) -> bool {
        !self.backends[i].is_draining() && self.eligible(now).allows(i)
    }

    /// Whether `i` is currently ejected (for monitoring).
    pub fn is_ejected(&self, i: usize, now: Instant) -> bool {
        matches!(self.eligible(now), Eligibility::Some(ref v) if !v[i])
    }
}
