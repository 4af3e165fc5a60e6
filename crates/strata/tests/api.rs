//! The public API end to end through `serve` running in-process: the README's
//! curl tour, and every bad-input path.

use testkit::{blob, InProc};
use testkit::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start() -> (tempfile::TempDir, InProc) {
    let dir = tempfile::tempdir().expect("tmp");
    let s = InProc::serve_default(dir.path()).await.expect("serve");
    (dir, s)
}

#[tokio::test]
async fn put_get_range_304_list_delete() {
    let (_dir, s) = start().await;
    let c = &s.client;
    let body = blob(1, 10_000);
    let r = c
        .send(
            Method::PUT,
            "/v1/blobs/cats/tabby.jpg",
            &[
                ("content-type", "image/jpeg"),
                ("x-strata-tags", "cat, orange"),
            ],
            body.clone(),
        )
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::CREATED);
    let j = r.json();
    assert_eq!(j["key"], "cats/tabby.jpg");
    assert_eq!(j["size"], 10_000);
    let etag = j["etag"].as_str().expect("etag").to_owned();

    let r = c.get("/v1/blobs/cats/tabby.jpg").await.expect("get");
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], &body[..]);
    assert_eq!(r.header("content-type"), "image/jpeg");
    assert_eq!(r.header("content-length"), "10000");
    assert_eq!(r.header("etag"), etag);
    assert!(!r.header("last-modified").is_empty());
    assert!(!r.header("cache-control").is_empty());

    let r = c
        .send(Method::HEAD, "/v1/blobs/cats/tabby.jpg", &[], vec![])
        .await
        .expect("head");
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), "10000");
    assert!(r.body.is_empty());

    let r = c
        .send(
            Method::GET,
            "/v1/blobs/cats/tabby.jpg",
            &[("range", "bytes=100-199")],
            vec![],
        )
        .await
        .expect("range");
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.header("content-range"), "bytes 100-199/10000");
    assert_eq!(&r.body[..], &body[100..200]);
    let r = c
        .send(
            Method::GET,
            "/v1/blobs/cats/tabby.jpg",
            &[("range", "bytes=-10")],
            vec![],
        )
        .await
        .expect("suffix");
    assert_eq!(&r.body[..], &body[9_990..]);
    let r = c
        .send(
            Method::GET,
            "/v1/blobs/cats/tabby.jpg",
            &[("range", "bytes=20000-")],
            vec![],
        )
        .await
        .expect("416");
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("content-range"), "bytes */10000");
    assert_eq!(r.json()["error"], "bad_range");

    let r = c
        .send(
            Method::GET,
            "/v1/blobs/cats/tabby.jpg",
            &[("if-none-match", &etag)],
            vec![],
        )
        .await
        .expect("304");
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.body.is_empty());
    let r = c
        .send(
            Method::GET,
            "/v1/blobs/cats/tabby.jpg",
            &[("if-none-match", "\"other\"")],
            vec![],
        )
        .await
        .expect("200");
    assert_eq!(r.status, StatusCode::OK);

    for k in ["cats/b", "cats/c", "dogs/a"] {
        assert_eq!(
            c.put(&format!("/v1/blobs/{k}"), "x")
                .await
                .expect("put")
                .status,
            StatusCode::CREATED
        );
    }
    let r = c.get("/v1/blobs?prefix=cats/&limit=2").await.expect("list");
    let j = r.json();
    let keys: Vec<&str> = j["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["cats/b", "cats/c"]);
    assert_eq!(j["next"], "cats/c");
    let r = c
        .get("/v1/blobs?prefix=cats/&limit=2&after=cats/c")
        .await
        .expect("page 2");
    let j = r.json();
    assert_eq!(j["items"][0]["key"], "cats/tabby.jpg");
    assert!(j.get("next").is_none());
    let r = c.get("/v1/blobs?tag=orange").await.expect("tag");
    assert_eq!(r.json()["items"][0]["key"], "cats/tabby.jpg");
    assert_eq!(r.json()["items"].as_array().expect("items").len(), 1);

    let r = c.delete("/v1/blobs/cats/tabby.jpg").await.expect("delete");
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        c.get("/v1/blobs/cats/tabby.jpg").await.expect("get").status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.delete("/v1/blobs/cats/tabby.jpg")
            .await
            .expect("again")
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get("/v1/blobs?tag=orange").await.expect("tag").json()["items"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

#[tokio::test]
async fn overwrite_replaces_and_frees_the_old_copy() {
    let (_dir, s) = start().await;
    let c = &s.client;
    c.put("/v1/blobs/k", blob(1, 500)).await.expect("put");
    let r = c.put("/v1/blobs/k", blob(2, 700)).await.expect("overwrite");
    assert_eq!(r.status, StatusCode::CREATED);
    let r = c.get("/v1/blobs/k").await.expect("get");
    assert_eq!(&r.body[..], &blob(2, 700)[..]);
    // The replaced blob is deleted from its store in the background.
    let store = s.handle.store.clone();
    for _ in 0..500 {
        if store.len() == 1 {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn keys_with_odd_characters_round_trip() {
    let (_dir, s) = start().await;
    let c = &s.client;
    let cases = [
        ("sp%20ace", "sp ace"),
        ("%E9%8D%B5/%D0%BA", "鍵/к"),
        ("q%3Fx%26y%23z", "q?x&y#z"),
        ("a/b//c", "a/b//c"),
    ];
    for (i, (path, key)) in cases.iter().enumerate() {
        assert_eq!(
            c.put(&format!("/v1/blobs/{path}"), blob(i as u64, 10))
                .await
                .expect("put")
                .status,
            StatusCode::CREATED,
            "{key}"
        );
        let r = c.get(&format!("/v1/blobs/{path}")).await.expect("get");
        assert_eq!(&r.body[..], &blob(i as u64, 10)[..], "{key}");
    }
    let r = c.get("/v1/blobs?prefix=q%3F").await.expect("list");
    assert_eq!(r.json()["items"][0]["key"], "q?x&y#z");
}

#[tokio::test]
async fn bad_input_gets_json_errors() {
    let (_dir, s) = start().await;
    let c = &s.client;
    let long = "k".repeat(1025);
    let cases: Vec<(Method, String, StatusCode, &str)> = vec![
        (
            Method::PUT,
            format!("/v1/blobs/{long}"),
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            Method::PUT,
            "/v1/blobs/a%00b".into(),
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            Method::PUT,
            "/v1/blobs/a%0Ab".into(),
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            Method::GET,
            "/v1/blobs/%FF%FE".into(),
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            Method::GET,
            "/v1/blobs/bad%zzescape".into(),
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            Method::GET,
            "/v1/blobs/missing".into(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::PATCH,
            "/v1/blobs/x".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/v1/blobs?limit=0".into(),
            StatusCode::BAD_REQUEST,
            "bad_limit",
        ),
        (
            Method::GET,
            "/v1/blobs?limit=abc".into(),
            StatusCode::BAD_REQUEST,
            "bad_limit",
        ),
        (
            Method::GET,
            "/nowhere".into(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (m, path, status, code) in cases {
        let r = c.send(m.clone(), &path, &[], "x").await.expect("send");
        assert_eq!(r.status, status, "{m} {path}");
        assert_eq!(r.json()["error"], code, "{m} {path}: {:?}", r.body);
        assert!(r.json()["detail"].is_string());
    }
    let r = c
        .send(
            Method::PUT,
            "/v1/blobs/t",
            &[("x-strata-tags", &"t".repeat(200))],
            "x",
        )
        .await
        .expect("tags");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "bad_tags");
    // Nothing of the above was stored.
    assert_eq!(
        c.get("/v1/blobs").await.expect("list").json()["items"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

#[tokio::test]
async fn body_over_the_limit_is_413_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = cluster::ClusterConfig::parse("[limits]\nmax_body_bytes = 1000\n").expect("cfg");
    let s = InProc::serve(&cfg, dir.path()).await.expect("serve");
    let r = s
        .client
        .put("/v1/blobs/big", blob(1, 1001))
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["error"], "too_large");
    // Chunked (no Content-Length): caught while reading.
    let mut sock = tokio::net::TcpStream::connect(s.addr())
        .await
        .expect("connect");
    let mut req =
        b"PUT /v1/blobs/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"190\r\n");
        req.extend_from_slice(&[b'a'; 400]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    sock.write_all(&req).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = sock.read(&mut buf).await.expect("read");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(
        s.client
            .put("/v1/blobs/ok", blob(1, 1000))
            .await
            .expect("put")
            .status,
        StatusCode::CREATED
    );
    assert_eq!(s.handle.store.len(), 1);
}

#[tokio::test]
async fn interrupted_upload_leaves_nothing_visible() {
    let (_dir, s) = start().await;
    let nodes = s.handle.node_addrs.len();
    let sum = |series: &'static str| {
        let s = &s;
        async move {
            let mut total = 0;
            for i in 0..nodes {
                total += s.node(i).metric(series).await.expect("metrics");
            }
            total
        }
    };
    // (target, declared length, bytes sent): straight to a node; through
    // the gateway with a large and with a small body. serve's gateway hands
    // requests to its in-process nodes with the body as it streams, so
    // every cut reaches a node, which must store nothing.
    let cases = [
        (s.handle.node_addrs[0], 100_000, 50_000),
        (s.addr(), 2 << 20, 1 << 20),
        (s.addr(), 100_000, 50_000),
    ];
    let mut errors = 0;
    for (target, declared, sent) in cases {
        let mut sock = tokio::net::TcpStream::connect(target)
            .await
            .expect("connect");
        let head =
            format!("PUT /v1/blobs/half HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n");
        sock.write_all(head.as_bytes()).await.expect("head");
        sock.write_all(&blob(1, sent))
            .await
            .expect("part of the body");
        drop(sock);
        // Barrier: wait until a node has finished that request (it
        // answers a cut-off body with a 400, a client error).
        errors += 1;
        let mut finished = false;
        for _ in 0..2000 {
            if sum("strata_node_client_errors_total").await == errors {
                finished = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(finished, "the node never finished the interrupted upload");
        assert_eq!(
            s.client.get("/v1/blobs/half").await.expect("get").status,
            StatusCode::NOT_FOUND
        );
        errors += 1; // that 404
        assert!(s.handle.store.is_empty());
    }
    assert_eq!(sum("strata_node_puts_total").await, 3);
}

#[tokio::test]
async fn writes_need_the_token_when_one_is_set() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = cluster::ClusterConfig::parse("[auth]\nwrite_token = \"s3cret\"\n").expect("cfg");
    let s = InProc::serve(&cfg, dir.path()).await.expect("serve");
    let c = &s.client;
    let r = c.put("/v1/blobs/a", "x").await.expect("put");
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("www-authenticate"), "Bearer");
    let r = c
        .send(
            Method::PUT,
            "/v1/blobs/a",
            &[("authorization", "Bearer nope")],
            "x",
        )
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = c
        .send(
            Method::PUT,
            "/v1/blobs/a",
            &[("authorization", "Bearer s3cret")],
            "x",
        )
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        c.get("/v1/blobs/a").await.expect("get").status,
        StatusCode::OK,
        "reads stay public"
    );
    assert_eq!(
        c.delete("/v1/blobs/a").await.expect("del").status,
        StatusCode::UNAUTHORIZED
    );
    let r = c
        .send(
            Method::DELETE,
            "/v1/blobs/a",
            &[("authorization", "Bearer s3cret")],
            vec![],
        )
        .await
        .expect("del");
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn metrics_count_store_reads_and_cache_hits() {
    let (_dir, s) = start().await;
    // Counters are per node: talk to one node, not the gateway.
    let n0 = s.node(0);
    let c = &n0;
    c.put("/v1/blobs/m", "hello").await.expect("put");
    for _ in 0..3 {
        c.get("/v1/blobs/m").await.expect("get");
    }
    c.send(Method::HEAD, "/v1/blobs/m", &[], vec![])
        .await
        .expect("head");
    let text =
        String::from_utf8(c.get("/metrics").await.expect("metrics").body.to_vec()).expect("utf8");
    // The first GET reads the index and the store and fills the cache; the
    // rest are cache hits, so the store saw exactly one needle read.
    // Metadata: 1 miss in the ready set and the cache, then 3 ready-set
    // hits (2 GETs, 1 HEAD); bytes: 2 misses (the lookup, and the re-check
    // inside the collapsed store read) + 2 hits.
    assert!(text.contains("\nstrata_store_reads_total 1\n"), "{text}");
    assert!(
        text.contains("strata_cache_hits_total{tier=\"ready\"} 3\n"),
        "{text}"
    );
    assert!(
        text.contains("strata_cache_misses_total{tier=\"ready\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("strata_cache_hits_total{tier=\"global\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("strata_cache_misses_total{tier=\"global\"} 3\n"),
        "{text}"
    );
    assert!(text.contains("strata_node_gets_total 4"), "{text}");
    assert_eq!(
        c.get("/healthz").await.expect("health").status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn survives_a_clean_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = InProc::serve_default(dir.path()).await.expect("serve");
    for i in 0..50u64 {
        s.client
            .put(&format!("/v1/blobs/k{i}"), blob(i, 3000))
            .await
            .expect("put");
    }
    s.stop().await.expect("stop");
    let s = loop {
        // The index file lock is released when the old writer thread ends.
        match InProc::serve_default(dir.path()).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    };
    for i in 0..50u64 {
        let r = s.client.get(&format!("/v1/blobs/k{i}")).await.expect("get");
        assert_eq!(&r.body[..], &blob(i, 3000)[..]);
    }
}

#[tokio::test]
async fn serve_runs_a_memcached_compatible_cache_node() {
    let (_dir, s) = start().await;
    let mut sock = tokio::net::TcpStream::connect(s.handle.cache_addr.expect("cache node"))
        .await
        .expect("connect");
    sock.write_all(b"set hello 0 0 5\r\nworld\r\nget hello\r\n")
        .await
        .expect("write");
    let want = b"STORED\r\nVALUE hello 0 5\r\nworld\r\nEND\r\n";
    let mut got = vec![0u8; want.len()];
    sock.read_exact(&mut got).await.expect("read");
    assert_eq!(&got[..], &want[..]);
}

/// 200 concurrent GETs of a cold key through `serve`: one store read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_cold_gets_read_the_store_once() {
    let (_dir, s) = start().await;
    // Counters are per node: talk to one node, not the gateway.
    let n0 = s.node(0);
    let c = &n0;
    assert_eq!(
        c.put("/v1/blobs/cold", blob(3, 200_000))
            .await
            .expect("put")
            .status,
        StatusCode::CREATED
    );
    let before = c.metric("strata_store_reads_total").await.expect("metrics");
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(200));
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (c, b) = (c.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            c.get("/v1/blobs/cold").await.expect("get")
        }));
    }
    for t in tasks {
        let r = t.await.expect("task");
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body[..] == blob(3, 200_000)[..]);
    }
    let text =
        String::from_utf8_lossy(&c.get("/metrics").await.expect("metrics").body).into_owned();
    assert_eq!(
        testkit::metric_value(&text, "strata_store_reads_total"),
        Some(before + 1),
        "{text}"
    );
    assert!(
        text.contains("strata_proxy_origin_fetches_total 1\n"),
        "{text}"
    );
}

/// Spatial collapsing: concurrent ranges inside one aligned slice of a big
/// blob cost one store read; the slice is then cached for the next ranges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ranges_in_one_slice_read_the_store_once() {
    let (_dir, s) = start().await;
    // Counters are per node: talk to one node, not the gateway.
    let n0 = s.node(0);
    let c = &n0;
    let body = blob(4, 5 << 20);
    assert_eq!(
        c.put("/v1/blobs/big", body.clone())
            .await
            .expect("put")
            .status,
        StatusCode::CREATED
    );
    let metrics = || async {
        String::from_utf8_lossy(&c.get("/metrics").await.expect("metrics").body).into_owned()
    };
    let reads = |text: &str| {
        testkit::metric_value(text, "strata_store_reads_total").expect("reads counter")
    };
    let before = reads(&metrics().await);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(64));
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let (c, b) = (c.clone(), barrier.clone());
        // 64 KiB ranges scattered inside slice 2 (bytes 2 MiB .. 3 MiB).
        let a = (2 << 20) + (i * 15_000) % ((1 << 20) - 65_536);
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            let range = format!("bytes={a}-{}", a + 65_535);
            (
                a,
                c.send(Method::GET, "/v1/blobs/big", &[("range", &range)], vec![])
                    .await
                    .expect("get"),
            )
        }));
    }
    for t in tasks {
        let (a, r) = t.await.expect("task");
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
        assert!(r.body[..] == body[a as usize..a as usize + 65_536]);
    }
    assert_eq!(
        reads(&metrics().await),
        before + 1,
        "one store read for the whole slice"
    );
    // A range across slices 2 and 3: slice 2 is cached, slice 3 is read.
    let (a, b) = ((3 << 20) - 1000, (3 << 20) + 1000);
    let r = c
        .send(
            Method::GET,
            "/v1/blobs/big",
            &[("range", &format!("bytes={a}-{}", b - 1))],
            vec![],
        )
        .await
        .expect("get");
    assert!(r.body[..] == body[a..b]);
    let text = metrics().await;
    assert_eq!(reads(&text), before + 2, "{text}");
    assert!(
        text.contains("strata_proxy_slice_reads_total 2\n"),
        "{text}"
    );
}

