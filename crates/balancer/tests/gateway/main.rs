//! Selection algorithms, ejection with its cap and panic mode, and the
//! proxy end to end (spread, failover without client errors, not an open
//! proxy, L7 routes, load-aware selection); limits on the way to a backend
//! in `limits`, backends in this process in `local`. One test binary:
//! each more would be another link of the balancer and its tree.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use balancer::{Algorithm, Backend, HealthOptions, Pool, Router};
use balancer::{Gateway, GatewayOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000 + i))
}

fn pool(n: u16, algo: Algorithm, weights: &[u32]) -> Pool {
    let backends = (0..n)
        .map(|i| Backend::new(addr(i), weights.get(i as usize).copied().unwrap_or(1)))
        .collect();
    let h = HealthOptions {
        consecutive_failures: 2,
        check_interval: Duration::ZERO,
        ..HealthOptions::default()
    };
    Pool::new(backends, algo, h).expect("pool")
}

fn counts(p: &Pool, n: usize, key: impl Fn(usize) -> String) -> Vec<usize> {
    let mut c = vec![0; p.backends.len()];
    let now = Instant::now();
    for i in 0..n {
        c[p.pick(key(i).as_bytes(), &[], now).expect("pick")] += 1;
    }
    c
}

#[test]
fn round_robin_honours_weights_exactly_and_smoothly() {
    let p = pool(3, Algorithm::RoundRobin, &[3, 1, 1]);
    let seq: Vec<usize> = (0..5)
        .map(|_| p.pick(b"", &[], Instant::now()).expect("pick"))
        .collect();
    // Smooth: the heavy backend is not picked three times in a row.
    assert_eq!(seq, vec![0, 1, 0, 2, 0]);
    assert_eq!(counts(&p, 500, |_| String::new()), vec![300, 100, 100]);
}

#[test]
fn random_and_p2c_spread_evenly() {
    for algo in [Algorithm::Random, Algorithm::P2c] {
        let c = counts(&pool(4, algo, &[]), 40_000, |_| String::new());
        for x in &c {
            assert!((8_000..12_000).contains(x), "{algo:?}: {c:?}");
        }
    }
}

#[test]
fn least_conn_and_p2c_prefer_idle_backends() {
    let p = pool(3, Algorithm::LeastConn, &[]);
    p.backends[0].in_flight.store(5, Ordering::Relaxed);
    p.backends[1].in_flight.store(1, Ordering::Relaxed);
    p.backends[2].in_flight.store(3, Ordering::Relaxed);
    assert_eq!(p.pick(b"", &[], Instant::now()), Some(1));
    let q = pool(2, Algorithm::P2c, &[]);
    q.backends[0].in_flight.store(100, Ordering::Relaxed);
    let c = counts(&q, 1000, |_| String::new());
    assert!(c[1] > 700, "{c:?}");
}

#[test]
fn hash_keeps_a_key_on_one_backend_and_spreads_keys() {
    let p = pool(4, Algorithm::Hash, &[]);
    let now = Instant::now();
    let first = p.pick(b"/v1/blobs/cat.jpg", &[], now);
    for _ in 0..100 {
        assert_eq!(p.pick(b"/v1/blobs/cat.jpg", &[], now), first);
    }
    let c = counts(&p, 40_000, |i| format!("/v1/blobs/img{i}"));
    for x in &c {
        assert!((7_000..13_000).contains(x), "{c:?}");
    }
}

