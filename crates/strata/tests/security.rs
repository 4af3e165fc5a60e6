//! The security rules of docs/security.md, each through real sockets:
//! the cluster secret on internal APIs, request-head limits, the
//! slowloris timeout and the connection limit, on request nodes and on
//! the gateway.

use std::time::{Duration, Instant};

use testkit::{Client, InProcCluster, Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "cluster-secret-1";

/// Sends raw bytes, reads until the server closes (or `limit` passes).
async fn raw(addr: &str, req: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(req).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// An in-process cluster with `extra` settings, its node answering.
async fn cluster(stores: usize, caches: usize, extra: &str) -> InProcCluster {
    let c = InProcCluster::start_with_caches(stores, stores, caches, extra)
        .await
        .expect("cluster");
    c.client
        .wait_ready("/healthz", Duration::from_secs(10))
        .await
        .expect("ready");
    c
}

fn host(url: &str) -> &str {
    url.trim_start_matches("http://")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_apis_need_the_cluster_secret() {
    let extra = format!("[auth]\nsecret = \"{SECRET}\"\n");
    let c = cluster(2, 1, &extra).await;
    // The node reaches stores and index with the secret: writes and reads
    // work end to end.
    let r = c.client.put("/v1/blobs/a/b", "hello").await.expect("put");
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = c.client.get("/v1/blobs/a/b").await.expect("get");
    assert_eq!(&r.body[..], b"hello");

    for member in ["store-1", "index"] {
        let api = Client::new(c.url(member));
        let path = if member == "index" {
            "/key?key=a/b"
        } else {
            "/stats"
        };
        // No secret, a wrong one, one of the wrong length: 401, and the
        // answer says what is missing without echoing anything.
        for given in [None, Some("cluster-secret-2"), Some("x")] {
            let headers: Vec<(&str, &str)> =
                given.map(|g| ("x-strata-secret", g)).into_iter().collect();
            let r = api
                .send(Method::GET, path, &headers, vec![])
                .await
                .expect("call");
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{member} {given:?}");
            assert_eq!(r.json()["error"], "unauthorized");
            assert!(!r.text().contains(SECRET));
        }
        let r = api
            .send(Method::GET, path, &[("x-strata-secret", SECRET)], vec![])
            .await
            .expect("call");
        assert_eq!(r.status, StatusCode::OK, "{member}: {}", r.text());
        // Health checks and metrics stay open.
        for open in ["/healthz", "/metrics"] {
            assert_eq!(api.get(open).await.expect("open").status, StatusCode::OK);
        }
    }
    // Admin paths need the admin token besides the secret; with none
    // configured the admin API is off.
    let store = Client::new(c.url("store-1"));
    for path in ["/admin/compact", "/admin/scrub"] {
        let r = store
            .send(Method::POST, path, &[("x-strata-secret", SECRET)], vec![])
            .await
            .expect("admin");
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.text());
    }
    // The cache member speaks memcached: it wants memcached's ASCII login
    // with the secret before anything else, and the node logged in (the
    // blob read above went into it).
    let cache = c.url("cache-1");
    let cache = host(&cache);
    let r = raw(cache, b"get anything\r\n", Duration::from_secs(5)).await;
    assert_eq!(r, "CLIENT_ERROR unauthenticated\r\n");
    let login = format!(
        "set auth 0 0 {}\r\nstrata {SECRET}\r\nstats\r\nquit\r\n",
        SECRET.len() + 7
    );
    let r = raw(cache, login.as_bytes(), Duration::from_secs(5)).await;
    assert!(r.starts_with("STORED\r\n"), "{r}");
    let items: u64 = r
        .lines()
        .find_map(|l| l.strip_prefix("STAT curr_items "))
        .and_then(|n| n.trim().parse().ok())
        .expect("curr_items");
    assert!(items > 0, "the node filled the cache: {r}");
    // A write straight to a store without the secret is refused and
    // changes nothing.
    let store = Client::new(c.url("store-1"));
    let r = store.put("/blobs/999", "forged").await.expect("forge");
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = store
        .send(
            Method::GET,
            "/blobs/999",
            &[("x-strata-secret", SECRET)],
            vec![],
        )
        .await
        .expect("get");
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    c.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_are_limited_on_nodes() {
    let extra = "[limits]\nmax_header_bytes = 8192\nmax_headers = 20\nheader_timeout_ms = 300\n";
    let c = cluster(1, 0, extra).await;
    let addr = c.url("node");
    let addr = host(&addr);
    let limit = Duration::from_secs(10);

    // A head over 8 KiB: 431.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let r = raw(addr, big.as_bytes(), limit).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    // 30 headers: 431.
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..30 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let r = raw(addr, many.as_bytes(), limit).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    // Within the limits: answered.
    let r = raw(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        limit,
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");

    slowloris(addr).await;
    c.stop().await.expect("stop");
}

/// A client trickling a head one byte every 50 ms is cut off once the
/// head timeout (300 ms) passes, long before it would finish.
async fn slowloris(addr: &str) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let t0 = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = false;
    for b in head.iter() {
        if s.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        // A read that ends means the server closed (or answered 408).
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(!text.starts_with("HTTP/1.1 200"), "a slow head was served");
                cut = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        cut,
        "the slow client kept its connection for {:?}",
        t0.elapsed()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "cut after {:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let extra = "[limits]\nmax_connections = 3\n";
    let c = InProcCluster::start_with_caches(1, 1, 0, extra)
        .await
        .expect("cluster");
    // No readiness probe through a pooled client: its idle connection
    // would hold a slot. The listeners are bound, so connections wait in
    // the backlog until the node serves.
    let url = c.url("node");
    let addr = host(&url).to_owned();
    // Three idle keep-alive connections take every slot (each proves it
    // was accepted by getting an answer).
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    // A fourth gets no answer while they stay open ...
    let mut fourth = TcpStream::connect(&addr).await.expect("connect (backlog)");
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let waited =
        tokio::time::timeout(Duration::from_millis(500), fourth.read_to_end(&mut out)).await;
    assert!(
        waited.is_err() && out.is_empty(),
        "served past the limit: {out:?}"
    );
    // ... and is served as soon as one of them closes.
    drop(held.pop());
    tokio::time::timeout(Duration::from_secs(10), fourth.read_to_end(&mut out))
        .await
        .expect("served once a slot freed")
        .expect("read");
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    drop(held);
    c.stop().await.expect("stop");
}

#[test]
fn internal_roles_listen_on_loopback_unless_told_otherwise() {
    let base = "[[member]]\nname = \"i\"\nrole = \"index\"\naddr = \"10.1.2.3:7000\"\ndata_dir = \"/d/i\"\n\
                [[member]]\nname = \"n\"\nrole = \"node\"\naddr = \"10.1.2.3:8080\"\n";
    let cfg = cluster::ClusterConfig::parse(base).expect("parse");
    // The index is reached at 10.1.2.3:7000 by name but listens on
    // loopback; the node (public) listens where it says.
    assert_eq!(
        cfg.member("i").unwrap().listen_addr().to_string(),
        "127.0.0.1:7000"
    );
    assert_eq!(
        cfg.member("n").unwrap().listen_addr().to_string(),
        "10.1.2.3:8080"
    );
    // Binding an internal role to a public address needs the secret.
    let public = base.replace(
        "data_dir = \"/d/i\"\n",
        "data_dir = \"/d/i\"\nbind = \"0.0.0.0:7000\"\n",
    );
    let err = cluster::ClusterConfig::parse(&public)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("member[0].bind") && err.contains("auth.secret"),
        "{err}"
    );
    let with_secret = format!("[auth]\nsecret = \"s\"\n{public}");
    let cfg = cluster::ClusterConfig::parse(&with_secret).expect("parse with secret");
    assert_eq!(
        cfg.member("i").unwrap().listen_addr().to_string(),
        "0.0.0.0:7000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_limits_heads_and_cuts_slow_clients() {
    let c = cluster(1, 0, "").await;
    // A gateway in front of the cluster's node, with tight limits.
    let mut cfg = (*c.cfg).clone();
    cfg.limits.header_timeout_ms = 300;
    cfg.limits.max_header_bytes = 8192;
    cfg.limits.max_headers = 20;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let gw = tokio::spawn(strata::gateway::run_gateway(
        std::sync::Arc::new(cfg),
        None,
        l,
        None,
        rx,
    ));
    let limit = Duration::from_secs(10);

    let r = raw(
        &addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        limit,
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let r = raw(&addr, big.as_bytes(), limit).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..30 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let r = raw(&addr, many.as_bytes(), limit).await;
    assert!(r.starts_with("HTTP/1.1 431"), "30 headers: {r}");
    slowloris(&addr).await;

    let _ = stop.send(true);
    gw.await.expect("join").expect("gateway");
    c.stop().await.expect("stop");
}