#[tokio::test]
async fn nodes_report_their_load() {
    let (_dir, s) = start().await;
    // Counters are per node: talk to one node, not the gateway.
    let n0 = s.node(0);
    let c = &n0;
    c.get("/load").await.expect("prime");
    let j = c.get("/load").await.expect("load").json();
    assert!(j["cpu_percent"].as_f64().is_some(), "{j}");
    assert!(j["rss_bytes"].as_u64().unwrap_or(0) > 0, "{j}");
    assert_eq!(j["in_flight"], 0);
}

/// Sessions through `serve`: create, read from either node, replace,
/// delete; bad ids and methods are refused.
#[tokio::test]
async fn sessions_are_shared_by_the_nodes() {
    let (_dir, s) = start().await;
    let r = s
        .node(0)
        .send(Method::PUT, "/v1/session", &[], "cart=1")
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let set = r.header("set-cookie");
    assert!(set.contains("HttpOnly"), "{set}");
    let cookie = set.split(';').next().expect("cookie").to_owned();
    let get = |i: usize, cookie: String| {
        let c = s.node(i);
        async move {
            c.send(Method::GET, "/v1/session", &[("cookie", &cookie)], vec![])
                .await
                .expect("get")
        }
    };
    let r = get(1, cookie.clone()).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"cart=1"[..]));
    let r = s
        .client
        .send(Method::PUT, "/v1/session", &[("cookie", &cookie)], "cart=2")
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.headers.get("set-cookie").is_none(), "same session");
    assert_eq!(&get(0, cookie.clone()).await.body[..], b"cart=2");
    for bad in [
        "strata_session=short",
        "strata_session=../../etc",
        "other=1",
    ] {
        assert_eq!(get(0, bad.into()).await.status, StatusCode::NOT_FOUND);
    }
    let r = s
        .client
        .send(Method::POST, "/v1/session", &[("cookie", &cookie)], "x")
        .await
        .expect("post");
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = s
        .client
        .send(
            Method::DELETE,
            "/v1/session",
            &[("cookie", &cookie)],
            vec![],
        )
        .await
        .expect("delete");
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(get(1, cookie).await.status, StatusCode::NOT_FOUND);
}

