//! The public API end to end through `serve` running in-process: the README's
//! curl tour, overwrites, odd keys, metrics, restarts, collapsed reads and
//! load reports here; every bad-input path in `bad_input`, asynchronous
//! uploads and sessions in `async_jobs`, reads through the gateway in
//! `gateway_reads`. One test binary: each more would be another link of
//! the whole workspace (about 430 MB in a debug build).

use testkit::{blob, InProc};
use testkit::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod async_jobs;
mod bad_input;
mod gateway_reads;

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
    testkit::until_async(
        "one blob left in the store",
        std::time::Duration::from_secs(5),
        async || match store.len() {
            1 => Ok(()),
            n => Err(format!("{n} blobs")),
        },
    )
    .await;
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
    // The index file lock is released when the old writer thread ends.
    let s = testkit::until_async(
        "serve opens the data again",
        std::time::Duration::from_secs(10),
        async || {
            InProc::serve_default(dir.path())
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
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