#[test]
fn ejection_is_capped_and_panic_mode_serves_everyone() {
    let p = pool(4, Algorithm::RoundRobin, &[]);
    let now = Instant::now();
    // Every backend fails twice: at most 50% (2 of 4) may be ejected.
    for i in 0..4 {
        p.record(i, false, now);
        p.record(i, false, now);
    }
    let ejected = (0..4).filter(|&i| p.is_ejected(i, now)).count();
    assert_eq!(ejected, 2, "max ejection percent holds");
    let c = counts(&p, 400, |_| String::new());
    assert_eq!(
        c.iter().filter(|&&x| x > 0).count(),
        2,
        "traffic only to the eligible half: {c:?}"
    );
    // Ejection ends and grows with each ejection.
    let later = now + Duration::from_secs(11);
    assert_eq!((0..4).filter(|&i| p.is_ejected(i, later)).count(), 0);

    // Panic threshold: with 60% required, losing half the pool sends
    // traffic to everyone rather than overloading the rest.
    let backends = (0..4).map(|i| Backend::new(addr(i), 1)).collect();
    let h = HealthOptions {
        consecutive_failures: 1,
        max_ejection_percent: 50,
        panic_threshold_percent: 60,
        check_interval: Duration::ZERO,
        ..HealthOptions::default()
    };
    let q = Pool::new(backends, Algorithm::RoundRobin, h).expect("pool");
    q.record(0, false, now);
    q.record(1, false, now);
    let c = counts(&q, 400, |_| String::new());
    assert_eq!(c, vec![100, 100, 100, 100], "panic mode");
}

#[path = "../support/mod.rs"]
mod support;
use support::{backend, held_backend};

mod limits;
mod local;

async fn gateway(backends: &[SocketAddr], algo: Algorithm) -> (SocketAddr, Arc<Gateway>) {
    let h = HealthOptions {
        check_interval: Duration::ZERO,
        ..HealthOptions::default()
    };
    let p = Pool::new(
        backends.iter().map(|a| Backend::new(*a, 1)).collect(),
        algo,
        h,
    )
    .expect("pool");
    let gw = Gateway::new(Arc::new(p), GatewayOptions::default());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr");
    tokio::spawn(balancer::serve(l, gw.clone(), std::future::pending()));
    (a, gw)
}

/// Serves `router` on a fresh port; its address.
async fn serve_router(router: Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let at = l.local_addr().expect("addr");
    tokio::spawn(balancer::serve_routed(
        l,
        balancer::Live::new(router, None),
        std::future::pending(),
    ));
    at
}

/// Serves the one pool `gw` (named `nodes`) with no routes; its address.
async fn serve_pool(gw: &Arc<Gateway>) -> SocketAddr {
    serve_router(Router {
        pools: vec![("nodes".into(), gw.clone())],
        routes: Vec::new(),
        rules: Default::default(),
    })
    .await
}

async fn get(gw: SocketAddr, raw: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(gw).await.expect("connect");
    s.write_all(raw.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.expect("read");
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return text.into_owned();
            }
        }
        if n == 0 {
            return String::from_utf8_lossy(&out).into_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spreads_fails_over_and_is_never_an_open_proxy() {
    let (a, _ha) = backend("A").await;
    let (b, hb) = backend("B").await;
    let (gw, g) = gateway(&[a, b], Algorithm::RoundRobin).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = get(
            gw,
            "GET /x HTTP/1.1\r\nHost: strata\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.ends_with("+xff"), "X-Forwarded-For added: {r}");
        seen.push(r.chars().rev().nth(4).expect("name"));
    }
    assert_eq!(seen, vec!['A', 'B', 'A', 'B']);

    // An absolute-form URI naming another host still goes to a backend.
    let r = get(
        gw,
        "GET http://example.com/steal HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 200") && (r.ends_with("A+xff") || r.ends_with("B+xff")),
        "{r}"
    );

    // Kill B: GETs are retried on A, no client sees an error.
    hb.kill().await;
    for _ in 0..20 {
        let r = get(
            gw,
            "GET /y HTTP/1.1\r\nHost: strata\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("A+xff"), "{r}");
    }
    assert!(g.metrics.retries.load(Ordering::Relaxed) >= 1);
    let page = get(
        gw,
        "GET /_strata/status HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        page.contains("text/html") && page.contains("http-equiv=\"refresh\""),
        "{page}"
    );
    assert!(
        page.contains(&format!("<td>{b}</td><td>ejected</td>")),
        "{page}"
    );
    assert!(page.contains(&format!("<td>{a}</td><td>up</td>")), "{page}");
    let m = prom::render_families(balancer::monitor::families(&[(
        "default".into(),
        g.clone(),
    )]));
    // Every answer from A was timed: the histogram's +Inf bucket counts them.
    let answered = series_value(
        &m,
        &format!("strata_gateway_backend_latency_seconds_bucket{{pool=\"default\",backend=\"{a}\",le=\"+Inf\"}}"),
    );
    assert!(answered >= 20, "{m}");
    assert!(
        m.contains(&format!(
            "strata_gateway_backend_ejections_total{{pool=\"default\",backend=\"{b}\"}} 1"
        )),
        "{m}"
    );
}