/// An asynchronous upload through `serve`: 202 with a job, the job reaches
/// `succeeded` with the blob's metadata, the blob is readable; the same
/// Idempotency-Key gives the same job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_upload_is_acknowledged_then_written_by_a_worker() {
    let (_dir, s) = start().await;
    let c = &s.client;
    let body = blob(7, 300_000);
    let put = |key: &'static str| {
        let body = body.clone();
        async move {
            c.send(
                Method::POST,
                key,
                &[
                    ("prefer", "respond-async"),
                    ("content-type", "image/jpeg"),
                    ("idempotency-key", "upload-1"),
                ],
                body,
            )
            .await
            .expect("post")
        }
    };
    let r = put("/v1/blobs/async/cat.jpg").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let loc = r.header("location");
    assert!(loc.starts_with("/v1/jobs/"), "{loc}");
    assert_eq!(r.json()["location"], loc.as_str());
    // The same key again: the same job, not a second one.
    let again = put("/v1/blobs/async/cat.jpg").await;
    assert_eq!(again.header("location"), loc);
    let mut state = String::new();
    for _ in 0..1000 {
        let j = c.get(&loc).await.expect("status").json();
        state = j["state"].as_str().unwrap_or("").to_owned();
        if state == "succeeded" {
            assert_eq!(j["result"]["key"], "async/cat.jpg");
            assert_eq!(j["result"]["size"], 300_000);
            assert_eq!(j["attempts"], 1);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(state, "succeeded");
    let g = c.get("/v1/blobs/async/cat.jpg").await.expect("get");
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.header("content-type"), "image/jpeg");
    assert!(g.body[..] == body[..]);
    assert_eq!(
        c.get("/v1/jobs/999999").await.expect("get").status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get("/v1/jobs/abc").await.expect("get").status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(s.handle.broker.queue_stats("uploads").expect("q").total, 1);
}

/// An asynchronous upload of a PNG: the upload job queues a thumbnail job,
/// whose worker stores 128 and 512 px wide copies served with `?w=`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_image_upload_gets_its_thumbnails() {
    let (_dir, s) = start().await;
    let c = &s.client;
    let img = image::RgbImage::from_fn(1024, 768, |x, y| image::Rgb([x as u8, y as u8, 99]));
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .expect("encode");
    let r = c
        .send(
            Method::PUT,
            "/v1/blobs/pics/big.png",
            &[("prefer", "respond-async"), ("content-type", "image/png")],
            png.into_inner(),
        )
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::ACCEPTED);
    for (w, h) in [(128u32, 96u32), (512, 384)] {
        let path = format!("/v1/blobs/pics/big.png?w={w}");
        let mut got = None;
        for _ in 0..2000 {
            let r = c.get(&path).await.expect("get");
            if r.status == StatusCode::OK {
                got = Some(r);
                break;
            }
            assert_eq!(r.status, StatusCode::NOT_FOUND);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let r = got.expect("the thumbnail appears");
        assert_eq!(r.header("content-type"), "image/png");
        let t = image::load_from_memory(&r.body).expect("decode");
        assert_eq!((t.width(), t.height()), (w, h));
    }
    assert_eq!(
        c.get("/v1/blobs/pics/big.png?w=0")
            .await
            .expect("get")
            .status,
        StatusCode::BAD_REQUEST
    );
    let orig = c.get("/v1/blobs/pics/big.png").await.expect("get");
    assert_eq!(
        image::load_from_memory(&orig.body).expect("decode").width(),
        1024
    );
}

