//! Passive health: outlier ejection with a growing ejection time, a cap
//! on how many backends may be ejected, a panic threshold, slow start, and
//! the rise/fall hysteresis of active check results (the checks themselves
//! run in [`crate::health`]). Every function works on one pool's backends
//! and settings; [`crate::Pool`] calls them.
//!
//! Why the cap and the panic threshold: under heavy load every backend
//! gets slower; a balancer that ejects the slow ones moves their traffic to
//! the others, which then get slower and are ejected in turn, until none is
//! left. So at most `max_ejection_percent` of a pool is ever ejected, and
//! when fewer than `panic_threshold_percent` of the backends are eligible
//! the pool ignores health and sends traffic to all of them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{Backend, HealthState};

/// One pool's backends and health settings, as these functions see them.
pub(crate) struct Set<'a> {
    pub(crate) backends: &'a [Arc<Backend>],
    pub(crate) health: &'a HealthOptions,
}

/// Health settings of a pool.
#[derive(Debug, Clone)]
pub struct HealthOptions {
    /// Consecutive failures (5xx or no response) that eject a backend.
    pub consecutive_failures: u32,
    /// First ejection time; the n-th ejection lasts n times this.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// Most of the pool that may be ejected at once, percent.
    pub max_ejection_percent: u32,
    /// Below this share of eligible backends, use them all, percent.
    pub panic_threshold_percent: u32,
    /// Active check interval (`GET` of `check_path`); zero disables.
    pub check_interval: Duration,
    /// Path the active checks ask; a 2xx answer passes (`/healthz`; the
    /// S3 listeners of nodes answer `/_strata/healthz`).
    pub check_path: String,
    /// Active check timeout.
    pub check_timeout: Duration,
    /// Failed checks that mark a backend down.
    pub fall: u32,
    /// Passed checks that bring it back.
    pub rise: u32,
    /// A backend back from ejection or from being down ramps its share of
    /// traffic linearly over this long (zero: at once).
    pub slow_start: Duration,
    /// Latency outliers: a backend whose latency EWMA exceeds this many
    /// times the median of the pool's (with at least 3 backends, and above
    /// `outlier_min`) is ejected like a failing one. `None` = off.
    pub outlier_factor: Option<f64>,
    /// Latency below which nobody is an outlier.
    pub outlier_min: Duration,
}

impl Default for HealthOptions {
    fn default() -> Self {
        HealthOptions {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
            panic_threshold_percent: 50,
            check_interval: Duration::from_secs(2),
            check_path: "/healthz".into(),
            check_timeout: Duration::from_secs(1),
            fall: 3,
            rise: 2,
            slow_start: Duration::from_secs(10),
            outlier_factor: Some(5.0),
            outlier_min: Duration::from_millis(50),
        }
    }
}

/// Which backends may take traffic.
#[derive(Debug, Clone)]
pub enum Eligibility {
    /// All of them (healthy, or the pool is in panic mode).
    All,
    /// Those marked true.
    Some(Vec<bool>),
}

impl Eligibility {
    /// May backend `i` take traffic?
    pub fn allows(&self, i: usize) -> bool {
        match self {
            Eligibility::All => true,
            Eligibility::Some(v) => v[i],
        }
    }
}

fn lock<'a>(p: &Set<'a>, i: usize) -> std::sync::MutexGuard<'a, HealthState> {
    p.backends[i]
        .health
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The pool's eligible backends at `now`, with the panic threshold applied.
pub(crate) fn eligible(p: &Set<'_>, now: Instant) -> Eligibility {
    snapshot(p, now).0
}

/// Eligibility and every backend's slow-start ramp at `now`, reading each
/// backend's state once (one lock each): what a pick needs.
pub(crate) fn snapshot(p: &Set<'_>, now: Instant) -> (Eligibility, Vec<f64>) {
    let mut ok = Vec::with_capacity(p.backends.len());
    let mut ramps = Vec::with_capacity(p.backends.len());
    for i in 0..p.backends.len() {
        let h = lock(p, i);
        ok.push(!h.down && h.ejected_until.is_none_or(|t| now >= t));
        ramps.push(ramp_of(&h, p.health.slow_start, now));
    }
    let n = ok.iter().filter(|b| **b).count();
    if n == ok.len() || n * 100 < p.backends.len() * p.health.panic_threshold_percent as usize {
        // All healthy, or too few: panic mode sends traffic to everyone.
        return (Eligibility::All, ramps);
    }
    (Eligibility::Some(ok), ramps)
}

