//! A real multi-process cluster: 3 stores with R = 2, an index and a node.
//! Killing a store with SIGKILL while a reader loops must fail no GET.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use testkit::{blob, Procs, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_a_killed_store() {
    let mut p = Procs::cluster(env!("CARGO_BIN_EXE_strata").as_ref(), 3, 2)
        .await
        .expect("cluster");
    let c = p.client();
    let n = 1000u64;
    for i in 0..n {
        let r = c
            .put(&format!("/v1/blobs/k/{i}"), blob(i, 2048))
            .await
            .expect("put");
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let reps = r.json();
        assert!(reps["id"].as_u64().is_some());
    }
    // Each blob is on exactly 2 of the 3 stores.
    let r = c.get("/v1/blobs?prefix=k/&limit=5").await.expect("list");
    for e in r.json()["items"].as_array().expect("items") {
        assert_eq!(e["replicas"].as_array().map(Vec::len), Some(2));
    }

    let reads = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (c, reads, stop) = (c.clone(), reads.clone(), stop.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) || round < 2 {
                for i in 0..n {
                    let r = c.get(&format!("/v1/blobs/k/{i}")).await;
                    match r {
                        Ok(r) if r.status == StatusCode::OK && r.body[..] == blob(i, 2048)[..] => {}
                        other => failures.push((i, other.map(|r| r.status))),
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                round += 1;
            }
            failures
        })
    };
    // Barrier: let the reader get going before the kill.
    while reads.load(Ordering::Relaxed) < 300 {
        tokio::task::yield_now().await;
    }
    p.kill("store-2").expect("kill -9 store-2");
    // Writes go on too, onto the two live stores.
    for i in n..n + 50 {
        let r = c
            .put(&format!("/v1/blobs/k/{i}"), blob(i, 100))
            .await
            .expect("put");
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "write with a store down: {:?}",
            r.body
        );
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
    assert!(m.contains("strata_node_healthy_stores 2"), "{m}");

    // Bring it back: it rejoins and serves again.
    p.restart("store-2").await.expect("restart");
    for i in 0..n {
        let r = c.get(&format!("/v1/blobs/k/{i}")).await.expect("get");
        assert_eq!(r.status, StatusCode::OK);
    }
}
