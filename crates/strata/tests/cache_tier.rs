//! The cache tiers in the read path: invalidation and its window, stale
//! metadata recovery, and a killed cache member under load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use testkit::{blob, Client, InProcCluster, Method, Procs, StatusCode};

async fn second_node(cl: &InProcCluster, clock: Arc<cache::ManualClock>) -> Client {
    let node = strata::cluster_node_with(&cl.cfg, None, clock)
        .await
        .expect("node");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let c = Client::new(format!("http://{}", l.local_addr().expect("addr")));
    tokio::spawn(node::api::serve(l, node, std::future::pending()));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_window_is_the_local_metadata_ttl() {
    let cl = InProcCluster::start_with_caches(2, 1, 1, "[cache]\nmeta_ttl_secs = 2")
        .await
        .expect("cluster");
    let a = &cl.client;
    a.wait_ready("/healthz", std::time::Duration::from_secs(10))
        .await
        .expect("ready");
    let clock = Arc::new(cache::ManualClock::new(1_900_000_000));
    let b = second_node(&cl, clock.clone()).await;

    assert_eq!(
        a.put("/v1/blobs/k", "v1").await.expect("put").status,
        StatusCode::CREATED
    );
    assert_eq!(&b.get("/v1/blobs/k").await.expect("get").body[..], b"v1");
    assert_eq!(&b.get("/v1/blobs/k").await.expect("get").body[..], b"v1");

    // A replaces the value: A and any node without a local copy see v2 at
    // once (the distributed copy was deleted) ...
    assert_eq!(
        a.put("/v1/blobs/k", "v2").await.expect("put").status,
        StatusCode::CREATED
    );
    assert_eq!(&a.get("/v1/blobs/k").await.expect("get").body[..], b"v2");
    // ... B may serve v1 from its local copy for at most meta_ttl_secs ...
    assert_eq!(&b.get("/v1/blobs/k").await.expect("get").body[..], b"v1");
    // ... and not a second longer.
    clock.advance(2);
    assert_eq!(&b.get("/v1/blobs/k").await.expect("get").body[..], b"v2");

    // Delete: same window, then 404.
    assert_eq!(
        a.delete("/v1/blobs/k").await.expect("delete").status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        a.get("/v1/blobs/k").await.expect("get").status,
        StatusCode::NOT_FOUND
    );
    clock.advance(2);
    assert_eq!(
        b.get("/v1/blobs/k").await.expect("get").status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_local_metadata_recovers_from_the_index() {
    let cl = InProcCluster::start_with_caches(1, 1, 1, "[cache]\nmeta_ttl_secs = 60")
        .await
        .expect("cluster");
    let a = &cl.client;
    a.wait_ready("/healthz", std::time::Duration::from_secs(10))
        .await
        .expect("ready");
    let clock = Arc::new(cache::ManualClock::new(1_900_000_000));
    let b = second_node(&cl, clock).await;
    a.put("/v1/blobs/s", blob(1, 100)).await.expect("put");
    // B caches the metadata only (HEAD reads no data).
    assert_eq!(
        b.send(Method::HEAD, "/v1/blobs/s", &[], vec![])
            .await
            .expect("head")
            .status,
        StatusCode::OK
    );
    // A overwrites; the old blob is deleted from the store in the background.
    a.put("/v1/blobs/s", blob(2, 100)).await.expect("put");
    let store = Client::new(cl.url("store-1"));
    testkit::until_async(
        "the old copy is deleted",
        std::time::Duration::from_secs(5),
        async || {
            let st = store.get("/stats").await.expect("stats").json();
            match st["blobs"] == 1 {
                true => Ok(()),
                false => Err(st.to_string()),
            }
        },
    )
    .await;
    // B's local metadata names the deleted blob: the read fails on the
    // store, B asks the index again and serves the new value.
    let r = b.get("/v1/blobs/s").await.expect("get");
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], &blob(2, 100)[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_a_killed_cache_member() {
    let extra = "[cache]\nlocal_memory_mb = 0\ntimeout_ms = 500\ndown_after = 1";
    let mut p = Procs::cluster_with_caches(env!("CARGO_BIN_EXE_strata").as_ref(), 2, 1, 2, extra)
        .await
        .expect("cluster");
    let c = p.client();
    let n = 300u64;
    for i in 0..n {
        let r = c
            .put(&format!("/v1/blobs/c/{i}"), blob(i, 1000))
            .await
            .expect("put");
        assert_eq!(r.status, StatusCode::CREATED);
    }
    // Warm the distributed cache.
    for i in 0..n {
        c.get(&format!("/v1/blobs/c/{i}")).await.expect("get");
    }
    let reads = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (c, reads, stop) = (c.clone(), reads.clone(), stop.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) || rounds < 2 {
                for i in 0..n {
                    match c.get(&format!("/v1/blobs/c/{i}")).await {
                        Ok(r) if r.status == StatusCode::OK && r.body[..] == blob(i, 1000)[..] => {}
                        other => failures.push((i, other.map(|r| r.status))),
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                rounds += 1;
            }
            failures
        })
    };
    while reads.load(Ordering::Relaxed) < 200 {
        tokio::task::yield_now().await;
    }
    p.kill("cache-1").expect("kill -9 cache-1");
    let after = reads.load(Ordering::Relaxed);
    while reads.load(Ordering::Relaxed) < after + 2 * n {
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    let failures = reader.await.expect("reader");
    assert!(
        failures.is_empty(),
        "failed GETs: {:?}",
        &failures[..failures.len().min(10)]
    );
    let m =
        String::from_utf8(c.get("/metrics").await.expect("metrics").body.to_vec()).expect("utf8");
    // Marked down at least once: a slow run outlasts `retry_after`, so
    // the dead member is tried again and marked down again.
    assert!(
        testkit::metric_value(&m, "strata_cache_down_marks_total{node=\"cache-1\"}")
            .is_some_and(|v| v >= 1),
        "{m}"
    );
    assert!(
        m.contains("strata_cache_node_up{node=\"cache-1\"} 0"),
        "{m}"
    );
    let hits = testkit::metric_value(
        &m,
        "strata_cache_hits_total{tier=\"global\",node=\"cache-2\"}",
    )
    .expect("cache-2 hits");
    assert!(hits > 0, "{m}");
}

/// `mode = "through"`: the cache member reads blob bytes from the stores;
/// 50 clients released together onto a cold blob cost one store read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_through_mode_reads_the_store_once() {
    let extra = "[cache]\nmode = \"through\"\nlocal_memory_mb = 0\ntimeout_ms = 2000";
    let cl = InProcCluster::start_with_caches(1, 1, 1, extra)
        .await
        .expect("cluster");
    let c = cl.client.clone();
    c.wait_ready("/healthz", std::time::Duration::from_secs(10))
        .await
        .expect("ready");
    assert_eq!(
        c.put("/v1/blobs/cold", blob(9, 5000))
            .await
            .expect("put")
            .status,
        StatusCode::CREATED
    );
    // Warm the metadata so that only the bytes are cold.
    assert_eq!(
        c.send(Method::HEAD, "/v1/blobs/cold", &[], vec![])
            .await
            .expect("head")
            .status,
        StatusCode::OK
    );
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (c, b) = (c.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            c.get("/v1/blobs/cold").await.expect("get")
        }));
    }
    for t in tasks {
        let r = t.await.expect("task");
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], &blob(9, 5000)[..]);
    }
    let m = String::from_utf8(
        Client::new(cl.url("store-1"))
            .get("/metrics")
            .await
            .expect("metrics")
            .body
            .to_vec(),
    )
    .expect("utf8");
    assert!(m.contains("\nstrata_store_reads_total 1\n"), "{m}");
}
