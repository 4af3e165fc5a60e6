//! Runtime changes and sticky sessions through a real gateway: the admin
//! API adds, drains and removes backends under load without a failed
//! request; a removed backend's request in flight still completes; sticky
//! cookies pin a client, cannot be forged, and move when their backend
//! dies or drains.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use balancer::sticky::Sticky;
use balancer::{Algorithm, Backend, HealthOptions, Live, Pool, Router};
use balancer::{Gateway, GatewayOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

const TOKEN: &str = "admin-secret";

mod support;
use support::held_backend as backend;

/// A gateway with one pool named `nodes`, the admin API on.
async fn gateway(
    backends: &[SocketAddr],
    opts: GatewayOptions,
) -> (SocketAddr, Arc<Gateway>, Arc<Live>) {
    let h = HealthOptions {
        check_interval: Duration::ZERO,
        consecutive_failures: 1,
        slow_start: Duration::ZERO,
        ..HealthOptions::default()
    };
    let p = Pool::new(
        backends.iter().map(|a| Backend::new(*a, 1)).collect(),
        Algorithm::RoundRobin,
        h,
    )
    .expect("pool");
    let gw = Gateway::new(Arc::new(p), opts);
    let live = Live::new(
        Router {
            pools: vec![("nodes".into(), gw.clone())],
            routes: Vec::new(),
            rules: Default::default(),
        },
        Some(TOKEN.into()),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr");
    tokio::spawn(balancer::serve_routed(
        l,
        live.clone(),
        std::future::pending(),
    ));
    (a, gw, live)
}

/// One request on its own connection; the whole response as text.
async fn send(gw: SocketAddr, method: &str, path: &str, extra: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(gw).await.expect("connect");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

async fn admin(gw: SocketAddr, method: &str, path: &str) -> String {
    send(
        gw,
        method,
        path,
        &format!("Authorization: Bearer {TOKEN}\r\n"),
    )
    .await
}

fn body(r: &str) -> &str {
    r.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_changes_backends_under_load_without_a_failed_request() {
    let open = Arc::new(Semaphore::new(0));
    let (a, _ha) = backend("A", open.clone()).await;
    let (b, _hb) = backend("B", open.clone()).await;
    let (c, _hc) = backend("C", open.clone()).await;
    let (gw, g, _live) = gateway(&[a, b], GatewayOptions::default()).await;

    // Clients loop until told to stop; every answer must be a 200.
    let stop = Arc::new(AtomicU64::new(0));
    let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        clients.push(tokio::spawn(async move {
            while stop.load(Ordering::Relaxed) == 0 {
                let r = send(gw, "GET", "/img", "").await;
                if r.starts_with("HTTP/1.1 200") {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let served = |who: SocketAddr| {
        let p = g.pool();
        p.position(who)
            .map_or(0, |i| p.backends[i].requests.load(Ordering::Relaxed))
    };
    let wait_for = |f: Box<dyn Fn() -> bool + Send>| async move {
        for _ in 0..2000 {
            if f() {
                return;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("condition not reached");
    };

    // Add C: it starts taking requests.
    let r = admin(
        gw,
        "POST",
        &format!("/_strata/admin/pools/nodes/backends/{c}"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    let g2 = g.clone();
    wait_for(Box::new(move || {
        let p = g2.pool();
        p.position(c)
            .is_some_and(|i| p.backends[i].requests.load(Ordering::Relaxed) > 20)
    }))
    .await;

    // Drain A: once its last request is done it gets no more.
    let r = admin(
        gw,
        "POST",
        &format!("/_strata/admin/pools/nodes/backends/{a}/drain"),
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 200") && body(&r).contains("\"draining\":true"),
        "{r}"
    );
    let g3 = g.clone();
    wait_for(Box::new(move || {
        let p = g3.pool();
        p.backends[p.position(a).expect("a")]
            .in_flight
            .load(Ordering::Relaxed)
            == 0
    }))
    .await;
    let a_before = served(a);
    let c_before = served(c);
    let g4 = g.clone();
    wait_for(Box::new(move || {
        let p = g4.pool();
        p.backends[p.position(c).expect("c")]
            .requests
            .load(Ordering::Relaxed)
            > c_before + 50
    }))
    .await;
    assert_eq!(
        served(a),
        a_before,
        "a draining backend gets no new requests"
    );
    let list = admin(gw, "GET", "/_strata/admin/pools").await;
    assert!(
        body(&list).contains(&format!(
            "\"addr\":\"{a}\",\"weight\":1,\"state\":\"draining\""
        )),
        "{list}"
    );

    // Remove A and B; C serves alone.
    for x in [a, b] {
        let r = admin(
            gw,
            "DELETE",
            &format!("/_strata/admin/pools/nodes/backends/{x}"),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 204"), "{r}");
    }
    assert_eq!(g.pool().backends.len(), 1);
    let before = ok.load(Ordering::Relaxed);
    wait_for(Box::new({
        let ok = ok.clone();
        move || ok.load(Ordering::Relaxed) > before + 50
    }))
    .await;
    stop.store(1, Ordering::Relaxed);
    for t in clients {
        t.await.expect("client");
    }
    assert_eq!(bad.load(Ordering::Relaxed), 0, "no request failed");
    assert!(ok.load(Ordering::Relaxed) > 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_on_a_removed_backend_completes() {
    let hold = Arc::new(Semaphore::new(0));
    let (a, _ha) = backend("A", hold.clone()).await;
    let (b, _hb) = backend("B", hold.clone()).await;
    let (gw, g, _live) = gateway(&[a], GatewayOptions::default()).await;
    let pending = tokio::spawn(send(gw, "GET", "/hold", ""));
    while g.pool().backends[0].in_flight.load(Ordering::Relaxed) == 0 {
        tokio::task::yield_now().await;
    }
    let r = admin(
        gw,
        "POST",
        &format!("/_strata/admin/pools/nodes/backends/{b}"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    let r = admin(
        gw,
        "DELETE",
        &format!("/_strata/admin/pools/nodes/backends/{a}"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 204"), "{r}");
    // New requests go to B while A still holds the old one.
    let r = send(gw, "GET", "/x", "").await;
    assert_eq!(body(&r), "B", "{r}");
    hold.add_permits(1);
    let r = pending.await.expect("pending");
    assert!(r.starts_with("HTTP/1.1 200") && body(&r) == "A", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_what_it_should() {
    let open = Arc::new(Semaphore::new(0));
    let (a, _ha) = backend("A", open.clone()).await;
    let (gw, _g, _live) = gateway(&[a], GatewayOptions::default()).await;
    let path = format!("/_strata/admin/pools/nodes/backends/{a}");
    let r = send(gw, "DELETE", &path, "").await;
    assert!(r.starts_with("HTTP/1.1 401"), "no token: {r}");
    let r = send(gw, "DELETE", &path, "Authorization: Bearer wrong\r\n").await;
    assert!(r.starts_with("HTTP/1.1 401"), "wrong token: {r}");
    let r = admin(gw, "DELETE", &path).await;
    assert!(r.starts_with("HTTP/1.1 409"), "last backend: {r}");
    let r = admin(gw, "POST", &path).await;
    assert!(r.starts_with("HTTP/1.1 409"), "already there: {r}");
    let r = admin(gw, "POST", "/_strata/admin/pools/nope/backends/127.0.0.1:1").await;
    assert!(r.starts_with("HTTP/1.1 404"), "unknown pool: {r}");
    let r = admin(
        gw,
        "POST",
        "/_strata/admin/pools/nodes/backends/not-an-addr",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "bad address: {r}");
    let r = admin(
        gw,
        "POST",
        "/_strata/admin/pools/nodes/backends/127.0.0.1:1?weight=0",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "bad weight: {r}");
    let r = admin(gw, "GET", "/_strata/admin/nothing").await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");

    // Without a token configured the API is off altogether.
    let p = Pool::new(
        vec![Backend::new(a, 1)],
        Algorithm::Random,
        HealthOptions::default(),
    )
    .expect("pool");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let off = l.local_addr().expect("addr");
    let gw2 = Gateway::new(Arc::new(p), GatewayOptions::default());
    tokio::spawn(balancer::serve(l, gw2, std::future::pending()));
    let r = admin(off, "GET", "/_strata/admin/pools").await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
}

fn cookie_of(r: &str) -> Option<String> {
    r.lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .map(|c| c.split(';').next().unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookies_pin_clients_resist_forgery_and_fail_over() {
    let open = Arc::new(Semaphore::new(0));
    let (a, ha) = backend("A", open.clone()).await;
    let (b, _hb) = backend("B", open.clone()).await;
    let (c, _hc) = backend("C", open.clone()).await;
    let opts = GatewayOptions {
        sticky: Some(Sticky::new("strata_node", b"cluster secret")),
        ..GatewayOptions::default()
    };
    let (gw, g, _live) = gateway(&[a, b, c], opts).await;

    // A new client gets a cookie; with it, every request goes to the same
    // backend although round robin would rotate.
    let first = send(gw, "GET", "/cart", "").await;
    let cookie = cookie_of(&first).expect("a cookie is set");
    assert!(first.contains("HttpOnly"), "{first}");
    let home = body(&first).to_owned();
    for _ in 0..10 {
        let r = send(gw, "GET", "/cart", &format!("Cookie: {cookie}\r\n")).await;
        assert_eq!(body(&r), home, "{r}");
        assert!(cookie_of(&r).is_none(), "no new cookie while pinned: {r}");
    }
    assert_eq!(g.metrics.sticky_hits.load(Ordering::Relaxed), 10);

    // A forged cookie (another backend's id, this MAC) is ignored.
    let pool = g.pool();
    let other = pool
        .backends
        .iter()
        .find(|x| {
            x.addr
                != pool.backends[["A", "B", "C"]
                    .iter()
                    .position(|n| *n == home)
                    .expect("name")]
                .addr
        })
        .expect("other");
    let value = cookie.split_once('=').expect("kv").1;
    let forged = format!("strata_node={:016x}{}", other.sticky_id(), &value[16..]);
    let r = send(gw, "GET", "/cart", &format!("Cookie: {forged}\r\n")).await;
    assert!(cookie_of(&r).is_some(), "forged cookie replaced: {r}");

    // Pin a client to A, then kill A: its next request is answered by
    // another backend and re-pinned there, without an error.
    let sticky = Sticky::new("strata_node", b"cluster secret");
    let to_a = format!("strata_node={}", sticky.value(pool.backends[0].sticky_id()));
    let r = send(gw, "GET", "/cart", &format!("Cookie: {to_a}\r\n")).await;
    assert_eq!(body(&r), "A", "{r}");
    ha.kill().await;
    let r = send(gw, "GET", "/cart", &format!("Cookie: {to_a}\r\n")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let moved = cookie_of(&r).expect("re-pinned");
    let new_home = body(&r).to_owned();
    assert_ne!(new_home, "A");
    for _ in 0..5 {
        let r = send(gw, "GET", "/cart", &format!("Cookie: {moved}\r\n")).await;
        assert_eq!(body(&r), new_home, "{r}");
    }

    // Draining the new home moves the session again.
    let addr = if new_home == "B" { b } else { c };
    admin(
        gw,
        "POST",
        &format!("/_strata/admin/pools/nodes/backends/{addr}/drain"),
    )
    .await;
    let r = send(gw, "GET", "/cart", &format!("Cookie: {moved}\r\n")).await;
    assert!(
        r.starts_with("HTTP/1.1 200") && body(&r) != new_home && body(&r) != "A",
        "{r}"
    );
    assert!(cookie_of(&r).is_some(), "{r}");
}

#[tokio::test(start_paused = true)]
async fn idle_and_slow_clients_are_closed_after_the_idle_timeout() {
    let open = Arc::new(Semaphore::new(0));
    let (a, _ha) = backend("A", open).await;
    let p = Pool::new(
        vec![Backend::new(a, 1)],
        Algorithm::Random,
        HealthOptions {
            check_interval: Duration::ZERO,
            ..HealthOptions::default()
        },
    )
    .expect("pool");
    let live = Live::with_idle_timeout(
        Router {
            pools: vec![(
                "nodes".into(),
                Gateway::new(Arc::new(p), GatewayOptions::default()),
            )],
            routes: Vec::new(),
            rules: Default::default(),
        },
        None,
        Duration::from_secs(5),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gw = l.local_addr().expect("addr");
    tokio::spawn(balancer::serve_routed(l, live, std::future::pending()));
    // Served once, then idle: closed.
    let mut s = tokio::net::TcpStream::connect(gw).await.expect("connect");
    s.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).await.expect("answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let t = tokio::time::Instant::now();
    assert_eq!(s.read(&mut buf).await.expect("eof"), 0, "closed when idle");
    assert!(t.elapsed() >= Duration::from_secs(5));
    // Half a head, then nothing: closed too.
    let mut s = tokio::net::TcpStream::connect(gw).await.expect("connect");
    s.write_all(b"GET /x HTTP/1.1\r\nHo").await.expect("write");
    assert_eq!(s.read(&mut buf).await.expect("eof"), 0, "slow head closed");
}