#[test]
fn a_backend_back_from_ejection_ramps_up_slowly() {
    let backends = (0..2).map(|i| Backend::new(addr(i), 1)).collect();
    let h = HealthOptions {
        consecutive_failures: 1,
        max_ejection_percent: 50,
        panic_threshold_percent: 0,
        base_ejection: Duration::from_secs(10),
        slow_start: Duration::from_secs(10),
        check_interval: Duration::ZERO,
        ..HealthOptions::default()
    };
    let p = Pool::new(backends, Algorithm::RoundRobin, h).expect("pool");
    let t0 = Instant::now();
    p.record(1, false, t0);
    assert!(p.is_ejected(1, t0 + Duration::from_secs(5)));
    // One second into slow start: a tenth of its share (1 of 11 picks).
    let at = t0 + Duration::from_secs(11);
    let mut c = [0usize; 2];
    for _ in 0..1100 {
        c[p.pick(b"", &[], at).expect("pick")] += 1;
    }
    assert!((90..=110).contains(&c[1]), "{c:?}");
    // Slow start over: equal shares again.
    let later = t0 + Duration::from_secs(25);
    let mut c = [0usize; 2];
    for _ in 0..1000 {
        c[p.pick(b"", &[], later).expect("pick")] += 1;
    }
    assert_eq!(c, [500, 500]);
}

#[test]
fn latency_outliers_are_ejected_and_p2c_latency_prefers_fast_backends() {
    let backends = (0..4).map(|i| Backend::new(addr(i), 1)).collect();
    let h = HealthOptions {
        outlier_factor: Some(5.0),
        outlier_min: Duration::from_millis(10),
        check_interval: Duration::ZERO,
        ..HealthOptions::default()
    };
    let p = Pool::new(backends, Algorithm::P2cLatency, h).expect("pool");
    let now = Instant::now();
    for _ in 0..10 {
        for i in 0..3 {
            p.record_latency(i, Duration::from_millis(2), now);
        }
    }
    // Backend 3 is fast at first, then slows to 100 ms: an outlier.
    p.record_latency(3, Duration::from_millis(2), now);
    assert!(!p.is_ejected(3, now));
    for _ in 0..20 {
        p.record_latency(3, Duration::from_millis(100), now);
    }
    assert!(p.is_ejected(3, now), "slow backend ejected");
    assert_eq!(p.backends[3].ejections.load(Ordering::Relaxed), 1);

    // p2c on latency: a backend twice as slow gets clearly less traffic.
    let backends = (0..2).map(|i| Backend::new(addr(i), 1)).collect();
    let h = HealthOptions {
        outlier_factor: None,
        check_interval: Duration::ZERO,
        ..HealthOptions::default()
    };
    let q = Pool::new(backends, Algorithm::P2cLatency, h).expect("pool");
    q.record_latency(0, Duration::from_millis(1), now);
    q.record_latency(1, Duration::from_millis(2), now);
    let c = counts(&q, 10_000, |_| String::new());
    assert!(c[0] > 6_000, "{c:?}");
}

