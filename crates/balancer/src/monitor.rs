//! Monitoring: the self-refreshing HTML status page and Prometheus text,
//! per pool and backend (state, in flight, requests, failures, ejections,
//! latency average and histogram, reported load), so that an operator sees
//! nodes at their limit even when total throughput falls.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::pool::Pool;
use crate::proxy::Gateway;

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

    fn render(&self, out: &mut String, labels: &str) {
        let mut cum = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cum += b.load(Ordering::Relaxed);
            let le = LATENCY_BUCKETS_US
                .get(i)
                .map_or("+Inf".to_owned(), |us| format!("{}", *us as f64 / 1e6));
            let _ = writeln!(
                out,
                "strata_gateway_backend_latency_seconds_bucket{{{labels},le=\"{le}\"}} {cum}"
            );
        }
        let _ = writeln!(
            out,
            "strata_gateway_backend_latency_seconds_sum{{{labels}}} {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "strata_gateway_backend_latency_seconds_count{{{labels}}} {cum}"
        );
    }
}

fn state(pool: &Pool, i: usize, now: Instant) -> &'static str {
    if pool.backends[i].is_draining() {
        "draining"
    } else if pool.is_ejected(i, now) {
        "ejected"
    } else {
        "up"
    }
}

/// The status page over every pool.
pub fn status_page(pools: &[(std::sync::Arc<str>, std::sync::Arc<Gateway>)]) -> String {
    let now = Instant::now();
    let mut body = String::new();
    for (name, gw) in pools {
        let pool = gw.pool();
        let m = &gw.metrics;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = write!(
            body,
            "<h2>pool {}</h2><p>algorithm {:?}; requests {}; in flight {}; retries {} (refused {}); \
             gateway errors {}; rate limited {}; queue refused {}</p>\
             <table><tr><th>backend</th><th>state</th><th>weight</th><th>in flight</th><th>requests</th>\
             <th>failures</th><th>ejections</th><th>latency ms (avg)</th><th>reported load</th></tr>",
            escape(name),
            pool.algorithm,
            l(&m.requests),
            l(&m.active),
            l(&m.retries),
            l(&m.retries_refused),
            l(&m.gateway_errors),
            l(&m.rate_limited),
            l(&m.queue_refused),
        );
        for (i, b) in pool.backends.iter().enumerate() {
            let st = state(&pool, i, now);
            let _ = write!(
                body,
                "<tr class=\"{st}\"><td>{}</td><td>{st}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.1}</td></tr>",
                b.addr,
                b.weight,
                l(&b.in_flight),
                l(&b.requests),
                l(&b.failures),
                b.ejections.load(Ordering::Relaxed),
                l(&b.ewma_us) as f64 / 1000.0,
                l(&b.reported_load) as f64 / 100.0,
            );
        }
        body.push_str("</table>");
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
         <title>strata gateway</title><style>body{{font-family:sans-serif}}td,th{{padding:2px 10px}}\
         tr.ejected{{background:#fdd}}tr.draining{{background:#ffd}}</style></head><body>\
         <h1>strata gateway</h1>{body}</body></html>"
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Prometheus text for one pool's gateway; every series has a `pool` label.
pub fn render_metrics(gw: &Gateway, pool_name: &str, out: &mut String) {
    let m = &gw.metrics;
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let p = pool_name.replace(['"', '\\', '\n'], "_");
    for (name, v) in [
        ("strata_gateway_requests_total", &m.requests),
        ("strata_gateway_in_flight", &m.active),
        ("strata_gateway_retries_total", &m.retries),
        ("strata_gateway_errors_total", &m.gateway_errors),
        ("strata_gateway_retries_refused_total", &m.retries_refused),
        ("strata_gateway_rate_limited_total", &m.rate_limited),
        ("strata_gateway_queue_refused_total", &m.queue_refused),
        ("strata_gateway_hedges_total", &m.hedges),
        ("strata_gateway_sticky_hits_total", &m.sticky_hits),
        ("strata_gateway_sticky_moves_total", &m.sticky_moves),
    ] {
        let _ = writeln!(out, "{name}{{pool=\"{p}\"}} {}", l(v));
    }
    let now = Instant::now();
    let pool = gw.pool();
    for (i, b) in pool.backends.iter().enumerate() {
        let labels = format!("pool=\"{p}\",backend=\"{}\"", b.addr);
        let series: [(&str, u64); 8] = [
            ("strata_gateway_backend_in_flight", l(&b.in_flight)),
            ("strata_gateway_backend_requests_total", l(&b.requests)),
            ("strata_gateway_backend_failures_total", l(&b.failures)),
            (
                "strata_gateway_backend_ejections_total",
                u64::from(b.ejections.load(Ordering::Relaxed)),
            ),
            (
                "strata_gateway_backend_ejected",
                u64::from(pool.is_ejected(i, now)),
            ),
            (
                "strata_gateway_backend_draining",
                u64::from(b.is_draining()),
            ),
            ("strata_gateway_backend_latency_ewma_us", l(&b.ewma_us)),
            ("strata_gateway_backend_reported_load", l(&b.reported_load)),
        ];
        for (name, v) in series {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
        b.latency.render(out, &labels);
    }
}
