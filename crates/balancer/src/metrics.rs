//! The gateway's measuring pieces, below everything that counts: the
//! latency histogram every backend keeps and a gauge guard. `monitor`
//! reads them into the gateway's registry; `pool`, `proxy` and the relay
//! fill them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, microseconds.
pub const LATENCY_BUCKETS_US: [u64; 13] = [
    250, 500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    5_000_000,
];

/// A fixed-bucket histogram of times to first byte.
#[derive(Debug, Default)]
pub struct Latency {
    /// Counts per bucket of [`LATENCY_BUCKETS_US`], plus one for larger.
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Latency {
    /// Counts one sample.
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Adds this histogram to `family` as the sample labelled `labels`.
    pub(crate) fn observe_into(&self, family: &mut prom::Family, labels: &[(&str, &str)]) {
        let bounds = LATENCY_BUCKETS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain([f64::INFINITY]);
        let counts = self.buckets.iter().map(|b| b.load(Ordering::Relaxed));
        family.add_histogram(
            labels,
            bounds.zip(counts),
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        );
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