/// `serve`'s gateway answers reads from its nodes' ready set: a change
/// made through either node (or through the gateway) is seen by the next
/// read whichever node it goes to, and a needle whose bytes rotted before
/// its first read is refused (its CRC is checked), never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_through_the_gateway_see_every_change_at_once() {
    let (dir, s) = start().await;
    let gw = &s.client;
    let nodes = [s.node(0), s.node(1)];
    for i in 0..20u64 {
        let body = blob(100 + i, 3_000 + i as usize);
        // Alternately through the gateway and each node.
        let writer = match i % 3 {
            0 => gw,
            1 => &nodes[0],
            _ => &nodes[1],
        };
        let r = writer
            .put("/v1/blobs/same", body.clone())
            .await
            .expect("put");
        assert_eq!(r.status, StatusCode::CREATED);
        // Two reads: the gateway alternates between the nodes.
        for _ in 0..2 {
            let r = gw.get("/v1/blobs/same").await.expect("get");
            assert_eq!(r.status, StatusCode::OK);
            assert!(r.body[..] == body[..], "round {i}: an older version");
        }
    }
    // (304, 206, 416 and HEAD through the ready set: the first test.)
    let r = gw.get("/v1/blobs/same").await.expect("get");
    assert!(r.headers.contains_key("date"), "{:?}", r.headers);
    assert_eq!(
        nodes[1].delete("/v1/blobs/same").await.expect("del").status,
        StatusCode::NO_CONTENT
    );
    for _ in 0..2 {
        let r = gw.get("/v1/blobs/same").await.expect("get");
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.headers["content-type"], "application/json");
    }

    // Rot before the first read: one byte of the needle flipped on disk.
    let body = blob(7, 20_000);
    gw.put("/v1/blobs/rotten", body.clone()).await.expect("put");
    let mut flipped = false;
    for e in std::fs::read_dir(dir.path().join("store")).expect("store dir") {
        let path = e.expect("entry").path();
        if path.extension().is_some_and(|x| x == "dat") {
            let bytes = std::fs::read(&path).expect("volume");
            if let Some(at) = bytes.windows(64).position(|w| w == &body[5000..5064]) {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .expect("open");
                std::os::unix::fs::FileExt::write_at(&f, &[bytes[at] ^ 0x01], at as u64)
                    .expect("flip");
                flipped = true;
            }
        }
    }
    assert!(flipped, "the blob is on disk");
    for _ in 0..2 {
        let r = gw.get("/v1/blobs/rotten").await.expect("get");
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "rotten bytes sent"
        );
    }
}

