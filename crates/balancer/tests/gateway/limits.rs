//! Limits on the way to a backend, end to end: the per-client rate limit,
//! per-backend queues, the retry budget, and hedged GETs.

use super::*;

#[test]
fn the_retry_budget_caps_retries_in_flight() {
    use balancer::gateway::budget_allows;
    // A few retries are always allowed ...
    assert!(budget_allows(1, 0, 20, 3));
    assert!(budget_allows(1, 2, 20, 3));
    assert!(!budget_allows(1, 3, 20, 3));
    // ... and beyond that, at most 20% of the requests in flight.
    assert!(budget_allows(100, 19, 20, 3));
    assert!(!budget_allows(100, 20, 20, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_their_rate_get_429() {
    let (a, _ha) = backend("A").await;
    let h = HealthOptions {
        check_interval: Duration::ZERO,
        ..HealthOptions::default()
    };
    let p = Pool::new(vec![Backend::new(a, 1)], Algorithm::RoundRobin, h).expect("pool");
    // Burst 3, refilling one token every 100 s: the 4th request is refused.
    let opts = GatewayOptions {
        rate_limit: Some((0.01, 3.0)),
        ..GatewayOptions::default()
    };
    let g = Gateway::new(Arc::new(p), opts);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gw = l.local_addr().expect("addr");
    tokio::spawn(balancer::serve(l, g.clone(), std::future::pending()));
    for _ in 0..3 {
        let r = get(gw, "GET / HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    let r = get(gw, "GET / HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 429"), "{r}");
    assert!(r.to_ascii_lowercase().contains("retry-after: 1"), "{r}");
    assert_eq!(g.metrics.rate_limited.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backend_queues_then_answers_503() {
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (a, _held) = held_backend("H", release.clone()).await;
    let h = HealthOptions {
        check_interval: Duration::ZERO,
        ..HealthOptions::default()
    };
    let p = Pool::new(vec![Backend::new(a, 1)], Algorithm::RoundRobin, h).expect("pool");
    let opts = GatewayOptions {
        max_in_flight: Some(1),
        queue: 1,
        queue_timeout: Duration::from_millis(300),
        ..GatewayOptions::default()
    };
    let g = Gateway::new(Arc::new(p), opts);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gw = l.local_addr().expect("addr");
    tokio::spawn(balancer::serve(l, g.clone(), std::future::pending()));
    let req = "GET /hold HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n";
    // One in flight (held by the backend), one queued ...
    let first = tokio::spawn(async move { get(gw, req).await });
    while g.pool().backends[0].in_flight.load(Ordering::Relaxed) == 0 {
        tokio::task::yield_now().await;
    }
    let second = tokio::spawn(async move { get(gw, req).await });
    while g.queued(0) == 0 {
        tokio::task::yield_now().await;
    }
    // ... and the next one finds the queue full: 503 at once.
    let third = get(gw, req).await;
    assert!(
        third.starts_with("HTTP/1.1 503") && third.to_ascii_lowercase().contains("retry-after: 1"),
        "{third}"
    );
    // The queued one waits past the queue timeout: 503 too.
    let second = second.await.expect("second");
    assert!(second.starts_with("HTTP/1.1 503"), "{second}");
    // Release the backend: the admitted request completes.
    release.add_permits(10);
    assert!(first.await.expect("first").starts_with("HTTP/1.1 200"));
    assert_eq!(g.metrics.queue_refused.load(Ordering::Relaxed), 2);
    // Capacity is back.
    assert!(get(gw, req).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedged_get_is_answered_by_the_second_backend_when_the_first_stalls() {
    let (stalled, _stalled) = held_backend("S", Arc::new(tokio::sync::Semaphore::new(0))).await;
    let (fast, _h) = backend("F").await;
    let h = HealthOptions {
        check_interval: Duration::ZERO,
        outlier_factor: None,
        ..HealthOptions::default()
    };
    let p = Pool::new(
        vec![Backend::new(stalled, 1), Backend::new(fast, 1)],
        Algorithm::RoundRobin,
        h,
    )
    .expect("pool");
    let opts = GatewayOptions {
        hedge_after: Some(Duration::from_millis(50)),
        ..GatewayOptions::default()
    };
    let g = Gateway::new(Arc::new(p), opts);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gw = l.local_addr().expect("addr");
    tokio::spawn(balancer::serve(l, g.clone(), std::future::pending()));
    // Round robin sends the first request to the stalled backend.
    let r = get(
        gw,
        "GET /hold HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("F+xff"), "{r}");
    assert_eq!(g.metrics.hedges.load(Ordering::Relaxed), 1);
    let m = prom::render_families(balancer::monitor::families(&[(
        "default".into(),
        g.clone(),
    )]));
    assert!(
        m.contains("strata_gateway_hedges_total{pool=\"default\"} 1\n"),
        "{m}"
    );
    // The stalled backend's request was abandoned: nothing left in flight.
    assert_eq!(g.pool().backends[0].in_flight.load(Ordering::Relaxed), 0);
    // A PUT is never hedged.
    let r = get(
        gw,
        "PUT /h HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_refuses_a_retry_beyond_it_end_to_end() {
    // Backend 0 refuses connections; backend 1 holds its answers. Least
    // connections sends request 1 to 0 (refused), retries it on 1, where
    // it waits; request 2 then goes to 0 (nothing in flight there), is
    // refused, and its retry would be the second in flight: over a budget
    // of one.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (held, _held) = held_backend("H", release.clone()).await;
    let h = HealthOptions {
        check_interval: Duration::ZERO,
        consecutive_failures: 100,
        ..HealthOptions::default()
    };
    let p = Pool::new(
        vec![Backend::new(dead, 1), Backend::new(held, 1)],
        Algorithm::LeastConn,
        h,
    )
    .expect("pool");
    let opts = GatewayOptions {
        retry_budget_percent: 0,
        min_retry_concurrency: 1,
        ..GatewayOptions::default()
    };
    let g = Gateway::new(Arc::new(p), opts);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gw = l.local_addr().expect("addr");
    tokio::spawn(balancer::serve(l, g.clone(), std::future::pending()));
    let req = "GET /hold HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n";
    let first = tokio::spawn(get(gw, req));
    while g.metrics.retrying.load(Ordering::Relaxed) == 0 {
        tokio::task::yield_now().await;
    }
    let second = get(gw, req).await;
    assert!(second.starts_with("HTTP/1.1 502"), "{second}");
    assert_eq!(g.metrics.retries_refused.load(Ordering::Relaxed), 1);
    release.add_permits(1);
    let first = first.await.expect("first");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert_eq!(g.metrics.retries.load(Ordering::Relaxed), 1);
}