/// Counts a response from backend `i`: `ok` false for a 5xx or a failed
/// exchange. Ejects it after enough consecutive failures, unless the pool
/// already has its maximum share ejected.
pub(crate) fn record(p: &Set<'_>, i: usize, ok: bool, now: Instant) {
    if ok {
        lock(p, i).consecutive_failures = 0;
        return;
    }
    p.backends[i].failures.fetch_add(1, Ordering::Relaxed);
    let fails = {
        let mut h = lock(p, i);
        h.consecutive_failures += 1;
        h.consecutive_failures
    };
    if fails < p.health.consecutive_failures {
        return;
    }
    eject(p, i, now);
}

/// Ejects backend `i` unless the pool already has its maximum share
/// ejected; the n-th ejection lasts n times the base time.
fn eject(p: &Set<'_>, i: usize, now: Instant) {
    let ejected_now = (0..p.backends.len())
        .filter(|&j| j != i && lock(p, j).ejected_until.is_some_and(|t| now < t))
        .count();
    let cap = p.backends.len() * p.health.max_ejection_percent as usize / 100;
    if ejected_now + 1 > cap {
        // Ejecting this one would pass the cap: keep it in service.
        return;
    }
    if lock(p, i).ejected_until.is_some_and(|t| now < t) {
        return;
    }
    let n = p.backends[i].ejections.fetch_add(1, Ordering::Relaxed) + 1;
    let dur = (p.health.base_ejection * n).min(p.health.max_ejection);
    let mut h = lock(p, i);
    h.ejected_until = Some(now + dur);
    h.consecutive_failures = 0;
    tracing::warn!(backend = %p.backends[i].addr, ?dur, "backend ejected");
}

/// Counts a response's time to first byte from backend `i` in its latency
/// EWMA (weight 1/8), then ejects it if it has become a latency outlier.
pub(crate) fn record_latency(p: &Set<'_>, i: usize, ttfb: Duration, now: Instant) {
    p.backends[i].latency.record(ttfb);
    let sample = ttfb.as_micros().min(u128::from(u64::MAX)) as u64;
    let e = &p.backends[i].ewma_us;
    let old = e.load(Ordering::Relaxed);
    let new = if old == 0 {
        sample
    } else {
        old - old / 8 + sample / 8
    };
    e.store(new.max(1), Ordering::Relaxed);
    let Some(factor) = p.health.outlier_factor else {
        return;
    };
    if p.backends.len() < 3 || new < p.health.outlier_min.as_micros() as u64 {
        return;
    }
    let mut others: Vec<u64> = (0..p.backends.len())
        .filter(|&j| j != i)
        .map(|j| p.backends[j].ewma_us.load(Ordering::Relaxed))
        .filter(|&v| v > 0)
        .collect();
    if others.len() < 2 {
        return;
    }
    others.sort_unstable();
    let median = others[others.len() / 2] as f64;
    if new as f64 > factor * median {
        eject(p, i, now);
    }
}

/// Share of its normal traffic a backend takes at `now`: below 1 during
/// slow start after an ejection ended or it came back up, so a node that
/// was just restarted (cold caches) is
/// not hit with a full share at once.
fn ramp_of(h: &HealthState, slow_start: Duration, now: Instant) -> f64 {
    if slow_start.is_zero() {
        return 1.0;
    }
    let since = match (h.ejected_until, h.back_since) {
        (Some(e), Some(b)) => e.max(b),
        (Some(e), None) => e,
        (None, Some(b)) => b,
        (None, None) => return 1.0,
    };
    if now < since {
        return 1.0;
    }
    let f = now.duration_since(since).as_secs_f64() / slow_start.as_secs_f64();
    f.clamp(0.05, 1.0)
}

/// Records an active check result (rise/fall hysteresis).
pub(crate) fn record_check(p: &Set<'_>, i: usize, passed: bool) {
    let mut h = lock(p, i);
    if passed {
        h.check_fails = 0;
        h.check_passes += 1;
        if h.down && h.check_passes >= p.health.rise {
            h.down = false;
            h.back_since = Some(Instant::now());
        }
    } else {
        h.check_passes = 0;
        h.check_fails += 1;
        if h.check_fails >= p.health.fall {
            h.down = true;
        }
    }
}
