//! The internal APIs of the store and index roles, and a whole cluster run
//! in-process (every hop over real HTTP on port-0 listeners).

use testkit::{blob, Client, InProcCluster, Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_server_api() {
    let dir = tempfile::tempdir().expect("tmp");
    let (s, _) = store::Store::open(dir.path(), store::StoreOptions::default()).expect("open");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let c = Client::new(format!("http://{}", l.local_addr().expect("addr")));
    tokio::spawn(store::server::serve(l, s.clone(), std::future::pending()));

    let body = blob(5, 5000);
    let r = c.put("/blobs/42", body.clone()).await.expect("put");
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["size"], 5000);
    let r = c.get("/blobs/42").await.expect("get");
    assert_eq!(&r.body[..], &body[..]);
    let r = c
        .send(Method::HEAD, "/blobs/42", &[], vec![])
        .await
        .expect("head");
    assert_eq!(r.header("content-length"), "5000");
    let r = c
        .send(
            Method::GET,
            "/blobs/42",
            &[("range", "bytes=10-19")],
            vec![],
        )
        .await
        .expect("range");
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.header("content-range"), "bytes 10-19/5000");
    assert_eq!(&r.body[..], &body[10..20]);
    let r = c
        .send(
            Method::GET,
            "/blobs/42",
            &[("range", "bytes=5000-")],
            vec![],
        )
        .await
        .expect("416");
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("content-range"), "bytes */5000");
    assert_eq!(
        c.get("/blobs/nope").await.expect("bad id").status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        c.get("/blobs/43").await.expect("missing").status,
        StatusCode::NOT_FOUND
    );
    let stats = c.get("/stats").await.expect("stats").json();
    assert_eq!(stats["blobs"], 1);
    assert_eq!(
        c.delete("/blobs/42").await.expect("delete").status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.delete("/blobs/42").await.expect("again").status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get("/blobs/42").await.expect("gone").status,
        StatusCode::NOT_FOUND
    );
    let m =
        String::from_utf8(c.get("/metrics").await.expect("metrics").body.to_vec()).expect("utf8");
    assert!(m.contains("\nstrata_store_reads_total 2\n"), "{m}");
    assert!(m.contains("\nstrata_store_deletes_total 1\n"), "{m}");
    let r = c
        .send(Method::POST, "/admin/compact", &[], vec![])
        .await
        .expect("compact");
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_server_api() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = index::IndexDb::open(dir.path()).expect("open");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let c = Client::new(format!("http://{}", l.local_addr().expect("addr")));
    tokio::spawn(index::server::serve(l, db, std::future::pending()));

    let meta = r#"{"id":7,"size":3,"etag":"\"e\"","content_type":"text/plain","created_ms":1,"replicas":["s1"],"tags":["t"]}"#;
    let key = "/key?key=a%2Fb%20c";
    let r = c
        .send(
            Method::PUT,
            key,
            &[("content-type", "application/json")],
            meta,
        )
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["previous"].is_null());
    let r = c.get(key).await.expect("get");
    assert_eq!(r.json()["id"], 7);
    let r = c.get("/list?prefix=a%2F").await.expect("list");
    assert_eq!(r.json()["items"][0]["key"], "a/b c");
    let r = c.get("/tag?tag=t").await.expect("tag");
    assert_eq!(r.json()["items"][0]["key"], "a/b c");
    let r = c
        .send(Method::POST, "/ids?count=10", &[], vec![])
        .await
        .expect("ids");
    assert_eq!(r.json()["start"], 1);
    let r = c
        .send(Method::POST, "/ids?count=0", &[], vec![])
        .await
        .expect("ids");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = c
        .send(
            Method::PUT,
            key,
            &[("content-type", "application/json")],
            "{bad",
        )
        .await
        .expect("bad json");
    assert!(r.status.is_client_error());
    assert_eq!(c.delete(key).await.expect("delete").status, StatusCode::OK);
    assert_eq!(
        c.delete(key).await.expect("again").status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get(key).await.expect("gone").status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_cluster_replicates_and_cleans_up() {
    let cl = InProcCluster::start(3, 2).await.expect("cluster");
    let c = &cl.client;
    c.wait_ready("/healthz", std::time::Duration::from_secs(10))
        .await
        .expect("ready");
    for i in 0..30u64 {
        let r = c
            .send(
                Method::PUT,
                &format!("/v1/blobs/p/{i}"),
                &[("x-strata-tags", "even")],
                blob(i, 3000),
            )
            .await
            .expect("put");
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    // Ranges through a remote store; listings through the remote index.
    let r = c
        .send(
            Method::GET,
            "/v1/blobs/p/3",
            &[("range", "bytes=-100")],
            vec![],
        )
        .await
        .expect("range");
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.body[..], &blob(3, 3000)[2900..]);
    let r = c.get("/v1/blobs?tag=even&limit=1000").await.expect("tags");
    assert_eq!(r.json()["items"].as_array().map(Vec::len), Some(30));

    // Every blob is on exactly R = 2 stores.
    let copies = async || {
        let mut n = 0;
        for s in ["store-1", "store-2", "store-3"] {
            n += Client::new(cl.url(s))
                .get("/stats")
                .await
                .expect("stats")
                .json()["blobs"]
                .as_u64()
                .expect("n");
        }
        n
    };
    assert_eq!(copies().await, 60);

    // Overwrites and deletes remove the old copies from both replicas.
    for i in 0..10u64 {
        c.put(&format!("/v1/blobs/p/{i}"), "new")
            .await
            .expect("overwrite");
        c.delete(&format!("/v1/blobs/p/{}", i + 10))
            .await
            .expect("delete");
    }
    testkit::until_async(
        "the old copies are deleted",
        std::time::Duration::from_secs(10),
        async || match copies().await {
            40 => Ok(()),
            n => Err(format!("{n} blobs on the stores")),
        },
    )
    .await;
    assert_eq!(&c.get("/v1/blobs/p/1").await.expect("get").body[..], b"new");
    cl.stop().await.expect("stop");
}

/// Batching (on here, off by default): concurrent GETs of different small
/// blobs on one store inside the window go to it as one multi-get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_reads_are_batched_into_one_multi_get() {
    let extra = "[proxy]\nbatch_window_us = 300000\n[cache]\nenabled = false";
    let cl = InProcCluster::start_with_caches(1, 1, 0, extra)
        .await
        .expect("cluster");
    let c = cl.client.clone();
    c.wait_ready("/healthz", std::time::Duration::from_secs(10))
        .await
        .expect("ready");
    for i in 0..20u64 {
        assert_eq!(
            c.put(&format!("/v1/blobs/b/{i}"), blob(i, 500 + i as usize))
                .await
                .expect("put")
                .status,
            StatusCode::CREATED
        );
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let (c, b) = (c.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            (i, c.get(&format!("/v1/blobs/b/{i}")).await.expect("get"))
        }));
    }
    for t in tasks {
        let (i, r) = t.await.expect("task");
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], &blob(i, 500 + i as usize)[..]);
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
    assert!(m.contains("\nstrata_store_mgets_total 1\n"), "{m}");
    let n =
        String::from_utf8(c.get("/metrics").await.expect("metrics").body.to_vec()).expect("utf8");
    assert!(n.contains("strata_proxy_batched_reads_total 20\n"), "{n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_multi_get_answers_in_order_and_refuses_bad_bodies() {
    let dir = tempfile::tempdir().expect("tmp");
    let (s, _) = store::Store::open(dir.path(), store::StoreOptions::default()).expect("open");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let c = Client::new(format!("http://{}", l.local_addr().expect("addr")));
    tokio::spawn(store::server::serve(l, s.clone(), std::future::pending()));
    s.put(
        1,
        bytes::Bytes::from_static(b"key one"),
        bytes::Bytes::from_static(b"one"),
    )
    .await
    .expect("put");
    let ids: Vec<u8> = [1u64, 2].iter().flat_map(|i| i.to_le_bytes()).collect();
    let r = c.send(Method::POST, "/mget", &[], ids).await.expect("mget");
    assert_eq!(r.status, StatusCode::OK);
    // id 1: found, 3 bytes; id 2: missing.
    let mut want = Vec::new();
    want.extend_from_slice(&1u64.to_le_bytes());
    want.push(0);
    want.extend_from_slice(&3u32.to_le_bytes());
    want.extend_from_slice(b"one");
    want.extend_from_slice(&2u64.to_le_bytes());
    want.push(1);
    want.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(&r.body[..], &want[..]);
    // Not a whole number of ids, or more than 4096 of them: 400.
    let r = c
        .send(Method::POST, "/mget", &[], vec![0u8; 7])
        .await
        .expect("mget");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = c
        .send(Method::POST, "/mget", &[], vec![0u8; 8 * 4097])
        .await
        .expect("mget");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // A PUT's leading body bytes are the needle's metadata when it says
    // how many; the blob reads back without them, the metadata apart.
    let meta_len = [("x-strata-meta-len", "7")];
    let r = c
        .send(Method::PUT, "/blobs/2", &meta_len, b"key twotwo".to_vec())
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(&c.get("/blobs/2").await.expect("get").body[..], b"two");
    assert_eq!(&c.get("/meta/2").await.expect("meta").body[..], b"key two");
    assert_eq!(&c.get("/meta/1").await.expect("meta").body[..], b"key one");
    assert_eq!(
        c.get("/meta/9").await.expect("meta").status,
        StatusCode::NOT_FOUND
    );
    // A length past the body, or not a number: 400, nothing written.
    for bad in ["11", "x"] {
        let r = c
            .send(
                Method::PUT,
                "/blobs/3",
                &[("x-strata-meta-len", bad)],
                b"0123456789".to_vec(),
            )
            .await
            .expect("put");
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    // Metadata longer than a needle holds (65,528 bytes): 413.
    let big = 70_000;
    let mut body = vec![b'm'; big];
    body.extend_from_slice(b"data");
    let r = c
        .send(
            Method::PUT,
            "/blobs/3",
            &[("x-strata-meta-len", &big.to_string())],
            body,
        )
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert_eq!(
        c.get("/blobs/3").await.expect("get").status,
        StatusCode::NOT_FOUND
    );
}
