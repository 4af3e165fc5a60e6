//! Monitoring: the self-refreshing HTML status page and Prometheus text,
//! per pool and backend (state, in flight, requests, failures, ejections,
//! latency average and histogram, reported load), so that an operator sees
//! nodes at their limit even when total throughput falls.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::gateway::Gateway;
use crate::pool::Pool;
use prom::Family;

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

/// Per-pool series: name, type, help, and how to read it.
type PoolSeries = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Gateway) -> u64,
);

const POOL_SERIES: [PoolSeries; 10] = [
    (
        "strata_gateway_requests_total",
        "counter",
        "Requests the pool took.",
        |g| l(&g.metrics.requests),
    ),
    (
        "strata_gateway_in_flight",
        "gauge",
        "Requests of the pool in flight.",
        |g| l(&g.metrics.active),
    ),
    (
        "strata_gateway_retries_total",
        "counter",
        "Requests tried again on another backend.",
        |g| l(&g.metrics.retries),
    ),
    (
        "strata_gateway_errors_total",
        "counter",
        "Requests answered with a gateway error (502, 503, 504).",
        |g| l(&g.metrics.gateway_errors),
    ),
    (
        "strata_gateway_retries_refused_total",
        "counter",
        "Retries the retry budget refused.",
        |g| l(&g.metrics.retries_refused),
    ),
    (
        "strata_gateway_rate_limited_total",
        "counter",
        "Requests refused by the per-client rate limit (429).",
        |g| l(&g.metrics.rate_limited),
    ),
    (
        "strata_gateway_queue_refused_total",
        "counter",
        "Requests refused with the backend queue full or timed out (503).",
        |g| l(&g.metrics.queue_refused),
    ),
    (
        "strata_gateway_hedges_total",
        "counter",
        "Hedged second requests sent.",
        |g| l(&g.metrics.hedges),
    ),
    (
        "strata_gateway_sticky_hits_total",
        "counter",
        "Requests that went to the backend their cookie named.",
        |g| l(&g.metrics.sticky_hits),
    ),
    (
        "strata_gateway_sticky_moves_total",
        "counter",
        "Sticky requests moved off an unhealthy backend.",
        |g| l(&g.metrics.sticky_moves),
    ),
];

fn l(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Families of every pool, for the gateway's registry: every series has
/// a `pool` label, backend series a `backend` label too.
pub fn families(pools: &[(std::sync::Arc<str>, std::sync::Arc<Gateway>)]) -> Vec<Family> {
    let mut out = Vec::new();
    for (name, kind, help, read) in POOL_SERIES {
        let mut f = if kind == "counter" {
            Family::counter(name, help)
        } else {
            Family::gauge(name, help)
        };
        for (p, gw) in pools {
            f.add(&[("pool", p)], read(gw) as f64);
        }
        out.push(f);
    }
    let now = Instant::now();
    // Each pool in service with its backends' addresses as label values,
    // written once per scrape rather than once per series.
    let states: Vec<(&str, std::sync::Arc<Pool>, Vec<String>)> = pools
        .iter()
        .map(|(p, gw)| {
            let pool = gw.pool();
            let addrs = pool.backends.iter().map(|b| b.addr.to_string()).collect();
            (&**p, pool, addrs)
        })
        .collect();
    type BackendSeries = (&'static str, &'static str, fn(&Pool, usize, Instant) -> f64);
    let counters: [BackendSeries; 3] = [
        (
            "strata_gateway_backend_requests_total",
            "Requests sent to the backend.",
            |p, i, _| l(&p.backends[i].requests) as f64,
        ),
        (
            "strata_gateway_backend_failures_total",
            "Requests to the backend that failed (no answer or 5xx).",
            |p, i, _| l(&p.backends[i].failures) as f64,
        ),
        (
            "strata_gateway_backend_ejections_total",
            "Times the backend was ejected.",
            |p, i, _| p.backends[i].ejections.load(Ordering::Relaxed) as f64,
        ),
    ];
    let gauges: [BackendSeries; 5] = [
        ("strata_gateway_backend_in_flight", "Requests in flight to the backend.", |p, i, _| l(&p.backends[i].in_flight) as f64),
        ("strata_gateway_backend_ejected", "1 while the backend is ejected.", |p, i, now| f64::from(u8::from(p.is_ejected(i, now)))),
        ("strata_gateway_backend_draining", "1 while the backend is draining.", |p, i, _| f64::from(u8::from(p.backends[i].is_draining()))),
        ("strata_gateway_backend_latency_ewma_seconds", "Moving average of the backend's time to first byte.", |p, i, _| l(&p.backends[i].ewma_us) as f64 / 1e6),
        ("strata_gateway_backend_reported_load", "Load the backend last reported on /load (CPU percent plus requests in flight, times 100).", |p, i, _| l(&p.backends[i].reported_load) as f64),
    ];
    let per_backend = counters
        .iter()
        .map(|s| (Family::counter(s.0, s.1), s.2))
        .chain(gauges.iter().map(|s| (Family::gauge(s.0, s.1), s.2)));
    for (mut f, read) in per_backend {
        for (p, pool, addrs) in &states {
            for (i, addr) in addrs.iter().enumerate() {
                f.add(&[("pool", p), ("backend", addr)], read(pool, i, now));
            }
        }
        out.push(f);
    }
    let mut latency = Family::histogram(
        "strata_gateway_backend_latency_seconds",
        "Time to the backend's first response byte.",
    );
    for (p, pool, addrs) in &states {
        for (b, addr) in pool.backends.iter().zip(addrs) {
            b.latency
                .observe_into(&mut latency, &[("pool", p), ("backend", addr)]);
        }
    }
    out.push(latency);
    out
}
