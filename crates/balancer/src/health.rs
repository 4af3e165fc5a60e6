//! Active health checks and load polling: every `check_interval`, a
//! `GET` of the pool's check path on each backend (rise/fall hysteresis in
//! `outlier`), and for the load-aware algorithm a read of each
//! healthy backend's `GET /load` report. Passive ejection, which reacts to
//! live traffic, is `outlier`'s and runs on every response.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::Request;

use crate::gateway::Gateway;
pub use crate::outlier::{Eligibility, HealthOptions};

/// Reads backend `i`'s `GET /load` report into its reported load.
async fn poll_load(gw: &Gateway, b: &crate::Backend, timeout: Duration) {
    let Ok(uri) = format!("http://{}/load", b.addr).parse::<hyper::Uri>() else {
        return;
    };
    let Ok(req) = Request::get(uri).body(Empty::new().map_err(|e| match e {}).boxed()) else {
        return;
    };
    let Ok(Ok(resp)) = tokio::time::timeout(timeout, gw.client().request(req)).await else {
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
                    tokio::time::timeout(pool.health.check_timeout, gw.client().request(req)).await,
                    Ok(Ok(r)) if r.status().is_success()
                );
                pool.record_check(i, passed);
                if passed && pool.algorithm == crate::Algorithm::Load {
                    poll_load(&gw, b, pool.health.check_timeout).await;
                }
            }
        }
    });
}
