//! Page uploads at the edges: a directory of books imported, page headers
//! refused where no shard could index them, inline text kept as a blob that
//! goes with its page.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_loads_a_directory_of_books() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = InProc::serve_default(&dir.path().join("data"))
        .await
        .expect("serve");
    let books_dir = dir.path().join("books");
    for (book, pages) in [("Alpha", 3u64), ("Beta", 2)] {
        let d = books_dir.join(book);
        std::fs::create_dir_all(&d).expect("mkdir");
        for p in 1..=pages {
            std::fs::write(d.join(format!("{p:04}.png")), format!("img {book} {p}")).expect("img");
            let mut text = format!("{book} page {p} words marmalade{p}");
            if book == "Beta" && p == 2 {
                // Longer than a header should carry: goes as a sidecar.
                text.push_str(&" filler".repeat(3000));
            }
            std::fs::write(d.join(format!("{p:04}.txt")), text).expect("txt");
        }
    }
    let out = std::process::Command::new(bin())
        .arg("import")
        .arg(&books_dir)
        .args(["--url", &format!("http://{}", s.addr()), "--quiet"])
        .output()
        .expect("run import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("imported 5 pages"), "{stdout}");
    let c = &s.client;
    let mut both = books(&search(c, "marmalade2").await);
    both.sort();
    assert_eq!(both, ["Alpha", "Beta"]);
    let v = c
        .get("/v1/search?q=marmalade2&book=Beta")
        .await
        .expect("s")
        .json();
    assert_eq!(v["books"][0]["pages"][0]["key"], "books/Beta/0002.png");
    assert_eq!(books(&search(c, "marmalade3").await), ["Alpha"]);

    // A page without its text is refused before anything is uploaded.
    std::fs::write(books_dir.join("Beta").join("0003.png"), "img").expect("img");
    let out = std::process::Command::new(bin())
        .arg("import")
        .arg(&books_dir)
        .args(["--url", &format!("http://{}", s.addr()), "--quiet"])
        .output()
        .expect("run import");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0003.txt"));
    s.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_headers_are_refused_where_no_shard_could_index_them() {
    let cl = testkit::InProcCluster::start(1, 1).await.expect("cluster");
    let r = cl
        .client
        .send(
            Method::PUT,
            "/v1/blobs/p.png",
            &[
                ("x-strata-book", "B"),
                ("x-strata-page", "1"),
                ("x-strata-text", "t"),
            ],
            "x",
        )
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.json()["error"], "bad_page");
    assert_eq!(
        cl.client.get("/v1/blobs/p.png").await.expect("get").status,
        StatusCode::NOT_FOUND
    );
    let r = cl.client.get("/v1/search?q=t").await.expect("search");
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    cl.stop().await.expect("stop");
}

/// The text of a page given inline is kept as the blob `_text/{key}`
/// (so shards can be rebuilt), replaced with the page and deleted with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_text_is_kept_as_a_blob_that_goes_with_its_page() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = InProc::serve_default(dir.path()).await.expect("serve");
    let c = &s.client;
    let job = put_page(c, "scan/7.png", "Atlas", 7, "mountains and rivers").await;
    assert_eq!(wait_job(c, &job).await["state"], "succeeded");
    let t = c.get("/v1/blobs/_text/scan/7.png").await.expect("text");
    assert_eq!(t.status, StatusCode::OK);
    assert_eq!(t.json()["text"], "mountains and rivers");

    // Replaced: the new words.
    let job = put_page(c, "scan/7.png", "Atlas", 7, "deserts").await;
    assert_eq!(wait_job(c, &job).await["state"], "succeeded");
    let t = c.get("/v1/blobs/_text/scan/7.png").await.expect("text");
    assert_eq!(t.json()["text"], "deserts");

    // Replaced by a plain image: the page's text goes (in the background).
    let r = c
        .send(Method::PUT, "/v1/blobs/scan/7.png", &[], "not a page")
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::CREATED);
    wait_gone(c, "/v1/blobs/_text/scan/7.png").await;

    // A deleted page takes its text along.
    let job = put_page(c, "scan/8.png", "Atlas", 8, "oceans").await;
    assert_eq!(wait_job(c, &job).await["state"], "succeeded");
    let r = c
        .send(Method::DELETE, "/v1/blobs/scan/8.png", &[], "")
        .await
        .expect("delete");
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    wait_gone(c, "/v1/blobs/_text/scan/8.png").await;

    // A sidecar the client stored is the client's: it stays.
    let side = serde_json::json!({"text": "islands"}).to_string();
    let r = c
        .send(Method::PUT, "/v1/blobs/side.json", &[], side)
        .await
        .expect("sidecar");
    assert_eq!(r.status, StatusCode::CREATED);
    let job = put_sidecar_page(c, "scan/9.png", "Atlas", "side.json").await;
    assert_eq!(wait_job(c, &job).await["state"], "succeeded");
    let r = c
        .send(Method::DELETE, "/v1/blobs/scan/9.png", &[], "")
        .await
        .expect("delete");
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = c.get("/v1/blobs/side.json").await.expect("sidecar");
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        c.get("/v1/blobs/_text/scan/9.png")
            .await
            .expect("none")
            .status,
        StatusCode::NOT_FOUND
    );
    s.stop().await.expect("stop");
}