/// The volume file of `serve`'s store under `data` holding `body`, and
/// where `body[5000..]` starts in it.
fn find_on_disk(data: &std::path::Path, body: &[u8]) -> (std::path::PathBuf, usize) {
    for e in std::fs::read_dir(data.join("store")).expect("store dir") {
        let path = e.expect("entry").path();
        if path.extension().is_some_and(|x| x == "dat") {
            let bytes = std::fs::read(&path).expect("volume");
            if let Some(at) = bytes.windows(64).position(|w| w == &body[5000..5064]) {
                return (path, at);
            }
        }
    }
    panic!("the blob is on disk");
}

#[tokio::test]
async fn a_first_read_through_the_gateway_never_sends_a_rotten_byte() {
    // The gateway sends a mapped blob with `sendfile` from its first read
    // on; that first read must still check the CRC (docs/reliability.md).
    let (dir, s) = start().await;
    let c = &s.client;
    let (good, bad) = (blob(91, 20_000), blob(92, 20_000));
    for (key, body) in [("rot/good", &good), ("rot/bad", &bad)] {
        let r = c.put(&format!("/v1/blobs/{key}"), body.clone()).await;
        assert_eq!(r.expect("put").status, StatusCode::CREATED);
    }
    let (path, at) = find_on_disk(dir.path(), &bad);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    std::os::unix::fs::FileExt::write_at(&f, &[bad[5000] ^ 0x01], at as u64).expect("flip");

    // A connection that carried a write stays on the gateway's full path:
    // read on a new one, which takes the direct path.
    let c = &testkit::Client::new(format!("http://{}", s.addr()));
    for _ in 0..2 {
        let r = c.get("/v1/blobs/rot/bad").await.expect("get");
        assert!(r.status.is_server_error(), "{}", r.status);
        assert_ne!(&r.body[..], &bad[..]);
        assert!(!r.body.windows(64).any(|w| w == &bad[4990..5054]));
        let r = c.get("/v1/blobs/rot/good").await.expect("get");
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], &good[..]);
    }
    // The answer says why, and the blob is still there for a repair.
    let r = c.get("/v1/blobs/rot/bad").await.expect("get");
    assert!(
        String::from_utf8_lossy(&r.body).contains("corrupt"),
        "{:?}",
        r.body
    );
    let r = c.send(Method::HEAD, "/v1/blobs/rot/bad", &[], vec![]).await;
    assert_eq!(r.expect("head").status, StatusCode::OK);
}
