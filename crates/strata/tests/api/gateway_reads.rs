//! Reads through `serve`'s gateway: every change seen at once, and no
//! rotten byte ever sent on a first read.

use super::*;

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