/// A backend that answers `/load` with a fixed CPU figure and anything
/// else with its name.
async fn loaded_backend(name: &'static str, cpu: u32) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                loop {
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = if got.starts_with(b"GET /load ") {
                        format!("{{\"cpu_percent\": {cpu}, \"rss_bytes\": 1, \"in_flight\": 0}}")
                    } else {
                        name.to_owned()
                    };
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_aware_selection_follows_reported_load() {
    let busy = loaded_backend("B", 90).await;
    let idle = loaded_backend("I", 5).await;
    let h = HealthOptions {
        check_interval: Duration::from_millis(20),
        ..HealthOptions::default()
    };
    let p = Pool::new(
        vec![Backend::new(busy, 1), Backend::new(idle, 1)],
        Algorithm::Load,
        h,
    )
    .expect("pool");
    let g = Gateway::new(Arc::new(p), GatewayOptions::default());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gw = l.local_addr().expect("addr");
    tokio::spawn(balancer::serve(l, g.clone(), std::future::pending()));
    // Barrier on the first reports, not on time.
    while g
        .pool()
        .backends
        .iter()
        .any(|b| b.reported_load.load(Ordering::Relaxed) == 0)
    {
        tokio::task::yield_now().await;
    }
    let mut idle_hits = 0;
    for _ in 0..100 {
        let r = get(
            gw,
            "GET /x HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n",
        )
        .await;
        if r.ends_with('I') {
            idle_hits += 1;
        }
    }
    // p2c picks the idle one whenever both are drawn: about 3 in 4.
    assert!(idle_hits >= 60, "idle backend got {idle_hits} of 100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_routes_pick_pools_by_prefix_method_and_header() {
    use balancer::Route;
    let (reads, _h1) = backend("R").await;
    let (writes, _h2) = backend("W").await;
    let (search, _h3) = backend("S").await;
    let (canary, _h4) = backend("C").await;
    let mk = |a: SocketAddr| {
        let h = HealthOptions {
            check_interval: Duration::ZERO,
            ..HealthOptions::default()
        };
        Gateway::new(
            Arc::new(Pool::new(vec![Backend::new(a, 1)], Algorithm::RoundRobin, h).expect("pool")),
            GatewayOptions::default(),
        )
    };
    let router = Arc::new(Router {
        pools: vec![
            ("reads".into(), mk(reads)),
            ("writes".into(), mk(writes)),
            ("search".into(), mk(search)),
            ("canary".into(), mk(canary)),
        ],
        routes: vec![
            Route {
                prefix: "/".into(),
                method: None,
                header: Some(("x-canary".parse().expect("name"), "1".into())),
                pool: 3,
                rules: Default::default(),
            },
            Route {
                prefix: "/v1/search".into(),
                method: None,
                header: None,
                pool: 2,
                rules: Default::default(),
            },
            Route {
                prefix: "/v1/".into(),
                method: Some(hyper::Method::PUT),
                header: None,
                pool: 1,
                rules: Default::default(),
            },
            Route {
                prefix: "/v1/".into(),
                method: Some(hyper::Method::DELETE),
                header: None,
                pool: 1,
                rules: Default::default(),
            },
        ],
        rules: Default::default(),
    });
    let gw = serve_router(Arc::into_inner(router).expect("one owner")).await;
    let ask = |req: &'static str| async move { get(gw, req).await };
    assert!(
        ask("GET /v1/blobs/a HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n")
            .await
            .ends_with("R+xff")
    );
    assert!(ask(
        "PUT /v1/blobs/a HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .await
    .ends_with("W+xff"));
    assert!(
        ask("DELETE /v1/blobs/a HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n")
            .await
            .ends_with("W+xff")
    );
    assert!(
        ask("GET /v1/search?q=cat HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n")
            .await
            .ends_with("S+xff")
    );
    assert!(
        ask("GET /v1/blobs/a HTTP/1.1\r\nHost: s\r\nX-Canary: 1\r\nConnection: close\r\n\r\n")
            .await
            .ends_with("C+xff")
    );
    let status = ask("GET /_strata/status HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n").await;
    assert!(
        status.contains("pool writes") && status.contains(&writes.to_string()),
        "{status}"
    );
}

/// The value of one exact series in Prometheus text (0 when absent).
fn series_value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}
